"""The presets checker against fake llama-servers: output that arrives in one write, and being stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "roles/llmrig_gateway/files/llmrig-check-presets.py"


def fake_server(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for llama-server: records its pid and argv, then runs `body`."""
    path = tmp_path / "llama-server"
    path.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        f"open({str(tmp_path / 'argv')!r}, 'w').write(' '.join(sys.argv))\n"
        f"{body}\n"
    )
    path.chmod(0o755)
    return path


def presets(tmp_path: Path) -> Path:
    path = tmp_path / "presets.ini"
    path.write_text("[m]\nmodel = /m.gguf\nload-on-startup = true\n")
    return path


def check(binary: Path, ini: Path, timeout: float = 5) -> subprocess.CompletedProcess:
    env = dict(os.environ, LLMRIG_CHECK_PRESETS_TIMEOUT=str(timeout), TMPDIR=str(ini.parent))
    return subprocess.run(
        [sys.executable, str(CHECKER), str(binary), str(ini)], capture_output=True, text=True, env=env, timeout=60
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_ready_line_in_the_same_write_as_an_earlier_line_is_seen(tmp_path):
    binary = fake_server(
        tmp_path,
        "sys.stdout.write('main: loading presets\\nmain: server is listening on http://127.0.0.1:1\\n')\n"
        "sys.stdout.flush(); time.sleep(30)",
    )
    started = time.monotonic()
    result = check(binary, presets(tmp_path))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 4
    assert not alive(int((tmp_path / "pid").read_text()))
    assert list(tmp_path.glob("llmrig-check-presets.*")) == []


def test_the_checked_router_needs_a_key_and_loads_nothing(tmp_path):
    binary = fake_server(tmp_path, "print('server is listening on x', flush=True); time.sleep(30)")
    assert check(binary, presets(tmp_path)).returncode == 0
    argv = (tmp_path / "argv").read_text().split()
    assert "--api-key-file" in argv and "--no-models-autoload" in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_router_that_exits_fails_the_check_with_its_output(tmp_path):
    binary = fake_server(tmp_path, "print('error: unknown option bogus-option', flush=True); sys.exit(1)")
    result = check(binary, presets(tmp_path))
    assert result.returncode == 1
    assert "unknown option bogus-option" in result.stderr


def test_router_that_never_listens_fails_after_the_timeout(tmp_path):
    binary = fake_server(tmp_path, "print('loading', flush=True); time.sleep(30)")
    result = check(binary, presets(tmp_path), timeout=1)
    assert result.returncode == 1
    assert not alive(int((tmp_path / "pid").read_text()))


def run_and_signal(tmp_path: Path, signum: int) -> int:
    binary = fake_server(tmp_path, "print('loading', flush=True); time.sleep(60)")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(CHECKER), str(binary), str(presets(tmp_path))], env=env)
    for _ in range(100):
        if (tmp_path / "pid").exists() and (tmp_path / "pid").read_text():
            break
        time.sleep(0.05)
    child = int((tmp_path / "pid").read_text())
    assert alive(child)
    proc.send_signal(signum)
    proc.wait(timeout=20)
    for _ in range(100):
        if not alive(child):
            break
        time.sleep(0.05)
    return child


def test_sigterm_and_sighup_stop_the_router_it_started(tmp_path):
    for signum in (signal.SIGTERM, signal.SIGHUP):
        directory = tmp_path / str(signum)
        directory.mkdir()
        assert not alive(run_and_signal(directory, signum))
        assert list(directory.glob("llmrig-check-presets.*")) == []


def test_sigkill_of_the_checker_still_stops_the_router(tmp_path):
    assert not alive(run_and_signal(tmp_path, signal.SIGKILL))
