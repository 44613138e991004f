"""The harness's request client over real HTTP against a small server that answers in llama.cpp's shapes
(usage, `timings` with draft counts, SSE chunks with [DONE]); the real endpoint is driven in Molecule."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from llmrig_bench.client import body_for, request

TIMINGS = {
    "cache_n": 0,
    "prompt_n": 5,
    "prompt_ms": 10.0,
    "prompt_per_second": 500.0,
    "predicted_n": 4,
    "predicted_ms": 40.0,
    "predicted_per_second": 100.0,
    "draft_n": 6,
    "draft_n_accepted": 3,
}
GAP_S = 0.05


class Endpoint(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers["Authorization"] != "Bearer k":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "Invalid API Key"}}')
            return
        chat = self.path == "/v1/chat/completions"
        usage = {"prompt_tokens": 5, "completion_tokens": 4}
        if not body["stream"]:
            choice = {"message": {"content": "a b c d"}} if chat else {"text": "a b c d"}
            out = {"choices": [dict(choice, finish_reason="length")], "usage": usage, "timings": TIMINGS}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(["a", " b", " c", " d"]):
            choice = {"delta": {"content": word}} if chat else {"text": word}
            if i == 3:
                choice["finish_reason"] = "length"
            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            self.wfile.flush()
            time.sleep(GAP_S)
        if body.get("model") != "cut":
            final = {"choices": [], "usage": usage, "timings": TIMINGS}
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_streamed_request_gives_client_and_server_figures(url, api):
    record = request(url, "k", "m", "hi", api=api, max_tokens=4, stream=True, prompt_id="p1")
    assert record.ok, record.error
    assert record.text == "a b c d" and record.finish_reason == "length"
    assert (record.prompt_tokens, record.completion_tokens) == (5, 4)
    assert record.ttft_s is not None and record.ttft_s < record.e2e_s
    assert len(record.itl_s) == 3 and all(gap >= GAP_S * 0.8 for gap in record.itl_s)
    # 3 tokens after the first over 3 gaps of ~50 ms
    assert record.client_decode_tps == pytest.approx(1 / GAP_S, rel=0.3)
    assert record.timings["predicted_per_second"] == 100.0
    assert record.acceptance == 0.5
    assert record.as_dict()["acceptance"] == 0.5


def test_an_answer_that_is_not_streamed(url):
    record = request(url, "k", "m", "hi", api="chat", stream=False)
    assert record.ok and record.text == "a b c d"
    assert record.ttft_s is None and record.client_decode_tps is None
    assert record.timings["draft_n"] == 6


def test_failures_are_recorded_not_raised(url):
    refused = request(url, "wrong", "m", "hi")
    assert refused.status == 401 and "Invalid API Key" in (refused.error or "")
    cut = request(url, "k", "cut", "hi")
    assert cut.status == 200 and cut.error == "the stream ended without [DONE]" and not cut.ok
    nobody = request("http://127.0.0.1:9", "k", "m", "hi", timeout=5)
    assert nobody.status == 0 and "Connection refused" in (nobody.error or "")


def test_the_request_body():
    body = body_for("chat", "m", "hi", 8, True, {"temperature": 0, "seed": 1})
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream_options"] == {"include_usage": True} and body["seed"] == 1
    assert "stream_options" not in body_for("completions", "m", "hi", 8, False, {})
    with pytest.raises(ValueError, match="api must be chat or completions"):
        body_for("embeddings", "m", "hi", 8, False, {})
