"""The model_file module run for real (as Ansible runs it) against a local HTTP server with range support."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from llmrig_testlib import run_module

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
OTHER = os.urandom(len(PAYLOAD))  # another version of the file, served as /other.gguf


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """A file server with range support that can be told to misbehave the ways real links and CDNs do."""

    requests: list[str | None] = []  # noqa: RUF012 - shared log of Range headers, reset per test
    # normal | drop (close after half the body) | error-page (ignore Range, 200 with HTML) | no-ranges (ignore
    # Range, 200 with the whole file) | wrong-range (206 from byte 0) | stall (stop sending, keep the socket)
    # | no-head (HEAD refused with 405) | no-size (HEAD refused, no Content-Range, chunked body)
    mode = "normal"

    def log_message(self, *args) -> None:
        pass

    @property
    def payload(self) -> bytes:
        return OTHER if self.path.endswith("/other.gguf") else PAYLOAD

    def do_HEAD(self) -> None:
        if RangeHandler.mode in ("no-head", "no-size"):
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()

    def do_GET(self) -> None:
        RangeHandler.requests.append(self.headers.get("Range"))
        mode = RangeHandler.mode
        if mode == "error-page" and self.headers.get("Range"):
            body = b"<html><body>Access denied</body></html>" * 10
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode == "no-size":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(self.payload), self.payload))
            return
        start = 0
        if self.headers.get("Range") and mode == "wrong-range":
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(self.payload) - 1}/{len(self.payload)}")
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload)
            return
        if self.headers.get("Range") and mode != "no-ranges":
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        if self.headers.get("Range") == "bytes=0-0":
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(self.payload[:1])
            return
        self.send_header("Content-Length", str(len(self.payload) - start))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(self.payload[start : start + (len(self.payload) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "stall":
            self.wfile.write(self.payload[start : start + 1024 * 1024])
            self.wfile.flush()
            time.sleep(4)
            return
        self.wfile.write(self.payload[start:])


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.gguf"
    httpd.shutdown()


@pytest.fixture
def dirs(tmp_path):
    RangeHandler.requests = []
    RangeHandler.mode = "normal"
    paths = {name: tmp_path / name for name in ("models", "staging", "verified")}
    for path in paths.values():
        path.mkdir()
    return paths


def run(tmp_path: Path, **args) -> dict:
    return run_module("model_file", tmp_path, **args)


def base_args(dirs, sha=SHA) -> dict:
    return {
        "dest": str(dirs["models"] / "model.gguf"),
        "sha256": sha,
        "staging_dir": str(dirs["staging"]),
        "state_dir": str(dirs["verified"]),
        "mode": "0640",
    }


def test_download_verifies_and_installs(tmp_path, dirs, server):
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["changed"] is True
    assert result["action"] == "downloaded"
    dest = dirs["models"] / "model.gguf"
    assert dest.read_bytes() == PAYLOAD
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    assert list(dirs["staging"].iterdir()) == []
    assert list(dirs["models"].iterdir()) == [dest]


def test_second_run_trusts_the_record(tmp_path, dirs, server):
    run(tmp_path, url=server, **base_args(dirs))
    RangeHandler.requests = []
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["changed"] is False
    assert result["action"] == "verified-record"
    assert RangeHandler.requests == []


def test_partial_download_resumes(tmp_path, dirs, server):
    half = len(PAYLOAD) // 2
    (dirs["staging"] / f"{SHA}.part").write_bytes(PAYLOAD[:half])
    planned = run(tmp_path, url=server, state="planned", **base_args(dirs))
    assert planned["in_place"] is False
    assert planned["needed_bytes"] == len(PAYLOAD) - half
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "downloaded"
    assert RangeHandler.requests == [f"bytes={half}-"]
    assert (dirs["models"] / "model.gguf").read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_models_dir_alone(tmp_path, dirs, server):
    result = run(tmp_path, url=server, **base_args(dirs, sha="0" * 64))
    assert result["failed"] is True
    assert "sha256 mismatch for model.gguf" in result["msg"]
    assert list(dirs["models"].iterdir()) == []
    assert list(dirs["staging"].iterdir()) == []


def test_staged_copy_is_verified_and_moved(tmp_path, dirs):
    staged = dirs["staging"] / "model.gguf"
    staged.write_bytes(PAYLOAD)
    result = run(tmp_path, src=str(staged), **base_args(dirs))
    assert result["action"] == "installed-staged"
    assert not staged.exists()
    assert (dirs["models"] / "model.gguf").read_bytes() == PAYLOAD
    planned = run(tmp_path, src=str(staged), state="planned", size=len(PAYLOAD), **base_args(dirs))
    assert planned == {**planned, "in_place": True, "needed_bytes": 0, "changed": False}


def test_changed_file_is_fetched_again(tmp_path, dirs, server):
    run(tmp_path, url=server, **base_args(dirs))
    dest = dirs["models"] / "model.gguf"
    dest.write_bytes(b"corrupted")
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "downloaded"
    assert dest.read_bytes() == PAYLOAD


def test_existing_good_file_is_adopted_without_download(tmp_path, dirs, server):
    (dirs["models"] / "model.gguf").write_bytes(PAYLOAD)
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "verified-existing"
    assert RangeHandler.requests == []


def test_check_mode_changes_nothing(tmp_path, dirs, server):
    result = run(tmp_path, url=server, _ansible_check_mode=True, **base_args(dirs))
    assert result["changed"] is True
    assert list(dirs["models"].iterdir()) == []
    assert RangeHandler.requests == []


def partial(dirs) -> Path:
    return dirs["staging"] / f"{SHA}.part"


def test_dropped_connection_keeps_the_partial_and_the_next_run_resumes(tmp_path, dirs, server):
    RangeHandler.mode = "drop"
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["failed"] is True
    assert "incomplete" in result["msg"] and "run again" in result["msg"]
    assert "mismatch" not in result["msg"]
    half = len(PAYLOAD) // 2
    assert partial(dirs).read_bytes() == PAYLOAD[:half]
    assert list(dirs["models"].iterdir()) == []
    RangeHandler.mode = "normal"
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "downloaded"
    assert RangeHandler.requests[-1] == f"bytes={half}-"
    assert (dirs["models"] / "model.gguf").read_bytes() == PAYLOAD


def resume_half(dirs, mode: str) -> int:
    """Half the file is already there; the server behaves as `mode` says for the resumed request."""
    half = len(PAYLOAD) // 2
    partial(dirs).write_bytes(PAYLOAD[:half])
    RangeHandler.mode = mode
    return half


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("error-page", "the server ignored the range request (HTTP 200) and sent content that differs"),
        ("wrong-range", "asked for bytes from {half}, the server sent Content-Range 'bytes 0-"),
    ],
)
def test_a_bad_answer_to_the_resumed_request_keeps_the_good_partial(tmp_path, dirs, server, mode, says):
    half = resume_half(dirs, mode)
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["failed"] is True
    assert says.format(half=half) in result["msg"] and "run again" in result["msg"]
    assert partial(dirs).read_bytes() == PAYLOAD[:half]


def test_server_without_ranges_resumes_after_checking_the_prefix(tmp_path, dirs, server):
    resume_half(dirs, "no-ranges")
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "downloaded"
    assert (dirs["models"] / "model.gguf").read_bytes() == PAYLOAD


def test_stalled_transfer_times_out_with_a_message_not_a_traceback(tmp_path, dirs, server):
    RangeHandler.mode = "stall"
    result = run(tmp_path, url=server, timeout=1, **base_args(dirs))
    assert result["failed"] is True
    assert "incomplete" in result["msg"] and "timed out" in result["msg"]
    assert "Traceback" not in result.get("module_stderr", "")
    assert partial(dirs).stat().st_size == 1024 * 1024


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (root only; the Molecule test fills a filesystem on the host whatever runs it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_filesystem_keeps_the_partial_and_names_the_entry(tmp_path, server, small_fs):
    RangeHandler.mode = "normal"
    dirs = {name: small_fs / name for name in ("models", "staging", "verified")}
    for path in dirs.values():
        path.mkdir()
    needed_by = "fleet entry 'coder' (#2): field 'source'"
    result = run(tmp_path, url=server, needed_by=needed_by, **base_args(dirs))
    assert result["failed"] is True
    assert result["msg"].startswith(f"{needed_by}: download of model.gguf is incomplete ("), result["msg"]
    assert "the models filesystem is full ([Errno 28] No space left on device); free space" in result["msg"]
    assert list(dirs["models"].iterdir()) == []
    assert 0 < partial(dirs).stat().st_size < len(PAYLOAD)
    assert PAYLOAD.startswith(partial(dirs).read_bytes())  # what was kept is the file's beginning


def test_partial_of_another_version_of_the_file_is_never_resumed(tmp_path, dirs, server):
    # an interrupted (killed) download of an older version of model.gguf, under the name this module uses
    # now and under the file-name-based one it used before
    for name in (f"{hashlib.sha256(OTHER).hexdigest()}.part", "model.gguf.part"):
        (dirs["staging"] / name).write_bytes(OTHER[: len(OTHER) // 2])
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result["action"] == "downloaded"
    assert RangeHandler.requests == [None]
    assert (dirs["models"] / "model.gguf").read_bytes() == PAYLOAD


def test_planned_size_when_head_is_refused(tmp_path, dirs, server):
    RangeHandler.mode = "no-head"
    planned = run(tmp_path, url=server, state="planned", **base_args(dirs))
    assert planned["needed_bytes"] == len(PAYLOAD)
    assert RangeHandler.requests == ["bytes=0-0"]


def test_planned_unknown_size_fails_clearly_instead_of_counting_zero(tmp_path, dirs, server):
    RangeHandler.mode = "no-size"
    planned = run(tmp_path, url=server, state="planned", **base_args(dirs))
    assert planned["failed"] is True
    assert "cannot be known" in planned["msg"] and "source.size" in planned["msg"]
    planned = run(tmp_path, url=server, state="planned", size=len(PAYLOAD), **base_args(dirs))
    assert planned["needed_bytes"] == len(PAYLOAD)


def test_file_in_place_without_a_record_is_not_counted_as_needed(tmp_path, dirs, server):
    (dirs["models"] / "model.gguf").write_bytes(PAYLOAD)
    planned = run(tmp_path, url=server, state="planned", **base_args(dirs))
    assert planned["in_place"] is True
    assert planned["needed_bytes"] == 0
    result = run(tmp_path, url=server, **base_args(dirs))
    assert result == {**result, "action": "verified-record", "changed": False}


def test_staged_copy_is_removed_when_dest_is_already_right(tmp_path, dirs):
    (dirs["models"] / "model.gguf").write_bytes(PAYLOAD)
    staged = dirs["staging"] / "model.gguf"
    staged.write_bytes(PAYLOAD)
    result = run(tmp_path, src=str(staged), **base_args(dirs))
    assert result["action"] == "verified-existing"
    assert not staged.exists()


def prune(tmp_path, dirs, check=False, models=True) -> dict:
    return run_module(
        "model_prune",
        tmp_path,
        models_dir=str(dirs["models"]),
        staging_dir=str(dirs["staging"]),
        state_dir=str(dirs["verified"]),
        keep=[{"file": "model.gguf", "sha256": SHA, "url": "http://x/model.gguf"}],
        models=models,
        _ansible_check_mode=check,
    )


def test_prune_removes_dropped_files_records_and_abandoned_partials(tmp_path, dirs, server):
    run(tmp_path, url=server, **base_args(dirs))
    old = dirs["models"] / "old.gguf"
    old.write_bytes(b"o" * 5000)
    (dirs["verified"] / "old.gguf.json").write_text("{}")
    (dirs["verified"] / "gone.gguf.json").write_text("{}")
    abandoned = dirs["staging"] / f"{'a' * 64}.part"
    abandoned.write_bytes(b"p" * 700)
    kept_partial = partial(dirs)
    kept_partial.write_bytes(b"k")
    scratch = dirs["staging"] / ".ansible-tmp" / "ansible-tmp-1"
    scratch.mkdir(parents=True)
    (scratch / "source").write_bytes(b"s" * 300)
    planned = prune(tmp_path, dirs, check=True)
    assert planned["changed"] is True and planned["freed_bytes"] == 5000 + 2 + 2 + 700 + 300
    assert old.exists()
    result = prune(tmp_path, dirs)
    assert sorted(Path(path).name for path in result["removed"]) == sorted(
        ["old.gguf", "old.gguf.json", "gone.gguf.json", abandoned.name, "ansible-tmp-1"]
    )
    assert sorted(path.name for path in dirs["models"].iterdir()) == ["model.gguf"]
    assert sorted(path.name for path in dirs["verified"].iterdir()) == ["model.gguf.json"]
    assert kept_partial.exists() and (dirs["staging"] / ".ansible-tmp").is_dir()
    assert prune(tmp_path, dirs)["changed"] is False
    assert run(tmp_path, url=server, **base_args(dirs))["action"] == "verified-record"


def test_prune_keeps_unused_model_files_when_told(tmp_path, dirs):
    old = dirs["models"] / "old.gguf"
    old.write_bytes(b"o")
    record = dirs["verified"] / "old.gguf.json"
    record.write_text("{}")
    assert prune(tmp_path, dirs, models=False)["changed"] is False
    assert old.exists() and record.exists()
