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
