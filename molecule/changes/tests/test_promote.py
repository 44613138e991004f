"""Benchmark-gated model promotion for real on the test host. gemma-hot serves gemma-coder and samples from the
whole vocabulary at temperature 5 (its code is noise); gemma-cool (candidate_for: gemma-hot) is the same file
decoding greedily. `playbooks/evaluate.yml` runs both on the coding task set (tests run in the sandbox) and
in an interleaved speed run, and its verdict picks gemma-cool. A promotion whose candidate cannot start (a
host override naming a LoRA file that is not there) is rolled back; `playbooks/promote.yml` then hands it
gemma-hot's name and alias while a client keeps calling the alias, with no failed request. Second runs with
the promotion in place change nothing.

The promotion stays on the host until the next converge without the promotions file (test_upgrade's)
returns the fleet to group_vars; the tests between (recovery, security, tuning) use other models."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from llmrig_testlib import API_KEY, GATEWAY_URL, TEST_HOST, Load, plain, recap_changed, request, run_playbook

GROUPS = ["llm_servers", "llmrig_test"]
QUICK = {
    "llmrig_eval_samples": 1,
    "llmrig_eval_max_tokens": 48,
    "llmrig_eval_workload": {"max_tokens": 32, "prompts": "short", "repetitions": 2},
}
# lm-eval (in the controller's venv) on the shipped local task, through the plain completions API: the test
# model has no chat template of its own
LM_EVAL = {
    "llmrig_eval_lm_eval_python": sys.executable,
    "llmrig_eval_lm_eval_url": GATEWAY_URL,
    "llmrig_eval_lm_eval_api": "completions",
}


def playbook(name: str, extra: dict, *args: str) -> str:
    returncode, output = run_playbook(TEST_HOST, GROUPS, name, extra, *args)
    assert returncode == 0, output[-4000:]
    return output


def completion(model: str) -> tuple[int, str]:
    body = {"model": model, "prompt": "def add(a, b):", "max_tokens": 8, "cache_prompt": False}
    status, body = request("POST", "/v1/completions", body)
    return status, body["choices"][0]["text"] if status == 200 else str(body)


@pytest.mark.quiet
def test_the_evaluation_picks_the_better_model_and_the_promotion_moves_its_name_without_a_failure(tmp_path):
    reports = tmp_path / "reports"
    output = playbook("evaluate.yml", {**QUICK, **LM_EVAL, "llmrig_eval_reports_dir": str(reports)})
    (run_dir,) = (reports / TEST_HOST).iterdir()
    assert run_dir.name.endswith("-eval-gemma-cool")
    verdict = json.loads((run_dir / "verdict.json").read_text())
    print((run_dir / "verdict.md").read_text())
    assert (verdict["incumbent"], verdict["candidate"]) == ("gemma-hot", "gemma-cool")
    scores = verdict["scores"]
    assert scores["gemma-cool"]["weighted"] > scores["gemma-hot"]["weighted"], scores
    assert scores["gemma-cool"]["levels"]["1"] >= 0.5  # greedy, the tiny model solves easy tasks
    assert verdict["quality"]["verdict"] == "better" and verdict["quality"]["low"] > 0, verdict["quality"]
    assert verdict["speed"]["verdict"] != "regressed", verdict["speed"]
    assert verdict["promote"] and verdict["decision"].startswith("promote: the candidate's quality is better")
    markdown = (run_dir / "verdict.md").read_text()
    assert "| gemma-hot | made-up leaderboard (test data) | 99.0 | group_vars/llmrig_test.yml |" in markdown
    assert "5. otherwise keep the incumbent: a change needs a measured gain." in markdown
    assert (run_dir / "quality.png").read_bytes().startswith(b"\x89PNG")
    assert (run_dir / "speed" / "decode-tps.png").read_bytes().startswith(b"\x89PNG")
    # the model-written code ran in the sandbox on the controller, and failed tests were recorded as such
    graded = json.loads((run_dir / "scores-gemma-hot.json").read_text())
    assert graded["samples"] and {s["status"] for s in graded["samples"]} <= {"passed", "failed", "timeout"}
    assert "gemma-cool for gemma-hot:" in output
    # lm-eval's scores of both, measured through the endpoint, beside the rule (lm-eval asks for temperature 0,
    # so the two presets of one file answer alike there)
    arith = {name: verdict["external"][name]["tasks"]["llmrig_arith"] for name in ("gemma-hot", "gemma-cool")}
    assert arith["gemma-cool"]["exact_match,last-number"]["value"] > 0, arith
    assert verdict["external"]["gemma-cool"]["samples"] == {"llmrig_arith": 16}
    assert "## lm-eval 0.4.13 through the endpoint (measured here; not in the rule)" in markdown
    assert (run_dir / "lm-eval" / "gemma-hot" / "lm-eval.log").exists()
    assert API_KEY not in output and not list(Path(tempfile.gettempdir()).glob("*.llmrig-key")), "key left behind"

    cool_text = completion("gemma-cool")[1]
    vars_file = tmp_path / "host_vars" / TEST_HOST / "llmrig_promoted.yml"
    promote = {"llmrig_promote_candidate": "gemma-cool", "llmrig_promote_verdict": str(run_dir / "verdict.json")}

    # a rollback first: this host's override gives the candidate a LoRA adapter file that is not there, so its
    # process cannot start once it answers to the incumbent's name. The check after the reload fails, the
    # promotion is taken back in the same drained way, the run fails saying why, and nothing is written.
    broken = {"llmrig_fleet_overrides": {"gemma-cool": {"extra_args": {"lora": "/nonexistent/adapter.gguf"}}}}
    returncode, output = run_playbook(
        TEST_HOST, GROUPS, "promote.yml", {**promote, **broken, "llmrig_promote_vars_file": str(vars_file)}
    )
    said = plain(output)
    assert returncode != 0, output[-3000:]
    assert "the promotion of gemma-cool was rolled back: Ask the incumbent's name for a completion" in said, said[
        -3000:
    ]
    assert not vars_file.exists()
    models = {m["id"]: m for m in request("GET", "/models")[1]["data"]}
    assert "gemma-coder" in models["gemma-hot"]["aliases"] and "gemma-hot--previous" not in models, models.keys()
    assert completion("gemma-coder")[0] == 200  # the incumbent serves its name and alias again
    # a client of the alias, one request after another with short pauses
    with Load("gemma-coder", pause=0.2) as client:
        time.sleep(1)
        output = playbook("promote.yml", {**promote, "llmrig_promote_vars_file": str(vars_file)})
        time.sleep(1)
    statuses = [outcome.status for outcome in client.outcomes]
    print(f"\nclient of gemma-coder during the promotion: {len(statuses)} requests, statuses {sorted(set(statuses))}")
    errors = [(o.status, o.answer or o.error) for o in client.outcomes if o.status != 200]
    assert len(statuses) >= 10 and set(statuses) == {200}, errors
    assert "RUNNING HANDLER [llmrig_gateway : Drain the models whose preset changes, then reload the presets]" in output
    assert yaml.safe_load(vars_file.read_text()) == {"llmrig_fleet_promoted": {"gemma-hot": "gemma-cool"}}
    models = {m["id"]: m for m in request("GET", "/models")[1]["data"]}
    assert set(models["gemma-cool"]["aliases"]) == {"gemma-hot", "gemma-coder"}, models["gemma-cool"]["aliases"]
    assert models["gemma-hot--previous"]["aliases"] == []  # the way back, still served
    # the name and the alias now reach the greedy candidate: the same text as asking it by its own name (with
    # the model's own sampling: the incumbent's, at temperature 5, would not repeat itself)
    assert completion("gemma-coder") == completion("gemma-hot") == completion("gemma-cool") == (200, cool_text)

    # with the promotion in the inventory: no candidate is left to evaluate, and the promotion is done
    again = ["-e", f"@{vars_file}"]
    output = playbook("evaluate.yml", {**QUICK, "llmrig_eval_reports_dir": str(tmp_path / "again")}, *again)
    assert "nothing to evaluate" in plain(output) and not (tmp_path / "again").exists()
    assert recap_changed(output, TEST_HOST) == 0, output[-3000:]
    output = playbook("promote.yml", promote, *again)
    assert f"gemma-cool answers to gemma-hot on {TEST_HOST} already; nothing changed" in plain(output)
    assert recap_changed(output, TEST_HOST) == 0, output[-3000:]


def test_a_verdict_that_keeps_the_incumbent_refuses_the_promotion(host, tmp_path):
    """A verdict for gemma-cool that says to keep the incumbent: refused before anything changes."""
    verdict = tmp_path / "verdict.json"
    decision = "keep the incumbent: the candidate decodes slower (rule 2)"
    verdict.write_text(
        json.dumps({"incumbent": "gemma-hot", "candidate": "gemma-cool", "promote": False, "decision": decision})
    )
    presets = host.file("/etc/llmrig/presets.ini").sha256sum
    extra = {"llmrig_promote_candidate": "gemma-cool", "llmrig_promote_verdict": str(verdict)}
    extra["llmrig_promote_vars_file"] = str(tmp_path / "host_vars" / TEST_HOST / "llmrig_promoted.yml")
    returncode, output = run_playbook(TEST_HOST, GROUPS, "promote.yml", extra)
    assert returncode != 0
    message = " ".join(output.split())
    assert f"the verdict ({verdict}) says: {decision}; nothing changed" in message, output[-2000:]
    assert host.file("/etc/llmrig/presets.ini").sha256sum == presets
    assert not (tmp_path / "host_vars").exists()


def test_an_lm_eval_environment_without_lm_eval_is_refused_before_anything_runs(tmp_path):
    """llmrig_eval_lm_eval_python naming an interpreter that cannot import lm_eval: refused in the preflight,
    naming the setting, before the harness is copied or a request is sent."""
    extra = {**QUICK, **LM_EVAL, "llmrig_eval_lm_eval_python": "/usr/bin/python3"}
    returncode, output = run_playbook(
        TEST_HOST, GROUPS, "evaluate.yml", {**extra, "llmrig_eval_reports_dir": str(tmp_path / "reports")}
    )
    said = plain(output)
    assert returncode != 0 and "llmrig_eval_lm_eval_python: /usr/bin/python3 cannot import lm_eval" in said, said[
        -2000:
    ]
    assert "Copy the harness to the host" not in said and not (tmp_path / "reports").exists()
