"""The decisions of a tuning run, apart from how each step is applied and measured.

A knob is one setting with candidate values, tried in the order given:

    knob: {kind: fleet, model: gemma-a, field: threads}          # a fleet entry's field (any host)
    knob: {kind: gpu, gpu: 0, setting: memory_clock_offset_mhz, model: gemma-a}
                      # an NVML setting of the GPU tuning tool (llmrig_gpu_tuning), measured on that model
    values: [1, 2, 3]
    ordered: true     # values that push further with each step (clock offsets, power): stop at the first
                      # step that fails, as the steps above it would push further still

Each step brings evidence; a step passes when its greedy tokens equal the baseline's, its draft acceptance
(speculative models) dropped no more than allowed, its stress cycles had no failure and no drift beyond the
limit that the harness's statistics also call a regression (noise between two cycles is not drift), and the
A/B verdict against the baseline is not "regressed". The kept value is the passed step with
the largest improvement of the decode rate that the verdict called "improved"; with none, the baseline stays.
Standard library only: the playbook runs it on the controller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = {"fleet": ("model", "field"), "gpu": ("gpu", "setting", "model")}
# the GPU tuning tool's own names (roles/llmrig_gpu_tuning, llmrig_gpu_tuning_gpus)
GPU_SETTINGS = ("memory_clock_offset_mhz", "graphics_clock_offset_mhz", "power_limit_w")


class TuneError(ValueError):
    pass


@dataclass(frozen=True)
class Knob:
    kind: str
    target: dict[str, Any]
    values: list[Any]
    ordered: bool

    @property
    def label(self) -> str:
        if self.kind == "fleet":
            return f"fleet entry {self.target['model']!r} field {self.target['field']!r}"
        return f"GPU {self.target['gpu']} {self.target['setting']} (measured on {self.target['model']!r})"


def parse_knob(data: Any) -> Knob:
    """Validate a knob; every problem names the field."""
    if not isinstance(data, dict):
        raise TuneError("a knob is a mapping with 'knob' and 'values'")
    spec = data.get("knob")
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise TuneError(f"field 'knob.kind': one of {', '.join(KINDS)}")
    kind = spec["kind"]
    target = {}
    for key in KINDS[kind]:
        if key not in spec:
            raise TuneError(f"field 'knob.{key}' is required for a {kind} knob")
        target[key] = spec[key]
    if kind == "gpu":
        if not isinstance(target["gpu"], int) or isinstance(target["gpu"], bool) or target["gpu"] < 0:
            raise TuneError(f"field 'knob.gpu': a GPU index, got {target['gpu']!r}")
        if target["setting"] not in GPU_SETTINGS:
            raise TuneError(f"field 'knob.setting': one of {', '.join(GPU_SETTINGS)}, got {target['setting']!r}")
        if not isinstance(target["model"], str) or not target["model"]:
            raise TuneError(f"field 'knob.model': the fleet model the steps measure, got {target['model']!r}")
        for value in data.get("values") or []:
            if not isinstance(value, int) or isinstance(value, bool):
                raise TuneError(f"field 'values': whole numbers ({target['setting']}), got {value!r}")
    values = data.get("values")
    if not isinstance(values, list) or not values:
        raise TuneError("field 'values': a non-empty list of candidate values")
    if len({repr(v) for v in values}) != len(values):
        raise TuneError(f"field 'values': a value appears twice in {values!r}")
    ordered = data.get("ordered", kind == "gpu")
    if not isinstance(ordered, bool):
        raise TuneError(f"field 'ordered': true or false, got {ordered!r}")
    return Knob(kind=kind, target=target, values=list(values), ordered=ordered)


@dataclass
class Evidence:
    """What the harness measured after a step was applied."""

    deterministic: bool
    divergence: str | None = None  # where the tokens first differed
    acceptance: float | None = None  # drafted tokens accepted, for speculative models
    baseline_acceptance: float | None = None
    stress_failed: int = 0
    stress_drift: float | None = None  # the worst cycle's decode rate against the first cycle's
    # the harness's verdict on that cycle's per-request decode rates against the first cycle's: a drift
    # counts only when it is "regressed" (None: no per-request rates, the median alone decides)
    stress_drift_verdict: str | None = None
    verdict: str = "no change"  # the harness's verdict on the decode rate, against the baseline
    change: float = 0.0  # relative change of the median decode rate
    control: str | None = None  # the A/A control's verdict (the baseline against itself): the run's noise
    measured: list[str] = field(default_factory=list)  # what ran: determinism, ab, stress (a failure ends it)
    # a GPU step whose value the tuning tool could not set and read back (out of range, not supported): what
    # it said; nothing was measured
    apply_error: str | None = None


@dataclass
class Step:
    value: Any
    evidence: Evidence | None = None
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["value"] = self.value
        return out


@dataclass(frozen=True)
class Limits:
    acceptance_drop: float = 0.05  # absolute drop of the acceptance rate that marks a step unstable
    drift: float = 0.05  # stress: a cycle's decode rate this much below the first cycle's fails
    stress_failures: int = 0


def judge(value: Any, evidence: Evidence, limits: Limits = Limits()) -> Step:
    """A step's outcome, with every reason it failed."""
    if evidence.apply_error is not None:
        return Step(value=value, evidence=evidence, reasons=[f"could not be applied: {evidence.apply_error}"])
    reasons = []
    if not evidence.deterministic:
        reasons.append(f"greedy output changed ({evidence.divergence or 'tokens differ'})")
    if evidence.acceptance is not None and evidence.baseline_acceptance is not None:
        drop = evidence.baseline_acceptance - evidence.acceptance
        if drop > limits.acceptance_drop:
            reasons.append(
                f"draft acceptance {evidence.acceptance:.1%} against {evidence.baseline_acceptance:.1%}"
                f" (a drop of {drop:.1%}, more than {limits.acceptance_drop:.1%})"
            )
    if evidence.stress_failed > limits.stress_failures:
        reasons.append(f"{evidence.stress_failed} requests failed under stress")
    drifted = evidence.stress_drift is not None and evidence.stress_drift < -limits.drift
    if drifted and evidence.stress_drift_verdict in (None, "regressed"):
        reasons.append(f"decode rate drifted {evidence.stress_drift:+.1%} under stress (limit -{limits.drift:.0%})")
    if evidence.verdict == "regressed":
        reasons.append(f"slower than the baseline ({evidence.change:+.1%}, verdict regressed)")
    return Step(value=value, evidence=evidence, passed=not reasons, reasons=reasons)


