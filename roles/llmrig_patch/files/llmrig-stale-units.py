#!/usr/bin/python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which systemd units run processes that still map files an upgrade replaced (a library or program under
/usr or /lib whose mapping /proc/PID/maps marks "(deleted)"): they run the old code until restarted.

Prints JSON {"stale": {unit: [paths]}, "restart": [units]}: "restart" are the stale units whose name matches
one of the shell-style patterns given as arguments (the ones the patch role restarts). A process outside any
service unit (a session, the kernel) is left out.

Reading another user's /proc/PID/maps takes CAP_SYS_PTRACE, which root has on a host but not in a container.
So the maps root cannot read are read by a copy of this script running as their owner (setpriv), which may
read its own user's processes.

Usage: llmrig-stale-units.py [PATTERN ...]
       llmrig-stale-units.py --pids PID,... (the per-user copy: prints {pid: [paths]})"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys

DELETED = re.compile(r"\s(/(?:usr|lib|lib64|bin|sbin)/\S+) \(deleted\)$")
SERVICE = re.compile(r"/([^/]+\.service)(?:/|$)")


def unit_of(pid: str) -> str | None:
    """The service unit from the process's cgroup path (v2 "0::/system.slice/x.service", or the v1
    name=systemd hierarchy)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "name=systemd"):
            found = SERVICE.findall(path)
            if found:
                return str(found[-1])
    return None


def replaced(pid: str) -> set[str] | None:
    """The replaced files a process maps; None when its maps cannot be read (not allowed, or it is gone)."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            return {m.group(1) for m in map(DELETED.search, handle) if m}
    except OSError:
        return None


def as_owner(pids: list[str]) -> dict[str, list[str]]:
    """Read the maps of other users' processes as their owners: one setpriv'd copy of this script per user."""
    owners: dict[tuple[int, int], list[str]] = {}
    for pid in pids:
        try:
            stat = os.stat(f"/proc/{pid}")
        except OSError:
            continue
        if stat.st_uid != 0:
            owners.setdefault((stat.st_uid, stat.st_gid), []).append(pid)
    found: dict[str, list[str]] = {}
    # the copy gets this script's text, not its path: the owner may not be allowed to read the file
    with open(__file__, encoding="utf-8") as handle:
        source = handle.read()
    for (uid, gid), owned in owners.items():
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all"]
        command += [sys.executable, "-c", source, "--pids", ",".join(owned)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode == 0:
            found.update(json.loads(result.stdout))
    return found


def main() -> None:
    if sys.argv[1:2] == ["--pids"]:
        maps = {pid: replaced(pid) for pid in sys.argv[2].split(",")}
        print(json.dumps({pid: sorted(paths) for pid, paths in maps.items() if paths}))
        return
    units: dict[str, set[str]] = {}
    unreadable = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        unit = unit_of(pid)
        if unit is None:
            continue
        paths = replaced(pid)
        if paths is None:
            unreadable.append(pid)
        elif paths:
            units.setdefault(unit, set()).update(paths)
    if unreadable and os.geteuid() == 0:
        for pid, paths in as_owner(unreadable).items():
            unit = unit_of(pid)
            if unit:
                units.setdefault(unit, set()).update(paths)
    stale = {unit: sorted(paths) for unit, paths in sorted(units.items())}
    restart = [unit for unit in stale if any(fnmatch.fnmatchcase(unit, p) for p in sys.argv[1:])]
    print(json.dumps({"stale": stale, "restart": restart}))


if __name__ == "__main__":
    main()
