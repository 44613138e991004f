"""What each compile of a build cost, read from ccache's log (ccache.conf: log_file).

ccache writes one "=== CCACHE ... STARTED" line when it starts for a compile, then lines that name the
source file and the outcome ("Result: cache_hit" or "cache_miss" among them), each line stamped with the
time and the process id. A compile lasts from its start line to its process's last line. Process ids are
reused in a long build, so a new start line of a pid closes that pid's previous compile.

    python3 tools/ccache_times.py ccache.log [--since 2026-12-03T19:52:00]
prints the compiles by kind (CUDA or C/C++, hit or miss) with their count and summed seconds."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import datetime

LINE = re.compile(r"^\[(?P<time>\d{4}-\d\d-\d\dT[\d:.]+) (?P<pid>\d+)\s*\] (?P<text>.*)$")


@dataclass
class Compile:
    source: str = ""
    start: datetime | None = None
    end: datetime | None = None
    hit: bool | None = None
    compiler: str = ""

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds() if self.start and self.end else 0.0

    @property
    def cuda(self) -> bool:
        return self.compiler == "nvcc" or self.source.endswith(".cu")


def parse(lines: list[str], since: datetime | None = None) -> list[Compile]:
    """The compiles in the log that started at `since` or later, in the order they started; lines that
    are not ccache's (or are cut off) are skipped."""
    compiles: list[Compile] = []
    open_by_pid: dict[str, Compile] = {}
    for line in lines:
        match = LINE.match(line.rstrip("\n"))
        if not match:
            continue
        when = datetime.fromisoformat(match["time"])
        pid, text = match["pid"], match["text"]
        if "=== CCACHE" in text and "STARTED" in text:
            current = Compile(start=when, end=when)
            open_by_pid[pid] = current
            if since is None or when >= since:
                compiles.append(current)
            continue
        running = open_by_pid.get(pid)
        if running is None:
            continue
        running.end = when
        if text.startswith("Source file: "):
            running.source = text.removeprefix("Source file: ")
        elif text.startswith("Compiler type: "):
            running.compiler = text.removeprefix("Compiler type: ")
        elif text in ("Result: cache_hit", "Result: direct_cache_hit", "Result: preprocessed_cache_hit"):
            running.hit = True
        elif text == "Result: cache_miss":
            running.hit = False
    # ccache also runs for calls that compile nothing (a link, a version probe): no source, no result
    return [c for c in compiles if c.source and c.hit is not None]


def summary(compiles: list[Compile]) -> dict[str, dict[str, float]]:
    """{"cuda miss": {"count": n, "seconds": s}, ...} for the kinds present."""
    table: dict[str, dict[str, float]] = {}
    for c in compiles:
        key = f"{'cuda' if c.cuda else 'c/c++'} {'hit' if c.hit else 'miss'}"
        row = table.setdefault(key, {"count": 0, "seconds": 0.0})
        row["count"] += 1
        row["seconds"] += c.seconds
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--since", type=datetime.fromisoformat, default=None)
    args = parser.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="replace") as handle:
        compiles = parse(handle.readlines(), args.since)
    for kind, row in sorted(summary(compiles).items()):
        print(f"{kind:12} {int(row['count']):5d} compiles {row['seconds']:9.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
