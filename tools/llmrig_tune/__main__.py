"""The tuning procedure's controller side, run by the llmrig_tune role (roles/llmrig_tune):

    python -m llmrig_tune check SPEC               validate a spec, print it as JSON (defaults filled in)
    python -m llmrig_tune step DIR --value JSON    judge one step on what the harness wrote in DIR
    python -m llmrig_tune summary DIR              a knob's outcome from its steps (DIR/step-*/step.json)
    python -m llmrig_tune report DIR               the run's report.md from its knobs and what was applied

A step's directory holds determinism.json and, when those ran, results.json with comparisons.json (the
harness's report) and stress.json; a GPU step also applied.json ({"ok": false, "said": ...} when the tuning
tool could not set the value, and nothing else). Bad input exits 2 with one line naming the field."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .engine import Evidence, Limits, Step, TuneError, judge, parse_knob, skip_rest, summary
from .evidence import evidence
from .report import render
from .spec import parse_spec


def load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yml", ".yaml"):
        import yaml  # the controller has PyYAML with Ansible

        return yaml.safe_load(text)
    return json.loads(text)


def optional(path: Path) -> Any:
    return load(path) if path.exists() else None


def step(args: argparse.Namespace) -> int:
    work = args.dir
    results, comparisons = optional(work / "results.json"), optional(work / "comparisons.json")
    found = evidence(
        optional(work / "determinism.json"),
        results,
        comparisons,
        optional(work / "stress.json"),
        optional(work / "applied.json"),
    )
    limits = Limits(acceptance_drop=args.acceptance_drop, drift=args.drift)
    outcome = judge(json.loads(args.value), found, limits)
    (work / "step.json").write_text(json.dumps(outcome.as_dict(), indent=1) + "\n", encoding="utf-8")
    why = "passed" if outcome.passed else "failed: " + "; ".join(outcome.reasons)
    print(f"{outcome.value!r}: {why}")
    return 0


def knob_summary(args: argparse.Namespace) -> int:
    knob_data = load(args.dir / "knob.json")
    knob = parse_knob(knob_data["knob"])
    steps = []
    for path in sorted(args.dir.glob("step-*/step.json"), key=lambda p: int(p.parent.name.split("-")[1])):
        data = load(path)
        found = Evidence(**data["evidence"]) if data["evidence"] else None
        steps.append(Step(value=data["value"], evidence=found, passed=data["passed"], reasons=data["reasons"]))
    steps += skip_rest(knob, steps)
    out = summary(knob, knob_data["baseline"], steps)
    out["untried"] = knob_data.get("untried", [])
    out["trials"] = knob_data.get("trials", [])
    (args.dir / "summary.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(out["decision"])
    return 0


def report(args: argparse.Namespace) -> int:
    run = load(args.dir / "run.json")
    knobs = [load(path) for path in sorted(args.dir.glob("knob-*/summary.json"))]
    text = render(run, knobs)
    (args.dir / "report.md").write_text(text, encoding="utf-8")
    print(f"report: {args.dir / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrig-tune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="validate a spec and print it as JSON")
    chk.add_argument("spec", type=Path)
    stp = sub.add_parser("step", help="judge one step")
    stp.add_argument("dir", type=Path)
    stp.add_argument("--value", required=True, help="the step's value, as JSON")
    stp.add_argument("--acceptance-drop", type=float, default=Limits.acceptance_drop)
    stp.add_argument("--drift", type=float, default=Limits.drift)
    sub.add_parser("summary", help="a knob's outcome").add_argument("dir", type=Path)
    sub.add_parser("report", help="the run's report").add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "check":
        import yaml

        try:
            print(json.dumps(parse_spec(load(args.spec)).as_dict()))
        except (TuneError, OSError, ValueError, yaml.YAMLError) as exc:
            print(f"tuning spec {args.spec}: {exc}", file=sys.stderr)
            return 2
        return 0
    return {"step": step, "summary": knob_summary, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
