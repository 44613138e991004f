#!/usr/bin/env python3
"""Benchmark the llmrig gateway (llama-server router mode) against a bare llama-server, side by side.

Runs on the inference host itself (standard library only). Two measurements, each repeated --runs times
and interleaved so that machine noise hits both sides alike:

  swap    cold swap through the router (model B resident, request model A, first token back) versus a bare
          `llama-server` start of the same file with the same flags (process start to first token back).
  decode  decode tokens/s (server timings) and time to first token (client side, streaming) of one
          request through the router versus directly against a single llama-server, same model and flags.
  fit     a bare start of the same model and flags with llama-server's load-time fitting on and off
          (--fit on|off): what a planned fleet's `fit = off` presets save on every swap.

Prints a table (median, min-max) with the two ratios and their targets, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LOG = logging.getLogger("bench")
PROMPT = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle. The story should "
    "describe the sea, the weather and the keeper's daily routine in some detail before the discovery."
)
TARGET_DECODE_RATIO = 0.97
TARGET_SWAP_RATIO = 1.3


class Client:
    def __init__(self, base: str, key: str | None) -> None:
        self.base = base.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 300) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError):
            return 0, None

    def first_token(self, model: str) -> None:
        status, body = self.call("POST", "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 1})
        if status != 200:
            raise RuntimeError(f"{self.base}: completion for {model} failed: HTTP {status} {body}")

    def stream(self, model: str, max_tokens: int) -> dict[str, float]:
        """One streamed completion: TTFT (client side) and decode tokens/s (server timings)."""
        body = {
            "model": model,
            "prompt": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 0,
            "cache_prompt": False,
            "ignore_eos": True,
            "stream": True,
            "timings_per_token": True,
        }
        req = urllib.request.Request(self.base + "/v1/completions", data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        start = time.perf_counter()
        ttft = None
        timings: dict[str, Any] = {}
        with urllib.request.urlopen(req, timeout=600) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if ttft is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                    ttft = time.perf_counter() - start
                timings = chunk.get("timings") or timings
        if ttft is None or "predicted_per_second" not in timings:
            raise RuntimeError(f"{self.base}: no tokens or timings in the stream for {model}")
        return {"ttft_s": ttft, "decode_tps": float(timings["predicted_per_second"])}


def wait_healthy(client: Client, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if client.call("GET", "/health", timeout=2)[0] == 200:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{client.base} did not become healthy in {timeout} s")


def model_args(router: Client, model: str) -> list[str]:
    """The exact command line the router uses for `model` (binary first), from GET /models."""
    status, body = router.call("GET", "/models")
    if status != 200:
        raise RuntimeError(f"GET /models failed: HTTP {status} {body}")
    for item in body["data"]:
        if item["id"] == model:
            return list(item["status"]["args"])
    raise RuntimeError(f"model {model} is not in the fleet")


def with_port(args: list[str], port: int) -> list[str]:
    out = list(args)
    out[out.index("--port") + 1] = str(port)
    return out


def unload_all(router: Client) -> None:
    _status, body = router.call("GET", "/models")
    for item in body["data"]:
        if item["status"]["value"] in ("loaded", "loading"):
            router.call("POST", "/models/unload", {"model": item["id"]})
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        states = [item["status"]["value"] for item in router.call("GET", "/models")[1]["data"]]
        if all(state == "unloaded" for state in states):
            return
        time.sleep(0.05)
    raise RuntimeError("models did not unload")


def start_direct(args: list[str], port: int) -> subprocess.Popen:
    # GPUs in PCI order, as the gateway's unit, nvidia-smi and the planner number them
    env = dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    return subprocess.Popen(with_port(args, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bare_start(args: list[str], model: str, port: int) -> float:
    """Seconds from starting a bare llama-server to its first generated token."""
    direct = Client(f"http://127.0.0.1:{port}", None)
    start = time.perf_counter()
    proc = start_direct(args, port)
    try:
        wait_healthy(direct)
        direct.first_token(model)
        return time.perf_counter() - start
    finally:
        stop(proc)


def with_fit(args: list[str], value: str) -> list[str]:
    """The command line with `--fit value` (an existing --fit/-fit pair replaced)."""
    out = list(args)
    for flag in ("--fit", "-fit"):
        while flag in out:
            index = out.index(flag)
            del out[index : index + 2]
    return [*out, "--fit", value]


def bench_fit(args: list[str], model: str, port: int, runs: int) -> dict:
    """The same model and flags started with llama-server's load-time fitting on and off, interleaved."""
    results: dict[str, list[float]] = {"on": [], "off": []}
    for run in range(runs):
        order = ["on", "off"] if run % 2 == 0 else ["off", "on"]
        for value in order:
            results[value].append(bare_start(with_fit(args, value), model, port))
        LOG.info("fit run %d: on %.3f s, off %.3f s", run + 1, results["on"][-1], results["off"][-1])
    return {"fit_on_s": results["on"], "fit_off_s": results["off"]}


