#!/usr/bin/env python3
"""Hold one request inside the router, exactly where ggml-org/llama.cpp#28698's race opens, and say what
became of it: a deterministic reproduction of the eviction race, run on the test host (`make race`).

The race: ensure_model_ready() sees model A ready, and before proxy_request() counts the request, a request
for model B (with --models-max 1) picks the idle A to evict. Here gdb (non-stop mode, so only that thread
stops) holds the A request's thread at the entry of server_models::proxy_request while a B request evicts A
and loads B, then lets it go on. Unpatched, the A request fails (A's process is gone or going); with
roles/llmrig_llamacpp/files/patches/router-eviction-race.patch it waits for A's next process and gets 200.

Runs on the controller against the test container (podman exec), with gdb here attached to the router's
process (the container itself may not ptrace); needs root. Prometheus in the container is stopped meanwhile,
because its scrapes of /metrics?model=... pass through the same function. Exit status 0 when the held request
got HTTP 200.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time

from faults import Host, Outcome, complete


class Gdb:
    """gdb attached to the router in non-stop mode, driven over its stdin."""

    def __init__(self, pid: int) -> None:
        argv = ["gdb", "-q", "-nx", "-iex", "set non-stop on", "-iex", "set pagination off", "-iex", "set confirm off"]
        self.proc = subprocess.Popen(
            [*argv, "-p", str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)

    def send(self, command: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Take the breakpoints out and let the router go on. Never just kill gdb: a breakpoint left in the
        code ends the router with SIGTRAP at its next pass."""
        if self.proc.poll() is not None:
            return
        for command in ("interrupt -a", "delete", "detach", "quit"):
            self.send(command)
            time.sleep(1)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, "".join(self.output))
            if match:
                return match
            time.sleep(0.05)
        return None


def host_pid(container: str, pid: int) -> int:
    """This machine's PID of a process the container knows as `pid`."""
    table = subprocess.check_output(["podman", "top", container, "hpid", "pid"], text=True)
    for line in table.splitlines()[1:]:
        outer, inner = line.split()
        if inner == str(pid):
            return int(outer)
    raise RuntimeError(f"no process {pid} in {container}")


def proxy_request_symbol(pid: int) -> str:
    """The linkage name of server_models::proxy_request in the running binary (a release build has no debug
    information, so gdb knows the function by this name only)."""
    table = subprocess.check_output(["nm", f"/proc/{pid}/exe"], text=True)
    match = re.search(r"^\S+ T (_ZN13server_models13proxy_request\S*)$", table, re.M)
    if not match:
        raise RuntimeError("server_models::proxy_request is not in the router's binary")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="llmrig-demo")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key-file", default=".cache/demo/api-key")
    parser.add_argument("--held", default="gemma-a", help="the model whose request is held (resident first)")
    parser.add_argument("--other", default="gemma-b", help="the model whose request evicts it meanwhile")
    parser.add_argument("--hold", type=float, default=8.0, help="seconds the request is held")
    args = parser.parse_args(argv)
    with open(args.key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()

    host = Host(args.container)
    results: dict[str, Outcome] = {}

    def send(model: str, name: str) -> None:
        results[name] = complete(args.url, key, model, max_tokens=2, timeout=180)

    send(args.held, "warm-up")
    build = host.sh("readlink /opt/llmrig/llama.cpp/current").strip()
    cursor = host.cursor()
    prometheus = host.sh("systemctl is-active prometheus", check=False).strip() == "active"
    if prometheus:
        host.sh("systemctl stop prometheus")
    pid = host_pid(args.container, host.router())
    symbol = proxy_request_symbol(pid)
    gdb = Gdb(pid)
    try:
        gdb.send(f"tbreak *'{symbol}'")
        if not gdb.wait_for(r"Temporary breakpoint 1 at", 60):
            print("gdb did not set the breakpoint:\n" + "".join(gdb.output)[-2000:], file=sys.stderr)
            return 2
        # in non-stop mode the attach stops each thread on its own, and some report it late: let all of them
        # report, then resume every thread
        time.sleep(2)
        gdb.send("continue -a &")
        time.sleep(1)
        held = threading.Thread(target=send, args=(args.held, "held"))
        held.start()
        hit = gdb.wait_for(r"Thread (\d+) .*hit Temporary breakpoint 1", 60)
        if not hit:
            print("the request never reached proxy_request:\n" + "".join(gdb.output)[-2000:], file=sys.stderr)
            return 2
        other = threading.Thread(target=send, args=(args.other, "other"))
        other.start()
        time.sleep(args.hold)
        gdb.send(f"thread {hit.group(1)}")
        gdb.send("continue")
        held.join(200)
        other.join(200)
    finally:
        gdb.close()
        if prometheus:
            host.sh("systemctl start prometheus", check=False)
    log = host.journal_since(cursor)
    evicted = f"evicting idle LRU name={args.held}" in log or f"removing LRU name={args.held}" in log
    held_outcome = results.get("held", Outcome(0, 0.0, error="no answer"))
    other_outcome = results.get("other", Outcome(0, 0.0, error="no answer"))
    said = held_outcome.answer or held_outcome.error or ""
    print(f"build {build}: the {args.held} request held {args.hold:.0f} s at proxy_request's entry")
    print(f"  {args.held} evicted for {args.other} meanwhile (router journal): {'yes' if evicted else 'NO'}")
    print(f"  {args.other} request: HTTP {other_outcome.status}")
    print(f"  held request: HTTP {held_outcome.status} after {held_outcome.seconds:.1f} s {said}".rstrip())
    return 0 if held_outcome.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
