"""A tuning run's report (report.md): per knob every step with its evidence and reasons, the decision, and what
was applied to the host and written to the inventory."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    return "(llama-server default)" if value is None else f"`{json.dumps(value)}`"


def _step_row(step: dict[str, Any]) -> str:
    found = step.get("evidence") or {}
    if step.get("skipped"):
        return f"| {_value(step['value'])} | | | | | | not tried | {step['skipped']} |"
    if found.get("apply_error") is not None:
        return f"| {_value(step['value'])} | not set | | | | | failed | {'; '.join(step.get('reasons') or [])} |"
    greedy = "same tokens" if found.get("deterministic") else f"changed: {found.get('divergence') or 'differs'}"
    acceptance = (
        "" if found.get("acceptance") is None else f"{found['acceptance']:.1%} v {found['baseline_acceptance']:.1%}"
    )
    stress = ""
    if "stress" in found.get("measured", []):
        drift = found.get("stress_drift")
        stress = f"{found['stress_failed']} failed, drift {'n/a' if drift is None else f'{drift:+.1%}'}"
    decode = found.get("verdict", "")
    if "ab" in found.get("measured", []):
        decode = f"{found['change']:+.1%} {found['verdict']}"
    control = found.get("control") or ""
    outcome = "passed" if step["passed"] else "failed"
    return (
        f"| {_value(step['value'])} | {greedy} | {acceptance} | {stress} | {decode} | {control} | {outcome} | "
        f"{'; '.join(step.get('reasons') or [])} |"
    )


def render(run: dict[str, Any], knobs: list[dict[str, Any]]) -> str:
    lines = [
        f"# Tuning run '{run['spec']['name']}' on {run['host']}",
        "",
        f"- started {run['started']}, llama.cpp build `{run.get('build') or 'unknown'}`",
        f"- spec: `{run['spec_path']}`; each step: determinism ({run['spec']['determinism']['n_predict']} greedy"
        f" tokens per prompt of '{run['spec']['determinism']['prompts']}' against the baseline), the A/B run"
        f" (baseline, candidate and the baseline again as the A/A control, interleaved), then"
        f" {run['stress_cycles']} stress cycles of the candidate; a step stops at its first failure",
        f"- limits: draft acceptance may drop {run['limits']['acceptance_drop']:.1%}, stress drift"
        f" {run['limits']['drift']:.1%}, verdict threshold {run['threshold']:.1%}",
        "",
    ]
    for knob in knobs:
        lines += [f"## {knob['knob']}", "", f"Baseline: {_value(knob['baseline'])}. **{knob['decision']}**", ""]
        if knob.get("untried"):
            lines += [f"Not tried, already the value in use: {', '.join(_value(v) for v in knob['untried'])}.", ""]
        if knob["steps"]:
            lines += [
                "| value | greedy output | draft acceptance | stress | decode v baseline | A/A control | step"
                " | reasons |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lines += [_step_row(step) for step in knob["steps"]]
            lines.append("")
            lines.append("Each measured step's harness report (figures, plots): `knob-*/step-*/report.md`.")
            lines.append("")
    applied = run.get("applied") or {}
    lines += ["## Applied", ""]
    if not applied.get("changed"):
        lines.append("Nothing: every knob keeps the value in use; the host and the inventory are unchanged.")
    else:
        gpus = applied.get("gpus_tuned") != applied.get("gpus_before")
        if applied["tuned"] != applied["before"]:
            was = json.dumps(applied["before"])
            lines.append(f"Tuned values now: `{json.dumps(applied['tuned'])}` (were `{was}`).")
        if gpus:
            lines.append(
                f"GPU values now: `{json.dumps(applied['gpus_tuned'])}` (were `{json.dumps(applied['gpus_before'])}`),"
                " set through the GPU tuning tool while no request was in flight."
            )
        lines.append(f"Applied with a drained presets reload; check after: {applied.get('post_check', 'not run')}.")
        if applied.get("reboot_check"):
            lines.append(f"Reboot re-validation: {applied['reboot_check']}.")
        if applied.get("rolled_back"):
            lines.append(f"**Rolled back** to the values before the run: {applied['rolled_back']}")
        else:
            names = "llmrig_fleet_tuned" + (", llmrig_gpu_tuning_tuned" if gpus else "")
            lines.append(f"Written to `{applied['vars_file']}` ({names}), which every converge reads.")
    lines.append("")
    return "\n".join(lines)
