"""Bad model downloads end to end on the live container, through the playbooks a user runs: a truncated file,
a server that closes the connection halfway, a wrong sha256, and the models filesystem filling up during a
download. Each must leave the models directory without a partial or unverified file, fail with one message
that names the fleet entry, and leave the running service serving the fleet it had.

The files come from an HTTP server in this test process (the controller), reached by the planner on the
controller and by the download on the host at the podman network's gateway address; it serves the real test
model, whose GGUF header the planner reads with range requests before anything is downloaded. The full
filesystem is a 320 MB tmpfs of the container (.config/molecule/config.yml) that the server fills, through
podman exec, once it has sent half the file: something else taking the space mid-download."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from llmrig_testlib import TEST_HOST, complete, router_pid, run_playbook

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / ".cache/models/gemma-3-270m-q4_k_m.gguf"
MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GROUP_VARS_FLEET = yaml.safe_load((REPO / "group_vars/llmrig_test.yml").read_text())["llmrig_fleet"]
SMALL = "/var/lib/llmrig-small"


class Files(http.server.BaseHTTPRequestHandler):
    """The test model under /MODE/NAME, MODE one of: full (ranges honoured), truncated (the first half as a
    whole document), closes (the whole length announced, half of it sent, then the connection closed), fills
    (the whole file, but after half of it on_half["fills"] runs)."""

    data = b""
    # what runs in fills mode once half the file is sent
    on_half: ClassVar[dict[str, Callable[[], None]]] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest's output to the results
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        mode = self.path.split("/")[1]
        data = self.data[: len(self.data) // 2] if mode == "truncated" else self.data
        start, end = 0, len(data) - 1
        match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not send_body:
            return
        half = len(data) // 2
        try:
            if mode in ("closes", "fills") and start < half <= end:
                self.wfile.write(data[start:half])
                self.wfile.flush()
                if mode == "closes":
                    self.close_connection = True
                    return
                self.on_half["fills"]()
                self.wfile.write(data[half : end + 1])
            else:
                self.wfile.write(data[start : end + 1])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


@pytest.fixture(scope="module")
def files(host) -> Iterator[str]:
    """Base URL of the file server, at the address the container reaches this machine by."""
    gateway = host.run("ip route show default").stdout.split()[2]
    Files.data = MODEL.read_bytes()
    server = http.server.ThreadingHTTPServer((gateway, 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{gateway}:{server.server_address[1]}"
    server.shutdown()
    Files.data = b""


def entry(name: str, url: str, sha256: str = MODEL_SHA256) -> dict:
    return {"name": name, "source": {"url": url, "sha256": sha256, "file": f"{name}.gguf"}, "context": 1024}


def flat(output: str) -> str:
    """Ansible's output on one line: the callback wraps long messages."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", output).split())


def test_truncated_cut_off_and_wrong_checksum_files_change_nothing(host, files):
    models_before = host.run("ls -A /var/lib/llmrig/models").stdout.split()
    presets_before = host.file("/etc/llmrig/presets.ini").sha256sum
    pid = router_pid(host)
    bad = [
        entry("bad-truncated", f"{files}/truncated/bad-truncated.gguf"),
        entry("bad-closes", f"{files}/closes/bad-closes.gguf"),
        entry("bad-sha", f"{files}/full/bad-sha.gguf", sha256="0" * 64),
        # a copy from the controller with the wrong sha256 (a path source, staged on the host first)
        {
            "name": "bad-copy",
            "source": {"path": str(MODEL), "sha256": "0" * 64, "file": "bad-copy.gguf"},
            "context": 1024,
        },
    ]
    try:
        returncode, output = run_playbook(
            TEST_HOST, ["llm_servers", "llmrig_test"], "site.yml", {"llmrig_fleet": [*GROUP_VARS_FLEET, *bad]}
        )
        assert returncode != 0, output[-3000:]
        said = flat(output)
        half = MODEL.stat().st_size // 2
        first = len(GROUP_VARS_FLEET) + 1  # the number of the first bad entry, after the group_vars fleet
        # one message per entry, each naming it and the field
        assert (
            f"fleet entry 'bad-truncated' (#{first}): field 'source': sha256 mismatch for bad-truncated.gguf:"
            f" all {half} bytes arrived" in said
        ), said[-4000:]
        assert (
            f"fleet entry 'bad-closes' (#{first + 1}): field 'source': download of bad-closes.gguf is incomplete"
            f" ({half} of {2 * half} bytes)" in said
        ), said[-4000:]
        assert f"the partial file /var/lib/llmrig/staging/{MODEL_SHA256}.part was kept; run again to resume" in said
        for offset, name in ((2, "bad-sha"), (3, "bad-copy")):
            message = f"fleet entry '{name}' (#{first + offset}): field 'source': sha256 mismatch for {name}.gguf"
            assert message in said, said[-4000:]
        # nothing reached the models directory, the presets or the router
        assert host.run("ls -A /var/lib/llmrig/models").stdout.split() == models_before
        assert host.run("ls -A /var/lib/llmrig/staging").stdout.split() == [f"{MODEL_SHA256}.part"]
        assert host.file("/etc/llmrig/presets.ini").sha256sum == presets_before
        assert router_pid(host) == pid
        for model in ("gemma-a", "gemma-b"):
            assert complete(model, max_tokens=4)["usage"]["completion_tokens"] > 0
    finally:
        host.run("rm -f /var/lib/llmrig/staging/*.part")


MODELS_ONLY = [
    {
        "name": "The models role alone, on the container's small filesystem",
        "hosts": "llm_servers",
        "become": True,
        "roles": [{"role": "llmrig_models"}],
    }
]


def test_a_models_filesystem_that_fills_up_mid_download_keeps_the_models_dir_clean(host, files, tmp_path):
    assert host.run("findmnt -n -o FSTYPE %s", SMALL).stdout.strip() == "tmpfs"
    filler = f"{SMALL}/filler"

    def fill() -> None:
        """Another writer takes all but 1 MiB of the filesystem."""
        host.run(f"fallocate -l $(( $(df --output=avail -B1 {SMALL} | tail -1) - 1048576 )) {filler}")

    Files.on_half["fills"] = fill
    playbook = tmp_path / "models-only.yml"
    playbook.write_text(json.dumps(MODELS_ONLY))
    small = {
        "llmrig_models_dir": f"{SMALL}/models",
        "llmrig_models_reserve_bytes": 0,
        "llmrig_fleet": [entry("gemma-fills", f"{files}/fills/gemma-fills.gguf")],
    }
    pid = router_pid(host)
    try:
        returncode, output = run_playbook(TEST_HOST, ["llm_servers", "llmrig_test"], str(playbook), small)
        assert returncode != 0, output[-3000:]
        said = flat(output)
        assert "fleet entry 'gemma-fills' (#1): field 'source': download of gemma-fills.gguf is incomplete" in said, (
            said[-4000:]
        )
        assert "the models filesystem is full ([Errno 28] No space left on device); free space on the models" in said
        assert f"of it are the partial file {SMALL}/staging/{MODEL_SHA256}.part, kept to resume" in said
        assert host.run("ls -A %s/models", SMALL).stdout.split() == []
        # the service on the real models directory never noticed
        assert router_pid(host) == pid
        assert complete("gemma-a", max_tokens=4)["usage"]["completion_tokens"] > 0
    finally:
        Files.on_half.clear()
        host.run("rm -rf %s/filler %s/models %s/staging %s/verified", SMALL, SMALL, SMALL, SMALL)
