"""The tuning procedure's decisions (tools/llmrig_tune/engine.py): knobs, the judgement of one step on its
evidence, the order of steps, and which value is kept."""

from __future__ import annotations

import re

import pytest
from llmrig_tune.engine import Evidence, Limits, TuneError, best, judge, next_values, parse_knob, skip_rest, summary

FLEET_KNOB = {"knob": {"kind": "fleet", "model": "gemma-a", "field": "threads"}, "values": [1, 3]}
GPU_KNOB = {
    "knob": {"kind": "gpu", "gpu": 0, "setting": "memory_clock_offset_mhz", "model": "m"},
    "values": [250, 500, 750, 1000],
}


def good(change: float = 0.05, verdict: str = "improved") -> Evidence:
    return Evidence(deterministic=True, stress_drift=-0.01, verdict=verdict, change=change)


def test_knobs_are_parsed_with_their_order():
    fleet = parse_knob(FLEET_KNOB)
    assert (fleet.kind, fleet.target, fleet.values, fleet.ordered) == (
        "fleet",
        {"model": "gemma-a", "field": "threads"},
        [1, 3],
        False,
    )
    assert fleet.label == "fleet entry 'gemma-a' field 'threads'"
    gpu = parse_knob(GPU_KNOB)
    assert gpu.label == "GPU 0 memory_clock_offset_mhz (measured on 'm')"
    assert gpu.ordered  # offsets push further: ordered by default
    assert not parse_knob(dict(GPU_KNOB, ordered=False)).ordered


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a knob is a mapping"),
        ({"knob": {"kind": "bios"}, "values": [1]}, "field 'knob.kind': one of fleet, gpu"),
        ({"knob": {"kind": "fleet", "model": "m"}, "values": [1]}, "field 'knob.field' is required"),
        ({"knob": {"kind": "gpu", "gpu": -1, "setting": "power_limit_w", "model": "m"}, "values": [1]}, "'knob.gpu'"),
        ({"knob": {"kind": "gpu", "gpu": 0, "setting": "fan", "model": "m"}, "values": [1]}, "field 'knob.setting'"),
        ({"knob": {"kind": "gpu", "gpu": 0, "setting": "power_limit_w"}, "values": [1]}, "'knob.model' is required"),
        (dict(GPU_KNOB, values=[250, "fast"]), "field 'values': whole numbers (memory_clock_offset_mhz), got 'fast'"),
        (dict(FLEET_KNOB, values=[]), "field 'values': a non-empty list"),
        (dict(FLEET_KNOB, values=[2, 2]), "field 'values': a value appears twice"),
        (dict(FLEET_KNOB, ordered="yes"), "field 'ordered': true or false"),
    ],
)
def test_bad_knobs_are_refused_naming_the_field(data, message):
    with pytest.raises(TuneError, match=re.escape(message)):
        parse_knob(data)


def test_a_step_that_passes_everything():
    step = judge(3, good())
    assert step.passed and step.reasons == []


def test_every_reason_a_step_fails_is_named():
    evidence = Evidence(
        deterministic=False,
        divergence="prompt 'short-0', token 11: expected 7488, got 5279",
        acceptance=0.70,
        baseline_acceptance=0.90,
        stress_failed=2,
        stress_drift=-0.12,
        verdict="regressed",
        change=-0.08,
    )
    step = judge(4, evidence)
    assert not step.passed
    assert step.reasons == [
        "greedy output changed (prompt 'short-0', token 11: expected 7488, got 5279)",
        "draft acceptance 70.0% against 90.0% (a drop of 20.0%, more than 5.0%)",
        "2 requests failed under stress",
        "decode rate drifted -12.0% under stress (limit -5%)",
        "slower than the baseline (-8.0%, verdict regressed)",
    ]


def test_limits_decide_what_a_small_drop_is():
    evidence = Evidence(deterministic=True, acceptance=0.86, baseline_acceptance=0.90, stress_drift=-0.04)
    assert judge(1, evidence).passed
    assert not judge(1, evidence, Limits(acceptance_drop=0.02)).passed
    assert not judge(1, evidence, Limits(drift=0.03)).passed


