"""A run's report: Markdown with the run's facts, the comparisons and their verdicts, and PNG plots drawn with
matplotlib (latency CDFs, decode tokens/s per variant, time to first token against prompt length, draft
acceptance per variant). Controller only (numpy, scipy, matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # after the backend is chosen
import numpy as np

from .compare import answered, compare_run, kept, samples, swaps, value
from .runner import spec_totals


def _levels(records: list[dict[str, Any]]) -> list[int]:
    return sorted({r["concurrency"] for r in records})


def boxes(labels: list[str], data: list[list[float]], ylabel: str, title: str, path: Path) -> None:
    """A box per group of samples, with the samples themselves spread beside it."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if data:
        ax.boxplot(data, tick_labels=labels)
        for i, values in enumerate(data, start=1):
            ax.plot(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, ".", alpha=0.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in results["variants"]:
        for level in _levels(results["records"]):
            data = np.sort(samples(results["records"], variant, level, "e2e_s"))
            if len(data):
                ax.step(data, np.arange(1, len(data) + 1) / len(data), where="post", label=f"{variant} @{level}")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{results['workload']}: latency CDF")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_decode(results: dict[str, Any], path: Path) -> None:
    labels, data = [], []
    for level in _levels(results["records"]):
        for variant in results["variants"]:
            values = samples(results["records"], variant, level, "timings.predicted_per_second")
            if values:
                labels.append(f"{variant} @{level}")
                data.append(values)
    boxes(
        labels,
        data,
        "decode tokens/s (server timings)",
        f"{results['workload']}: decode speed per variant and concurrency",
        path,
    )


def plot_ttft(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    answered = kept(results["records"])
    for variant in results["variants"]:
        points = [
            (r["prompt_tokens"], r["ttft_s"])
            for r in answered
            if r["variant"] == variant and r.get("ttft_s") is not None and r.get("prompt_tokens")
        ]
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, "o", alpha=0.6, label=variant)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"{results['workload']}: time to first token against prompt length")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_acceptance(results: dict[str, Any], path: Path) -> bool:
    """Drafted tokens accepted per variant (speculative decoding); False when no variant drafted."""
    rates = {}
    for variant in results["variants"]:
        mine = [r for r in kept(results["records"]) if r["variant"] == variant]
        drafted = sum(value(r, "timings.draft_n") or 0 for r in mine)
        accepted = sum(value(r, "timings.draft_n_accepted") or 0 for r in mine)
        if drafted:
            rates[f"{variant} ({results['variants'][variant]['model']})"] = accepted / drafted
    if not rates:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(list(rates), list(rates.values()))
    ax.bar_label(bars, labels=[f"{rate:.1%}" for rate in rates.values()])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accepted / drafted tokens")
    ax.set_title(f"{results['workload']}: draft acceptance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_swaps(results: dict[str, Any], path: Path) -> bool:
    """Swap latency per variant (the first request to a model that was not resident); False when none."""
    data = {v: swaps(results["records"], v) for v in results["variants"]}
    data = {v: times for v, times in data.items() if times}
    if not data:
        return False
    boxes(
        list(data),
        list(data.values()),
        "swap latency: first token of a model not resident (s)",
        f"{results['workload']}: swap times",
        path,
    )
    return True


def plot_stress(stress: dict[str, Any], path: Path) -> None:
    """Decode tokens/s per stress cycle (a box each), failed requests written above the boxes."""
    rows = stress["cycles"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = [row.get("decode_tps") or [] for row in rows]
    positions = [row["cycle"] for row in rows]
    if any(data):
        ax.boxplot([d if d else [np.nan] for d in data], positions=positions)
    for row in rows:
        if row["failed"]:
            ax.annotate(f"{row['failed']} failed", (row["cycle"], ax.get_ylim()[1]), ha="center", va="top", color="red")
    ax.set_xlabel("cycle")
    ax.set_ylabel("decode tokens/s (server timings)")
    ax.set_title(f"{stress['workload']}: stress, {stress['model']} at {stress['concurrency']} at a time")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stress_lines(stress: dict[str, Any]) -> list[str]:
    cycles = f"{len(stress['cycles'])} cycle{'s' if len(stress['cycles']) != 1 else ''}"
    lines = [
        "",
        f"## Stress ({cycles} of {stress['model']}, {stress['concurrency']} at a time)",
        "",
        "| cycle | requests | failed | decode tokens/s (median) | drift from cycle 1 | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in stress["cycles"]:
        speed = f"{row['decode_tps_median']:.2f}" if row["decode_tps_median"] is not None else "-"
        drift = f"{row['drift']:+.1%}" if row["drift"] is not None else "-"
        lines.append(
            f"| {row['cycle']} | {row['requests']} | {row['failed']} | {speed} | {drift} | {row['seconds']:.1f} |"
        )
    return lines


def write(
    results: dict[str, Any], out_dir: Path, threshold: float = 0.02, stress: dict[str, Any] | None = None
) -> Path:
    """Write report.md, comparisons.json and the plots into out_dir (with a stress run's cycles when given);
    return the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    comparisons = compare_run(results, threshold=threshold)
    (out_dir / "comparisons.json").write_text(json.dumps([c.as_dict() for c in comparisons], indent=1) + "\n")
    plots = ["latency-cdf.png", "decode-tps.png", "ttft-vs-prompt.png"]
    plot_latency_cdf(results, out_dir / plots[0])
    plot_decode(results, out_dir / plots[1])
    plot_ttft(results, out_dir / plots[2])
    if plot_acceptance(results, out_dir / "acceptance.png"):
        plots.append("acceptance.png")
    if plot_swaps(results, out_dir / "swaps.png"):
        plots.append("swaps.png")
    if stress is not None:
        plot_stress(stress, out_dir / "stress.png")
        plots.append("stress.png")
    records = results["records"]
    failed = sum(1 for r in records if not answered(r))
    host = results.get("host", {})
    lines = [
        f"# {results['workload']}",
        "",
        f"- build: `{results.get('build') or 'unknown'}`; host: {host.get('hostname', '?')}, {host.get('cpus', '?')}"
        f" CPUs ({host.get('cpu_model', '?')}), {host.get('mem_total_kib', 0) // 1024} MiB",
        f"- {len(records)} requests ({sum(r['warmup'] for r in records)} warm-up,"
        f" {sum(bool(r.get('swap')) for r in records)} swaps), {failed} failed,"
        f" {results['seconds']:.1f} s; api {results['api']}, streamed: {results['stream']},"
        f" max_tokens {results['max_tokens']}",
        "- variants: "
        + "; ".join(
            f"**{name}** `{spec['model']}` {spec['sampling'] or ''}" for name, spec in results["variants"].items()
        ),
        "",
        f"## Comparisons (threshold {threshold:.0%})",
        "",
        "| metric | A median | B median | change | 95 % interval | p | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c.metric} | {c.median_a:.4g} | {c.median_b:.4g} | {c.change:+.1%} | [{c.ci_low:+.1%}, {c.ci_high:+.1%}]"
        f" | {c.p_value:.3g} | {c.verdict} |"
        for c in comparisons
    ]
    if not comparisons:
        lines.append("| (one variant: nothing to compare) | | | | | | |")
    spec = {name: t for name, t in spec_totals(results).items() if t["timings_drafted"] or t["metrics_drafted"]}
    if spec:
        lines += [
            "",
            "## Speculative decoding (all rounds, warm-up included)",
            "",
            "| variant | drafted (timings) | accepted (timings) | drafted (/metrics) | accepted (/metrics)"
            " | acceptance |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {name} | {t['timings_drafted']:.0f} | {t['timings_accepted']:.0f} | {t['metrics_drafted']:.0f}"
            f" | {t['metrics_accepted']:.0f} | {t['acceptance']:.1%} |"
            for name, t in spec.items()
        ]
    swap_times = {v: swaps(records, v) for v in results["variants"]}
    if any(swap_times.values()):
        lines += ["", "## Swaps (first request to a model that was not resident)", ""]
        lines += ["| variant | swaps | median (s) | min-max (s) |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {v} | {len(t)} | {np.median(t):.3f} | {min(t):.3f}-{max(t):.3f} |" for v, t in swap_times.items() if t
        ]
    if host.get("gpus"):
        lines += ["", "## GPUs at the start of the run (nvidia-smi)", ""]
        lines += [f"- {', '.join(f'{k} {v}' for k, v in gpu.items())}" for gpu in host["gpus"]]
    if host.get("gpu_tuning_status"):
        lines += ["", "## GPU tuning (llmrig-gpu-tuning status)", "", "```"]
        lines += host["gpu_tuning_status"]["lines"] + ["```"]
    if stress is not None:
        lines += stress_lines(stress)
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
