"""Run a workload against the endpoint: warm-up rounds, then repetitions, at each concurrency level; the
variants of a round are sent one after the other (A B A B ...), so drift over the run hits all of them.
Every request's record is kept raw, warm-up ones flagged. Standard library only (it runs on the host)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import request
from .workload import Variant, Workload


def _router_models(base_url: str, key: str) -> dict[str, Any]:
    """Each model's router status (its arguments name the settings it runs with)."""
    http = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return {str(m["id"]): m.get("status") or {} for m in json.load(response)["data"]}
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def host_facts() -> dict[str, Any]:
    """CPU, memory and, where nvidia-smi answers, the GPUs' clocks, power limit, temperature and memory."""
    facts: dict[str, Any] = {"hostname": platform.node(), "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            models = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        facts["cpu_model"] = models[0] if models else ""
        with open("/proc/meminfo", encoding="utf-8") as handle:
            facts["mem_total_kib"] = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    if shutil.which("nvidia-smi"):
        fields = "index,name,clocks.sm,clocks.mem,power.limit,temperature.gpu,memory.used,memory.total"
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        facts["gpus"] = [
            dict(zip(fields.split(","), (v.strip() for v in line.split(",")), strict=False))
            for line in out.stdout.splitlines()
            if line.strip()
        ]
    return facts


def _round(
    workload: Workload, variant: Variant, level: int, base_url: str, key: str, timeout: float
) -> list[dict[str, Any]]:
    fields = workload.request_fields(variant)

    def one(prompt: Any) -> dict[str, Any]:
        record = request(
            base_url,
            key,
            variant.model,
            prompt.text,
            api=workload.api,
            max_tokens=workload.max_tokens,
            stream=workload.stream,
            prompt_id=prompt.id,
            extra=fields,
            timeout=timeout,
        )
        return record.as_dict()

    with ThreadPoolExecutor(max_workers=level) as pool:
        return list(pool.map(one, workload.prompts))


def run(workload: Workload, base_url: str, key: str, *, build: str = "", timeout: float = 600) -> dict[str, Any]:
    """All records of the workload, with what is needed to read them later."""
    started = time.time()
    records: list[dict[str, Any]] = []
    for level in workload.concurrency:
        for number in range(-workload.warmup, workload.repetitions):
            for variant in workload.variants:
                for record in _round(workload, variant, level, base_url, key, timeout):
                    record.update(variant=variant.name, concurrency=level, round=number, warmup=number < 0)
                    records.append(record)
    return {
        "workload": workload.name,
        "api": workload.api,
        "stream": workload.stream,
        "max_tokens": workload.max_tokens,
        "variants": {v.name: {"model": v.model, "sampling": v.sampling, "extra": v.extra} for v in workload.variants},
        "started": started,
        "seconds": time.time() - started,
        "build": build,
        "host": host_facts(),
        "router_models": _router_models(base_url, key),
        "records": records,
    }
