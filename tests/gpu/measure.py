#!/usr/bin/env python3
"""Measurements of the GPU proof run, through the running gateway: load, GPU memory, decode, swaps, NVML read-back."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from llmrig_bench.client import call, wait_healthy  # the benchmark harness's HTTP client


@dataclass(frozen=True)
class Client:
    url: str
    key: str

    def completion(self, model: str, **fields: Any) -> dict[str, Any]:
        status, reply = call(self.url, self.key, "POST", "/v1/completions", {"model": model, **fields})
        if status != 200:
            raise RuntimeError(f"{model}: HTTP {status}: {reply}")
        return dict(reply)


def first_token_seconds(client: Client, model: str) -> float:
    start = time.perf_counter()
    client.completion(model, prompt="Hi", max_tokens=1)
    return time.perf_counter() - start


def decode_tps(client: Client, model: str, tokens: int) -> float:
    reply = client.completion(model, prompt="Once upon a time", max_tokens=tokens, ignore_eos=True, cache_prompt=False)
    return float(reply["timings"]["predicted_per_second"])


def nvidia_smi(fields: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-gpu=FIELDS` (csv, no header, no units); empty without a GPU."""
    try:
        text = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [[cell.strip() for cell in line.rsplit(",", fields.count(","))] for line in text.splitlines() if line]


def gpu_memory_used_mib() -> list[int]:
    return [int(row[0]) for row in nvidia_smi("memory.used")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--models", nargs=2, default=["synthetic-a", "synthetic-b"])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tuning-cli", type=Path, required=True)
    parser.add_argument("--tuning-config", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    opts = parser.parse_args()
    a, b = opts.models

    client = Client(opts.url, opts.key)
    wait_healthy(opts.url)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result["idle_gpu_memory_mib"] = gpu_memory_used_mib()
    result["cold_load_first_token_s"] = {a: first_token_seconds(client, a)}
    result["gpu_memory_mib_loaded"] = {a: gpu_memory_used_mib()}
    runs = [decode_tps(client, a, opts.tokens) for _ in range(opts.runs)]
    result["decode_tps"] = {a: {"median": statistics.median(runs), "runs": runs}}
    swaps = {f"{a}->{b}": [], f"{b}->{a}": []}
    for _ in range(3):
        swaps[f"{a}->{b}"].append(first_token_seconds(client, b))
        result["gpu_memory_mib_loaded"][b] = gpu_memory_used_mib()
        swaps[f"{b}->{a}"].append(first_token_seconds(client, a))
    result["cold_swap_s"] = {name: {"median": statistics.median(v), "runs": v} for name, v in swaps.items()}
    status, models = call(opts.url, opts.key, "GET", "/models")
    result["model_status"] = {m["id"]: m["status"]["value"] for m in models["data"]} if status == 200 else models
    tuning = subprocess.run(
        [sys.executable, str(opts.tuning_cli), "status", "--config", str(opts.tuning_config)],
        capture_output=True,
        text=True,
        check=False,
    )
    result["tuning_status"] = {"rc": tuning.returncode, "output": tuning.stdout + tuning.stderr}
    opts.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "tuning_status"}, indent=1))
    print(result["tuning_status"]["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
