"""Completions of a task set from one model through the endpoint (on the inference host, standard library
only): each task's head sent to /v1/completions `samples` times with seeds 0..samples-1 and the model's own
sampling settings (its preset's, as clients get them), cut at the end of the function."""

from __future__ import annotations

import time
from typing import Any

from llmrig_bench.client import call

from .tasks import STOPS


def complete(
    url: str, key: str, model: str, tasks: list[dict[str, Any]], samples: int, max_tokens: int
) -> dict[str, Any]:
    out: dict[str, list[str]] = {}
    errors: list[str] = []
    began = time.monotonic()
    for task in tasks:
        texts = out.setdefault(task["id"], [])
        for seed in range(samples):
            body = {"model": model, "prompt": task["prompt"], "max_tokens": max_tokens, "stop": STOPS, "seed": seed}
            status, answer = call(url, key, "POST", "/v1/completions", body, timeout=600)
            if status != 200 or not isinstance(answer, dict):
                errors.append(f"{task['id']} sample {seed}: HTTP {status} {str(answer)[:200]}")
                texts.append("")
                continue
            texts.append(answer["choices"][0]["text"])
    seconds = time.monotonic() - began
    return {
        "model": model,
        "samples": samples,
        "max_tokens": max_tokens,
        "tasks": out,
        "errors": errors,
        "seconds": seconds,
    }
