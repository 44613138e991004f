"""The short benchmark after patching against the one before it, per model: the harness's statistics on the
decode rate (which gates) and the time to first token (reported). The two runs are minutes apart, not
interleaved, so a change smaller than the flag threshold is noise the run cannot tell from drift; the
threshold is a practical one, and only a regression the statistics call and that exceeds `fail_at` fails
the run."""

from __future__ import annotations

from typing import Any

from llmrig_bench.compare import METRICS, samples
from llmrig_bench.stats import REGRESSED, compare

GATED = "decode_tps"
REPORTED = ("decode_tps", "ttft_s")


def compare_runs(
    before: dict[str, Any], after: dict[str, Any], *, flag_at: float, fail_at: float
) -> list[dict[str, Any]]:
    """One entry per model (variant) and metric present in both runs, at the lowest concurrency level."""
    out = []
    for variant in before["variants"]:
        if variant not in after["variants"]:
            continue
        level = min(r["concurrency"] for r in before["records"])
        for metric in REPORTED:
            path, higher = METRICS[metric]
            a = samples(before["records"], variant, level, path)
            b = samples(after["records"], variant, level, path)
            if len(a) < 3 or len(b) < 3:
                continue
            result = compare(a, b, metric=metric, higher_is_better=higher, threshold=flag_at)
            worse_by = -result.change if higher else result.change
            flagged = result.verdict == REGRESSED
            out.append(
                {
                    "model": variant,
                    **result.as_dict(),
                    "flagged": flagged,
                    "failed": flagged and metric == GATED and worse_by > fail_at,
                }
            )
    return out
