"""One request to the OpenAI-compatible endpoint, measured: the raw figures of one benchmark sample.

Standard library only, so that it runs on the inference host itself as well as on the controller. A streamed
request gives the client-side figures (time to first token, the gaps between tokens, decode tokens/s as the
client sees them); every request records the server's own `timings` (llama.cpp: prompt and decode counts,
times and rates, and for speculative decoding the drafted and accepted tokens) and the usage counts.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

# llama.cpp's per-response timings that a report uses (server-common.cpp, server_slot_stats::to_json)
TIMING_KEYS = (
    "cache_n",
    "prompt_n",
    "prompt_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_second",
    "draft_n",
    "draft_n_accepted",
)


@dataclass
class Record:
    """One request as the client saw it, with what the server said about it."""

    model: str
    api: str  # chat | completions
    stream: bool
    prompt_id: str
    started: float  # epoch seconds
    status: int = 0  # HTTP status; 0 when no answer came
    error: str | None = None
    e2e_s: float = 0.0
    ttft_s: float | None = None  # streamed only: request sent to the first content
    itl_s: list[float] = field(default_factory=list)  # streamed only: gaps between content chunks
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def client_decode_tps(self) -> float | None:
        """Tokens after the first one per second between the first and the last content chunk (streamed)."""
        span = sum(self.itl_s)
        if not self.stream or not self.completion_tokens or self.completion_tokens < 2 or span <= 0:
            return None
        return (self.completion_tokens - 1) / span

    @property
    def acceptance(self) -> float | None:
        drafted = self.timings.get("draft_n")
        if not drafted:
            return None
        return self.timings.get("draft_n_accepted", 0) / drafted

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["client_decode_tps"] = self.client_decode_tps
        out["acceptance"] = self.acceptance
        return out


def body_for(api: str, model: str, prompt: str, max_tokens: int, stream: bool, extra: dict[str, Any]) -> dict:
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    elif api == "completions":
        body["prompt"] = prompt
    else:
        raise ValueError(f"api must be chat or completions, not {api!r}")
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def _content(api: str, choice: dict[str, Any]) -> str:
    if api == "chat":
        return str((choice.get("delta") or choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def _absorb(record: Record, payload: dict[str, Any]) -> str:
    """Take usage, timings and the finish reason from a response or chunk; return its content."""
    usage = payload.get("usage") or {}
    if usage:
        record.prompt_tokens = usage.get("prompt_tokens", record.prompt_tokens)
        record.completion_tokens = usage.get("completion_tokens", record.completion_tokens)
    timings = payload.get("timings") or {}
    record.timings.update({k: float(timings[k]) for k in TIMING_KEYS if k in timings})
    text = ""
    for choice in payload.get("choices") or []:
        text += _content(record.api, choice)
        record.finish_reason = choice.get("finish_reason") or record.finish_reason
    return text


def request(
    base_url: str,
    key: str,
    model: str,
    prompt: str,
    *,
    api: str = "completions",
    max_tokens: int = 32,
    stream: bool = True,
    prompt_id: str = "",
    extra: dict[str, Any] | None = None,
    timeout: float = 600,
) -> Record:
    """Send one request and measure it. Failures are recorded, not raised."""
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    body = body_for(api, model, prompt, max_tokens, stream, extra or {})
    http = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    record = Record(model=model, api=api, stream=stream, prompt_id=prompt_id, started=time.time())
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(http, timeout=timeout) as response:
            record.status = response.status
            if not stream:
                record.text = _absorb(record, json.load(response))
            else:
                last: float | None = None
                done = False
                for raw in response:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    content = _absorb(record, json.loads(data))
                    if content:
                        now = time.perf_counter()
                        if last is None:
                            record.ttft_s = now - began
                        else:
                            record.itl_s.append(now - last)
                        last = now
                        record.text += content
                if not done:
                    record.error = "the stream ended without [DONE]"
    except urllib.error.HTTPError as exc:
        record.status = exc.code
        record.error = exc.read().decode("utf-8", "replace")[:500]
    except (OSError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.e2e_s = time.perf_counter() - began
    return record


def call(
    base_url: str, key: str | None, method: str, path: str, body: Any = None, timeout: float = 300
) -> tuple[int, Any]:
    """One JSON request: (HTTP status, parsed body); (status, text) for an HTTP error, (0, None) when nothing
    answered."""
    http = urllib.request.Request(
        base_url.rstrip("/") + path, data=None if body is None else json.dumps(body).encode(), method=method
    )
    http.add_header("Content-Type", "application/json")
    if key:
        http.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(http, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return 0, None


def wait_healthy(base_url: str, timeout: float = 120) -> None:
    """Wait until GET /health answers 200."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if call(base_url, None, "GET", "/health", timeout=2)[0] == 200:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{base_url} did not become healthy in {timeout} s")
