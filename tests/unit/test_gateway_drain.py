"""The gateway's ExecStop drain against a fake router over real HTTP: it waits while a model reports a
request in progress, gives up at the timeout, and does not wait for a router that is not there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

DRAIN = Path(__file__).resolve().parents[2] / "roles/llmrig_gateway/files/llmrig-gateway-drain.py"
KEY = "drain-test-key"


def answer(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class FakeRouter(BaseHTTPRequestHandler):
    busy_reads = 0  # how many /metrics reads of the loaded model report a request in progress
    reload_s = 0.0  # how long a presets reload takes to answer
    child_port = 0  # where model a's own llama-server listens (FakeChild)
    seen: ClassVar[list[str]] = []

    def do_GET(self):
        FakeRouter.seen.append(self.path)
        if self.headers["Authorization"] != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            return
        if self.path == "/models":
            loaded = {"value": "loaded", "args": ["llama-server", "--port", str(FakeRouter.child_port)]}
            models = [{"id": "a", "status": loaded}, {"id": "b", "status": {"value": "unloaded"}}]
            body = json.dumps({"data": models}).encode()
        elif self.path == "/models?reload=1":
            time.sleep(FakeRouter.reload_s)
            body = b"{}"
        elif self.path == "/metrics?model=a&autoload=false":
            processing = 1 if FakeRouter.busy_reads > 0 else 0
            FakeRouter.busy_reads -= 1
            body = f"llamacpp:requests_processing {processing}\nllamacpp:requests_deferred 0\n".encode()
        else:
            self.send_response(400)
            self.end_headers()
            return
        answer(self, body)

    def log_message(self, *args):
        pass


class FakeChild(BaseHTTPRequestHandler):
    """Model a's own llama-server: its /metrics, read directly while the router is held."""

    busy_reads = 0

    def do_GET(self):
        if self.path != "/metrics" or self.headers["Authorization"] != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            return
        processing = 1 if FakeChild.busy_reads > 0 else 0
        FakeChild.busy_reads -= 1
        answer(self, f"llamacpp:requests_processing {processing}\nllamacpp:requests_deferred 0\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def router():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRouter)
    child = ThreadingHTTPServer(("127.0.0.1", 0), FakeChild)
    for each in (server, child):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    FakeRouter.seen, FakeRouter.child_port, FakeChild.busy_reads = [], child.server_address[1], 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    child.shutdown()


def drain(
    tmp_path: Path, url: str, timeout: float, *models: str, env: dict | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(DRAIN), url, str(key_file), str(timeout), *models],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc, time.monotonic() - start


def test_waits_until_no_request_is_in_progress(tmp_path, router):
    FakeRouter.busy_reads = 5
    proc, seconds = drain(tmp_path, router, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "waiting for 1 request(s) in flight" in proc.stdout
    assert "drained after" in proc.stdout
    assert 0.8 <= seconds < 10  # five busy reads, 0.2 s apart
    # only the loaded model is asked, and without loading it
    assert "/metrics?model=b&autoload=false" not in FakeRouter.seen


def test_gives_up_at_the_timeout(tmp_path, router):
    FakeRouter.busy_reads = 10_000
    proc, seconds = drain(tmp_path, router, timeout=1)
    assert proc.returncode == 0, proc.stderr
    assert "still in flight after 1 s; stopping anyway" in proc.stdout
    assert seconds < 5


def test_idle_router_and_missing_router_need_no_wait(tmp_path, router):
    FakeRouter.busy_reads = 0
    proc, seconds = drain(tmp_path, router, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "" and seconds < 5
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc, seconds = drain(tmp_path, f"http://127.0.0.1:{port}", timeout=30)
    assert proc.returncode == 0 and proc.stdout == "" and seconds < 5


def test_a_presets_reload_waits_for_the_changed_models_only_then_reloads(tmp_path, router):
    """The reload handler: only the models whose preset changed are waited for, and the reload follows."""
    FakeRouter.busy_reads = 1000  # model a stays busy
    proc, seconds = drain(tmp_path, router, 5, "--reload", "b,c")
    # waiting for model a would take the 5 s timeout
    assert proc.returncode == 0 and seconds < 4, (proc.stdout, proc.stderr, seconds)
    assert "/metrics?model=a&autoload=false" not in FakeRouter.seen
    assert FakeRouter.seen[-1] == "/models?reload=1"
    FakeRouter.seen = []
    FakeRouter.busy_reads = 5  # a is busy for five reads, then idle: reloaded then, not before
    proc, seconds = drain(tmp_path, router, 10, "--reload", "a")
    assert proc.returncode == 0, proc.stderr
    assert "drained after" in proc.stdout
    reads = [path for path in FakeRouter.seen if path.startswith("/metrics")]
    assert len(reads) == 6 and FakeRouter.seen[-1] == "/models?reload=1", FakeRouter.seen
    FakeRouter.busy_reads = 1000
    proc, _ = drain(tmp_path, router, 1, "--reload", "a")
    assert "still in flight after 1 s; reloading anyway" in proc.stdout
    assert FakeRouter.seen[-1] == "/models?reload=1"
    FakeRouter.busy_reads = 0


def test_a_reload_that_answers_only_after_a_stuck_model_was_killed_is_waited_for(tmp_path, router):
    """The router answers a reload once the unloaded model process is gone; one that hangs on its exit
    command is killed at its stop-timeout (10 s by default). The drain used to give up after 5 s and fail
    the play; it must wait for the answer."""
    FakeRouter.reload_s = 6.5
    try:
        proc, seconds = drain(tmp_path, router, 5, "--reload", "b")
    finally:
        FakeRouter.reload_s = 0.0
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert seconds >= 6.5 and FakeRouter.seen[-1] == "/models?reload=1"


@pytest.fixture
def stand_in_router():
    """A real process in the router's place, for the hold to stop and continue."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc.pid
    proc.kill()
    proc.wait()


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# the command run while held: the router's state then, as the command saw it
SAYS_STATE = [
    sys.executable,
    "-c",
    "import sys; print(open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split()[0])",
]


def test_a_hold_runs_the_command_with_the_router_stopped_and_idle_and_continues_it(tmp_path, router, stand_in_router):
    FakeRouter.busy_reads = 3  # busy through the router for three reads
    pid = stand_in_router
    proc, _ = drain(tmp_path, router, 10, "--hold", str(pid), "--", *SAYS_STATE, str(pid))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "T"  # stopped while the command ran
    assert "held the router" in proc.stdout and "0 request(s) that slipped in" in proc.stdout
    assert state(pid) in "SR"  # and continued after it
    assert len([p for p in FakeRouter.seen if p.startswith("/metrics")]) >= 4


def test_a_request_that_slipped_in_lets_the_router_go_on_and_the_wait_start_again(tmp_path, router, stand_in_router):
    FakeChild.busy_reads = 2  # the router said idle, but the model process had just taken a request: twice
    proc, _ = drain(tmp_path, router, 10, "--hold", str(stand_in_router), "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert "2 request(s) that slipped in; true exited 0" in proc.stdout
    assert state(stand_in_router) in "SR"


def test_a_hold_that_never_finds_the_models_idle_runs_nothing(tmp_path, router, stand_in_router):
    FakeRouter.busy_reads = 10_000
    marker = tmp_path / "ran"
    proc, _ = drain(tmp_path, router, 1, "--hold", str(stand_in_router), "--", "touch", str(marker))
    assert proc.returncode == 75 and "not idle within 1 s; touch did not run" in proc.stderr
    assert not marker.exists() and state(stand_in_router) in "SR"
    FakeRouter.busy_reads = 0


def test_the_command_s_failure_is_the_exit_status_and_the_router_goes_on(tmp_path, router, stand_in_router):
    proc, _ = drain(tmp_path, router, 5, "--hold", str(stand_in_router), "--", "sh", "-c", "exit 3")
    assert proc.returncode == 3 and state(stand_in_router) in "SR"


def test_the_guard_continues_the_router_when_the_hold_dies(tmp_path, router, stand_in_router):
    """kill -9 of the drain while it holds the router: the guard continues the router after the limit."""
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    env = {"PATH": "/usr/bin:/bin", "LLMRIG_DRAIN_HOLD_LIMIT_S": "2"}
    held = subprocess.Popen(
        [sys.executable, str(DRAIN), router, str(key_file), "5", "--hold", str(stand_in_router), "--", "sleep", "60"],
        env=env,
    )
    deadline = time.monotonic() + 5
    while state(stand_in_router) != "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state(stand_in_router) == "T"
    held.kill()
    held.wait()
    time.sleep(0.5)
    assert state(stand_in_router) == "T"  # the drain is gone; the guard has not fired yet
    deadline = time.monotonic() + 5
    while state(stand_in_router) == "T" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state(stand_in_router) in "SR"


def test_a_hold_with_no_router_running_runs_the_command_as_it_is(tmp_path, router):
    proc, _ = drain(tmp_path, router, 5, "--hold", "0", "--", "sh", "-c", "echo ran")
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["ran", proc.stdout.splitlines()[1]]
    assert "0 is not running, nothing to hold; sh exited 0" in proc.stdout
