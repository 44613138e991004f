"""The Grafana dashboards under files/grafana-dashboards/, checked structurally (Grafana cannot be installed
here), and the GPU metric names our rules use, checked against the exporters' documented lists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "files/grafana-dashboards").rglob("*.json"))
RULES = ROOT / "roles/llmrig_prometheus/files/llmrig.rules.yml"
DATASOURCE_UID = "llmrig-prometheus"
DOCUMENTED = {
    line.strip()
    for line in (Path(__file__).parent / "fixtures/gpu-exporter-metrics.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def walk(node: Any):
    """Every dict in a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def panels(board: dict) -> list[dict]:
    found, queue = [], list(board.get("panels", []))
    while queue:
        panel = queue.pop(0)
        found.append(panel)
        queue.extend(panel.get("panels", []))
    return found


def test_there_are_the_three_dashboards_in_the_llmrig_folder():
    assert [p.relative_to(ROOT / "files/grafana-dashboards").as_posix() for p in DASHBOARDS] == [
        "llmrig/gpu.json",
        "llmrig/host.json",
        "llmrig/inference.json",
    ]


def test_dashboard_uids_and_titles_are_unique():
    boards = [load(p) for p in DASHBOARDS]
    uids = [b["uid"] for b in boards]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) for uid in uids)
    assert len(set(uids)) == len(uids)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_only_the_provisioned_datasource_is_used(path):
    refs = [node["datasource"] for node in walk(load(path)) if "datasource" in node]
    assert refs, "no datasource reference at all"
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": DATASOURCE_UID}, ref


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_stable_id_a_position_and_a_query(path):
    board = load(path)
    ids = [panel["id"] for panel in panels(board)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(set(ids)) == len(ids), "panel ids repeat"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['id']} {panel['title']!r} has no query"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['id']} has an empty query"
        assert len({t["refId"] for t in targets}) == len(targets)


def test_committed_dashboards_match_their_definitions():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/build_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_dashboard_is_detected(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_dashboards
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(build_dashboards, "OUT", tmp_path)
    assert build_dashboards.main([]) == 0
    (tmp_path / "host.json").write_text("{}")
    assert build_dashboards.main(["--check"]) == 1


def gpu_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(?:DCGM_FI_[A-Z0-9_]+|nvidia_smi_[a-z0-9_]+)\b", text))


def test_gpu_metric_names_in_rules_are_documented_by_the_exporters():
    exprs = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    used = gpu_metric_names(" ".join(exprs))
    assert {"DCGM_FI_DEV_GPU_UTIL", "nvidia_smi_utilization_gpu_ratio"} <= used
    assert used - DOCUMENTED == set()


def test_gpu_dashboard_uses_the_recording_rules_and_the_tuning_textfile():
    """Every series on the GPU dashboard is a recording rule of ours or a line the GPU tuning tool writes."""
    board = load(ROOT / "files/grafana-dashboards/llmrig/gpu.json")
    exprs = " ".join(t["expr"] for p in panels(board) for t in p.get("targets", []))
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    names = set(re.findall(r"\b(llmrig[:_][a-z0-9_:]+)\{", exprs))
    tuning_names = {"llmrig_gpu_power_limit_watts", "llmrig_gpu_clock_offset_mhz"}  # see test_gpu_tuning.py
    assert names - recorded - tuning_names == set()
    assert gpu_metric_names(exprs) == set()  # no exporter-specific name: either exporter works


def test_documented_list_catches_a_misspelled_name():
    assert gpu_metric_names("DCGM_FI_DEV_GPU_UTILISATION") - DOCUMENTED == {"DCGM_FI_DEV_GPU_UTILISATION"}
