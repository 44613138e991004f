#!/usr/bin/env python3
"""Do Prometheus scrapes make models swap? Alternate requests between two models for a while, with
Prometheus scraping every fleet model, then compare the loads the router really did (its journal) with
the loads the requests alone require. Runs on the inference host (stdlib only, with the harness's package
llmrig_bench beside it for the HTTP client), e.g. `make soak`.

Each switch from one model to the other must load the other model (one resident at a time), so
expected loads = number of switches (+1 if the first model was not resident). Any load beyond that was
caused by something else: a scrape that loaded a model would show up here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
from typing import Any

from llmrig_bench.client import call as http_call


class Client:
    def __init__(self, base: str, key: str | None) -> None:
        self.base = base.rstrip("/")
        self.key = key


def call(client: Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, reply = http_call(client.base, client.key, method, path, body)
    if status != 200:
        raise RuntimeError(f"{method} {client.base}{path}: HTTP {status}: {reply}")
    return reply


def journal_loads(since: str, service: str) -> dict[str, int]:
    text = subprocess.run(
        ["journalctl", "-u", service, "--since", since, "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loads: dict[str, int] = {}
    for line in text.splitlines():
        marker = "spawning server instance with name="
        if marker in line:
            name = line.split(marker, 1)[1].split(" ", 1)[0]
            loads[name] = loads.get(name, 0) + 1
    return loads


def prometheus(url: str, expr: str) -> list[dict[str, Any]]:
    body = call(Client(url, None), "GET", "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return list(body["data"]["result"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--api-key-file", default="/etc/llmrig/api-key")
    parser.add_argument("--models", nargs=2, help="the two models to alternate (default: the first two listed)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--phase", type=float, default=20, help="seconds of requests to one model before switching")
    parser.add_argument("--service", default="llmrig-gateway")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    with open(args.api_key_file, encoding="utf-8") as handle:
        key = handle.read().strip()

    gateway = Client(args.gateway, key)
    listed = call(gateway, "GET", "/models")["data"]
    models = args.models or [m["id"] for m in listed[:2]]
    resident = {m["id"] for m in listed if m["status"]["value"] == "loaded"}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 1))
    time.sleep(1.1)
    started = time.monotonic()
    requests = expected = phase = 0
    while time.monotonic() - started < args.seconds:
        model = models[phase % 2]
        phase += 1
        # the first phase needs no load if its model is resident already; every later one swaps
        if phase > 1 or model not in resident:
            expected += 1
        phase_end = time.monotonic() + args.phase
        while time.monotonic() < phase_end and time.monotonic() - started < args.seconds:
            body = {"model": model, "prompt": "Count to ten:", "max_tokens": 16, "cache_prompt": False}
            reply = call(gateway, "POST", "/v1/completions", body)
            assert reply["usage"]["completion_tokens"] > 0, reply
            requests += 1
            time.sleep(1)
    elapsed = time.monotonic() - started
    time.sleep(1)
    loads = journal_loads(since, args.service)
    window = f"{int(elapsed) + 5}s"
    scrapes = {
        r["metric"].get("model", "?"): int(float(r["value"][1]))
        for r in prometheus(args.prometheus, f'count_over_time(up{{job="llmrig_models"}}[{window}])')
    }
    scrapes_up = {
        r["metric"].get("model", "?"): int(float(r["value"][1]))
        for r in prometheus(args.prometheus, f'sum_over_time(up{{job="llmrig_models"}}[{window}])')
    }
    exporter_loads = {
        r["metric"]["model"]: round(float(r["value"][1]))
        for r in prometheus(args.prometheus, f"increase(llmrig_model_loads_total[{window}])")
    }
    result = {
        "seconds": round(elapsed, 1),
        "models": models,
        "requests": requests,
        "expected_loads": expected,
        "journal_loads": sum(loads.values()),
        "journal_loads_by_model": loads,
        "extra_loads": sum(loads.values()) - expected,
        "scrapes_by_model": scrapes,
        "scrapes_up_by_model": scrapes_up,
        "exporter_load_increase_by_model": exporter_loads,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 0 if result["extra_loads"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
