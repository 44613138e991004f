"""Run a workload against the endpoint: warm-up rounds, then repetitions, at each concurrency level; the
variants of a round are sent one after the other, each round starting one variant later (A B, B A, ...),
so drift over the run and the place in the round hit all of them alike.
Every request's record is kept raw, warm-up ones flagged. When a round's model is not resident, one short
request goes first and is recorded as a swap (`swap: true`, its end-to-end time is the swap latency), so
that the round's own requests measure a loaded model. Standard library only (it runs on the host)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
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


SPEC_COUNTERS = {
    "drafted": "llamacpp:spec_decode_num_draft_tokens_total",
    "accepted": "llamacpp:spec_decode_num_accepted_tokens_total",
}


def spec_counters(base_url: str, key: str, model: str) -> dict[str, Any]:
    """The model process's speculative-decoding counters, read through the router without loading anything,
    with the process's port (a new process starts its counters at 0)."""
    headers = {"Authorization": f"Bearer {key}"}
    query = urllib.parse.urlencode({"model": model, "autoload": "false"})
    out: dict[str, Any] = {"model": model}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{base_url.rstrip('/')}/metrics?{query}", headers=headers), timeout=30
        ) as response:
            text = response.read().decode()
    except (OSError, urllib.error.HTTPError) as exc:
        out["error"] = str(exc)
        return out
    for name, metric in SPEC_COUNTERS.items():
        match = re.search(rf"^{re.escape(metric)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        out[name] = float(match.group(1)) if match else 0.0
    status = _router_models(base_url, key).get(model) or {}
    args = [str(a) for a in status.get("args") or []]
    out["port"] = args[args.index("--port") + 1] if "--port" in args[:-1] else ""
    return out


GPU_TUNING_CLI = "/usr/local/sbin/llmrig-gpu-tuning"  # the llmrig_gpu_tuning role's command


def host_facts() -> dict[str, Any]:
    """CPU, memory and, where nvidia-smi answers, the GPUs' clocks, power limit, temperature and memory; where
    the GPU tuning role is installed, its status (the configured and current power limit and clock offsets,
    read through NVML: nothing is set)."""
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
    if os.access(GPU_TUNING_CLI, os.X_OK):
        try:
            out = subprocess.run([GPU_TUNING_CLI, "status"], capture_output=True, text=True, check=False, timeout=60)
            facts["gpu_tuning_status"] = {"rc": out.returncode, "lines": (out.stdout + out.stderr).splitlines()}
        except (OSError, subprocess.SubprocessError) as exc:
            facts["gpu_tuning_status"] = {"rc": None, "lines": [f"{type(exc).__name__}: {exc}"]}
    return facts


def model_option(models: dict[str, Any], model: str, name: str, default: str = "") -> str:
    """An option of a model's llama-server command line, from the router's GET /models (_router_models)."""
    args = [str(a) for a in ((models.get(model) or {}).get("args") or [])]
    return args[args.index(name) + 1] if name in args[:-1] else default


def model_url(base_url: str, key: str, model: str) -> str:
    """The address of a resident model's own llama-server process, from its command line in GET /models."""
    models = _router_models(base_url, key)
    port = model_option(models, model, "--port")
    if not port:
        raise RuntimeError(f"{model}: the router lists no port for it (is it loaded?)")
    return f"http://{model_option(models, model, '--host', '127.0.0.1')}:{port}"


def cached_bytes(path: str) -> int | None:
    """How much of a file is in the page cache (util-linux's fincore), None where that cannot be read."""
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", path],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def evict(path: str) -> dict[str, Any]:
    """Drop a file's pages from the page cache (POSIX_FADV_DONTNEED; pages that a process maps or locks stay),
    with what was cached before and after."""
    before = cached_bytes(path)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        error = None
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {"file": path, "cached_before": before, "cached_after": cached_bytes(path), "error": error}


def send_round(
    workload: Workload, variant: Variant, level: int, base_url: str, key: str, timeout: float
) -> list[dict[str, Any]]:
    fields = workload.request_fields(variant)
    url, key = front(variant, base_url, key)
    url = model_url(base_url, key, variant.model) if variant.direct else url

    def one(prompt: Any) -> dict[str, Any]:
        record = request(
            url,
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


def loaded(models: dict[str, Any]) -> list[str]:
    """The resident models in a reading of the router's GET /models (_router_models)."""
    return [m for m, status in models.items() if isinstance(status, dict) and status.get("value") == "loaded"]


def front(variant: Variant, base_url: str, key: str) -> tuple[str, str]:
    """Where a variant's requests go and with which key: its own front (url, key_file) or the router."""
    if not variant.url:
        return base_url, key
    with open(variant.key_file, encoding="utf-8") as handle:
        return variant.url, handle.read().strip()


def swap_probe(
    workload: Workload, variant: Variant, base_url: str, key: str, timeout: float, others: list[str]
) -> dict[str, Any]:
    """The first request to a model that is not resident (others are): one token of the first prompt, timed."""
    record = request(
        *front(variant, base_url, key),
        variant.model,
        workload.prompts[0].text,
        api=workload.api,
        max_tokens=1,
        stream=workload.stream,
        prompt_id="swap",
        extra=workload.request_fields(variant),
        timeout=timeout,
    ).as_dict()
    record["swap_from"] = others
    return record


class BeforeFailed(RuntimeError):
    """A variant's `before` command failed: the setting it was to make is not known to be in place."""


def before(variant: Variant) -> dict[str, Any]:
    """Run the variant's `before` command; a record of it (kept with the requests, not counted as one)."""
    began = time.monotonic()
    done = subprocess.run(variant.before, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        command = f"its before command {variant.before[0]} exited {done.returncode}"
        raise BeforeFailed(f"variant {variant.name!r}: {command}: {' '.join(said)}")
    return {"before": variant.before, "seconds": time.monotonic() - began, "said": done.stdout.strip()[-500:]}


def run(workload: Workload, base_url: str, key: str, *, build: str = "", timeout: float = 600) -> dict[str, Any]:
    """All records of the workload, with what is needed to read them later."""
    started = time.time()
    records: list[dict[str, Any]] = []
    befores: list[dict[str, Any]] = []  # the variants' before commands, as they ran
    # where each model's counters stand before the run (a process that is already up has counted before)
    counters: list[dict[str, Any]] = [
        dict(spec_counters(base_url, key, model), variant=None, concurrency=None, round=None)
        for model in sorted({v.model for v in workload.variants})
    ]
    for level in workload.concurrency:
        for number in range(-workload.warmup, workload.repetitions):
            # each round starts one variant later (A B, B A, A B ...): drift and the place after a swap
            # fall on every variant alike
            turn = number % len(workload.variants)
            for variant in workload.variants[turn:] + workload.variants[:turn]:
                if variant.before:
                    befores.append(dict(before(variant), variant=variant.name, concurrency=level, round=number))
                models = _router_models(base_url, key)  # one reading for the round's swap decision
                if variant.model not in loaded(models):
                    dropped = evict(model_option(models, variant.model, "--model")) if variant.cold else None
                    probe = swap_probe(workload, variant, base_url, key, timeout, loaded(models))
                    probe["evicted"] = dropped
                    probe.update(variant=variant.name, concurrency=level, round=number, warmup=number < 0, swap=True)
                    records.append(probe)
                for record in send_round(workload, variant, level, base_url, key, timeout):
                    record.update(variant=variant.name, concurrency=level, round=number, warmup=number < 0, swap=False)
                    records.append(record)
                # right after its round the variant's model is resident: its counters cover this round
                reading = spec_counters(base_url, key, variant.model)
                reading.update(variant=variant.name, concurrency=level, round=number)
                counters.append(reading)
    return {
        "workload": workload.name,
        "api": workload.api,
        "stream": workload.stream,
        "max_tokens": workload.max_tokens,
        "variants": {
            v.name: {
                "model": v.model,
                "sampling": v.sampling,
                "extra": v.extra,
                "direct": v.direct,
                "cold": v.cold,
                "before": v.before,
                "url": v.url,
            }
            for v in workload.variants
        },
        "started": started,
        "seconds": time.time() - started,
        "build": build,
        "host": host_facts(),
        "router_models": _router_models(base_url, key),
        "spec_counters": counters,
        "before": befores,
        "records": records,
    }


def spec_totals(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per variant, drafted and accepted tokens twice: summed from the responses' timings, and from the model
    process's /metrics counters read after each round. Each reading is compared with the last reading of the
    same model: on the same process (port) the difference is this round's; a new process counts from 0."""
    from_metrics = {v: {"drafted": 0.0, "accepted": 0.0} for v in results["variants"]}
    last: dict[str, dict[str, Any]] = {}
    for reading in results.get("spec_counters", []):
        if "error" in reading:
            continue
        before = last.get(reading["model"], {})
        same = before.get("port") == reading["port"] and reading["drafted"] >= before.get("drafted", 0.0)
        if reading["variant"] is not None:  # None: the reading before the run, a starting point only
            for name in ("drafted", "accepted"):
                from_metrics[reading["variant"]][name] += reading[name] - (before.get(name, 0.0) if same else 0.0)
        last[reading["model"]] = reading
    totals: dict[str, dict[str, float]] = {}
    for variant in results["variants"]:
        mine = [r for r in results["records"] if r["variant"] == variant]
        drafted = float(sum(r["timings"].get("draft_n", 0) for r in mine))
        accepted = float(sum(r["timings"].get("draft_n_accepted", 0) for r in mine))
        totals[variant] = {
            "timings_drafted": drafted,
            "timings_accepted": accepted,
            "metrics_drafted": from_metrics[variant]["drafted"],
            "metrics_accepted": from_metrics[variant]["accepted"],
            "acceptance": accepted / drafted if drafted else 0.0,
        }
    return totals
