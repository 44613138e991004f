"""tools/promql_check.py against a real Prometheus (the Debian package's binary, unpacked by `make setup`)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import promql_check
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / ".cache/prometheus/usr/bin/prometheus"
FIXTURES = Path(__file__).parent / "fixtures"
RULES = ROOT / "roles/llmrig_prometheus/files/llmrig.rules.yml"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    assert PROMETHEUS.exists(), "run `make setup`: it unpacks Debian's prometheus package into .cache/prometheus"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n"
    )
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "Prometheus did not become ready"
                time.sleep(0.2)
        # a few self-scrapes, so rate() over its own counters has data
        while promql_check.query(url, "count(prometheus_http_requests_total) > 0")[1] == 0:
            assert time.monotonic() < deadline, "Prometheus did not scrape itself"
            time.sleep(0.5)
        time.sleep(2.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_substitute_replaces_grafana_variables():
    assert promql_check.substitute('rate(x{h=~"$host", m=~"${model}"}[$__rate_interval])', "5m") == (
        'rate(x{h=~".*", m=~".*"}[5m])'
    )
    with pytest.raises(ValueError, match=r"\$__user"):
        promql_check.substitute('x{u="$__user"}', "5m")


def test_collect_reads_panels_variables_and_rules():
    found = promql_check.collect([ROOT / "files/grafana-dashboards"], [RULES])
    sources = {e.source for e in found}
    assert "dashboard llmrig-inference variable model" in sources
    assert "dashboard llmrig-gpu panel 8 A" in sources
    assert "rules llmrig.rules.yml LlmrigEndpointDown" in sources
    assert {e.group for e in found} == {"llmrig-host", "llmrig-gpu", "llmrig-inference", "rules"}


def check_broken_fixture(prometheus: str, capsys, *extra: str) -> tuple[int, str]:
    args = ["--prometheus", prometheus, "--dashboards", str(FIXTURES / "dashboards-broken")]
    status = promql_check.main([*args, "--require-data", "fixture-broken", *extra])
    return status, capsys.readouterr().out


def test_broken_expressions_fail_the_check(prometheus, capsys):
    status, out = check_broken_fixture(prometheus, capsys)
    assert status == 1
    assert "FAILED  dashboard fixture-broken panel 2 A: bad_data" in out
    assert "FAILED  dashboard fixture-broken panel 3 A: bad_data" in out
    assert "NO DATA dashboard fixture-broken panel 4 A" in out
    assert "panel 1 A" not in out  # the good one
    assert "evaluated 5 expressions (fixture-broken): 3 succeeded, 2 failed" in out


def test_allow_empty_only_excuses_missing_data_not_errors(prometheus, capsys):
    status, out = check_broken_fixture(prometheus, capsys, "--allow-empty", "group_left")
    assert status == 1
    assert "NO DATA" not in out
    assert out.count("FAILED") == 2


def test_every_llmrig_dashboard_and_rule_expression_is_valid_promql(prometheus, capsys):
    # no llmrig data here: this proves syntax and types; the monitoring scenario proves data
    status = promql_check.main(
        ["--prometheus", prometheus, "--dashboards", str(ROOT / "files/grafana-dashboards"), "--rules", str(RULES)]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 failed" in out
