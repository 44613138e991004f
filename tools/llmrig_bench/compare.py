"""Compare the variants of a run: every other variant against the first (A, the baseline), per concurrency
level and metric, with the statistics of stats.compare; warm-up requests, swap probes and failed requests are
left out. Swap latencies are compared on their own (`swap_s`) where both variants swapped three times or more."""

from __future__ import annotations

from typing import Any

from .stats import Comparison, compare

# metric -> (how to read it from a record, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "decode_tps": ("timings.predicted_per_second", True),
    "prompt_tps": ("timings.prompt_per_second", True),
    "client_decode_tps": ("client_decode_tps", True),
    "ttft_s": ("ttft_s", False),
    "e2e_s": ("e2e_s", False),
}


def value(record: dict[str, Any], path: str) -> float | None:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return float(node)


def answered(record: dict[str, Any]) -> bool:
    return bool(record["status"] == 200 and record["error"] is None)


def kept(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the statistics use: answered (HTTP 200, no client error), not warm-up, not a swap probe."""
    return [r for r in records if not r["warmup"] and not r.get("swap") and answered(r)]


def swaps(records: list[dict[str, Any]], variant: str) -> list[float]:
    """Swap latencies of a variant's model (warm-up rounds included: a swap is a swap)."""
    return [r["e2e_s"] for r in records if r.get("swap") and r["variant"] == variant and answered(r)]


def samples(records: list[dict[str, Any]], variant: str, level: int, path: str) -> list[float]:
    out = []
    for record in kept(records):
        if record["variant"] != variant or record["concurrency"] != level:
            continue
        v = value(record, path)
        if v is not None:
            out.append(v)
    return out


def compare_run(results: dict[str, Any], threshold: float = 0.02) -> list[Comparison]:
    names = list(results["variants"])
    records = results["records"]
    levels = sorted({r["concurrency"] for r in records})
    out = []
    for other in names[1:]:
        for level in levels:
            for metric, (path, higher) in METRICS.items():
                a = samples(records, names[0], level, path)
                b = samples(records, other, level, path)
                if len(a) < 3 or len(b) < 3:
                    continue  # e.g. client-side figures of a run that was not streamed
                label = f"{metric} {other} v {names[0]} @{level}"
                out.append(compare(a, b, metric=label, higher_is_better=higher, threshold=threshold))
        # swap latency, where both models were swapped in often enough (any level: a load is a load)
        a, b = swaps(records, names[0]), swaps(records, other)
        if len(a) >= 3 and len(b) >= 3:
            label = f"swap_s {other} v {names[0]}"
            out.append(compare(a, b, metric=label, higher_is_better=False, threshold=threshold))
    return out
