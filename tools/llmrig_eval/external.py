"""An existing evaluation harness beside the task set: EleutherAI's lm-eval, run from the controller with the
user's own install of it (`lm_eval[api]`), through the endpoint's chat API (its `local-chat-completions`
model). Its scores are measured and shown in the verdict; they do not enter the verdict's rule, whose inputs
must exist on every host, offline included.

The key reaches lm-eval only as OPENAI_API_KEY in its environment (where it reads it), taken from a file:
never on a command line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

APIS = {
    "chat": ("local-chat-completions", "/v1/chat/completions"),
    "completions": ("local-completions", "/v1/completions"),
}


def command(python: str, url: str, api: str, model: str, tasks: list[str], limit: int, out: Path) -> list[str]:
    """The lm-eval command line for one model (the task directory is its working directory and include path,
    so a task's local data file is named relative to it). `api`: "chat" (the model's chat template applied by
    the server) or "completions" (plain text, for a base model without one)."""
    lm_model, path = APIS[api]
    argv = [python, "-m", "lm_eval", "run", "--model", lm_model]
    argv += [
        "--model_args",
        f"model={model},base_url={url.rstrip('/')}{path},num_concurrent=1,tokenized_requests=False,tokenizer_backend=None",
    ]
    argv += ["--tasks", ",".join(tasks), "--include_path", ".", "--log_samples"]
    argv += ["--apply_chat_template"] if api == "chat" else []
    argv += ["--output_path", str(out)]
    return argv + (["--limit", str(limit)] if limit > 0 else [])


def run(argv: list[str], key_file: Path, task_dir: Path, log: Path) -> int:
    """Run it with the key in its environment and its output in the log file; its exit status."""
    env = {**os.environ, "OPENAI_API_KEY": key_file.read_text(encoding="utf-8").strip()}
    with log.open("w", encoding="utf-8") as out:
        return subprocess.run(argv, cwd=task_dir, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def summary(out: Path) -> dict[str, Any]:
    """The scores of lm-eval's newest results file under `out`: {task: {metric: {value, stderr}}}, the samples
    per task and the harness's version."""
    files = sorted(out.rglob("results_*.json"))
    if not files:
        raise FileNotFoundError(f"no lm-eval results file under {out}")
    data = json.loads(files[-1].read_text(encoding="utf-8"))
    tasks: dict[str, dict[str, dict[str, float | None]]] = {}
    for task, values in data["results"].items():
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            stderr = values.get(f"{metric}_stderr,{filt}")
            tasks.setdefault(task, {})[key] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            }
    return {
        "harness": f"lm-eval {data.get('lm_eval_version') or data.get('git_hash') or ''}".strip(),
        "tasks": tasks,
        "samples": {task: n.get("effective", n.get("original")) for task, n in data.get("n-samples", {}).items()},
    }


def markdown(external: dict[str, dict[str, Any]], incumbent: str, candidate: str) -> list[str]:
    """The verdict's section for an existing harness's scores of both models."""
    if not external:
        return []
    inc, cand = external[incumbent], external[candidate]
    lines = [
        f"## {cand['harness']} through the endpoint (measured here; not in the rule)",
        "",
        f"| task | metric | samples | {incumbent} | {candidate} |",
        "|---|---|---|---|---|",
    ]
    for task in sorted(inc["tasks"]):
        for metric, score in sorted(inc["tasks"][task].items()):
            other = cand["tasks"].get(task, {}).get(metric)
            lines.append(f"| {task} | {metric} | {inc['samples'].get(task, '?')} | {cell(score)} | {cell(other)} |")
    return [*lines, ""]


def cell(score: dict[str, float | None] | None) -> str:
    if score is None:
        return "-"
    stderr = score["stderr"]
    return f"{score['value']:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")
