"""Workloads, the runner and the comparison of a run's variants, over real HTTP against the stand-in
endpoint (tests/bench_endpoint.py), whose `slow` model takes 20 % longer per token."""

from __future__ import annotations

import json
import os

import bench_endpoint
import pytest
from bench_endpoint import endpoint
from llmrig_bench.__main__ import main
from llmrig_bench.client import request
from llmrig_bench.compare import compare_run
from llmrig_bench.runner import run
from llmrig_bench.workload import PROMPT_SETS, WorkloadError, long_prompt, parse

WORKLOAD = {
    "name": "ab",
    "api": "completions",
    "max_tokens": 4,
    "prompts": "short",
    "concurrency": [1, 2],
    "repetitions": 3,
    "warmup": 1,
    "sampling": {"temperature": 0, "seed": 1},
    "variants": {"A": {"model": "fast"}, "B": {"model": "slow"}},
}


def test_a_run_keeps_every_record_in_interleaved_rounds():
    with endpoint() as url:
        results = run(parse(WORKLOAD), url, "k", build="abc123")
    records = [r for r in results["records"] if not r["swap"]]
    prompts = len(PROMPT_SETS["short"])
    assert len(records) == 2 * (1 + 3) * 2 * prompts  # levels x rounds x variants x prompts
    assert all(r["status"] == 200 and r["error"] is None for r in results["records"])
    assert sum(r["warmup"] for r in records) == 2 * 2 * prompts
    # the variants interleave, each round starting one later: B A, A B, ... (warm-up round -1 starts with B)
    firsts = [r["variant"] for r in records if r["prompt_id"] == "short-0" and r["concurrency"] == 1]
    assert firsts == ["B", "A", "A", "B"] * 2
    assert results["build"] == "abc123" and results["host"]["cpus"] > 0
    assert results["router_models"]["slow"]["value"] == "loaded"  # the last round was A B
    assert results["router_models"]["fast"]["value"] == "unloaded"


def test_a_round_whose_model_is_not_resident_starts_with_a_timed_swap():
    with endpoint() as url:
        results = run(parse(WORKLOAD), url, "k")
        loads = list(bench_endpoint.LOADS)
        same = run(parse(dict(WORKLOAD, variants={"A": {"model": "fast"}, "B": {"model": "fast"}})), url, "k")
    swaps = [r for r in results["records"] if r["swap"]]
    # one resident model; rounds B A | A B | B A | A B at each level: a swap at every change of model
    assert [r["variant"] for r in swaps] == ["B", "A", "B", "A", "B", "A", "B", "A", "B"]  # 5 at level 1, 4 at 2
    assert all(r["completion_tokens"] == 1 and r["prompt_id"] == "swap" for r in swaps)
    assert all(r["e2e_s"] >= 0.05 for r in swaps)  # the stand-in's load time
    assert swaps[0]["swap_from"] == [] and swaps[1]["swap_from"] == ["slow"]
    # the round's own requests find the model loaded: the stand-in loaded a model for the swap requests only
    assert loads == [r["model"] for r in swaps] == ["slow", "fast"] * 4 + ["slow"]
    # A/A on one model: only the very first round swaps (the warm-up round, which starts with B)
    assert [(r["variant"], r["round"]) for r in same["records"] if r["swap"]] == [("B", -1)]
    assert results["variants"]["B"] == {
        "model": "slow",
        "sampling": {"temperature": 0, "seed": 1},
        "extra": {},
        "direct": False,
        "cold": False,
        "before": [],
        "url": "",
    }


