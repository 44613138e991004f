"""The evaluation's verdict: the candidate against the incumbent on quality (the task set's pass rates, a
paired bootstrap over tasks of the level-weighted difference) and on speed (the harness's decode verdict from
an interleaved A/B run), and the rule that decides.

The rule, in this order:
  1. the candidate's quality is "worse" (the 95 % interval of the weighted difference lies below 0): keep the
     incumbent;
  2. its decode rate "regressed" in the A/B run: keep the incumbent;
  3. its quality is "better" (the interval lies above 0): promote;
  4. its quality shows "no difference" and its decode rate "improved": promote;
  5. otherwise keep the incumbent: a change needs a measured gain.
Published scores are listed beside the measured ones and never enter the rule; nor do the scores of an
existing harness (lm-eval), which are measured but optional."""

from __future__ import annotations

from typing import Any

import numpy as np

from .external import markdown as external_markdown

RULE = __doc__.split("The rule, in this order:\n", 1)[1].split("\nPublished scores", 1)[0]


def quality_difference(
    incumbent: dict[str, float], candidate: dict[str, float], weights: dict[str, int], resamples: int = 10_000
) -> dict[str, Any]:
    """The level-weighted mean of the per-task differences (candidate less incumbent) with a bootstrap 95 %
    interval from resampling the tasks, and what it says."""
    ids = sorted(weights)
    diff = np.array([candidate.get(i, 0.0) - incumbent.get(i, 0.0) for i in ids])
    w = np.array([weights[i] for i in ids], dtype=float)
    point = float((diff * w).sum() / w.sum())
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(ids), size=(resamples, len(ids)))
    boot = (diff[picks] * w[picks]).sum(axis=1) / w[picks].sum(axis=1)
    low, high = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
    return {"difference": point, "low": low, "high": high, "verdict": verdict}


def decide(quality: str, speed: str) -> tuple[bool, str]:
    if quality == "worse":
        return False, "keep the incumbent: the candidate's quality is worse (rule 1)"
    if speed == "regressed":
        return False, "keep the incumbent: the candidate decodes slower (rule 2)"
    if quality == "better":
        return True, f"promote: the candidate's quality is better and its speed '{speed}' (rule 3)"
    if speed == "improved":
        return True, "promote: the same quality and a faster decode (rule 4)"
    return False, f"keep the incumbent: no difference in quality and speed '{speed}', no measured gain (rule 5)"


def verdict(
    incumbent: str,
    candidate: str,
    scores: dict[str, dict[str, Any]],
    weights: dict[str, int],
    speed: dict[str, Any],
    published: dict[str, list[dict[str, Any]]],
    external: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    quality = quality_difference(scores[incumbent]["tasks"], scores[candidate]["tasks"], weights)
    promote, reason = decide(quality["verdict"], str(speed["verdict"]))
    return {
        "incumbent": incumbent,
        "candidate": candidate,
        "promote": promote,
        "decision": reason,
        "rule": RULE,
        "quality": quality,
        "speed": speed,
        "scores": {name: {k: v for k, v in s.items() if k != "samples"} for name, s in scores.items()},
        "published": published,
        "external": external or {},
    }


def markdown(result: dict[str, Any], task_set: str, samples: int) -> str:
    inc, cand = result["incumbent"], result["candidate"]
    s_inc, s_cand = result["scores"][inc], result["scores"][cand]
    q, speed = result["quality"], result["speed"]
    lines = [
        f"# Evaluation: {cand} (candidate) against {inc} (incumbent)",
        "",
        f"**{result['decision']}**",
        "",
        f"## Quality: task set '{task_set}', {samples} sample{'s' if samples != 1 else ''} per task, tests run in"
        " a sandbox"
        f" ({s_cand['isolation']})",
        "",
        f"| | {inc} | {cand} |",
        "|---|---|---|",
    ]
    for level in sorted(set(s_inc["levels"]) | set(s_cand["levels"])):
        lines.append(f"| level {level} pass rate | {s_inc['levels'][level]:.0%} | {s_cand['levels'][level]:.0%} |")
    lines += [
        f"| all tasks | {s_inc['pass_rate']:.0%} | {s_cand['pass_rate']:.0%} |",
        f"| level-weighted score | {s_inc['weighted']:.3f} | {s_cand['weighted']:.3f} |",
        "",
        f"Weighted difference {q['difference']:+.3f}, 95 % interval [{q['low']:+.3f}, {q['high']:+.3f}]"
        f" (paired bootstrap over tasks): **{q['verdict']}**.",
        "",
        "## Speed: decode tokens/s, interleaved A/B run",
        "",
        f"{speed['metric']}: {speed['median_a']:.2f} -> {speed['median_b']:.2f}"
        f" ({speed['change']:+.1%}), verdict **{speed['verdict']}**.",
        "",
        *external_markdown(result.get("external", {}), inc, cand),
        "## Published scores (claims, not measured here)",
        "",
    ]
    claims = [(name, item) for name in (inc, cand) for item in result["published"].get(name, [])]
    if claims:
        lines += ["| model | benchmark | score | source |", "|---|---|---|---|"]
        lines += [f"| {n} | {c['benchmark']} | {c['score']} | {c['source']} |" for n, c in claims]
    else:
        lines.append("None recorded in the fleet (published_scores).")
    lines += ["", "## The rule", "", "```", result["rule"].rstrip(), "```", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inc, cand = result["incumbent"], result["candidate"]
    levels = sorted(result["scores"][inc]["levels"])
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, name in ((-0.2, inc), (0.2, cand)):
        ax.bar(x + offset, [result["scores"][name]["levels"][lv] for lv in levels], width=0.4, label=name)
    ax.set_xticks(x, [f"level {lv}" for lv in levels])
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass rate")
    ax.set_title("Coding tasks passed, per level")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
