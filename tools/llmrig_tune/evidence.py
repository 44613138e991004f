"""A tuning step's evidence, read from what the harness wrote for it: for a GPU step first whether the value
was set at all (applied.json, written by the role), the determinism check's outcome
(`determinism check --json`), the A/B run's results and comparisons (`run`, `compare --json` or the report's
comparisons.json) and the stress cycles (`stress --out`). The candidate is the variant after the first."""

from __future__ import annotations

from typing import Any

from llmrig_bench.runner import spec_totals
from llmrig_bench.stats import compare

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
    determinism: dict[str, Any] | None,
    results: dict[str, Any] | None = None,
    comparisons: list[dict[str, Any]] | None = None,
    stress: dict[str, Any] | None = None,
    applied: dict[str, Any] | None = None,
) -> Evidence:
    """A step's evidence from what ran: a step stops measuring at its first failure (the value could not be
    set: nothing else; greedy output changed: no A/B; slower: no stress), so the later parts may be missing."""
    if applied is not None and not applied.get("ok"):
        said = str(applied.get("said") or "the tuning tool failed").strip()
        return Evidence(deterministic=False, verdict="not measured", measured=["apply"], apply_error=said)
    if determinism is None:
        raise ValueError("no determinism check in the step's directory")
    out = Evidence(
        deterministic=bool(determinism["ok"]),
        divergence=determinism.get("divergence"),
        verdict="not measured",
        measured=["determinism"],
    )
    if results is not None and comparisons is not None:
        names = list(results["variants"])
        if len(names) < 2:
            raise ValueError("the A/B run needs the baseline and the candidate as its first two variants")
        baseline, candidate = names[0], names[1]
        decode = decode_comparison(comparisons, candidate, baseline)
        totals = spec_totals(results)
        drafted = totals[baseline]["timings_drafted"] and totals[candidate]["timings_drafted"]
        out.acceptance = totals[candidate]["acceptance"] if drafted else None
        out.baseline_acceptance = totals[baseline]["acceptance"] if drafted else None
        out.verdict, out.change = str(decode["verdict"]), float(decode["change"])
        if len(names) > 2:  # the control: the baseline's model again under another name
            out.control = str(decode_comparison(comparisons, names[2], baseline)["verdict"])
        out.measured.append("ab")
    if stress is not None:
        cycles = stress["cycles"]
        later = [row for row in cycles[1:] if row.get("drift") is not None]
        out.stress_failed = sum(int(row["failed"]) for row in cycles)
        if later:
            worst = min(later, key=lambda row: row["drift"])
            out.stress_drift = worst["drift"]
            rates = (cycles[0].get("decode_tps") or [], worst.get("decode_tps") or [])
            if all(len(r) >= 3 for r in rates):
                out.stress_drift_verdict = compare(rates[0], rates[1], metric="stress decode_tps", threshold=0).verdict
        out.measured.append("stress")
    return out
