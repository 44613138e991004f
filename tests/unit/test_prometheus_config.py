"""Prometheus' configuration rendered by Ansible from the role's template for an inventory with two inference
hosts, a gateway host and a monitoring host, then checked by promtool itself: the gateway's /metrics is a
target of its own job with the gateway's key, and an inventory without a gateway has no such job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from test_playbooks import REPO, run_play, template_task

PROMTOOL = REPO / ".cache/prometheus/usr/bin/promtool"
GROUPS = {"llm_servers": ["gpu-a", "gpu-b"], "llm_gateways": ["gw"], "monitoring": ["mon"]}
PLANNED = {"llmrig_planner_plan": {"names": ["coder"]}}


def render(tmp_path: Path, groups: dict[str, list[str]]) -> tuple[int, str, Path]:
    dest = tmp_path / "prometheus.yml"
    play = {
        "name": "Render Prometheus' configuration",
        "hosts": "mon",
        "gather_facts": False,
        "vars_files": [str(REPO / f"roles/llmrig_prometheus/{kind}/main.yml") for kind in ("defaults", "vars")],
        "tasks": [template_task("roles/llmrig_prometheus/templates/etc/prometheus/prometheus.yml.j2", dest)],
    }
    host_vars = {
        "gpu-a": PLANNED | {"ansible_host": "192.0.2.10"},
        "gpu-b": PLANNED | {"ansible_host": "192.0.2.11"},
        "gw": {"ansible_host": "192.0.2.20", "vault_llmrig_gateway_key": "unit-test-gateway-key-0123"},
    }
    status, output = run_play(tmp_path, play, groups, host_vars=host_vars)
    return status, output, dest


def jobs(dest: Path) -> dict[str, dict]:
    return {job["job_name"]: job for job in yaml.safe_load(dest.read_text())["scrape_configs"]}


def test_the_gateway_is_scraped_with_its_key(tmp_path):
    status, output, dest = render(tmp_path, GROUPS)
    assert status == 0, output
    litellm = jobs(dest)["llmrig_litellm"]
    assert litellm["static_configs"] == [{"targets": ["192.0.2.20:4000"], "labels": {"host": "gw"}}]
    assert litellm["metrics_path"] == "/metrics/"
    assert litellm["authorization"]["credentials_file"] == "/etc/prometheus/llmrig-gateway-key"
    # one target per model on each inference host, each labelled with its host
    models = jobs(dest)["llmrig_models"]["static_configs"]
    assert [(c["targets"], c["labels"]["host"]) for c in models] == [
        (["192.0.2.10:8080"], "gpu-a"),
        (["192.0.2.11:8080"], "gpu-b"),
    ]
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: make setup unpacks it")
    # promtool reads the credentials file the job names: point it at one here
    (tmp_path / "key").write_text("k\n")
    (tmp_path / "checked.yml").write_text(
        dest.read_text()
        .replace("/etc/prometheus/llmrig-gateway-key", str(tmp_path / "key"))
        .replace("/etc/prometheus/llmrig-api-key", str(tmp_path / "key"))
    )
    check = subprocess.run(
        [str(PROMTOOL), "check", "config", str(tmp_path / "checked.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_a_gateway_there_is_no_gateway_job(tmp_path):
    status, output, dest = render(tmp_path, {k: v for k, v in GROUPS.items() if k != "llm_gateways"})
    assert status == 0, output
    assert "llmrig_litellm" not in jobs(dest)