def bench_swap(router: Client, model_a: str, model_b: str, args_a: list[str], port: int, runs: int) -> dict:
    router_s, bare_s = [], []
    for run in range(runs):
        router.first_token(model_b)  # B resident: the next request for A is a cold swap
        start = time.perf_counter()
        router.first_token(model_a)
        router_s.append(time.perf_counter() - start)
        unload_all(router)
        bare_s.append(bare_start(args_a, model_a, port))
        LOG.info("swap run %d: router %.3f s, bare start %.3f s", run + 1, router_s[-1], bare_s[-1])
    return {"router_s": router_s, "bare_s": bare_s}


def bench_decode(router: Client, model: str, args: list[str], port: int, runs: int, max_tokens: int) -> dict:
    direct = Client(f"http://127.0.0.1:{port}", None)
    router.first_token(model)
    proc = start_direct(args, port)
    results: dict[str, list[dict]] = {"router": [], "direct": []}
    try:
        wait_healthy(direct)
        direct.first_token(model)
        for run in range(runs):
            order = [("router", router), ("direct", direct)]
            if run % 2:
                order.reverse()
            for label, client in order:
                results[label].append(client.stream(model, max_tokens))
            LOG.info(
                "decode run %d: router %.1f tok/s, direct %.1f tok/s",
                run + 1,
                results["router"][-1]["decode_tps"],
                results["direct"][-1]["decode_tps"],
            )
    finally:
        stop(proc)
    return {
        "router_decode_tps": [r["decode_tps"] for r in results["router"]],
        "direct_decode_tps": [r["decode_tps"] for r in results["direct"]],
        "router_ttft_s": [r["ttft_s"] for r in results["router"]],
        "direct_ttft_s": [r["ttft_s"] for r in results["direct"]],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(swap: dict, decode: dict) -> tuple[str, dict]:
    rows = [
        ("cold swap / start (s)", swap["router_s"], swap["bare_s"], 1.0),
        ("decode (tokens/s)", decode["router_decode_tps"], decode["direct_decode_tps"], 1.0),
        ("time to first token (ms)", decode["router_ttft_s"], decode["direct_ttft_s"], 1000.0),
    ]
    lines = [f"{'metric':<26}{'router median [min-max]':>28}{'direct median [min-max]':>28}{'ratio':>8}"]
    ratios = {}
    for name, router_values, direct_values, scale in rows:
        r, d = summary(router_values), summary(direct_values)
        ratio = r["median"] / d["median"]
        ratios[name] = ratio

        def fmt(s: dict[str, float], scale: float = scale) -> str:
            return f"{s['median'] * scale:.3f} [{s['min'] * scale:.3f}-{s['max'] * scale:.3f}]"

        lines.append(f"{name:<26}{fmt(r):>28}{fmt(d):>28}{ratio:>8.3f}")
    decode_ratio = ratios["decode (tokens/s)"]
    swap_ratio = ratios["cold swap / start (s)"]
    lines.append("")
    lines.append(
        f"router decode / direct decode = {decode_ratio:.3f} (target >= {TARGET_DECODE_RATIO}): "
        + ("met" if decode_ratio >= TARGET_DECODE_RATIO else "NOT met")
    )
    lines.append(
        f"router swap / bare start      = {swap_ratio:.3f} (target <= {TARGET_SWAP_RATIO}): "
        + ("met" if swap_ratio <= TARGET_SWAP_RATIO else "NOT met")
    )
    return "\n".join(lines), {"decode_ratio": decode_ratio, "swap_ratio": swap_ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    parser.add_argument("--api-key-file", type=Path, required=True)
    parser.add_argument("--model-a", default="gemma-a")
    parser.add_argument("--model-b", default="gemma-b")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--direct-port", type=int, default=18099)
    parser.add_argument("--json", type=Path, required=True)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    router = Client(opts.url, opts.api_key_file.read_text().split()[0])
    wait_healthy(router)
    args_a = model_args(router, opts.model_a)
    LOG.info("model %s runs as: %s", opts.model_a, " ".join(args_a))
    swap = bench_swap(router, opts.model_a, opts.model_b, args_a, opts.direct_port, opts.runs)
    decode = bench_decode(router, opts.model_a, args_a, opts.direct_port, opts.runs, opts.max_tokens)
    fit = bench_fit(args_a, opts.model_a, opts.direct_port, opts.runs)
    text, ratios = table(swap, decode)
    on, off = summary(fit["fit_on_s"]), summary(fit["fit_off_s"])
    ratios["fit_off_over_on"] = off["median"] / on["median"]
    text += (
        f"\nstart to first token, --fit on : {on['median']:.3f} s [{on['min']:.3f}-{on['max']:.3f}]"
        f"\nstart to first token, --fit off: {off['median']:.3f} s [{off['min']:.3f}-{off['max']:.3f}]"
        f"  (off/on = {ratios['fit_off_over_on']:.3f}, {1000 * (on['median'] - off['median']):.0f} ms saved)"
    )
    print(text)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": opts.runs,
        "max_tokens": opts.max_tokens,
        "model_args": args_a,
        "swap": swap,
        "decode": decode,
        "fit": fit,
        "ratios": ratios,
        "targets": {"decode_ratio_min": TARGET_DECODE_RATIO, "swap_ratio_max": TARGET_SWAP_RATIO},
    }
    opts.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
