"""The gateway's model check after a new llama.cpp build, against a fake router over real HTTP: a model that
answers passes, an error answer fails with its body, and a model whose process keeps failing while the
request waits in the router's queue is reported at once, not after the load timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

CHECK = Path(__file__).resolve().parents[2] / "roles/llmrig_gateway/files/llmrig-gateway-check.py"
KEY = "check-test-key"


class FakeRouter(BaseHTTPRequestHandler):
    # per model: "ok" answers, "error" answers HTTP 500, "stuck" never answers while /models says it failed,
    # "queued" never answers and never starts loading (other models are busy)
    behaviour: ClassVar[dict[str, str]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        assert self.headers["Authorization"] == f"Bearer {KEY}"
        states = {"stuck": {"value": "unloaded", "failed": True, "exit_code": 1}, "queued": {"value": "unloaded"}}
        models = [{"id": name, "status": states.get(kind, {})} for name, kind in self.behaviour.items()]
        self._send(200, {"data": models})

    def do_POST(self) -> None:
        model = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["model"]
        kind = self.behaviour[model]
        if kind in ("stuck", "queued"):
            time.sleep(30)
        if kind == "error":
            self._send(500, {"error": {"code": 500, "message": f"model name={model} failed to load"}})
        else:
            self._send(200, {"choices": [{"text": "x"}]})


@pytest.fixture
def router():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRouter)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def check(
    tmp_path: Path, url: str, timeout: float, behaviour: dict[str, str], queue_timeout: float = 15
) -> tuple[subprocess.CompletedProcess, float]:
    FakeRouter.behaviour = behaviour
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(CHECK), url, str(key_file), str(timeout), str(queue_timeout), *behaviour],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.monotonic() - start


def test_models_that_answer_pass(tmp_path, router):
    proc, _ = check(tmp_path, router, 10, {"a": "ok", "b": "ok"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_an_error_answer_fails_with_its_body(tmp_path, router):
    proc, _ = check(tmp_path, router, 10, {"a": "ok", "b": "error"})
    assert proc.returncode == 1
    assert proc.stdout.strip() == 'b: HTTP 500 {"error": {"code": 500, "message": "model name=b failed to load"}}'


def test_a_model_that_keeps_failing_is_reported_without_waiting_for_the_timeout(tmp_path, router):
    proc, seconds = check(tmp_path, router, 20, {"a": "stuck"})
    assert proc.returncode == 1
    assert proc.stdout.strip() == "a: its model process exited with status 1 while loading"
    assert seconds < 10, seconds  # the timeout was 20 s


def test_a_model_that_waits_behind_busy_models_is_not_checked_but_does_not_fail(tmp_path, router):
    proc, seconds = check(tmp_path, router, 20, {"a": "ok", "b": "queued"}, queue_timeout=1)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("warning: b: not checked, it waited 1 s for other models"), proc.stdout
    assert seconds < 10, seconds
