"""A versus B for one benchmark metric: the medians, the relative difference of the medians with a bootstrap
confidence interval, a Mann-Whitney rank test, and a verdict against a practical threshold.

A change is called only when all three agree: the rank test rejects "same distribution" at `alpha`, the
confidence interval of the relative difference excludes 0, and the difference of the medians is at least
`threshold` (a change too small to matter is "no change" however sure it is). numpy does the resampling and
scipy the rank test; nothing here is hand-rolled statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

IMPROVED, REGRESSED, NO_CHANGE = "improved", "regressed", "no change"
MIN_SAMPLES = 3


@dataclass(frozen=True)
class Comparison:
    metric: str
    higher_is_better: bool
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    change: float  # (median_b - median_a) / median_a
    ci_low: float  # bootstrap confidence interval of `change`
    ci_high: float
    confidence: float
    p_value: float  # Mann-Whitney U, two-sided
    threshold: float
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a report: medians, change with its interval, p-value and verdict."""
        return (
            f"{self.metric}: A {self.median_a:.4g} (n={self.n_a}), B {self.median_b:.4g} (n={self.n_b}),"
            f" change {self.change:+.1%} [{self.ci_low:+.1%}, {self.ci_high:+.1%}] at {self.confidence:.0%},"
            f" p={self.p_value:.3g}: {self.verdict}"
        )


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) < MIN_SAMPLES:
        raise ValueError(f"{name}: at least {MIN_SAMPLES} values are needed, got {len(array)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: every value must be a finite number")
    return array


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str = "value",
    higher_is_better: bool = True,
    threshold: float = 0.02,
    confidence: float = 0.95,
    alpha: float = 0.05,
    resamples: int = 4000,
    seed: int = 0,
) -> Comparison:
    """Compare the samples of run A (the baseline) and run B of one metric."""
    xa, xb = _values(f"{metric} A", a), _values(f"{metric} B", b)
    median_a, median_b = float(np.median(xa)), float(np.median(xb))
    if median_a == 0:
        raise ValueError(f"{metric}: the baseline's median is 0, a relative change is undefined")
    rng = np.random.default_rng(seed)
    boot_a = np.median(xa[rng.integers(0, len(xa), (resamples, len(xa)))], axis=1)
    boot_b = np.median(xb[rng.integers(0, len(xb), (resamples, len(xb)))], axis=1)
    usable = boot_a != 0
    relative = (boot_b[usable] - boot_a[usable]) / boot_a[usable]
    tail = (1 - confidence) / 2 * 100
    ci_low, ci_high = (float(v) for v in np.percentile(relative, [tail, 100 - tail]))
    p_value = float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    change = (median_b - median_a) / median_a
    called = p_value < alpha and (ci_low > 0 or ci_high < 0) and abs(change) >= threshold
    if not called:
        verdict = NO_CHANGE
    elif (change > 0) == higher_is_better:
        verdict = IMPROVED
    else:
        verdict = REGRESSED
    return Comparison(
        metric=metric,
        higher_is_better=higher_is_better,
        n_a=len(xa),
        n_b=len(xb),
        median_a=median_a,
        median_b=median_b,
        change=change,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value=p_value,
        threshold=threshold,
        verdict=verdict,
    )
