"""Routine patching, run by the llmrig_patch role (roles/llmrig_patch) on the controller:

    python -m llmrig_patch held PACKAGES.txt --pattern P ...   installed packages the hold patterns cover, and those
                                                               already on hold (JSON)
    python -m llmrig_patch plan SIMULATION.txt                 what `apt-get -s upgrade` would change (JSON)
    python -m llmrig_patch reboot DIR                          why the host needs a reboot (JSON list)
    python -m llmrig_patch report DIR --host H ...             report.json and report.md; exit 1 when it fails

DIR holds what the role fetched: packages-before.txt and packages-after.txt (dpkg-query), bench-before.json
and bench-after.json (the harness's results), reboot-required.txt (/run/reboot-required and its .pkgs, when
present), and state.json (the role's facts: held packages, units that mapped replaced files, restarts, the
reboot, GPU counts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import packages, report


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def changed(directory: Path) -> list[dict[str, Any]]:
    """What the upgrade changed; nothing when the run stopped before it listed the packages."""
    if not (directory / "packages-before.txt").exists():
        return []
    before = packages.installed((directory / "packages-before.txt").read_text(encoding="utf-8"))
    after_path = directory / "packages-after.txt"
    after = packages.installed(after_path.read_text(encoding="utf-8")) if after_path.exists() else before
    return packages.changes(before, after)


def reboot_reasons(directory: Path, changes: list[dict[str, Any]]) -> list[str]:
    flag = directory / "reboot-required.txt"
    return report.boot_reasons(changes, flag.read_text(encoding="utf-8") if flag.exists() else None)


def build(directory: Path, host: str, flag_at: float, fail_at: float) -> dict[str, Any]:
    state = read_json(directory / "state.json")
    changes = changed(directory)
    bench = []
    if (directory / "bench-after.json").exists():
        from . import benchmark  # numpy and scipy: only where a report is written

        bench = benchmark.compare_runs(
            read_json(directory / "bench-before.json"),
            read_json(directory / "bench-after.json"),
            flag_at=flag_at,
            fail_at=fail_at,
        )
    data: dict[str, Any] = {
        "host": host,
        "started": state["started"],
        "models": state["models"],
        "hold_patterns": state["hold_patterns"],
        "held": state["held"],
        "changed": changes,
        "reboot_reasons": reboot_reasons(directory, changes),
        "rebooted": state.get("rebooted", False),
        "stale_units": state.get("stale_units", {}),
        "restarted": state.get("restarted", []),
        "stale_after": state.get("stale_after", {}),
        "gpus": state.get("gpus", {}),
        "checked_after": state.get("checked_after", False),
        "flag_at": flag_at,
        "fail_at": fail_at,
        "benchmark": bench,
    }
    data["failures"] = report.failures(data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrig-patch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    held = sub.add_parser("held", help="installed packages that the hold patterns cover")
    held.add_argument("packages", type=Path, help="dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\\n'")
    held.add_argument("--pattern", action="append", default=[])
    sub.add_parser("plan", help="the packages apt-get -s upgrade would change").add_argument("simulation", type=Path)
    sub.add_parser("reboot", help="why the host needs a reboot, from DIR's files").add_argument("dir", type=Path)
    rep = sub.add_parser("report", help="report.json and report.md of a run; exit 1 when it failed")
    rep.add_argument("dir", type=Path)
    rep.add_argument("--host", required=True)
    rep.add_argument("--flag-at", type=float, default=0.05, help="relative regression that is flagged")
    rep.add_argument("--fail-at", type=float, default=0.10, help="relative decode regression that fails the run")
    args = parser.parse_args(argv)

    if args.command == "held":
        found = packages.installed(args.packages.read_text(encoding="utf-8"))
        covered = packages.covered(found, args.pattern)
        print(json.dumps({"covered": covered, "already_held": [name for name in covered if found[name].held]}))
        return 0
    if args.command == "plan":
        print(json.dumps(packages.planned(args.simulation.read_text(encoding="utf-8"))))
        return 0
    if args.command == "reboot":
        print(json.dumps(reboot_reasons(args.dir, changed(args.dir))))
        return 0
    try:
        data = build(args.dir, args.host, args.flag_at, args.fail_at)
    except (OSError, KeyError, ValueError) as error:
        print(f"llmrig-patch report: {args.dir}: {error}", file=sys.stderr)
        return 2
    (args.dir / "report.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (args.dir / "report.md").write_text(report.markdown(data), encoding="utf-8")
    summary = f"{len(data['changed'])} packages changed, {len(data['held'])} held"
    summary += f"; reboot required: {'; '.join(data['reboot_reasons'])}" if data["reboot_reasons"] else ""
    print(f"{args.host}: {summary}; " + ("FAILED: " + "; ".join(data["failures"]) if data["failures"] else "passed"))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
