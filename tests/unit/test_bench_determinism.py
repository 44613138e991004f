"""The determinism check against the stand-in endpoint's /completion (tests/bench_endpoint.py): a baseline,
the same again, and a changed prompt set, sampling setting or model, each named with its position."""

from __future__ import annotations

import json

from bench_endpoint import endpoint
from llmrig_bench.determinism import check, first_difference, record
from llmrig_bench.workload import Prompt

PROMPTS = [Prompt("p0", "The capital of France is"), Prompt("p1", "def fib(n):")]


def test_the_same_model_and_settings_are_deterministic():
    with endpoint() as url:
        baseline = record(url, "k", "fast", PROMPTS, n_predict=16)
        outcome = check(url, "k", baseline)
    assert baseline["sampling"] == {"temperature": 0.0, "seed": 42, "cache_prompt": False}
    assert [len(p["tokens"]) for p in baseline["prompts"]] == [16, 16]
    assert outcome.ok and outcome.tokens == 32
    assert outcome.summary() == "deterministic: 2 prompts, 32 tokens compared"


def test_a_changed_sampling_setting_is_named_with_its_position():
    with endpoint() as url:
        baseline = record(url, "k", "fast", PROMPTS, n_predict=16)
        outcome = check(url, "k", baseline, sampling={"temperature": 0.8})
    assert not outcome.ok
    assert (outcome.divergence.prompt_id, outcome.divergence.position) == ("p0", 3)
    assert "first difference at prompt 'p0', token 3" in outcome.summary()
    assert "temperature: 0.0 -> 0.8" in outcome.summary()


def test_a_changed_prompt_and_an_unstable_model_are_caught():
    with endpoint() as url:
        baseline = record(url, "k", "fast", PROMPTS, n_predict=16)
        changed = check(url, "k", baseline, prompts=[PROMPTS[0], Prompt("p1", "def fibonacci(n):")])
        flaky = check(url, "k", baseline, model="flaky")
    assert changed.divergence.prompt_id == "p1" and changed.divergence.position == 0
    assert changed.changed_inputs == ["prompt 'p1' is not the baseline's 'p1'"]
    assert (flaky.divergence.prompt_id, flaky.divergence.position) == ("p0", 5)
    assert flaky.tokens == 5


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2


def test_the_command_line_records_and_checks(tmp_path, capsys):
    from llmrig_bench.__main__ import main

    key = tmp_path / "key"
    key.write_text("k\n")
    baseline = tmp_path / "baseline.json"
    with endpoint() as url:
        common = ["--url", url, "--key-file", str(key)]
        assert main(["determinism", "record", str(baseline), *common, "--model", "fast", "--n-predict", "8"]) == 0
        assert "baseline of fast: 4 prompts, 32 tokens" in capsys.readouterr().out
        assert main(["determinism", "check", str(baseline), *common]) == 0
        assert "deterministic: 4 prompts, 32 tokens compared" in capsys.readouterr().out
        outcome = tmp_path / "outcome.json"
        assert main(["determinism", "check", str(baseline), *common, "--model", "flaky", "--json", str(outcome)]) == 1
        assert "NOT deterministic" in capsys.readouterr().out
        written = json.loads(outcome.read_text())
        sixth = json.loads(baseline.read_text())["prompts"][0]["tokens"][5]
        assert not written["ok"] and written["prompts"] == 4 and written["tokens"] == 5
        assert written["divergence"] == f"prompt 'short-0', token 5: expected {sixth}, got {sixth + 1}"
        # another prompt set, paired in order with the baseline's: the first prompt differs at once
        assert main(["determinism", "check", str(baseline), *common, "--prompts", "coding"]) == 1
        out = capsys.readouterr().out
        assert "first difference at prompt 'coding-0', token 0" in out
        assert "3 prompts, the baseline has 4" in out
        # a sampling change: the stand-in's tokens change from the fourth on, as sampling would
        assert main(["determinism", "check", str(baseline), *common, "--sampling", '{"temperature": 1}']) == 1
        assert "prompt 'short-0', token 3" in capsys.readouterr().out
        assert main(["determinism", "check", str(baseline), *common, "--sampling", "[1]"]) == 2
        assert "--sampling: a JSON object" in capsys.readouterr().err


def test_a_prompt_the_baseline_lacks_fails_the_check():
    with endpoint() as url:
        baseline = record(url, "k", "fast", PROMPTS[:1], n_predict=4)
        outcome = check(url, "k", baseline, prompts=PROMPTS)
    assert not outcome.ok
    assert "the baseline has no prompt to compare it with" in outcome.summary()
