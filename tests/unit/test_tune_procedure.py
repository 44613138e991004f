"""The tuning procedure's pieces around the engine: the spec, the fleet side of a knob (value in use, trial
entries, tuned values; module_utils/_tune.py and the filters), and the controller commands that judge a
step, decide a knob and write the report from files laid out as the role writes them."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmrig.serving.plugins.filter.tune import FilterModule
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import FleetError, validate_fleet
from ansible_collections.llmrig.serving.plugins.module_utils._tune import (
    KnobError,
    current_value,
    split_field,
    trials,
    tuned_with,
)
from llmrig_tune.__main__ import main
from llmrig_tune.engine import TuneError
from llmrig_tune.spec import parse_spec

SHA = "a" * 64
FLEET = [
    {
        "name": "m",
        "aliases": ["m-alias"],
        "source": {"path": "/models/m.gguf", "sha256": SHA},
        "context": 2048,
        "threads": 1,
        "keep_cached": True,
        "load_on_startup": True,
        "speculative": {"type": "ngram-simple", "draft_n_max": 8},
    },
    {"name": "other", "source": {"path": "/models/m.gguf", "sha256": SHA}, "context": 1024},
]
FILTERS = FilterModule().filters()


def knob(model: str = "m", field: str = "threads", values: list | None = None) -> dict:
    return {"knob": {"kind": "fleet", "model": model, "field": field}, "values": values or [2]}


def test_fields_a_knob_may_change():
    assert split_field("threads") == ("threads",)
    assert split_field("speculative.draft_n_max") == ("speculative", "draft_n_max")
    assert split_field("extra_args.ubatch-size") == ("extra_args", "ubatch-size")
    for field in ("name", "source", "sampling", "keep_cached", "speculative.model", "threads.x", ""):
        with pytest.raises(KnobError, match=r"field 'knob\.field'"):
            split_field(field)


def test_trial_entries_are_the_model_as_served_with_one_field_set():
    overrides = {"m": {"context": 4096, "speculative": {"draft_n_max": 4}}}
    assert current_value(FLEET[0], "speculative.draft_n_max") == 8
    assert current_value(FLEET[0], "extra_args.ubatch-size") is None  # left to llama-server
    made = trials(FLEET, overrides, "m", "speculative.draft_n_max", [2, 16])
    assert [t["name"] for t in made] == ["m--tune-0", "m--tune-1"]
    for trial, value in zip(made, [2, 16], strict=True):
        assert trial["speculative"] == {"type": "ngram-simple", "draft_n_max": value}
        assert trial["context"] == 4096  # the host's override is part of what is served
        assert "aliases" not in trial and "keep_cached" not in trial and "load_on_startup" not in trial
    assert FLEET[0]["speculative"]["draft_n_max"] == 8  # the fleet itself is untouched
    # the trials pass the fleet's own validation beside it (same file, same sha256, no name taken twice)
    assert [e["name"] for e in validate_fleet(FLEET + made)][-2:] == ["m--tune-0", "m--tune-1"]


def test_a_bad_trial_value_is_refused_by_the_fleet_validation_naming_the_trial_and_field():
    with pytest.raises(FleetError, match=r"fleet entry 'm--tune-0' \(#3\): field 'cache_type_k'"):
        validate_fleet(FLEET + trials(FLEET, {}, "m", "cache_type_k", ["q3_x"]))


def test_kept_values_add_up_per_model_and_field():
    tuned = tuned_with({}, "m", "threads", 2)
    tuned = tuned_with(tuned, "m", "speculative.draft_n_max", 4)
    tuned = tuned_with(tuned, "other", "extra_args.batch-size", 1024)
    assert tuned == {
        "m": {"threads": 2, "speculative": {"draft_n_max": 4}},
        "other": {"extra_args": {"batch-size": 1024}},
    }


def test_the_filters_name_the_knob_when_the_model_or_field_is_wrong():
    assert FILTERS["tune_current"](knob(), FLEET, {"m": {"threads": 3}}) == 3
    assert [t["threads"] for t in FILTERS["tune_trials"](knob(values=[2, 4]), [2, 4], FLEET, {})] == [2, 4]
    assert FILTERS["tune_kept"]({}, knob(), 2) == {"m": {"threads": 2}}
    with pytest.raises(AnsibleFilterError, match=r"^knob 2 \(x threads\): field 'knob.model': 'x' is not an entry"):
        FILTERS["tune_current"](knob("x"), FLEET, {}, "knob 2 (x threads)")
    with pytest.raises(AnsibleFilterError, match=r"^knob 1: field 'knob.field': 'sampling' is not a field"):
        FILTERS["tune_trials"](knob(field="sampling"), [1], FLEET, {}, "knob 1")


def test_a_spec_gets_the_workload_and_determinism_defaults():
    spec = parse_spec({"name": "t", "knobs": [knob()], "workload": {"repetitions": 3}})
    assert spec.workload["repetitions"] == 3 and spec.workload["max_tokens"] == 32
    assert spec.determinism == {"prompts": "short", "n_predict": 32}
    assert spec.as_dict()["knobs"] == [{"knob": knob()["knob"], "values": [2], "ordered": False}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"knobs": [knob()]}, "field 'name'"),
        ({"name": "a b", "knobs": [knob()]}, "field 'name'"),
        ({"name": "t", "knobs": []}, "field 'knobs': a non-empty list"),
        ({"name": "t", "knobs": [knob(), {"knob": {"kind": "fleet"}, "values": [1]}]}, "knob 2: field 'knob.model'"),
        ({"name": "t", "knobs": [knob()], "workload": {"variants": {}}}, "field 'workload': the harness's"),
        ({"name": "t", "knobs": [knob()], "workload": {"repetitions": 0}}, "field 'workload': workload 't'"),
        ({"name": "t", "knobs": [knob()], "determinism": {"n_predict": 0}}, "field 'determinism.n_predict'"),
        ({"name": "t", "knobs": [knob()], "extra": 1}, "unknown fields ['extra']"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(data, message):
    with pytest.raises(TuneError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_spec(data)


def test_the_check_command_prints_the_spec_or_one_line(tmp_path, capsys):
    good = tmp_path / "good.yml"
    good.write_text("name: t\nknobs:\n  - knob: {kind: fleet, model: m, field: threads}\n    values: [2]\n")
    assert main(["check", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["knobs"][0]["values"] == [2]
    bad = tmp_path / "bad.yml"
    bad.write_text("name: t\nknobs: [{knob: {kind: fleet, model: m, field: threads}, values: [2, 2]}]\n")
    assert main(["check", str(bad)]) == 2
    assert capsys.readouterr().err == f"tuning spec {bad}: knob 1: field 'values': a value appears twice in [2, 2]\n"


def reported(run, spec: dict, applied: dict, stress_cycles: int) -> str:
    """The report the `report` command writes for a run directory, with run.json as apply.yml writes it."""
    info = {"host": "h", "started": "20261203T000000", "spec": parse_spec(spec).as_dict(), "build": "b1"}
    info |= {"spec_path": f"{spec['name']}.yml", "stress_cycles": stress_cycles, "threshold": 0.02}
    info |= {"limits": {"acceptance_drop": 0.05, "drift": 0.05}, "applied": applied}
    (run / "run.json").write_text(json.dumps(info))
    assert main(["report", str(run)]) == 0
    return (run / "report.md").read_text()


def test_steps_are_judged_decided_and_reported_from_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    knob_dir = run / "knob-1"
    rejected, kept = knob_dir / "step-1", knob_dir / "step-2"
    for path in (rejected, kept):
        path.mkdir(parents=True)
    (knob_dir / "knob.json").write_text(
        json.dumps(
            {"knob": knob(values=["q4_0", 2]), "baseline": 1, "untried": [], "trials": ["m--tune-0", "m--tune-1"]}
        )
    )
    # a candidate that changed the greedy output: determinism only, the rest never ran
    (rejected / "determinism.json").write_text(json.dumps({"ok": False, "divergence": "prompt 'short-0', token 4"}))
    assert main(["step", str(rejected), "--value", '"q4_0"']) == 0
    assert capsys.readouterr().out == "'q4_0': failed: greedy output changed (prompt 'short-0', token 4)\n"
    step = json.loads((rejected / "step.json").read_text())
    assert step["evidence"]["measured"] == ["determinism"] and step["evidence"]["verdict"] == "not measured"
    # a candidate measured in full: A/B with the control, then stress
    (kept / "determinism.json").write_text(json.dumps({"ok": True, "divergence": None}))
    variants = {"baseline": {}, "candidate": {}, "control": {}}
    (kept / "results.json").write_text(json.dumps({"variants": variants, "records": []}))
    comparisons = [
        {"metric": "decode_tps candidate v baseline @1", "verdict": "improved", "change": 0.67},
        {"metric": "decode_tps control v baseline @1", "verdict": "no change", "change": 0.004},
    ]
    (kept / "comparisons.json").write_text(json.dumps(comparisons))
    (kept / "stress.json").write_text(
        json.dumps({"cycles": [{"failed": 0, "drift": None}, {"failed": 0, "drift": -0.01}]})
    )
    assert main(["step", str(kept), "--value", "2"]) == 0
    assert capsys.readouterr().out == "2: passed\n"
    assert main(["summary", str(knob_dir)]) == 0
    assert capsys.readouterr().out == "keep 2: passed every check and decoded +67.0% against 1\n"
    summary = json.loads((knob_dir / "summary.json").read_text())
    assert summary["kept"] == 2 and summary["trials"] == ["m--tune-0", "m--tune-1"]
    applied = {
        "changed": True,
        "before": {},
        "tuned": {"m": {"threads": 2}},
        "vars_file": "inventory/host_vars/h/llmrig_tune.yml",
        "post_check": "deterministic: 4 prompts, 128 tokens compared",
        "rolled_back": None,
    }
    report = reported(run, {"name": "t", "knobs": [knob()]}, applied, stress_cycles=2)
    assert "**keep 2: passed every check and decoded +67.0% against 1**" in report
    assert "| `\"q4_0\"` | changed: prompt 'short-0', token 4 |  |  | not measured |  | failed |" in report
    assert "| `2` | same tokens |  | 0 failed, drift -1.0% | +67.0% improved | no change | passed |  |" in report
    assert "Written to `inventory/host_vars/h/llmrig_tune.yml` (llmrig_fleet_tuned)" in report
    # the same run rolled back after the apply
    applied |= {"rolled_back": "Check that each changed model gives the tokens: NOT deterministic", "tuned": {}}
    report = reported(run, {"name": "t", "knobs": [knob()]}, applied, stress_cycles=2)
    assert "**Rolled back** to the values before the run: Check that each" in report and "Written to" not in report


GPUS = [{"index": 0, "power_limit_w": 250, "persistence_mode": True}, {"index": 1, "memory_clock_offset_mhz": 500}]


def gpu_knob(gpu: int = 0, setting: str = "memory_clock_offset_mhz") -> dict:
    return {"knob": {"kind": "gpu", "gpu": gpu, "setting": setting, "model": "m"}, "values": [1000]}


def test_gpu_values_kept_by_tuning_lie_over_the_role_s_list_by_index():
    tuned = FILTERS["tune_gpu_kept"]([], gpu_knob(), 1000)
    tuned = FILTERS["tune_gpu_kept"](tuned, gpu_knob(1), 750)
    tuned = FILTERS["tune_gpu_kept"](tuned, gpu_knob(0, "power_limit_w"), 230)
    assert tuned == [
        {"index": 0, "memory_clock_offset_mhz": 1000, "power_limit_w": 230},
        {"index": 1, "memory_clock_offset_mhz": 750},
    ]
    merged = FILTERS["gpu_tuning_settings"](GPUS, tuned)
    assert merged == [
        {"index": 0, "power_limit_w": 230, "persistence_mode": True, "memory_clock_offset_mhz": 1000},
        {"index": 1, "memory_clock_offset_mhz": 750},
    ]
    assert GPUS[0]["power_limit_w"] == 250  # the role's own list is untouched
    assert FILTERS["gpu_tuning_settings"]([], [{"index": 2, "power_limit_w": 200}]) == [
        {"index": 2, "power_limit_w": 200}
    ]
    assert FILTERS["tune_gpu_current"](gpu_knob(), GPUS, []) is None  # not set: left as the card has it
    assert FILTERS["tune_gpu_current"](gpu_knob(1), GPUS, []) == 500
    assert FILTERS["tune_gpu_current"](gpu_knob(0, "power_limit_w"), GPUS, tuned) == 230
    with pytest.raises(AnsibleFilterError, match=r"field 'llmrig_gpu_tuning_tuned': a list of GPU entries"):
        FILTERS["gpu_tuning_settings"](GPUS, {"0": {"power_limit_w": 1}})


def test_a_gpu_step_s_tool_config_sets_one_setting_of_one_card():
    config = {"gpus": [{"index": 0, "uuid": "GPU-abc", "power_limit_w": 250}]}
    assert FILTERS["tune_gpu_config"](config, gpu_knob(), 1000) == {
        "gpus": [{"index": 0, "uuid": "GPU-abc", "power_limit_w": 250, "memory_clock_offset_mhz": 1000}]
    }
    assert FILTERS["tune_gpu_config"](config, gpu_knob(1), 500)["gpus"][1] == {
        "index": 1,
        "memory_clock_offset_mhz": 500,
    }
    assert FILTERS["tune_gpu_config"](config, gpu_knob(0, "power_limit_w"), None) == {
        "gpus": [{"index": 0, "uuid": "GPU-abc"}]
    }
    assert config["gpus"][0]["power_limit_w"] == 250


def test_a_gpu_knob_s_steps_a_value_the_card_refused_and_the_kept_gpu_values_in_the_report(tmp_path, capsys):
    """The GPU branch's decision logic on files laid out as gpu_step.yml writes them: a value set and
    measured in full, the next one refused by the tuning tool (outside the card's range: not measured), and
    the ordered knob's last value not tried."""
    run = tmp_path / "run"
    knob_dir = run / "knob-1"
    first, refused = knob_dir / "step-1", knob_dir / "step-2"
    for path in (first, refused):
        path.mkdir(parents=True)
    gpu = dict(gpu_knob(), values=[500, 1000, 1500])
    (knob_dir / "knob.json").write_text(json.dumps({"knob": gpu, "baseline": None, "untried": [], "trials": []}))
    (first / "applied.json").write_text(json.dumps({"ok": True, "said": "held the router 0.12 s"}))
    (first / "determinism.json").write_text(json.dumps({"ok": True, "divergence": None}))
    variants = {"baseline": {}, "candidate": {}, "control": {}}
    (first / "results.json").write_text(json.dumps({"variants": variants, "records": []}))
    comparisons = [
        {"metric": "decode_tps candidate v baseline @1", "verdict": "improved", "change": 0.041},
        {"metric": "decode_tps control v baseline @1", "verdict": "no change", "change": -0.002},
    ]
    (first / "comparisons.json").write_text(json.dumps(comparisons))
    (first / "stress.json").write_text(
        json.dumps({"cycles": [{"failed": 0, "drift": None}, {"failed": 0, "drift": 0.0}]})
    )
    assert main(["step", str(first), "--value", "500"]) == 0
    assert capsys.readouterr().out == "500: passed\n"
    said = "gpu0 memory_clock_offset_mhz: failed (wanted 1000, read back 500): 1000 MHz is outside the driver's range"
    (refused / "applied.json").write_text(json.dumps({"ok": False, "said": said}))
    assert main(["step", str(refused), "--value", "1000"]) == 0
    assert capsys.readouterr().out == f"1000: failed: could not be applied: {said}\n"
    assert json.loads((refused / "step.json").read_text())["evidence"]["measured"] == ["apply"]
    assert main(["summary", str(knob_dir)]) == 0
    assert capsys.readouterr().out == "keep 500: passed every check and decoded +4.1% against llama-server's default\n"
    summary = json.loads((knob_dir / "summary.json").read_text())
    assert summary["kept"] == 500 and summary["steps"][2]["skipped"].startswith("not tried: the step to 1000 failed")
    applied = {
        "changed": True,
        "before": {},
        "tuned": {},
        "gpus_before": [],
        "gpus_tuned": [{"index": 0, "memory_clock_offset_mhz": 500}],
        "vars_file": "inventory/host_vars/h/llmrig_tune.yml",
        "post_check": "deterministic: 4 prompts, 128 tokens compared",
        "rolled_back": None,
    }
    report = reported(run, {"name": "g", "knobs": [gpu]}, applied, stress_cycles=6)
    assert "## GPU 0 memory_clock_offset_mhz (measured on 'm')" in report
    assert f"| `1000` | not set | | | | | failed | could not be applied: {said} |" in report
    assert 'GPU values now: `[{"index": 0, "memory_clock_offset_mhz": 500}]` (were `[]`)' in report
    assert "Tuned values now" not in report
    assert "(llmrig_fleet_tuned, llmrig_gpu_tuning_tuned), which every converge reads" in report
