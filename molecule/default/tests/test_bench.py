"""The benchmark harness for real on the test host: `playbooks/bench.yml` runs a workload there and writes the
report on the controller (with a stress cycle), n-gram speculative decoding shows the same draft counts in
the responses and in /metrics and gets an "improved" verdict, the determinism check passes on an unchanged
model and fails, naming the place, when an input changes, and the page cache keeps or drops a file. The
interleaved A/B run with its A/A control and stress cycles is in test_tune.py, the tuning procedure's test.

The test fleet has the presets these need (group_vars/llmrig_test.yml): gemma-a, gemma-ngram (spec-type
ngram-simple), gemma-b (q8_0 KV cache, two slots), gemma-disk and gemma-kept."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llmrig_bench.runner import spec_totals
from llmrig_testlib import API_KEY, GATEWAY_URL, REPO, TEST_HOST, run_playbook

GROUPS = ["llm_servers", "llmrig_test"]


def bench(workload: str, reports: Path, **settings: object) -> tuple[dict, dict[str, dict], str]:
    """Run files/bench/<workload>.yml with the playbook (and role settings); the raw results, the verdicts by
    metric and the report's Markdown."""
    extra = {"llmrig_bench_workload": str(REPO / "files/bench" / f"{workload}.yml"), "llmrig_bench_label": "molecule"}
    extra.update(llmrig_bench_reports_dir=str(reports), **settings)
    returncode, output = run_playbook(TEST_HOST, GROUPS, "bench.yml", extra)
    assert returncode == 0, output[-3000:]
    (run_dir,) = (reports / TEST_HOST).iterdir()
    assert run_dir.name.endswith("-molecule")
    results = json.loads((run_dir / "results.json").read_text())
    verdicts = {c["metric"]: c for c in json.loads((run_dir / "comparisons.json").read_text())}
    for name in ("latency-cdf.png", "decode-tps.png", "ttft-vs-prompt.png", "swaps.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
    report = (run_dir / "report.md").read_text()
    print(report)  # the figures, in the verifier's output
    return results, verdicts, report


@pytest.mark.quiet  # speed verdicts: alone on the CPUs (tests/llmrig_turns.py)
def test_ngram_drafts_agree_between_timings_and_metrics_and_get_a_verdict(tmp_path):
    results, verdicts, report = bench("ngram", tmp_path, llmrig_bench_stress_cycles=1)
    totals = spec_totals(results)
    assert totals["A"]["timings_drafted"] == totals["A"]["metrics_drafted"] == 0
    ngram = totals["B"]
    assert ngram["timings_drafted"] > 100, ngram
    assert ngram["metrics_drafted"] == ngram["timings_drafted"], ngram
    assert ngram["metrics_accepted"] == ngram["timings_accepted"], ngram
    assert 0 < ngram["acceptance"] <= 1
    assert f"| B | {ngram['timings_drafted']:.0f} | {ngram['timings_accepted']:.0f} |" in report
    # drafts that are mostly accepted on text that repeats itself: decoding gets faster
    assert verdicts["decode_tps B v A @1"]["verdict"] == "improved", verdicts["decode_tps B v A @1"]
    # the playbook's stress cycle of the first variant (gemma-a), in the report with its plot
    assert "## Stress (1 cycle of gemma-a, 1 at a time)" in report
    assert re.search(r"^\| 1 \| \d+ \| 0 \| [\d.]+ \| ", report, re.M), report
    (stress_plot,) = (tmp_path / TEST_HOST).glob("*-molecule/stress.png")
    assert stress_plot.read_bytes().startswith(b"\x89PNG")


def determinism(*args: str, key_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmrig_bench", "determinism", *args, "--url", GATEWAY_URL, "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        cwd=REPO / "tools",
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("determinism")
    key = work / "key"
    key.write_text(API_KEY + "\n")
    path = work / "baseline.json"
    done = determinism("record", str(path), "--model", "gemma-a", key_file=key)
    assert done.returncode == 0, done.stderr
    assert "baseline of gemma-a: 4 prompts, 128 tokens" in done.stdout
    return path, key


def test_determinism_passes_on_the_unchanged_model(baseline):
    path, key = baseline
    done = determinism("check", str(path), key_file=key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("deterministic: 4 prompts, 128 tokens compared")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--sampling", '{"temperature": 1.0}'], "(inputs differ from the baseline: temperature: 0.0 -> 1.0)"),
        (["--prompts", "coding"], "first difference at prompt 'coding-0', token 0"),
        # the same file and greedy sampling, but another preset (a q8_0 KV cache): a server-side change
        (["--model", "gemma-b"], "first difference at prompt 'short-0', token "),
    ],
)
def test_determinism_fails_naming_the_place_when_an_input_changes(baseline, change, named):
    path, key = baseline
    done = determinism("check", str(path), *change, key_file=key)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("NOT deterministic") and named in done.stdout, done.stdout


@pytest.mark.quiet  # speed verdicts: alone on the CPUs (tests/llmrig_turns.py)
def test_a_kept_file_stays_in_the_page_cache_and_a_cold_one_is_read_from_disk(host, tmp_path):
    unit = host.service("llmrig-page-cache")
    assert unit.is_running and unit.is_enabled
    kept = host.run("fincore --bytes --noheadings --output RES,SIZE /var/lib/llmrig/models/gemma-kept.gguf")
    resident, size = (int(v) for v in kept.stdout.split())
    assert resident >= size  # every page of the kept file is in RAM (fincore counts whole pages)
    results, verdicts, report = bench("pagecache", tmp_path)
    swaps = {name: [r for r in results["records"] if r["swap"] and r["variant"] == name] for name in "ABC"}
    assert all(len(s) >= 8 for s in swaps.values()), {k: len(v) for k, v in swaps.items()}
    for record in swaps["B"]:
        # dropped before each swap: almost nothing of gemma-disk's file stayed cached
        assert record["evicted"]["error"] is None and record["evicted"]["cached_after"] < size // 10, record["evicted"]
    for record in swaps["C"]:
        # the same drop leaves the locked file whole
        assert record["evicted"]["cached_after"] >= size, record["evicted"]
    assert all(r["evicted"] is None for r in swaps["A"])
    # the swap times are compared in the report; their verdicts are printed, not asserted: how much a read
    # from disk costs depends on the disk (and on what caches it below this machine)
    assert "| swap_s B v A |" in report and "| swap_s C v A |" in report
    print({name: verdicts[f"swap_s {name} v A"]["verdict"] for name in "BC"})