def test_a_direct_variant_goes_to_the_model_process_and_the_other_through_the_router():
    import bench_endpoint

    workload = dict(
        WORKLOAD, concurrency=[1], variants={"A": {"model": "fast"}, "B": {"model": "fast", "direct": True}}
    )
    with endpoint() as url:
        results = run(parse(workload), url, "k")
        router_port = int(url.rsplit(":", 1)[1])
    process_port = bench_endpoint.PROCESS["port"]
    assert len(bench_endpoint.HITS) == len(results["records"]) == 4 * 2 * len(PROMPT_SETS["short"]) + 1
    # the one swap (the first round) goes through the router, which loads the model; then B's rounds go
    # to the process, A's to the router
    assert bench_endpoint.HITS.count((process_port, "fast")) == 4 * len(PROMPT_SETS["short"])
    assert bench_endpoint.HITS.count((router_port, "fast")) == 4 * len(PROMPT_SETS["short"]) + 1
    assert results["variants"]["B"]["direct"] is True


def test_a_variant_with_its_own_front_sends_there_with_that_fronts_key(tmp_path):
    import bench_endpoint

    key = tmp_path / "front-key"
    key.write_text("k\n")  # the stand-in's key; its second port stands for the gateway in front of the router
    with endpoint() as url:
        front = f"http://127.0.0.1:{bench_endpoint.PROCESS['port']}"
        variants = {"A": {"model": "fast"}, "B": {"model": "fast", "url": front, "key_file": str(key)}}
        results = run(parse(dict(WORKLOAD, concurrency=[1], variants=variants)), url, "k")
        key.write_text("not-the-key")
        refused = run(parse(dict(WORKLOAD, concurrency=[1], repetitions=1, variants=variants)), url, "k")
    sent_to_front = [r for r in results["records"] if r["variant"] == "B"]  # its rounds, and a swap if it had one
    assert len(sent_to_front) >= 4 * len(PROMPT_SETS["short"])
    assert bench_endpoint.HITS.count((bench_endpoint.PROCESS["port"], "fast")) == len(sent_to_front)
    assert results["variants"]["B"]["url"] == front and not any(r.get("error") for r in results["records"])
    # with a wrong key the front refuses every request of B, and the results say so
    failed = [r for r in refused["records"] if r["variant"] == "B" and r.get("error")]
    assert failed and all(r["status"] == 401 for r in failed)


def test_a_slower_variant_is_a_regression_and_the_same_one_is_no_change():
    with endpoint() as url:
        slower = compare_run(run(parse(WORKLOAD), url, "k"))
        same = compare_run(
            run(parse(dict(WORKLOAD, variants={"A": {"model": "fast"}, "B": {"model": "fast"}})), url, "k")
        )
    verdicts = {c.metric: c.verdict for c in slower}
    assert verdicts["decode_tps B v A @1"] == "regressed"
    assert verdicts["decode_tps B v A @2"] == "regressed"
    assert {c.metric: c.verdict for c in same}["decode_tps B v A @1"] == "no change"


def test_the_command_line_runs_and_compares(tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(dict(WORKLOAD, concurrency=[1])))
    key = tmp_path / "key"
    key.write_text("k\n")
    out = tmp_path / "results.json"
    with endpoint() as url:
        assert main(["run", str(workload), "--url", url, "--key-file", str(key), "--out", str(out)]) == 0
    assert "ab: 32 requests and 5 swaps, 0 failed" in capsys.readouterr().out
    verdicts = tmp_path / "verdicts.json"
    assert main(["compare", str(out), "--json", str(verdicts)]) == 0
    assert "decode_tps B v A @1: A 100 (n=12), B 83.33 (n=12), change -16.7%" in capsys.readouterr().out
    assert json.loads(verdicts.read_text())[0]["verdict"] == "regressed"


