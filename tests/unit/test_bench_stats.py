"""The harness's A/B statistics on synthetic data: how often A/A is called "no change", how often a real 10 %
shift is found, and the rules of the verdict. The rates are printed (pytest -s)."""

from __future__ import annotations

import numpy as np
import pytest
from llmrig_bench.stats import IMPROVED, NO_CHANGE, REGRESSED, compare

TRIALS = 400
N = 15  # samples per side, as a short benchmark run takes them


def noisy(rng: np.random.Generator, centre: float, n: int = N, spread: float = 0.05) -> np.ndarray:
    """Benchmark-like samples: lognormal around `centre` (about 5 % spread) with an occasional slow outlier."""
    values = centre * rng.lognormal(0.0, spread, n)
    outliers = rng.random(n) < 0.05
    values[outliers] *= 1.3
    return values


def rate(verdicts: list[str], wanted: str) -> float:
    return sum(v == wanted for v in verdicts) / len(verdicts)


def test_a_against_a_is_no_change_in_at_least_95_percent_of_trials():
    rng = np.random.default_rng(12)
    verdicts = [
        compare(noisy(rng, 40.0), noisy(rng, 40.0), metric="decode_tps", resamples=1000, seed=i).verdict
        for i in range(TRIALS)
    ]
    no_change = rate(verdicts, NO_CHANGE)
    print(f"\nA/A, {TRIALS} trials of {N} v {N} samples at ~5 % noise: 'no change' in {no_change:.1%}")
    assert no_change >= 0.95


@pytest.mark.parametrize(
    ("higher_is_better", "factor", "wanted"),
    [(True, 0.90, REGRESSED), (True, 1.10, IMPROVED), (False, 1.10, REGRESSED), (False, 0.90, IMPROVED)],
)
def test_a_ten_percent_shift_is_found(higher_is_better, factor, wanted):
    rng = np.random.default_rng(7)
    verdicts = [
        compare(
            noisy(rng, 40.0),
            noisy(rng, 40.0 * factor),
            higher_is_better=higher_is_better,
            resamples=1000,
            seed=i,
        ).verdict
        for i in range(TRIALS)
    ]
    found = rate(verdicts, wanted)
    print(f"\n10 % shift (x{factor}, higher is better: {higher_is_better}), {TRIALS} trials: '{wanted}' in {found:.1%}")
    assert found >= 0.95
    assert rate(verdicts, IMPROVED if wanted == REGRESSED else REGRESSED) == 0


def test_a_sure_change_below_the_threshold_is_no_change():
    rng = np.random.default_rng(3)
    a = 100 * rng.lognormal(0, 0.001, 40)
    result = compare(a, a * 1.01, threshold=0.02)
    assert result.p_value < 0.001 and result.ci_low > 0  # real, and known to be real
    assert result.verdict == NO_CHANGE  # but 1 % is below the 2 % that matters
    assert compare(a, a * 1.01, threshold=0.005).verdict == IMPROVED


def test_the_figures_of_a_comparison():
    result = compare([10, 11, 12, 13, 14], [20, 22, 24, 26, 28], metric="tps")
    assert (result.median_a, result.median_b) == (12.0, 24.0)
    assert result.change == pytest.approx(1.0)
    assert result.ci_low <= 1.0 <= result.ci_high
    assert result.verdict == IMPROVED
    assert result.line().startswith("tps: A 12 (n=5), B 24 (n=5), change +100.0% [")
    assert result.as_dict()["verdict"] == IMPROVED


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1, 2], [1, 2, 3], "tps A: at least 3 values are needed, got 2"),
        ([1, 2, float("nan")], [1, 2, 3], "tps A: every value must be a finite number"),
        ([0, 0, 0], [1, 2, 3], "tps: the baseline's median is 0"),
    ],
)
def test_bad_samples_are_refused_with_the_metric_named(a, b, message):
    with pytest.raises(ValueError, match=message):
        compare(a, b, metric="tps")
