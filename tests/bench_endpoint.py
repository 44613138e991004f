"""A small HTTP server answering in llama.cpp's shapes for the harness's unit tests: completions and chat,
streamed or not, usage, `timings` (with draft counts), /completion's token ids and GET /models. A model named
`slow...` takes 20 % longer per token; `cut` ends its streams without [DONE]; `flaky` changes a token in
/completion. One model is resident at a time, as with the router's --models-max 1: a request to another
one first waits LOAD_S (a swap). The real endpoint is driven in Molecule."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GAP_S = 0.01
LOAD_S = 0.05
RESIDENT: list[str] = []  # the model loaded now (none at the start)
# a second server stands for the model processes (GET /models gives its address); (port, model) per request
PROCESS: dict[str, int] = {}
MODEL_FILE = ["/nonexistent.gguf"]  # every model's --model; a test may point it at a real file
HITS: list[tuple[int, str]] = []
LOADS: list[str] = []  # the model of each request that waited for a load
# drafted and accepted tokens served per model, for /metrics (a real model process counts the same way)
COUNTERS: dict[str, list[float]] = {}
COUNTERS_LOCK = threading.Lock()
WORDS = ["a", " b", " c", " d"]


def gap(model: str) -> float:
    return GAP_S * 1.2 if model.startswith("slow") else GAP_S


def timings(model: str) -> dict:
    per_second = 1 / gap(model)
    return {
        "cache_n": 0,
        "prompt_n": 5,
        "prompt_ms": 10.0,
        "prompt_per_second": 500.0,
        "predicted_n": len(WORDS),
        "predicted_ms": 1000 * len(WORDS) / per_second,
        "predicted_per_second": per_second,
        "draft_n": 6,
        "draft_n_accepted": 3,
    }


def tokens(body: dict) -> list[int]:
    """llama.cpp's /completion with return_tokens: ids that depend on the prompt only when greedy; with a
    temperature they change from the fourth token on, as sampling would, and `flaky` models from the sixth."""
    ids = [(sum(map(ord, body["prompt"])) * (i + 7)) % 32000 for i in range(body["n_predict"])]
    if body.get("temperature", 0) > 0 and len(ids) > 3:
        ids[3] = (ids[3] + body.get("seed", 0) + 1) % 32000
    if body["model"] == "flaky" and len(ids) > 5:
        ids[5] += 1
    return ids


class Endpoint(BaseHTTPRequestHandler):
    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/metrics"):
            model = self.path.split("model=", 1)[1].split("&", 1)[0]
            with COUNTERS_LOCK:
                drafted, accepted = COUNTERS.get(model, [0.0, 0.0])
            text = (
                f"llamacpp:spec_decode_num_draft_tokens_total {drafted}\n"
                f"llamacpp:spec_decode_num_accepted_tokens_total {accepted}\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        with COUNTERS_LOCK:
            loaded = list(RESIDENT)
        args = ["--host", "127.0.0.1", "--port", str(PROCESS.get("port", 1)), "--model", MODEL_FILE[0]]
        models = [
            {"id": m, "status": {"value": "loaded" if m in loaded else "unloaded", "args": args}}
            for m in ("fast", "slow", *(m for m in loaded if m not in ("fast", "slow")))
        ]
        self._send(200, {"data": models})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers["Authorization"] != "Bearer k":
            self._send(401, {"error": {"message": "Invalid API Key"}})
            return
        if self.path == "/completion":
            self._send(200, {"content": "...", "tokens": tokens(body)})
            return
        model, chat = body["model"], self.path == "/v1/chat/completions"
        with COUNTERS_LOCK:
            HITS.append((self.server.server_address[1], model))
            swap = RESIDENT != [model]
            RESIDENT[:] = [model]
            if swap:
                LOADS.append(model)
        if swap:
            time.sleep(LOAD_S)
            if Path(MODEL_FILE[0]).is_file():
                Path(MODEL_FILE[0]).read_bytes()  # a load reads the model file
        with COUNTERS_LOCK:
            counts = COUNTERS.setdefault(model, [0.0, 0.0])
            counts[0] += timings(model)["draft_n"]
            counts[1] += timings(model)["draft_n_accepted"]
        words = WORDS[: body.get("max_tokens", len(WORDS))]
        usage = {"prompt_tokens": 5, "completion_tokens": len(words)}
        if not body["stream"]:
            time.sleep(gap(model) * len(words))
            choice = {"message": {"content": "".join(words)}} if chat else {"text": "".join(words)}
            self._send(
                200, {"choices": [dict(choice, finish_reason="length")], "usage": usage, "timings": timings(model)}
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(words):
            choice = {"delta": {"content": word}} if chat else {"text": word}
            if i == len(words) - 1:
                choice["finish_reason"] = "length"
            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            self.wfile.flush()
            time.sleep(gap(model))
        if model != "cut":
            final = {"choices": [], "usage": usage, "timings": timings(model)}
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@contextmanager
def endpoint() -> Iterator[str]:
    with COUNTERS_LOCK:
        COUNTERS.clear()  # a new server is a new set of model processes
        RESIDENT.clear()
        HITS.clear()
        LOADS.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    process = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    PROCESS["port"] = process.server_port
    for each in (server, process):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        process.shutdown()
