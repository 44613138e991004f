"""Stress: the workload's first variant at its highest concurrency level, again and again for N cycles (6 by
default, as the reference rig's operator kept a setting only after six sustained runs). Per cycle: requests,
failures, median decode tokens/s (server timings) and its drift from the first cycle. A setting that is
unstable shows up as failures or as speed that sinks from cycle to cycle."""

from __future__ import annotations

import statistics
import time
from typing import Any

from .runner import send_round
from .workload import Workload

CYCLES = 6


def stress(workload: Workload, base_url: str, key: str, cycles: int = CYCLES, timeout: float = 600) -> dict[str, Any]:
    variant, level = workload.variants[0], max(workload.concurrency)
    rows: list[dict[str, Any]] = []
    for cycle in range(1, cycles + 1):
        began = time.perf_counter()
        records = [
            record
            for _ in range(workload.repetitions)
            for record in send_round(workload, variant, level, base_url, key, timeout)
        ]
        failed = [r for r in records if r["status"] != 200 or r["error"] is not None]
        speeds = [r["timings"]["predicted_per_second"] for r in records if r["timings"].get("predicted_per_second")]
        median = statistics.median(speeds) if speeds else None
        first = rows[0]["decode_tps_median"] if rows else median
        rows.append(
            {
                "cycle": cycle,
                "requests": len(records),
                "failed": len(failed),
                "first_error": failed[0]["error"] if failed else None,
                "seconds": time.perf_counter() - began,
                "decode_tps_median": median,
                "decode_tps": speeds,
                "drift": (median - first) / first if median is not None and first else None,
            }
        )
    return {"workload": workload.name, "model": variant.model, "concurrency": level, "cycles": rows}


def summary(result: dict[str, Any]) -> str:
    lines = [f"stress {result['workload']} ({result['model']}, {result['concurrency']} at a time):"]
    for row in result["cycles"]:
        speed = f"{row['decode_tps_median']:.1f}" if row["decode_tps_median"] is not None else "-"
        drift = f"{row['drift']:+.1%}" if row["drift"] is not None else "-"
        lines.append(
            f"  cycle {row['cycle']}: {row['requests']} requests, {row['failed']} failed,"
            f" decode {speed} tokens/s (drift {drift}), {row['seconds']:.1f} s"
        )
    return "\n".join(lines)
