"""The model_file module run for real (as Ansible runs it) against a local HTTP server with range support."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
from llmrig_testlib import run_module

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str | None] = []  # noqa: RUF012 - shared log of Range headers, reset per test

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()

    def do_GET(self) -> None:
        RangeHandler.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])


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
    (dirs["staging"] / "model.gguf.part").write_bytes(PAYLOAD[:half])
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
