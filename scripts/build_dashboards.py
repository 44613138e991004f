#!/usr/bin/env python3
"""Write the Grafana dashboards under files/grafana-dashboards/ from the definitions below.

The JSON files are committed (Grafana provisions them as they are); this script is how they are edited, so
panel ids stay fixed and every query uses the one provisioned datasource. `--check` fails when a committed
file differs from what the definitions produce (run by `make lint`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "files/grafana-dashboards/llmrig"
DATASOURCE = {"type": "prometheus", "uid": "llmrig-prometheus"}

H = 'host=~"$host"'
HM = 'host=~"$host", model=~"$model"'
RATE = "[$__rate_interval]"


@dataclass
class Query:
    expr: str
    legend: str = ""


@dataclass
class Panel:
    id: int
    title: str
    queries: list[Query]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def variable(name: str, selector: str, label: str) -> dict[str, Any]:
    query = f"label_values({selector}, {label})"
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"var-{name}"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def panel_json(panel: Panel, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend or "__auto"}
        for i, q in enumerate(panel.queries)
    ]
    body: dict[str, Any] = {
        "id": panel.id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
    }
    if panel.kind == "timeseries":
        body["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
    elif panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    body.update(panel.extra)
    return body


def dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]], panels: list[Panel]) -> dict:
    laid_out = []
    x = y = row_height = 0
    for panel in panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(panel_json(panel, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    ids = [p.id for p in panels]
    assert len(ids) == len(set(ids)), f"{uid}: panel ids repeat"
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llmrig"],
        "editable": False,
        "timezone": "browser",
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": laid_out,
    }


def host_dashboard() -> dict:
    return dashboard(
        "llmrig-host",
        "llmrig / Host health",
        "CPU, memory, the models filesystem, disk and network of the llmrig hosts (node exporter).",
        [variable("host", 'up{job="node"}', "host")],
        [
            Panel(
                1,
                "CPU busy",
                [Query(f'1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle", {H}}}{RATE}))', "{{host}}")],
                unit="percentunit",
            ),
            Panel(
                2,
                "Load average",
                [Query(f"node_load1{{{H}}}", "{{host}} 1m"), Query(f"node_load15{{{H}}}", "{{host}} 15m")],
            ),
            Panel(
                3,
                "Memory used",
                [Query(f"1 - node_memory_MemAvailable_bytes{{{H}}} / node_memory_MemTotal_bytes{{{H}}}", "{{host}}")],
                unit="percentunit",
            ),
            Panel(
                4,
                "Models filesystem free",
                [
                    Query(
                        f'node_filesystem_avail_bytes{{llmrig_models_fs="true", {H}}}'
                        f' / node_filesystem_size_bytes{{llmrig_models_fs="true", {H}}}',
                        "{{host}} {{mountpoint}}",
                    )
                ],
                unit="percentunit",
                description="Free space on the filesystem that holds the model files.",
            ),
            Panel(
                5,
                "Disk throughput",
                [
                    Query(f"sum by (host) (rate(node_disk_read_bytes_total{{{H}}}{RATE}))", "{{host}} read"),
                    Query(f"sum by (host) (rate(node_disk_written_bytes_total{{{H}}}{RATE}))", "{{host}} written"),
                ],
                unit="Bps",
                description="Model loads read the GGUF files: a swap shows up here.",
            ),
            Panel(
                6,
                "Network",
                [
                    Query(
                        f'sum by (host) (rate(node_network_receive_bytes_total{{device!="lo", {H}}}{RATE}))',
                        "{{host}} in",
                    ),
                    Query(
                        f'sum by (host) (rate(node_network_transmit_bytes_total{{device!="lo", {H}}}{RATE}))',
                        "{{host}} out",
                    ),
                ],
                unit="Bps",
            ),
            Panel(
                7,
                "Scrape targets up",
                [Query(f'up{{job!="llmrig_models", {H}}}', "{{host}} {{job}}")],
                kind="stat",
                width=16,
                height=5,
                description="Exporters and Prometheus itself. Per-model targets are left out: a model that is "
                "not resident is down on purpose.",
            ),
            Panel(
                8,
                "Uptime",
                [Query(f"time() - node_boot_time_seconds{{{H}}}", "{{host}}")],
                unit="s",
                kind="stat",
                width=8,
                height=5,
            ),
        ],
    )


def gpu_dashboard() -> dict:
    legend = "{{host}} {{uuid}}"
    return dashboard(
        "llmrig-gpu",
        "llmrig / GPUs",
        "Per-GPU readings from the DCGM exporter or nvidia_gpu_exporter (llmrig:gpu_* recording rules), and the "
        "power limit and clock offsets the GPU tuning tool applied.",
        [variable("host", "llmrig:gpu_utilization:ratio", "host")],
        [
            Panel(1, "Utilisation", [Query(f"llmrig:gpu_utilization:ratio{{{H}}}", legend)], unit="percentunit"),
            Panel(
                2,
                "VRAM used / total",
                [
                    Query(f"llmrig:gpu_memory_used:bytes{{{H}}}", legend + " used"),
                    Query(f"llmrig:gpu_memory_total:bytes{{{H}}}", legend + " total"),
                ],
                unit="bytes",
            ),
            Panel(
                3,
                "VRAM used",
                [Query(f"llmrig:gpu_memory_used:ratio{{{H}}}", legend)],
                unit="percentunit",
                kind="gauge",
                extra={"fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []}},
            ),
            Panel(4, "Temperature", [Query(f"llmrig:gpu_temperature:celsius{{{H}}}", legend)], unit="celsius"),
            Panel(
                5,
                "Power draw and limit",
                [
                    Query(f"llmrig:gpu_power:watts{{{H}}}", legend),
                    Query(f"llmrig_gpu_power_limit_watts{{{H}}}", "{{host}} GPU {{gpu}} limit"),
                ],
                unit="watt",
            ),
            Panel(6, "SM clock", [Query(f"llmrig:gpu_sm_clock:hertz{{{H}}}", legend)], unit="hertz"),
            Panel(7, "Memory clock", [Query(f"llmrig:gpu_memory_clock:hertz{{{H}}}", legend)], unit="hertz"),
            Panel(
                8,
                "Applied clock offsets",
                [Query(f"llmrig_gpu_clock_offset_mhz{{{H}}}", "{{host}} GPU {{gpu}} {{clock}} P{{pstate}}")],
                unit="MHz",
                description="Offsets read back from NVML after the GPU tuning tool applied them.",
            ),
        ],
    )


def inference_dashboard() -> dict:
    by_model = "{{host}} {{model}}"
    return dashboard(
        "llmrig-inference",
        "llmrig / Inference",
        "The resident model, throughput, requests, prefill latency, swaps and speculative decoding. Token figures "
        "come from the resident model's process (through the router with autoload=false); residency, loads and "
        "failures from the llmrig gateway exporter.",
        [variable("host", "llmrig_gateway_up", "host"), variable("model", "llmrig_model_state", "model")],
        [
            Panel(
                1,
                "Resident model",
                [Query(f'llmrig_model_state{{state="loaded", {H}}} == 1', by_model)],
                kind="stat",
                width=8,
                height=5,
                extra={
                    "options": {
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "textMode": "name",
                    }
                },
            ),
            Panel(
                2,
                "Model state",
                [
                    Query(
                        f'max by (host, model, state) (llmrig_model_state{{state=~"loading|loaded|failed", {HM}}}) > 0',
                        "{{host}} {{model}} {{state}}",
                    )
                ],
                kind="state-timeline",
                width=16,
                height=5,
            ),
            Panel(
                3,
                "Generated tokens/s",
                [Query(f"sum by (host, model) (rate(llamacpp:tokens_predicted_total{{{HM}}}{RATE}))", by_model)],
                unit="short",
            ),
            Panel(
                4,
                "Prompt tokens/s",
                [Query(f"sum by (host, model) (rate(llamacpp:prompt_tokens_total{{{HM}}}{RATE}))", by_model)],
                unit="short",
            ),
            Panel(
                5,
                "Requests in flight and deferred",
                [
                    Query(
                        f"sum by (host, model) (llamacpp:requests_processing{{{HM}}})", "{{host}} {{model}} processing"
                    ),
                    Query(f"sum by (host, model) (llamacpp:requests_deferred{{{HM}}})", "{{host}} {{model}} deferred"),
                ],
            ),
            Panel(
                6,
                "Prefill time per 1k prompt tokens (TTFT proxy)",
                [
                    Query(
                        f"1000 * sum by (host, model) (rate(llamacpp:prompt_seconds_total{{{HM}}}{RATE}))"
                        f" / sum by (host, model) (rate(llamacpp:prompt_tokens_total{{{HM}}}{RATE}))",
                        by_model,
                    )
                ],
                unit="s",
                description="Time to first token is about this times the prompt length in thousands "
                "of tokens, plus the swap time when the request had to load its model.",
            ),
            Panel(
                7,
                "Swaps (model loads) per hour",
                [Query(f"sum by (host, model) (increase(llmrig_model_loads_total{{{HM}}}[1h]))", by_model)],
            ),
            Panel(
                8,
                "Swap duration",
                [
                    Query(
                        f"sum by (host, model) (rate(llmrig_model_load_duration_seconds_sum{{{HM}}}[1h]))"
                        f" / sum by (host, model) (rate(llmrig_model_load_duration_seconds_count{{{HM}}}[1h]))",
                        "{{host}} {{model}} mean",
                    ),
                    Query(
                        f"histogram_quantile(0.9, sum by (le) (rate(llmrig_model_load_duration_seconds_bucket"
                        f"{{{HM}}}[1h])))",
                        "p90, all models",
                    ),
                ],
                unit="s",
                description="Spawn to ready, measured from the router's event stream.",
            ),
            Panel(
                9,
                "Time spent loading per hour",
                [
                    Query(
                        f"sum by (host, model) (increase(llmrig_model_load_duration_seconds_sum{{{HM}}}[1h]))", by_model
                    )
                ],
                unit="s",
            ),
            Panel(
                10,
                "Load failures and crashes per hour",
                [
                    Query(
                        f"sum by (host, model) (increase(llmrig_model_load_failures_total{{{HM}}}[1h]))",
                        "{{host}} {{model}} load failures",
                    ),
                    Query(
                        f"sum by (host, model) (increase(llmrig_model_crashes_total{{{HM}}}[1h]))",
                        "{{host}} {{model}} crashes",
                    ),
                ],
            ),
            Panel(
                11,
                "Speculative draft acceptance",
                [
                    Query(
                        f"sum by (host, model) (rate(llamacpp:spec_decode_num_accepted_tokens_total{{{HM}}}{RATE}))"
                        f" / sum by (host, model) (rate(llamacpp:spec_decode_num_draft_tokens_total{{{HM}}}{RATE}))",
                        by_model,
                    )
                ],
                unit="percentunit",
                description="Accepted / drafted tokens, for models with a draft or MTP head.",
            ),
            Panel(
                12,
                "Longest sequence seen",
                [Query(f"max by (host, model) (llamacpp:n_tokens_max{{{HM}}})", by_model)],
                description="Prompt plus generated tokens of the longest request since the model loaded.",
            ),
        ],
    )


DASHBOARDS = {"host.json": host_dashboard, "gpu.json": gpu_dashboard, "inference.json": inference_dashboard}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a committed dashboard is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date in {OUT} (run scripts/build_dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
