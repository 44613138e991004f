"""A tuning spec (files/tune/*.yml, given to playbooks/tune.yml): the knobs to try in order, the A/B workload
each step runs and the determinism prompts.

    name: threads
    knobs:
      - knob: {kind: fleet, model: gemma-a-1t, field: threads}
        values: [2, 3]
    workload: {max_tokens: 32, prompts: short, repetitions: 6}   # the harness's fields, no variants
    determinism: {prompts: short, n_predict: 32}

The procedure sets the workload's variants itself: baseline (the model as served), candidate (the step's trial
preset) and control (the baseline again: the A/A check of the run's own noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmrig_bench.workload import WorkloadError, parse

from .engine import Knob, TuneError, parse_knob

WORKLOAD_DEFAULTS: dict[str, Any] = {
    "api": "completions",
    "stream": True,
    "max_tokens": 32,
    "prompts": "short",
    "concurrency": [1],
    "repetitions": 6,
    "warmup": 1,
    "sampling": {"temperature": 0, "seed": 1},
}
DETERMINISM_DEFAULTS: dict[str, Any] = {"prompts": "short", "n_predict": 32}
VARIANTS = ("baseline", "candidate", "control")


@dataclass(frozen=True)
class Spec:
    name: str
    knobs: list[Knob]
    workload: dict[str, Any]
    determinism: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        knobs = [{"knob": {"kind": k.kind, **k.target}, "values": k.values, "ordered": k.ordered} for k in self.knobs]
        return {"name": self.name, "knobs": knobs, "workload": self.workload, "determinism": self.determinism}


def parse_spec(data: Any) -> Spec:
    """Validate a spec; every problem names the knob or section and the field."""
    if not isinstance(data, dict):
        raise TuneError("a tuning spec is a mapping with 'name' and 'knobs'")
    unknown = set(data) - {"name", "knobs", "workload", "determinism"}
    if unknown:
        raise TuneError(f"unknown fields {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise TuneError(f"field 'name': letters, digits, - and _, got {name!r}")
    knobs_data = data.get("knobs")
    if not isinstance(knobs_data, list) or not knobs_data:
        raise TuneError("field 'knobs': a non-empty list of knobs")
    knobs = []
    for index, item in enumerate(knobs_data, start=1):
        try:
            knobs.append(parse_knob(item))
        except TuneError as exc:
            raise TuneError(f"knob {index}: {exc}") from exc
    workload_data = data.get("workload") or {}
    if not isinstance(workload_data, dict) or "variants" in workload_data or "name" in workload_data:
        raise TuneError("field 'workload': the harness's workload fields without name and variants")
    workload = {**WORKLOAD_DEFAULTS, **workload_data}
    try:
        parse({**workload, "name": name, "variants": {v: {"model": "-"} for v in VARIANTS}})
    except WorkloadError as exc:
        raise TuneError(f"field 'workload': {exc}") from exc
    determinism_data = data.get("determinism") or {}
    if not isinstance(determinism_data, dict) or set(determinism_data) - set(DETERMINISM_DEFAULTS):
        raise TuneError("field 'determinism': a mapping of prompts (a set's name) and n_predict")
    determinism = {**DETERMINISM_DEFAULTS, **determinism_data}
    n_predict = determinism["n_predict"]
    if not isinstance(n_predict, int) or isinstance(n_predict, bool) or n_predict < 1:
        raise TuneError(f"field 'determinism.n_predict': a whole number >= 1, got {n_predict!r}")
    try:
        parse({"name": name, "prompts": determinism["prompts"], "variants": {"A": {"model": "-"}}})
    except WorkloadError as exc:
        raise TuneError(f"field 'determinism.prompts': {exc}") from exc
    return Spec(name=name, knobs=knobs, workload=workload, determinism=determinism)