def test_a_bad_workload_is_refused_naming_the_field(tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(dict(WORKLOAD, concurrency=[0])))
    assert main(["run", str(workload), "--key-file", str(workload), "--out", str(tmp_path / "o")]) == 2
    assert "workload 'ab': field 'concurrency': positive whole numbers, got [0]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "field 'name' is required"),
        ({"api": "embeddings"}, "field 'api': completions or chat"),
        ({"prompts": "poems"}, "field 'prompts': unknown set 'poems'"),
        ({"prompts": {"filler": "prose", "tokens": [0]}}, "field 'prompts.tokens'"),
        ({"variants": {"A": {}}}, "field 'variants.A.model' is required"),
        ({"warmup": -1}, "field 'warmup'"),
        ({"colour": "red"}, "unknown fields ['colour']"),
        ({"variants": {"A": {"model": "m", "port": 1}}}, "field 'variants.A': unknown fields ['port']"),
        (
            {"variants": {"A": {"model": "m", "url": "x", "key_file": "k"}}},
            "field 'variants.A.url': an http.s. base URL",
        ),
        (
            {"variants": {"A": {"model": "m", "url": "http://h:4000"}}},
            "field 'variants.A.key_file': the key file of url",
        ),
        ({"variants": {"A": {"model": "m", "direct": "yes"}}}, "field 'variants.A.direct': true or false"),
    ],
)
def test_workload_errors(change, message):
    with pytest.raises(WorkloadError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse(dict(WORKLOAD, **change))


def test_long_prompts_reach_about_the_depth_asked():
    workload = parse(dict(WORKLOAD, prompts={"filler": "coding", "tokens": [100, 1000]}))
    assert [p.id for p in workload.prompts] == ["coding-100", "coding-1000"]
    assert len(long_prompt("prose", 1000).split()) == pytest.approx(750, abs=12)


def test_the_report_has_the_verdicts_and_real_plots(tmp_path, capsys):
    with endpoint() as url:
        results = run(parse(WORKLOAD), url, "k", build="abc123")
    out = tmp_path / "results.json"
    out.write_text(json.dumps(results))
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report/report.md").read_text()
    assert "| decode_tps B v A @1 | 100 | 83.33 | -16.7% |" in report
    assert "regressed" in report and "build: `abc123`" in report
    # drafts: timings and /metrics agree (32 requests and 4 swaps of A, 6 drafted and 3 accepted each)
    assert "| A | 216 | 108 | 216 | 108 | 50.0% |" in report
    assert "| A | 4 | 0.0" in report  # swaps of A
    for name in ("latency-cdf.png", "decode-tps.png", "ttft-vs-prompt.png", "acceptance.png", "swaps.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name
        assert f"![{name}]({name})" in report
    assert json.loads((tmp_path / "report/comparisons.json").read_text())[0]["verdict"] == "regressed"


def test_draft_counts_from_the_responses_agree_with_the_metrics_counters():
    from llmrig_bench.runner import spec_totals

    with endpoint() as url:
        # requests before the run: the counters' starting point, not counted
        request(url, "k", "fast", "before the run")
        results = run(parse(dict(WORKLOAD, concurrency=[1])), url, "k")
    totals = spec_totals(results)
    # 4 rounds (warm-up included) of each prompt; rounds B A | A B | B A | A B after a request to A: swaps
    # before B's first, A's first, B's second (B A), ... : B swaps 3 times, A twice
    requests = {"A": 4 * len(PROMPT_SETS["short"]) + 2, "B": 4 * len(PROMPT_SETS["short"]) + 3}
    for variant in ("A", "B"):
        assert totals[variant]["timings_drafted"] == 6 * requests[variant]
        assert totals[variant]["metrics_drafted"] == totals[variant]["timings_drafted"]
        assert totals[variant]["metrics_accepted"] == totals[variant]["timings_accepted"] == 3 * requests[variant]
        assert totals[variant]["acceptance"] == 0.5


def test_a_new_model_process_counts_from_zero():
    from llmrig_bench.runner import spec_totals

    readings = [
        {"model": "m", "variant": None, "port": "1", "drafted": 3.0, "accepted": 1.0},  # before the run
        {"model": "m", "variant": "A", "port": "1", "drafted": 10.0, "accepted": 5.0},
        {"model": "m", "variant": "A", "port": "1", "drafted": 25.0, "accepted": 12.0},
        {"model": "m", "variant": "A", "port": "2", "drafted": 4.0, "accepted": 4.0},  # swapped out and back
    ]
    results = {"variants": {"A": {}}, "records": [], "spec_counters": readings}
    assert spec_totals(results)["A"]["metrics_drafted"] == 7.0 + 15.0 + 4.0
    assert spec_totals(results)["A"]["metrics_accepted"] == 4.0 + 7.0 + 4.0


def test_stress_cycles_count_failures_and_drift(tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(dict(WORKLOAD, repetitions=1, variants={"A": {"model": "fast"}})))
    key = tmp_path / "key"
    key.write_text("k\n")
    with endpoint() as url:
        assert main(["stress", str(workload), "--url", url, "--key-file", str(key), "--cycles", "3"]) == 0
        out = capsys.readouterr().out
        cut = tmp_path / "cut.json"
        cut.write_text(json.dumps(dict(WORKLOAD, repetitions=1, variants={"A": {"model": "cut"}})))
        assert main(["stress", str(cut), "--url", url, "--key-file", str(key), "--cycles", "2"]) == 1
    assert "stress ab (fast, 2 at a time):" in out
    assert "cycle 3: 4 requests, 0 failed, decode 100.0 tokens/s (drift +0.0%)" in out
    assert "cycle 2: 4 requests, 4 failed" in capsys.readouterr().out


def test_a_report_with_a_stress_run_has_its_cycles_and_plot(tmp_path, capsys):
    workload = tmp_path / "w.json"
    workload.write_text(json.dumps(dict(WORKLOAD, concurrency=[1], repetitions=1)))
    key = tmp_path / "key"
    key.write_text("k\n")
    with endpoint() as url:
        common = ["--url", url, "--key-file", str(key)]
        assert main(["run", str(workload), *common, "--out", str(tmp_path / "results.json")]) == 0
        stress = tmp_path / "stress.json"
        assert main(["stress", str(workload), *common, "--cycles", "3", "--out", str(stress)]) == 0
    assert main(["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "r"), "--stress", str(stress)]) == 0
    report = (tmp_path / "r/report.md").read_text()
    assert "## Stress (3 cycles of fast, 1 at a time)" in report
    assert "| 3 | 4 | 0 | 100.00 | +0.0% |" in report
    data = (tmp_path / "r/stress.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000 and "![stress.png](stress.png)" in report


def test_check_validates_a_workload_file(tmp_path, capsys):
    good = tmp_path / "good.yml"
    good.write_text("name: g\nvariants: {A: {model: m}}\nprompts: coding\n")
    assert main(["check", str(good)]) == 0
    assert "g: 3 prompts, 1 variants" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text("name: b\nvariants: {A: {}}\n")
    assert main(["check", str(bad)]) == 2
    assert "field 'variants.A.model' is required" in capsys.readouterr().err


def test_a_cold_variant_drops_its_model_file_from_the_page_cache_before_each_swap(tmp_path, monkeypatch):
    import bench_endpoint

    model_file = tmp_path / "model.gguf"
    with model_file.open("wb") as handle:
        handle.write(b"\1" * (4 << 20))
        handle.flush()
        os.fsync(handle.fileno())  # written back: clean pages, which can be dropped
    model_file.read_bytes()  # in the page cache now
    monkeypatch.setattr(bench_endpoint, "MODEL_FILE", [str(model_file)])
    workload = dict(WORKLOAD, concurrency=[1], variants={"A": {"model": "fast"}, "B": {"model": "slow", "cold": True}})
    with endpoint() as url:
        results = run(parse(workload), url, "k")
    swaps = [r for r in results["records"] if r["swap"]]
    assert {r["variant"] for r in swaps} == {"A", "B"}
    for record in swaps:
        if record["variant"] == "A":
            assert record["evicted"] is None  # a warm variant's file is left alone
            continue
        evicted = record["evicted"]
        assert evicted["file"] == str(model_file) and evicted["error"] is None, evicted
        # the file is on a disk here (not tmpfs, whose pages cannot be dropped): all of it goes. Before the
        # drop it was read again since the last one (the stand-in reads it at each load), though the kernel may
        # have let a few of its pages go meanwhile (seen in CI: 4,177,920 of 4,194,304 bytes)
        assert evicted["cached_before"] >= (4 << 20) * 3 // 4 and evicted["cached_after"] == 0, evicted
    assert results["variants"]["B"]["cold"] is True


def test_host_facts_record_the_gpus_and_the_tuning_status_and_the_report_shows_them(tmp_path, monkeypatch):
    """Stand-ins for nvidia-smi and the tuning CLI (the parsing and the report, not the GPU path)."""
    from llmrig_bench import runner

    smi = tmp_path / "bin/nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 4080 SUPER, 2610, 11501, 320.00, 41, 15012, 16376'\n")
    tuning = tmp_path / "llmrig-gpu-tuning"
    tuning.write_text("#!/bin/sh\necho 'gpu0 power_limit_w: configured 280, current 280'\n")
    for script in (smi, tuning):
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(runner, "GPU_TUNING_CLI", str(tuning))
    facts = runner.host_facts()
    assert facts["gpus"] == [
        {
            "index": "0",
            "name": "NVIDIA GeForce RTX 4080 SUPER",
            "clocks.sm": "2610",
            "clocks.mem": "11501",
            "power.limit": "320.00",
            "temperature.gpu": "41",
            "memory.used": "15012",
            "memory.total": "16376",
        }
    ]
    assert facts["gpu_tuning_status"] == {"rc": 0, "lines": ["gpu0 power_limit_w: configured 280, current 280"]}
    with endpoint() as url:
        results = run(parse(dict(WORKLOAD, concurrency=[1], repetitions=1)), url, "k")
    from llmrig_bench.report import write

    report = write(results, tmp_path / "report").read_text()
    assert "- index 0, name NVIDIA GeForce RTX 4080 SUPER, clocks.sm 2610, clocks.mem 11501" in report
    assert "```\ngpu0 power_limit_w: configured 280, current 280\n```" in report


def test_a_variant_s_before_command_runs_before_each_of_its_rounds_and_a_failure_stops_the_run(tmp_path, capsys):
    """Variants that differ in a host setting: the command that sets it runs before each of the variant's
    rounds, in the order the rounds run, and one that fails stops the run saying which."""
    log = tmp_path / "order"
    variants = {
        "A": {"model": "fast", "before": ["sh", "-c", f"echo A >> {log}"]},
        "B": {"model": "fast", "before": ["sh", "-c", f"echo B >> {log}"]},
    }
    workload = dict(WORKLOAD, concurrency=[1], repetitions=2, variants=variants)
    with endpoint() as url:
        results = run(parse(workload), url, "k")
        firsts = [r["variant"] for r in results["records"] if r["prompt_id"] == "short-0"]
        assert log.read_text().split() == firsts == ["B", "A", "A", "B", "B", "A"]  # warm-up, then two rounds
        assert [b["variant"] for b in results["before"]] == firsts and results["variants"]["A"]["before"]
        failing = {"model": "fast", "before": ["sh", "-c", "echo no >&2; exit 4"]}
        broken = dict(workload, variants=dict(variants, B=failing))
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        key = tmp_path / "key"
        key.write_text("k\n")
        assert main(["run", str(path), "--url", url, "--key-file", str(key), "--out", str(tmp_path / "r.json")]) == 1
    assert "variant 'B': its before command sh exited 4: no; the run stopped" in capsys.readouterr().err
    with pytest.raises(WorkloadError, match=r"variants.A.before': a command as a list of strings"):
        parse(dict(workload, variants={"A": {"model": "m", "before": "sh -c true"}}))
