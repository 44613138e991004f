"""Workloads: what a benchmark run sends, described in YAML (or JSON, which the hosts read without PyYAML).

    name: decode-short
    api: completions            # completions | chat
    stream: true
    max_tokens: 64
    prompts: short              # a built-in set (PROMPT_SETS), or a list of prompts, or
                                # {filler: coding, tokens: [512, 2048]} for long prompts at those depths
    concurrency: [1, 2]         # levels, each run in turn
    repetitions: 5              # rounds; each round sends every prompt once per variant
    warmup: 1                   # rounds sent first and not kept
    sampling: {temperature: 0, seed: 1}
    variants:                   # A is the baseline; rounds interleave them, rotating: A B, B A, ...
      A: {model: gemma-a}
      B: {model: gemma-a-1t}

A variant may also override sampling (`sampling: {...}`) or add request fields (`extra: {...}`), and with
`direct: true` send its requests to the model's own llama-server process (the port and address the router
gave it), not through the router: the router's overhead, measured side by side. Direct variants need the
harness on the inference host, where `playbooks/bench.yml` runs it. With `cold: true`, the variant's model
file is dropped from the page cache before each swap into it, so that swap reads the file from disk: cold
against warm swaps, or proof that a file kept in the page cache stays there (on the host, too). With
`before: [program, arg, ...]` that command runs before each of the variant's rounds (warm-up included) and
must exit 0, or the run stops: variants that differ in a setting of the host rather than of a preset (a GPU
clock offset, applied by playbooks/tune.yml through the drained hold), interleaved like any others. With
`url: http://...` and `key_file: PATH` its requests go to another front for the same models, with that
front's key (a gateway in front of the router: its overhead, measured side by side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# short prompts of a few kinds; the coding and repetitive ones suit speculative decoding (n-gram drafts)
PROMPT_SETS: dict[str, list[str]] = {
    "short": [
        "The capital of France is",
        "Write one sentence about the sea.",
        "List three colours:",
        "Explain what a compiler does in one sentence.",
    ],
    "coding": [
        "def fibonacci(n):\n    ",
        "# Python: read a CSV file and print the sum of the second column\nimport csv\n",
        "// C: reverse a string in place\nvoid reverse(char *s) {\n",
    ],
    # (gemma 3's n-gram drafts found nothing to draft in "one two three one two three ..." without commas)
    "repetitive": [
        "Repeat: red green blue, red green blue, red green blue, red green blue,",
        "Repeat after me: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat,",
        "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3,",
    ],
}
# filler text for long prompts; a word is about 1.3 tokens for these tokenizers, the server's count is kept
FILLERS = {
    "prose": "The river ran past the old mill and under the stone bridge, slow and brown after the rain. ",
    "coding": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n",
}
WORDS_PER_TOKEN = 0.75


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    sampling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    direct: bool = False
    cold: bool = False
    before: list[str] = field(default_factory=list)
    # another front for the same models (a gateway in front of the router): its base URL and key file
    url: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class Workload:
    name: str
    api: str
    stream: bool
    max_tokens: int
    prompts: list[Prompt]
    concurrency: list[int]
    repetitions: int
    warmup: int
    variants: list[Variant]

    def request_fields(self, variant: Variant) -> dict[str, Any]:
        """Sampling and extra request fields of a variant (the variant's override the workload's)."""
        return {**variant.sampling, **variant.extra}


class WorkloadError(ValueError):
    pass


def long_prompt(filler: str, tokens: int) -> str:
    text = FILLERS[filler]
    words_needed = int(tokens * WORDS_PER_TOKEN)
    words = (text * (words_needed // max(1, len(text.split())) + 1)).split()[:words_needed]
    return " ".join(words) + "\nSummarise the text above in one sentence."


def _prompts(name: str, spec: Any) -> list[Prompt]:
    if isinstance(spec, str):
        if spec not in PROMPT_SETS:
            raise WorkloadError(f"workload {name!r}: field 'prompts': unknown set {spec!r} ({', '.join(PROMPT_SETS)})")
        return [Prompt(f"{spec}-{i}", text) for i, text in enumerate(PROMPT_SETS[spec])]
    if isinstance(spec, list) and spec and all(isinstance(p, str) for p in spec):
        return [Prompt(f"prompt-{i}", text) for i, text in enumerate(spec)]
    if isinstance(spec, dict) and spec.get("filler") in FILLERS:
        depths = spec.get("tokens")
        if not isinstance(depths, list) or not all(isinstance(d, int) and d > 0 for d in depths):
            raise WorkloadError(f"workload {name!r}: field 'prompts.tokens': a list of positive token counts")
        return [Prompt(f"{spec['filler']}-{d}", long_prompt(spec["filler"], d)) for d in depths]
    raise WorkloadError(
        f"workload {name!r}: field 'prompts': a set name, a list of prompts, or {{filler: {'|'.join(FILLERS)},"
        " tokens: [...]}"
    )


def _positive_ints(name: str, key: str, value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise WorkloadError(f"workload {name!r}: field {key!r}: positive whole numbers, got {value!r}")
    return values


def parse(data: Any) -> Workload:
    """Validate a workload mapping; every problem names the workload and the field."""
    if not isinstance(data, dict):
        raise WorkloadError("a workload is a mapping")
    name = str(data.get("name") or "")
    if not name:
        raise WorkloadError("workload: field 'name' is required")
    known = {"name", "api", "stream", "max_tokens", "prompts", "concurrency", "repetitions", "warmup"}
    unknown = set(data) - known - {"sampling", "variants"}
    if unknown:
        raise WorkloadError(f"workload {name!r}: unknown fields {sorted(unknown)}")
    api = data.get("api", "completions")
    if api not in ("completions", "chat"):
        raise WorkloadError(f"workload {name!r}: field 'api': completions or chat, got {api!r}")
    sampling = data.get("sampling") or {}
    variants_spec = data.get("variants")
    if not isinstance(variants_spec, dict) or not variants_spec:
        raise WorkloadError(f"workload {name!r}: field 'variants': a mapping of variant names to {{model: ...}}")
    variants = []
    for vname, spec in variants_spec.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
            raise WorkloadError(f"workload {name!r}: field 'variants.{vname}.model' is required")
        unknown = set(spec) - {"model", "sampling", "extra", "direct", "cold", "before", "url", "key_file"}
        if unknown:
            raise WorkloadError(f"workload {name!r}: field 'variants.{vname}': unknown fields {sorted(unknown)}")
        for flag in ("direct", "cold"):
            if not isinstance(spec.get(flag, False), bool):
                raise WorkloadError(f"workload {name!r}: field 'variants.{vname}.{flag}': true or false")
        url, key_file = spec.get("url", ""), spec.get("key_file", "")
        if url and (not isinstance(url, str) or not url.startswith(("http://", "https://")) or spec.get("direct")):
            raise WorkloadError(
                f"workload {name!r}: field 'variants.{vname}.url': an http(s) base URL, not with direct"
            )
        if not isinstance(key_file, str) or bool(key_file) != bool(url):
            raise WorkloadError(
                f"workload {name!r}: field 'variants.{vname}.key_file': the key file of url (both or neither)"
            )
        before = spec.get("before", [])
        if not isinstance(before, list) or not all(isinstance(arg, str) and arg for arg in before):
            raise WorkloadError(f"workload {name!r}: field 'variants.{vname}.before': a command as a list of strings")
        variants.append(
            Variant(
                name=str(vname),
                model=spec["model"],
                sampling={**sampling, **(spec.get("sampling") or {})},
                extra=dict(spec.get("extra") or {}),
                direct=spec.get("direct", False),
                cold=spec.get("cold", False),
                before=list(before),
                url=url,
                key_file=key_file,
            )
        )
    warmup = data.get("warmup", 1)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise WorkloadError(f"workload {name!r}: field 'warmup': a whole number >= 0, got {warmup!r}")
    return Workload(
        name=name,
        api=api,
        stream=bool(data.get("stream", True)),
        max_tokens=_positive_ints(name, "max_tokens", data.get("max_tokens", 64))[0],
        prompts=_prompts(name, data.get("prompts", "short")),
        concurrency=_positive_ints(name, "concurrency", data.get("concurrency", [1])),
        repetitions=_positive_ints(name, "repetitions", data.get("repetitions", 5))[0],
        warmup=warmup,
        variants=variants,
    )
