"""A patch run's report for one host (report.json and report.md): the checks before and after, what the
upgrade changed and what it held, the reboot, the services restarted, and the benchmark comparison; and
whether the run failed."""

from __future__ import annotations

import fnmatch
from typing import Any

# kernel and microcode packages take effect only at a boot
BOOT_PACKAGES = ("linux-image-*", "intel-microcode", "amd64-microcode")


def boot_reasons(changed: list[dict[str, Any]], flag: str | None) -> list[str]:
    """Why the host needs a reboot: Debian's /run/reboot-required (its content and .pkgs, if any), and
    every kernel or microcode package the upgrade changed."""
    reasons = []
    if flag is not None:
        reasons.append(f"/run/reboot-required: {' '.join(flag.split()) or 'present'}")
    for item in changed:
        if item["to"] and any(fnmatch.fnmatchcase(item["name"], p) for p in BOOT_PACKAGES):
            reasons.append(f"{item['name']} {item['from'] or '(new)'} -> {item['to']}")
    return reasons


def failures(data: dict[str, Any]) -> list[str]:
    """What makes the run fail: a held package that changed anyway, a gated benchmark regression beyond the
    threshold, a GPU count that changed."""
    out = []
    held = set(data["held"])
    for item in data["changed"]:
        if item["name"] in held:
            out.append(f"held package {item['name']} changed: {item['from']} -> {item['to']}")
    for row in data["benchmark"]:
        if row["failed"]:
            out.append(
                f"{row['model']}: {row['metric']} {row['median_a']:.4g} -> {row['median_b']:.4g}"
                f" ({row['change']:+.1%}), worse than the {data['fail_at']:.0%} threshold"
            )
    gpus = data.get("gpus") or {}
    # compared only when both were counted: a run that stopped before its checks after says why elsewhere
    if "after" in gpus and gpus.get("before") != gpus["after"]:
        out.append(f"GPU count changed: {gpus.get('before')} before, {gpus.get('after')} after")
    return out


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# Patch run on {data['host']}, {data['started']}", ""]
    verdict = "FAILED: " + "; ".join(data["failures"]) if data["failures"] else "passed"
    lines += [f"Result: **{verdict}**", ""]
    lines += ["## Checks", ""]
    gpus = data.get("gpus") or {}
    if gpus.get("before") is not None:
        after = gpus.get("after", "not counted")
        lines.append(f"- GPUs seen by nvidia-smi: {gpus['before']} before, {after} after")
    lines.append(f"- before: gateway healthy, every fleet model answered ({', '.join(data['models'])})")
    lines.append("- after: the same checks passed" if data["checked_after"] else "- after: not reached")
    lines += ["", f"## Packages ({len(data['changed'])} changed)", ""]
    if data["changed"]:
        lines += ["| package | change | from | to |", "|---|---|---|---|"]
        lines += [f"| {c['name']} | {c['change']} | {c['from'] or ''} | {c['to'] or ''} |" for c in data["changed"]]
    else:
        lines.append("Nothing to upgrade.")
    held = ", ".join(data["held"]) or "none installed"
    lines += ["", f"Held during the upgrade (patterns {', '.join(data['hold_patterns'])}): {held}."]
    lines += ["", "## Reboot and services", ""]
    if data["reboot_reasons"]:
        done = "rebooted" if data["rebooted"] else "NOT rebooted (llmrig_patch_reboot is false): reboot when you can"
        lines.append(f"- reboot required ({'; '.join(data['reboot_reasons'])}): {done}")
    else:
        lines.append("- no reboot required")
    for unit, paths in sorted(data["stale_units"].items()):
        action = "still runs the old files: restart it"
        if unit in data["restarted"]:
            action = "restarted, " + ("yet still maps some" if unit in data["stale_after"] else "runs the new files")
        lines.append(f"- {unit} mapped replaced files ({', '.join(sorted(paths)[:3])}): {action}")
    lines += ["", "## Benchmark, after against before", ""]
    lines.append(
        f"Same workload before and after (not interleaved: minutes apart). A regression is flagged at"
        f" {data['flag_at']:.0%} when the statistics call it; one of the decode rate beyond {data['fail_at']:.0%}"
        " fails the run."
    )
    lines += [
        "",
        "| model | metric | before | after | change [95 % CI] | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["benchmark"]:
        mark = " (FAILS)" if row["failed"] else " (flagged)" if row["flagged"] else ""
        lines.append(
            f"| {row['model']} | {row['metric']} | {row['median_a']:.4g} | {row['median_b']:.4g} |"
            f" {row['change']:+.1%} [{row['ci_low']:+.1%}, {row['ci_high']:+.1%}] | {row['p_value']:.3g} |"
            f" {row['verdict']}{mark} |"
        )
    return "\n".join(lines) + "\n"
