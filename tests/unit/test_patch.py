"""Routine patching's logic (tools/llmrig_patch): the installed packages and their changes from dpkg-query's
lines, the hold patterns, apt's plan, the reboot reasons, the benchmark after against before over real HTTP
against the stand-in endpoint, and the report with its failures. The playbook runs in Molecule
(molecule/changes/tests/test_patch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import bench_endpoint
import pytest
from bench_endpoint import endpoint
from llmrig_bench.runner import run
from llmrig_bench.workload import parse
from llmrig_patch import packages
from llmrig_patch.__main__ import main
from llmrig_patch.benchmark import compare_runs
from llmrig_patch.report import boot_reasons

FIXTURES = Path(__file__).parent / "fixtures/patch"
BEFORE = """ii  bash 5.2.15-2+b8
hi  nvidia-driver 535.247.01-1~deb12u1
ii  libnvidia-ml1:amd64 535.247.01-1~deb12u1
ii  curl 7.88.1-10+deb12u14
rc  oldpkg 1.0-1
un  never-installed <none>
ii  tzdata 2025b-0+deb12u2
"""
AFTER = """ii  bash 5.2.15-2+b13
hi  nvidia-driver 535.247.01-1~deb12u1
ii  libnvidia-ml1:amd64 535.247.01-1~deb12u1
ii  curl 7.88.1-10+deb12u15
ii  tzdata 2026f-0+deb12u1
ii  linux-image-6.1.0-44-amd64 6.1.164-1
"""
WORKLOAD = {
    "name": "patch",
    "api": "completions",
    "max_tokens": 4,
    "prompts": "short",
    "repetitions": 4,
    "warmup": 1,
    "variants": {"fast": {"model": "fast"}},
}


def test_installed_packages_are_read_with_their_holds_and_removed_ones_left_out():
    found = packages.installed(BEFORE)
    assert sorted(found) == ["bash", "curl", "libnvidia-ml1:amd64", "nvidia-driver", "tzdata"]
    assert found["nvidia-driver"].held and not found["bash"].held
    assert found["curl"].version == "7.88.1-10+deb12u14"


def test_changes_are_the_difference_of_the_installed_versions():
    changed = packages.changes(packages.installed(BEFORE), packages.installed(AFTER))
    assert [(c["name"], c["change"], c["from"], c["to"]) for c in changed] == [
        ("bash", "upgraded", "5.2.15-2+b8", "5.2.15-2+b13"),
        ("curl", "upgraded", "7.88.1-10+deb12u14", "7.88.1-10+deb12u15"),
        ("linux-image-6.1.0-44-amd64", "installed", None, "6.1.164-1"),
        ("tzdata", "upgraded", "2025b-0+deb12u2", "2026f-0+deb12u1"),
    ]


def test_hold_patterns_cover_the_driver_packages_with_or_without_an_architecture():
    found = packages.installed(BEFORE)
    assert packages.covered(found, ["nvidia-*", "libnvidia-*", "cuda-*"]) == ["libnvidia-ml1:amd64", "nvidia-driver"]
    assert packages.covered(found, ["cuda-*"]) == []


def test_apt_plan_is_read_from_a_real_simulation():
    plan = packages.planned((FIXTURES / "apt-simulation.txt").read_text())
    assert [p["name"] for p in plan] == ["bash", "tzdata", "curl", "libcurl4"]
    assert plan[1] == {
        "name": "tzdata",
        "from": "2025b-0+deb12u2",
        "to": "2026f-0+deb12u1",
        "origin": "Debian-Security:12/oldstable-security",
    }
    assert packages.planned("Inst newpkg (1.0-1 Debian:12.15/oldstable [amd64])")[0]["from"] is None


def test_a_reboot_is_needed_for_a_kernel_microcode_or_the_debian_flag():
    changed = packages.changes(packages.installed(BEFORE), packages.installed(AFTER))
    assert boot_reasons(changed, None) == ["linux-image-6.1.0-44-amd64 (new) -> 6.1.164-1"]
    assert boot_reasons(changed[:2], None) == []
    assert boot_reasons([], "libc6 dbus\n") == ["/run/reboot-required: libc6 dbus"]
    assert boot_reasons([], "") == ["/run/reboot-required: present"]


def runs(monkeypatch, slower: float) -> tuple[dict, dict]:
    """The same workload before and after, the stand-in taking `slower` times as long per token after."""
    with endpoint() as url:
        before = run(parse(WORKLOAD), url, "k")
        monkeypatch.setattr(bench_endpoint, "GAP_S", bench_endpoint.GAP_S * slower)
        after = run(parse(WORKLOAD), url, "k")
    return before, after


def test_a_slower_decode_after_the_upgrade_is_flagged_and_fails_beyond_the_threshold(monkeypatch):
    before, after = runs(monkeypatch, 1.2)
    rows = {r["metric"]: r for r in compare_runs(before, after, flag_at=0.05, fail_at=0.10)}
    decode = rows["decode_tps"]
    assert decode["model"] == "fast" and decode["verdict"] == "regressed"
    assert decode["change"] == pytest.approx(1 / 1.2 - 1, abs=0.01)
    assert decode["flagged"] and decode["failed"]
    # the same regression under a looser threshold is flagged, not failed
    loose = {r["metric"]: r for r in compare_runs(before, after, flag_at=0.05, fail_at=0.25)}
    assert loose["decode_tps"]["flagged"] and not loose["decode_tps"]["failed"]
    # the time to first token is reported, never gated
    assert not any(
        r["failed"] for r in compare_runs(before, after, flag_at=0.05, fail_at=0.10) if r["metric"] != "decode_tps"
    )


def test_the_same_speed_after_the_upgrade_passes(monkeypatch):
    before, after = runs(monkeypatch, 1.0)
    rows = compare_runs(before, after, flag_at=0.05, fail_at=0.10)
    assert {r["metric"] for r in rows} == {"decode_tps", "ttft_s"}
    decode = next(r for r in rows if r["metric"] == "decode_tps")
    assert decode["verdict"] == "no change" and not decode["flagged"]
    # the stand-in's first token comes in well under a millisecond, where scheduling noise can be flagged; only
    # the decode rate may fail a run
    assert not any(r["failed"] for r in rows)


def write_run(directory: Path, before: dict, after: dict, held: list[str]) -> None:
    (directory / "packages-before.txt").write_text(BEFORE)
    (directory / "packages-after.txt").write_text(AFTER)
    (directory / "bench-before.json").write_text(json.dumps(before))
    (directory / "bench-after.json").write_text(json.dumps(after))
    state = {
        "started": "2026-12-03T06:00:00Z",
        "models": ["fast"],
        "hold_patterns": ["nvidia-*"],
        "held": held,
        "stale_units": {"llmrig-gateway.service": ["/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0"], "ssh.service": []},
        "restarted": ["llmrig-gateway.service"],
        "stale_after": {"ssh.service": []},
        "gpus": {"before": 2, "after": 2},
        "checked_after": True,
    }
    (directory / "state.json").write_text(json.dumps(state))


def test_the_report_says_what_changed_and_passes(tmp_path, monkeypatch, capsys):
    before, after = runs(monkeypatch, 1.0)
    write_run(tmp_path, before, after, ["nvidia-driver"])
    assert main(["report", str(tmp_path), "--host", "rig1"]) == 0
    assert capsys.readouterr().out.strip() == (
        "rig1: 4 packages changed, 1 held; reboot required: linux-image-6.1.0-44-amd64 (new) -> 6.1.164-1; passed"
    )
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["failures"] == [] and data["gpus"] == {"before": 2, "after": 2}
    text = (tmp_path / "report.md").read_text()
    assert "Result: **passed**" in text
    assert "| curl | upgraded | 7.88.1-10+deb12u14 | 7.88.1-10+deb12u15 |" in text
    assert "NOT rebooted (llmrig_patch_reboot is false)" in text
    assert "- llmrig-gateway.service mapped replaced files" in text and "restarted, runs the new files" in text
    assert "- ssh.service mapped replaced files (): still runs the old files: restart it" in text


def test_the_report_fails_on_a_changed_held_package_and_a_slower_decode(tmp_path, monkeypatch, capsys):
    before, after = runs(monkeypatch, 1.2)
    write_run(tmp_path, before, after, ["curl"])  # as if the hold had not kept curl
    assert main(["report", str(tmp_path), "--host", "rig1", "--fail-at", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: held package curl changed: 7.88.1-10+deb12u14 -> 7.88.1-10+deb12u15" in out
    assert "fast: decode_tps" in out and "worse than the 10% threshold" in out
    assert "(FAILS)" in (tmp_path / "report.md").read_text()
    assert "GPU count" not in out  # 2 before and after


def test_a_run_that_stopped_before_counting_the_gpus_again_is_not_called_a_gpu_change(tmp_path, monkeypatch):
    before, after = runs(monkeypatch, 1.0)
    write_run(tmp_path, before, after, ["nvidia-driver"])
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps(dict(state, gpus={"before": 2}, checked_after=False)))
    assert main(["report", str(tmp_path), "--host", "rig1"]) == 0
    state["gpus"] = {"before": 2, "after": 1}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert main(["report", str(tmp_path), "--host", "rig1"]) == 1
    assert json.loads((tmp_path / "report.json").read_text())["failures"] == ["GPU count changed: 2 before, 1 after"]


def test_the_cli_lists_held_packages_plan_and_reboot_reasons(tmp_path, capsys):
    (tmp_path / "packages-before.txt").write_text(BEFORE)
    assert (
        main(["held", str(tmp_path / "packages-before.txt"), "--pattern", "nvidia-*", "--pattern", "libnvidia-*"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "covered": ["libnvidia-ml1:amd64", "nvidia-driver"],
        "already_held": ["nvidia-driver"],
    }
    assert main(["plan", str(FIXTURES / "apt-simulation.txt")]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert main(["reboot", str(tmp_path)]) == 0  # nothing listed after: nothing changed
    assert json.loads(capsys.readouterr().out) == []
    (tmp_path / "packages-after.txt").write_text(AFTER)
    (tmp_path / "reboot-required.txt").write_text("\n")
    assert main(["reboot", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        "/run/reboot-required: present",
        "linux-image-6.1.0-44-amd64 (new) -> 6.1.164-1",
    ]
    assert main(["report", str(tmp_path / "missing"), "--host", "h"]) == 2
    assert "llmrig-patch report:" in capsys.readouterr().err