def next_values(knob: Knob, steps: list[Step]) -> list[Any]:
    """The values still to try: all but those tried, and for an ordered knob none after a failed step."""
    tried = {repr(step.value) for step in steps}
    if knob.ordered and any(not step.passed and step.skipped is None for step in steps):
        return []
    return [v for v in knob.values if repr(v) not in tried]


def best(steps: list[Step]) -> Step | None:
    """The passed step whose decode rate improved most (verdict "improved"); None: keep the baseline."""
    improved = [s for s in steps if s.passed and s.evidence is not None and s.evidence.verdict == "improved"]
    return max(improved, key=lambda s: s.evidence.change if s.evidence else 0.0, default=None)


def skip_rest(knob: Knob, steps: list[Step]) -> list[Step]:
    """Steps for the values an ordered knob will not try after a failure, with the reason."""
    failed = next((s for s in steps if not s.passed and s.skipped is None), None)
    if failed is None or not knob.ordered:
        return []
    tried = {repr(step.value) for step in steps}
    reason = f"not tried: the step to {failed.value!r} failed, and this one pushes further"
    return [Step(value=v, skipped=reason) for v in knob.values if repr(v) not in tried]


def summary(knob: Knob, baseline: Any, steps: list[Step]) -> dict[str, Any]:
    """The run's outcome: what is kept and why, every step with its evidence and reasons."""
    kept = best(steps)
    now = "llama-server's default" if baseline is None else repr(baseline)
    if kept is None:
        decision = f"keep {now}: no step passed with an improvement the verdict called 'improved'"
    else:
        change = kept.evidence.change if kept.evidence else 0.0
        decision = f"keep {kept.value!r}: passed every check and decoded {change:+.1%} against {now}"
    return {
        "knob": knob.label,
        "baseline": baseline,
        "kept": baseline if kept is None else kept.value,
        "decision": decision,
        "steps": [step.as_dict() for step in steps],
    }
