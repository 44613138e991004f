"""Determinism check: greedy decoding (temperature 0, a fixed seed, no prompt cache) of a fixed prompt set, the
generated token ids compared with a stored baseline. A setting that makes a model unstable (a GPU clock
pushed too far, a broken build) shows up as tokens that differ; the check names the first prompt and the
position where they do. llama.cpp's own /completion endpoint returns the token ids (`return_tokens`), through
the router like any request. Standard library only."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from .workload import Prompt

# greedy and repeatable: the same prompt must give the same tokens on the same build and settings
GREEDY = {"temperature": 0.0, "seed": 42, "cache_prompt": False}


def generate(base_url: str, key: str, model: str, prompt: str, n_predict: int, sampling: dict[str, Any]) -> list[int]:
    body = {"model": model, "prompt": prompt, "n_predict": n_predict, "return_tokens": True, **sampling}
    http = urllib.request.Request(
        base_url.rstrip("/") + "/completion",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(http, timeout=600) as response:
        return [int(t) for t in json.load(response)["tokens"]]


def record(
    base_url: str, key: str, model: str, prompts: list[Prompt], n_predict: int, sampling: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The baseline: every prompt's tokens with the settings that made them."""
    settings = {**GREEDY, **(sampling or {})}
    return {
        "model": model,
        "n_predict": n_predict,
        "sampling": settings,
        "prompts": [
            {"id": p.id, "text": p.text, "tokens": generate(base_url, key, model, p.text, n_predict, settings)}
            for p in prompts
        ],
    }


@dataclass(frozen=True)
class Divergence:
    prompt_id: str
    position: int  # index of the first generated token that differs (or where one output ends early)
    expected: int | None
    got: int | None

    def __str__(self) -> str:
        if self.expected is None and self.got is None:
            return f"prompt {self.prompt_id!r}: the baseline has no prompt to compare it with"
        return f"prompt {self.prompt_id!r}, token {self.position}: expected {self.expected}, got {self.got}"


@dataclass(frozen=True)
class Outcome:
    prompts: int
    tokens: int
    divergence: Divergence | None
    changed_inputs: list[str]  # what differs from the baseline's own inputs (prompt text, settings)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "prompts": self.prompts,
            "tokens": self.tokens,
            "divergence": None if self.divergence is None else str(self.divergence),
            "changed_inputs": self.changed_inputs,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        head = f"{self.prompts} prompts, {self.tokens} tokens compared"
        inputs = f" (inputs differ from the baseline: {'; '.join(self.changed_inputs)})" if self.changed_inputs else ""
        if self.ok:
            return f"deterministic: {head}{inputs}"
        return f"NOT deterministic: {head}; first difference at {self.divergence}{inputs}"


def first_difference(expected: list[int], got: list[int]) -> int | None:
    for position, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return position
    return None if len(expected) == len(got) else min(len(expected), len(got))


def check(
    base_url: str,
    key: str,
    baseline: dict[str, Any],
    *,
    model: str | None = None,
    prompts: list[Prompt] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Outcome:
    """Generate again, with the baseline's prompts and settings unless others are given, and compare. Other
    prompts are paired with the baseline's in order; one more than the baseline has cannot be checked, and
    that alone fails the check."""
    settings = {**baseline["sampling"], **(sampling or {})}
    stored = baseline["prompts"]
    current = prompts or [Prompt(p["id"], p["text"]) for p in stored]
    changed = [
        f"{k}: {baseline['sampling'].get(k)!r} -> {v!r}"
        for k, v in settings.items()
        if baseline["sampling"].get(k) != v
    ]
    if len(current) != len(stored):
        changed.append(f"{len(current)} prompts, the baseline has {len(stored)}")
    compared = 0
    for index, prompt in enumerate(current):
        if index >= len(stored):
            divergence = Divergence(prompt.id, 0, None, None)
            return Outcome(prompts=len(current), tokens=compared, divergence=divergence, changed_inputs=changed)
        old = stored[index]
        if old["text"] != prompt.text:
            changed.append(f"prompt {prompt.id!r} is not the baseline's {old['id']!r}")
        tokens = generate(base_url, key, model or baseline["model"], prompt.text, baseline["n_predict"], settings)
        position = first_difference(old["tokens"], tokens)
        if position is not None:
            return Outcome(
                prompts=len(current),
                tokens=compared + position,
                divergence=Divergence(
                    prompt.id,
                    position,
                    old["tokens"][position] if position < len(old["tokens"]) else None,
                    tokens[position] if position < len(tokens) else None,
                ),
                changed_inputs=changed,
            )
        compared += len(tokens)
    return Outcome(prompts=len(current), tokens=compared, divergence=None, changed_inputs=changed)