def test_an_ordered_knob_stops_at_the_first_failed_step_and_says_why_the_rest_were_not_tried():
    knob = parse_knob(GPU_KNOB)
    steps = [judge(250, good(0.03)), judge(500, good(0.06))]
    assert next_values(knob, steps) == [750, 1000]
    steps.append(judge(750, Evidence(deterministic=False, divergence="prompt 'p', token 3")))
    assert next_values(knob, steps) == []
    skipped = skip_rest(knob, steps)
    assert [s.value for s in skipped] == [1000]
    assert skipped[0].skipped == "not tried: the step to 750 failed, and this one pushes further"
    outcome = summary(knob, 0, steps + skipped)
    assert outcome["kept"] == 500
    assert outcome["decision"] == "keep 500: passed every check and decoded +6.0% against 0"
    assert [s["passed"] for s in outcome["steps"]] == [True, True, False, False]


def test_an_unordered_knob_tries_every_value_and_a_slower_one_is_rejected():
    knob = parse_knob(FLEET_KNOB)
    steps = [judge(1, good(-0.39, "regressed"))]
    assert next_values(knob, steps) == [3]  # a failure does not stop an unordered knob
    steps.append(judge(3, good(0.01, "no change")))
    assert next_values(knob, steps) == [] and skip_rest(knob, steps) == []
    outcome = summary(knob, 2, steps)
    assert outcome["kept"] == 2  # nothing improved: the baseline stays
    assert outcome["decision"] == "keep 2: no step passed with an improvement the verdict called 'improved'"
    assert outcome["steps"][0]["reasons"] == ["slower than the baseline (-39.0%, verdict regressed)"]


def test_the_largest_improvement_that_passed_is_kept():
    steps = [judge(1, good(0.04)), judge(2, good(0.09)), judge(3, Evidence(deterministic=False, change=0.2))]
    assert best(steps).value == 2
    assert best([judge(1, good(0.0, "no change"))]) is None


def test_evidence_is_read_from_what_the_harness_wrote(tmp_path):
    """A real A/B run against the stand-in endpoint (the `slow` model 20 % slower), its comparisons, a stress
    run and a determinism outcome, as the harness writes them; then judged."""
    from bench_endpoint import endpoint
    from llmrig_bench.compare import compare_run
    from llmrig_bench.runner import run
    from llmrig_bench.stress import stress
    from llmrig_bench.workload import parse
    from llmrig_tune.evidence import evidence

    workload = parse(
        {
            "name": "tune",
            "max_tokens": 4,
            "prompts": "short",
            "repetitions": 3,
            "variants": {"A": {"model": "fast"}, "B": {"model": "slow"}},
        }
    )
    with endpoint() as url:
        results = run(workload, url, "k")
        cycles = stress(parse(dict(name="s", variants={"A": {"model": "slow"}}, repetitions=1)), url, "k", cycles=2)
    comparisons = [c.as_dict() for c in compare_run(results)]
    found = evidence({"ok": True, "divergence": None}, results, comparisons, cycles)
    assert found.deterministic and found.verdict == "regressed" and -0.2 < found.change < -0.1
    # the stand-in drafts 6 and accepts 3 on every request, for both models
    assert found.acceptance == found.baseline_acceptance == 0.5
    assert found.stress_failed == 0 and found.stress_drift == 0.0
    step = judge("slow", found)
    assert not step.passed and step.reasons[0].startswith("slower than the baseline (-16.7%")
    unstable = evidence({"ok": False, "divergence": "prompt 'p', token 2"}, results, comparisons)
    assert judge("slow", unstable).reasons[0] == "greedy output changed (prompt 'p', token 2)"
    assert unstable.stress_drift is None


def test_stress_drift_counts_only_when_the_statistics_call_it_a_regression():
    """Two stress cycles of 12 requests: a median 8 % lower within noise of +-15 % is not drift; every
    request 20 % slower is."""
    from llmrig_tune.evidence import evidence

    first = [60.0, 70.0, 52.0, 66.0, 58.0, 71.0, 55.0, 63.0, 68.0, 57.0, 61.0, 65.0]

    def stress(second: list[float]) -> dict:
        median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        drift = (median(second) - median(first)) / median(first)
        return {
            "cycles": [
                {"failed": 0, "drift": 0.0, "decode_tps": first},
                {"failed": 0, "drift": drift, "decode_tps": second},
            ]
        }

    noisy = evidence(
        {"ok": True}, stress=stress([v * f for v, f in zip(first, [0.85, 1.0, 1.1, 0.9] * 3, strict=True)])
    )
    assert noisy.stress_drift < -0.05 and noisy.stress_drift_verdict == "no change"
    assert judge(2, noisy).passed
    slower = evidence({"ok": True}, stress=stress([v * 0.8 for v in first]))
    assert slower.stress_drift_verdict == "regressed"
    assert judge(2, slower).reasons == ["decode rate drifted -20.0% under stress (limit -5%)"]
