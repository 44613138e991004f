"""Verify monitoring on the Molecule container: real Prometheus scraping the real gateway, node exporter and
gateway exporter after real requests; every dashboard and rule expression evaluated against it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import promql_check
import pytest
import yaml
from llmrig_testlib import TEST_HOST, complete, model_children, model_states, run_playbook, wait_for

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = os.environ.get("LLMRIG_PROMETHEUS_URL", "http://127.0.0.1:19090")
FLEET = {entry["name"] for entry in yaml.safe_load((REPO / "group_vars/llmrig_test.yml").read_text())["llmrig_fleet"]}
DASHBOARDS = REPO / "files/grafana-dashboards"
RULES = REPO / "roles/llmrig_prometheus/files/llmrig.rules.yml"
SCRAPE_INTERVAL = 5  # group_vars/llmrig_test.yml


def api(path: str, **params: str) -> dict:
    url = f"{PROMETHEUS}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def instant(expr: str) -> list[dict]:
    return api("query", query=expr)["result"]


def targets(job: str) -> list[dict]:
    return [t for t in api("targets", state="active")["activeTargets"] if t["labels"]["job"] == job]


def exporter_metric(host, name: str, model: str) -> float:
    text = host.run(
        "python3 -c %s",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9410/metrics').read().decode())",
    ).stdout
    match = re.search(rf'^{re.escape(name)}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def journal_exits(host, model: str) -> int:
    """Exits with a non-zero status of the model's processes in the router's journal."""
    text = host.run("journalctl -u llmrig-gateway --no-pager -o cat").stdout
    statuses = re.findall(rf"instance name={re.escape(model)} exited with status (-?\d+)", text)
    return sum(1 for status in statuses if int(status) != 0)


def journal_spawns(host, model: str) -> int:
    text = host.run("journalctl -u llmrig-gateway --no-pager -o cat").stdout
    return len(re.findall(rf"spawning server instance with name={re.escape(model)} on port", text))


@pytest.fixture(scope="module")
def traffic(host):
    """Requests alternate gemma-a, gemma-b, gemma-a, each phase long enough for two scrapes."""
    for model in ("gemma-a", "gemma-b", "gemma-a"):
        deadline = time.monotonic() + 2.5 * SCRAPE_INTERVAL
        while time.monotonic() < deadline:
            complete(model, max_tokens=24)
            time.sleep(1)
    # both models' token counters reached Prometheus (gemma-b's series are stale now: it is unloaded; other
    # tests may have used more of the fleet's models in the last 10 minutes)
    seen = "count by (model) (count_over_time(llamacpp:tokens_predicted_total[10m]))"
    assert wait_for(lambda: {"gemma-a", "gemma-b"} <= {r["metric"]["model"] for r in instant(seen)}, timeout=60)
    time.sleep(2 * SCRAPE_INTERVAL)
    return True


@pytest.fixture
def gemma_a_resident(traffic):
    """gemma-a is the resident model and Prometheus has scraped it so (other tests may have swapped)."""
    complete("gemma-a", max_tokens=4)

    def scraped() -> bool:
        models = {t["labels"]["model"]: t for t in targets("llmrig_models")}
        return models["gemma-a"]["health"] == "up" and models["gemma-b"]["health"] == "down"

    assert wait_for(scraped, timeout=6 * SCRAPE_INTERVAL)
    time.sleep(SCRAPE_INTERVAL)
    return True


def test_services_run(host):
    for service in ("llmrig-gateway", "llmrig-gateway-exporter", "prometheus", "prometheus-node-exporter"):
        assert host.service(service).is_running, service
        assert host.service(service).is_enabled, service


def test_exporters_listen_on_loopback_when_prometheus_is_on_this_host(host):
    for port in (9100, 9410):  # node exporter, gateway exporter
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, port
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, port
    # Prometheus itself listens on every address here only because the test host publishes its port
    assert host.socket("tcp://0.0.0.0:9090").is_listening


def test_gateway_exporter_gets_the_key_as_a_credential_only(host):
    user = host.run("systemctl show -p User --value llmrig-gateway-exporter").stdout.strip()
    assert user == "llmrig-exporter"
    denied = host.run("runuser -u llmrig-exporter -- cat /etc/llmrig/api-key")
    assert denied.rc != 0 and "Permission denied" in denied.stderr
    assert host.file("/etc/prometheus/llmrig-api-key").mode == 0o640
    assert host.file("/etc/prometheus/llmrig-api-key").group == "prometheus"


def test_one_scrape_target_per_fleet_model_through_the_router_without_autoload():
    found = targets("llmrig_models")
    assert {t["labels"]["model"] for t in found} == FLEET
    for target in found:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(target["scrapeUrl"]).query)
        assert query == {"autoload": ["false"], "model": [target["labels"]["model"]]}, target["scrapeUrl"]
        assert target["scrapeUrl"].startswith("http://127.0.0.1:8080/metrics?")


def test_targets_that_should_be_up_are_up(gemma_a_resident):
    for job in ("prometheus", "node", "llmrig_gateway"):
        found = targets(job)
        assert found, job
        assert all(t["health"] == "up" for t in found), [(t["scrapeUrl"], t["lastError"]) for t in found]
    # the resident model (the last one asked for) is up; the other one is down because it is not loaded
    models = {t["labels"]["model"]: t for t in targets("llmrig_models")}
    assert models["gemma-a"]["health"] == "up", models["gemma-a"]["lastError"]
    assert models["gemma-b"]["health"] == "down"
    assert "400" in models["gemma-b"]["lastError"]


def test_prometheus_scrapes_the_gateway_host_with_the_gateway_key():
    """The LiteLLM gateway on this host (llm_gateways) is a target of its own, scraped with the clients' key
    (its /metrics refuses requests without it), and counts a request sent through it."""
    key = "llmrig-gateway-test-key-not-secret"  # group_vars/llmrig_test.yml
    litellm = os.environ.get("LLMRIG_LITELLM_URL", "http://127.0.0.1:14000")
    ask = urllib.request.Request(
        f"{litellm}/v1/chat/completions",
        data=json.dumps(
            {"model": "gemma-a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(ask, timeout=120) as answer:
        assert answer.status == 200
    found = targets("llmrig_litellm")
    assert [t["labels"]["host"] for t in found] == [TEST_HOST]
    counted = 'sum(litellm_proxy_total_requests_metric_total{requested_model="gemma-a"})'

    def scraped() -> bool:
        up = targets("llmrig_litellm")[0]
        return up["health"] == "up" and bool(instant(counted)) and float(instant(counted)[0]["value"][1]) >= 1

    assert wait_for(scraped, timeout=6 * SCRAPE_INTERVAL), (targets("llmrig_litellm"), instant(counted))


def test_inference_series_exist_after_requests(gemma_a_resident):
    generated = {r["metric"]["model"]: float(r["value"][1]) for r in instant("llamacpp:tokens_predicted_total")}
    assert generated.get("gemma-a", 0) > 0
    loads = {r["metric"]["model"]: float(r["value"][1]) for r in instant("llmrig_model_loads_total")}
    assert loads["gemma-a"] >= 2 and loads["gemma-b"] >= 1
    resident = instant('llmrig_model_state{state="loaded"} == 1')
    assert [r["metric"]["model"] for r in resident] == ["gemma-a"]


def test_exporter_load_counts_match_the_router_journal(host, traffic):
    for model in FLEET:
        assert exporter_metric(host, "llmrig_model_loads_total", model) == journal_spawns(host, model), model
        failed = exporter_metric(host, "llmrig_model_load_failures_total", model)
        assert failed + exporter_metric(host, "llmrig_model_crashes_total", model) == journal_exits(host, model)
    durations = exporter_metric(host, "llmrig_model_load_duration_seconds_count", "gemma-a")
    assert durations == exporter_metric(host, "llmrig_model_loads_total", "gemma-a")


def test_every_dashboard_and_rule_expression_evaluates_against_live_prometheus(traffic, capsys):
    status = promql_check.main(
        [
            "--prometheus",
            PROMETHEUS,
            "--dashboards",
            str(DASHBOARDS),
            "--rules",
            str(RULES),
            "--require-data",
            "llmrig-host,llmrig-inference",
            # the test fleet has no draft model or MTP head, so there is no draft to accept
            "--allow-empty",
            "spec_decode",
        ]
    )
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + out)
    assert status == 0, out
    summary = re.search(r"evaluated (\d+) expressions .*: (\d+) succeeded, 0 failed", out)
    assert summary and summary.group(1) == summary.group(2), out
    assert int(summary.group(1)) >= 60


def test_models_filesystem_is_labelled_for_the_disk_alert(traffic):
    found = instant('node_filesystem_avail_bytes{llmrig_models_fs="true"}')
    assert [r["metric"]["mountpoint"] for r in found] == ["/"]


def test_scrapes_never_load_a_model(host, gemma_a_resident):
    before = {model: journal_spawns(host, model) for model in FLEET}
    time.sleep(4 * SCRAPE_INTERVAL)
    assert {model: journal_spawns(host, model) for model in FLEET} == before
    assert model_states()["gemma-b"] == "unloaded"


def test_rules_are_loaded_and_nothing_alerts_because_a_model_is_unloaded(traffic):
    groups = {g["name"]: g for g in api("rules")["groups"]}
    assert {"llmrig-gpu", "llmrig-inference", "llmrig-alerts"} <= set(groups)
    for group in groups.values():
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
    # a crash test (here or in test_default) may have fired LlmrigModelCrashed; nothing else may fire
    others = [a for a in api("alerts")["alerts"] if a["labels"]["alertname"] != "LlmrigModelCrashed"]
    assert others == []


def test_promtool_unit_tests_pass_on_the_deployed_rules(host):
    tests = yaml.safe_load((REPO / "tests/promtool/llmrig.rules.test.yml").read_text())
    tests["rule_files"] = ["/etc/prometheus/rules/llmrig.rules.yml"]
    encoded = base64.b64encode(yaml.safe_dump(tests).encode()).decode()
    written = host.run("mkdir -p /tmp/promtool && echo %s | base64 -d > /tmp/promtool/llmrig.rules.test.yml", encoded)
    assert written.rc == 0, written.stderr
    result = host.run("promtool test rules /tmp/promtool/llmrig.rules.test.yml")
    assert result.rc == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_crashed_model_raises_its_alert(host, gemma_a_resident):
    crashes = instant('llmrig_model_crashes_total{model="gemma-a"}')
    before = float(crashes[0]["value"][1]) if crashes else 0.0
    children = model_children(host)
    assert len(children) == 1
    host.run(f"kill -9 {children[0]['pid']}")
    assert wait_for(lambda: instant(f'llmrig_model_crashes_total{{model="gemma-a"}} == {before + 1}'), timeout=30)

    def firing():
        return [a for a in api("alerts")["alerts"] if a["state"] == "firing"]

    alerts = wait_for(firing, timeout=60)
    assert [(a["labels"]["alertname"], a["labels"]["model"]) for a in alerts] == [("LlmrigModelCrashed", "gemma-a")]
    # the router serves it again on the next request
    complete("gemma-a")


def test_grafana_provisioning_is_rendered(host):
    datasources = yaml.safe_load(host.file("/etc/grafana/provisioning/datasources/llmrig.yml").content_string)
    assert datasources["apiVersion"] == 1
    assert [(d["uid"], d["type"], d["url"], d["isDefault"]) for d in datasources["datasources"]] == [
        ("llmrig-prometheus", "prometheus", "http://127.0.0.1:9090", True)
    ]
    providers = yaml.safe_load(host.file("/etc/grafana/provisioning/dashboards/llmrig.yml").content_string)
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["disableDeletion"] is False
    assert provider["options"] == {"path": "/var/lib/grafana/dashboards", "foldersFromFilesStructure": True}
    for source in DASHBOARDS.rglob("*.json"):
        deployed = host.file(f"/var/lib/grafana/dashboards/{source.relative_to(DASHBOARDS)}")
        assert deployed.sha256sum == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_deleted_dashboard_disappears_from_the_host(host):
    host.run("mkdir -p /var/lib/grafana/dashboards/old && echo '{}' > /var/lib/grafana/dashboards/old/gone.json")
    host.run("echo '{}' > /var/lib/grafana/dashboards/llmrig/removed.json")
    # the container's groups in this scenario: without llm_gateways, Prometheus would lose the gateway's job
    groups = ["llm_servers", "llmrig_test", "monitoring", "llm_gateways"]
    status, output = run_playbook(TEST_HOST, groups, "monitoring.yml")
    assert status == 0, output[-3000:]
    left = host.run("cd /var/lib/grafana/dashboards && find . -name '*.json' | sort").stdout.split()
    assert left == ["./llmrig/gpu.json", "./llmrig/host.json", "./llmrig/inference.json"]
