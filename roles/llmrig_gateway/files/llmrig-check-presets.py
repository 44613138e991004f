#!/usr/bin/python3
"""Check a llama-server presets file with the llama-server that will read it.

Usage: llmrig-check-presets LLAMA_SERVER PRESETS

Starts the router on a free loopback port with model autoloading off and every load-on-startup removed,
so no model is loaded. llama-server rejects unknown option names in a preset at startup; this turns that
into a failed Ansible `validate:` before the real presets file is replaced. Exit 0 when the router starts
listening, 1 (with its output) when it exits instead or does not listen within the timeout
(LLMRIG_CHECK_PRESETS_TIMEOUT seconds, default 60).

The router it starts needs a random key of its own, and it never outlives this checker: SIGTERM, SIGHUP and
SIGINT stop it, and the kernel kills it should the checker itself be killed (PR_SET_PDEATHSIG).
"""

import ctypes
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

PR_SET_PDEATHSIG = 1
READY = b"listening on"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the checker dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_on_signals() -> None:
    """Turn the signals a service manager or a terminal sends into a normal exit, so cleanup runs."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, leave)


def wait_until_listening(proc: subprocess.Popen, timeout: float) -> tuple[bool, bytes]:
    """Read the raw pipe (no buffered reader, which could hold the line back) until the ready line."""
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return False, output
        output += chunk
        if READY in output:
            return True, output
    return False, output


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, presets = sys.argv[1], sys.argv[2]
    if not os.access(binary, os.X_OK):
        print(f"llmrig-check-presets: {binary} is not an executable llama-server", file=sys.stderr)
        return 1
    stop_on_signals()
    timeout = float(os.environ.get("LLMRIG_CHECK_PRESETS_TIMEOUT", "60"))
    with open(presets, encoding="utf-8") as handle:
        text = re.sub(r"(?m)^\s*load-on-startup\s*=.*$", "", handle.read())
    scratch = tempfile.mkdtemp(prefix="llmrig-check-presets.")
    copy, key = os.path.join(scratch, "presets.ini"), os.path.join(scratch, "api-key")
    proc = None
    try:
        with open(copy, "w", encoding="utf-8") as handle:
            handle.write(text)
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        argv = [
            binary,
            "--models-preset",
            copy,
            "--models-max",
            "1",
            "--no-models-autoload",
            "--api-key-file",
            key,
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ]
        env = dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID")  # as the gateway's unit runs it
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, env=env
        )
        ready, output = wait_until_listening(proc, timeout)
        if ready:
            return 0
        lines = output.decode(errors="replace").splitlines()
        print("\n".join(lines[-20:]), file=sys.stderr)
        print(f"llmrig-check-presets: llama-server did not accept {presets}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in (copy, key):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(scratch)


if __name__ == "__main__":
    sys.exit(main())
