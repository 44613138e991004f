# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the tuning procedure (roles/llmrig_tune): a fleet knob's current value, its trial entries and
the tuned values with a kept one; a GPU knob's current value, a step's tool config and the kept GPU values
(and the GPU tuning role's list with them laid over it). Each error names the knob and the field."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import FleetError
from ansible_collections.llmrig.serving.plugins.module_utils._tune import (
    KnobError,
    current_value,
    effective_entry,
    gpu_config_with,
    gpu_current,
    gpu_settings,
    gpu_tuned_with,
    trials,
    tuned_with,
)


def _plain(value: Any) -> Any:
    """Plain dicts and lists: what Ansible hands a filter may be lazily templated containers, which the
    copies made for trial entries must not carry along."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _knob_parts(knob: Any) -> tuple[str, str]:
    if not isinstance(knob, dict) or not isinstance(knob.get("knob"), dict):
        raise AnsibleFilterError(f"a tuning knob is a mapping with 'knob' and 'values', got {knob!r}")
    return knob["knob"].get("model"), knob["knob"].get("field")


def _named(label: str, fn: Any, *args: Any) -> Any:
    """fn(*args), its KnobError or FleetError raised as a filter error that starts with the label."""
    try:
        return fn(*args)
    except (KnobError, FleetError) as exc:
        raise AnsibleFilterError(f"{label}: {exc}" if label else str(exc)) from exc


def tune_current(knob: Any, fleet: Any, overrides: Any, label: str = "knob") -> Any:
    """The value the knob's field has on this host now (None: llama-server's default)."""
    model, field = _knob_parts(knob)
    return _named(label, lambda: current_value(effective_entry(_plain(fleet), _plain(overrides), model), field))


def tune_trials(knob: Any, values: list, fleet: Any, overrides: Any, label: str = "knob") -> list[dict]:
    """The trial fleet entries for these values, named <model>--tune-<i> in their order."""
    model, field = _knob_parts(knob)
    return _named(label, trials, _plain(fleet), _plain(overrides), model, field, _plain(values))


def tune_kept(tuned: Any, knob: Any, value: Any) -> dict:
    """llmrig_fleet_tuned with the knob's kept value added."""
    model, field = _knob_parts(knob)
    return _named("", tuned_with, _plain(tuned), model, field, _plain(value))


def _gpu_knob(knob: Any) -> tuple[int, str]:
    if not isinstance(knob, dict) or not isinstance(knob.get("knob"), dict):
        raise AnsibleFilterError(f"a tuning knob is a mapping with 'knob' and 'values', got {knob!r}")
    return knob["knob"].get("gpu"), knob["knob"].get("setting")


def gpu_tuning_settings(gpus: Any, tuned: Any) -> list[dict]:
    """llmrig_gpu_tuning_gpus with the values tune.yml kept (llmrig_gpu_tuning_tuned) laid over it."""
    return _named("", gpu_settings, _plain(gpus), _plain(tuned))


def tune_gpu_current(knob: Any, gpus: Any, tuned: Any, label: str = "knob") -> Any:
    """The value a GPU knob's setting has in the host's GPU tuning now (None: not set, left as it is)."""
    return _named(label, gpu_current, _plain(gpus), _plain(tuned), *_gpu_knob(knob))


def tune_gpu_kept(tuned: Any, knob: Any, value: Any) -> list[dict]:
    """llmrig_gpu_tuning_tuned with the GPU knob's kept value."""
    return _named("", gpu_tuned_with, _plain(tuned), *_gpu_knob(knob), _plain(value))


def tune_gpu_config(config: Any, knob: Any, value: Any) -> dict:
    """The GPU tuning tool's config with the GPU knob's setting at this value (a step's candidate)."""
    return _named("", gpu_config_with, _plain(config), *_gpu_knob(knob), _plain(value))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "tune_current": tune_current,
            "tune_trials": tune_trials,
            "tune_kept": tune_kept,
            "gpu_tuning_settings": gpu_tuning_settings,
            "tune_gpu_current": tune_gpu_current,
            "tune_gpu_kept": tune_gpu_kept,
            "tune_gpu_config": tune_gpu_config,
        }
