#!/usr/bin/python3
"""Check a llama-server presets file with the llama-server that will read it.

Usage: llmrig-check-presets LLAMA_SERVER PRESETS

Starts the router on a free loopback port with model autoloading off and every load-on-startup removed,
so no model is loaded. llama-server rejects unknown option names in a preset at startup; this turns that
into a failed Ansible `validate:` before the real presets file is replaced. Exit 0 when the router starts
listening, 1 (with its output) when it exits instead.
"""

import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, presets = sys.argv[1], sys.argv[2]
    if not os.access(binary, os.X_OK):
        print(f"llmrig-check-presets: {binary} is not an executable llama-server", file=sys.stderr)
        return 1
    with open(presets, encoding="utf-8") as handle:
        text = re.sub(r"(?m)^\s*load-on-startup\s*=.*$", "", handle.read())
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as copy:
        copy.write(text)
    argv = [
        binary,
        "--models-preset",
        copy.name,
        "--models-max",
        "1",
        "--no-models-autoload",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=1):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "listening on" in line:
                return 0
        print("".join(output[-20:]), file=sys.stderr)
        print(f"llmrig-check-presets: llama-server did not accept {presets}", file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(copy.name)


if __name__ == "__main__":
    sys.exit(main())
