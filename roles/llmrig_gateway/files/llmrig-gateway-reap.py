#!/usr/bin/python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ExecStopPost of llmrig-gateway: stop model processes the router left behind.

A router that stops normally has stopped its model processes before it exits, and this finds nothing. A
router that died (kill -9, a crash) leaves them running: they notice the router is gone when their stdin
closes, but one that is stuck (in a GPU driver call, say) would keep its VRAM and the next model could not
load. systemd does not kill them itself: with KillMode=mixed it signals only the main process unless the
stop times out. So every other process of the unit's cgroup gets SIGTERM, then SIGKILL after the grace.

Usage: llmrig-gateway-reap [GRACE_SECONDS]   (default 1)
"""

from __future__ import annotations

import os
import signal
import sys
import time


def procs_file() -> str | None:
    """The cgroup.procs file of this process's unit: legacy, hybrid and unified hierarchies."""
    legacy = unified = None
    with open("/proc/self/cgroup", encoding="ascii") as handle:
        for line in handle:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0":
                unified = path
            elif controllers == "name=systemd":
                legacy = path
    candidates = []
    if legacy is not None:
        candidates.append(f"/sys/fs/cgroup/systemd{legacy}/cgroup.procs")
    if unified is not None:
        candidates += [f"/sys/fs/cgroup/unified{unified}/cgroup.procs", f"/sys/fs/cgroup{unified}/cgroup.procs"]
    return next((path for path in candidates if os.path.isfile(path)), None)


def others(path: str) -> set[int]:
    with open(path, encoding="ascii") as handle:
        return {int(pid) for pid in handle.read().split()} - {os.getpid()}


def name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def listing(pids: set[int]) -> str:
    return ", ".join(f"{pid} ({name(pid)})" for pid in sorted(pids))


def signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    grace = float(argv[1]) if len(argv) > 1 else 1.0
    path = procs_file()
    if path is None:
        print("llmrig-gateway-reap: cannot find this unit's cgroup; left-over processes not checked", file=sys.stderr)
        return 0
    left = others(path)
    if not left:
        return 0
    print("llmrig-gateway-reap: stopping left-over processes:", listing(left))
    signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = others(path)
    if left:
        print("llmrig-gateway-reap: killing", listing(left))
        signal_all(left, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
