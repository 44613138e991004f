# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tuning run's fleet side (playbooks/tune.yml): which fields a knob may change, the value a model has now
(the fleet with the host's overrides and tuned values), the trial presets served beside it while candidates
are measured, and the tuned values with a kept one added.

A field is a top-level fleet field or one level into speculative or extra_args, written with a dot:
`threads`, `speculative.draft_n_max`, `extra_args.ubatch-size`. The trial entries go through the fleet's
own validation with the rest of the fleet, so a bad value is refused naming the trial entry and the field."""

from __future__ import annotations

import copy
from typing import Any

from ._fleet import ENTRY_FIELDS, EVALUATION_FIELDS, SPECULATIVE_FIELDS, apply_overrides

# fields that change how fast a model runs, not what it is, who may call it or how it samples (the
# determinism check and the A/B run send their own sampling)
NOT_TUNABLE = ("name", "aliases", "source", "mmproj", "sampling", "load_on_startup", "keep_cached")
# (speculative and extra_args are tuned one level in: split_field)
TUNABLE = tuple(f for f in ENTRY_FIELDS if f not in (*NOT_TUNABLE, "speculative", "extra_args", *EVALUATION_FIELDS))
TUNABLE_SPECULATIVE = tuple(f for f in SPECULATIVE_FIELDS if f != "model")
TRIAL_SUFFIX = "--tune-"
# a trial serves only while it is measured: no aliases, nothing loaded at start, no page-cache lock
TRIAL_DROPS = ("aliases", "load_on_startup", "keep_cached")


class KnobError(ValueError):
    """A knob names a model or field that tuning cannot change; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}")


def split_field(field: Any) -> tuple[str, ...]:
    """The field as a path, or KnobError naming what may be tuned."""
    if not isinstance(field, str) or not field:
        raise KnobError("knob.field", f"a fleet field name, got {field!r}")
    parts = tuple(field.split("."))
    if len(parts) == 1 and parts[0] in TUNABLE:
        return parts
    if len(parts) == 2 and parts[0] == "speculative" and parts[1] in TUNABLE_SPECULATIVE:
        return parts
    if len(parts) == 2 and parts[0] == "extra_args" and parts[1]:
        return parts
    allowed = ", ".join(TUNABLE) + ", speculative.<" + "|".join(TUNABLE_SPECULATIVE) + ">, extra_args.<option>"
    raise KnobError("knob.field", f"{field!r} is not a field that tuning may change (one of {allowed})")


def effective_entry(fleet: Any, overrides: Any, model: Any) -> dict:
    """The model's fleet entry as this host serves it: overrides and tuned values merged in."""
    for entry in apply_overrides(fleet, overrides):
        if isinstance(entry, dict) and entry.get("name") == model:
            return entry
    raise KnobError("knob.model", f"{model!r} is not an entry of the fleet")


def current_value(entry: dict, field: str) -> Any:
    """The field's value in the entry; None where the fleet leaves it to llama-server."""
    value: Any = entry
    for part in split_field(field):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def with_value(entry: dict, field: str, value: Any) -> dict:
    out = copy.deepcopy(entry)
    parts = split_field(field)
    if len(parts) == 1:
        out[parts[0]] = value
    else:
        inner = out.get(parts[0])
        out[parts[0]] = {**(inner if isinstance(inner, dict) else {}), parts[1]: value}
    return out


def trial_name(model: str, index: int) -> str:
    return f"{model}{TRIAL_SUFFIX}{index}"


def trials(fleet: Any, overrides: Any, model: Any, field: str, values: list) -> list[dict]:
    """One trial entry per value: the model as served now with the field set, under its own name."""
    entry = effective_entry(fleet, overrides, model)
    out = []
    for index, value in enumerate(values):
        trial = with_value(entry, field, value)
        trial["name"] = trial_name(model, index)
        for key in TRIAL_DROPS:
            trial.pop(key, None)
        out.append(trial)
    return out


def tuned_with(tuned: Any, model: str, field: str, value: Any) -> dict:
    """The tuned values ({entry: {field: value}}, llmrig_fleet_tuned) with one more kept value."""
    out = copy.deepcopy(tuned) if isinstance(tuned, dict) else {}
    fields = out.setdefault(model, {})
    parts = split_field(field)
    if len(parts) == 1:
        fields[parts[0]] = value
    else:
        fields.setdefault(parts[0], {})[parts[1]] = value
    return out


# The GPU side: a GPU knob changes one setting of one GPU's entry in the GPU tuning role's list
# (llmrig_gpu_tuning_gpus: [{index, power_limit_w, memory_clock_offset_mhz, ...}]); what a run keeps goes to
# llmrig_gpu_tuning_tuned, the same shape, laid over that list by the role.
GPU_SETTINGS = ("memory_clock_offset_mhz", "graphics_clock_offset_mhz", "power_limit_w")


def _gpu_entries(entries: Any, name: str) -> list[dict]:
    if entries in (None, ""):
        return []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("index"), int) and not isinstance(e.get("index"), bool)
        for e in entries
    ):
        raise KnobError(name, "a list of GPU entries, each with a whole-number 'index'")
    return entries


def gpu_settings(gpus: Any, tuned: Any) -> list[dict]:
    """The GPU tuning list with the tuned values laid over the entry of the same index (an index only tuned
    becomes an entry of its own)."""
    out = [copy.deepcopy(e) for e in _gpu_entries(gpus, "llmrig_gpu_tuning_gpus")]
    for kept in _gpu_entries(tuned, "llmrig_gpu_tuning_tuned"):
        entry = next((e for e in out if e["index"] == kept["index"]), None)
        if entry is None:
            out.append(copy.deepcopy(kept))
        else:
            entry.update({k: v for k, v in kept.items() if k != "index"})
    return out


def gpu_current(gpus: Any, tuned: Any, index: int, setting: str) -> Any:
    """The setting's value for that GPU as the role would apply it; None where it is left as it is."""
    if setting not in GPU_SETTINGS:
        raise KnobError("knob.setting", f"one of {', '.join(GPU_SETTINGS)}, got {setting!r}")
    entry = next((e for e in gpu_settings(gpus, tuned) if e["index"] == index), {})
    return entry.get(setting)


def gpu_tuned_with(tuned: Any, index: int, setting: str, value: Any) -> list[dict]:
    """llmrig_gpu_tuning_tuned with one more kept value."""
    out = [copy.deepcopy(e) for e in _gpu_entries(tuned, "llmrig_gpu_tuning_tuned")]
    entry = next((e for e in out if e["index"] == index), None)
    if entry is None:
        out.append({"index": index, setting: value})
        out.sort(key=lambda e: e["index"])
    else:
        entry[setting] = value
    return out


def gpu_config_with(config: Any, index: int, setting: str, value: Any) -> dict:
    """The GPU tuning tool's config ({"gpus": [...]}, as the role wrote it on the host) with one setting of
    the GPU at that index set; None takes the setting out (the tool then restores its default)."""
    gpus = config.get("gpus") if isinstance(config, dict) else None
    entries = [copy.deepcopy(e) for e in _gpu_entries(gpus or [], "gpus")]
    entry = next((e for e in entries if e["index"] == index), None)
    if entry is None:
        entry = {"index": index}
        entries.append(entry)
    if value is None:
        entry.pop(setting, None)
    else:
        entry[setting] = value
    return {"gpus": entries}
