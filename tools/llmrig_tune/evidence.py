"""A tuning step's evidence, read from what the harness wrote for it: the determinism check's outcome
(`determinism check --json`), the A/B run's results and comparisons (`run`, `compare --json` or the report's
comparisons.json) and the stress cycles (`stress --out`). The candidate is the variant after the first."""

from __future__ import annotations

from typing import Any

from llmrig_bench.runner import spec_totals

from .engine import Evidence


def decode_comparison(comparisons: list[dict[str, Any]], variant: str, baseline: str) -> dict[str, Any]:
    """The decode-rate comparison of the variant against the baseline at the lowest concurrency level."""
    prefix = f"decode_tps {variant} v {baseline} @"
    found = sorted(
        (c for c in comparisons if c["metric"].startswith(prefix)), key=lambda c: int(c["metric"][len(prefix) :])
    )
    if not found:
        raise ValueError(f"no decode_tps comparison of {variant} against {baseline} in the run")
    return found[0]


def evidence(
    determinism: dict[str, Any],
    results: dict[str, Any],
    comparisons: list[dict[str, Any]],
    stress: dict[str, Any] | None = None,
) -> Evidence:
    names = list(results["variants"])
    if len(names) < 2:
        raise ValueError("the A/B run needs the baseline and the candidate as its first two variants")
    baseline, candidate = names[0], names[1]
    decode = decode_comparison(comparisons, candidate, baseline)
    totals = spec_totals(results)
    drafted = totals[baseline]["timings_drafted"] and totals[candidate]["timings_drafted"]
    cycles = stress["cycles"] if stress else []
    drifts = [row["drift"] for row in cycles if row.get("drift") is not None]
    return Evidence(
        deterministic=bool(determinism["ok"]),
        divergence=determinism.get("divergence"),
        acceptance=totals[candidate]["acceptance"] if drafted else None,
        baseline_acceptance=totals[baseline]["acceptance"] if drafted else None,
        stress_failed=sum(int(row["failed"]) for row in cycles),
        stress_drift=min(drifts) if drifts else None,
        verdict=str(decode["verdict"]),
        change=float(decode["change"]),
    )
