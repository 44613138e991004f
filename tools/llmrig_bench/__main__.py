"""llmrig-bench: `python3 -m llmrig_bench run WORKLOAD --url URL --key-file F --out RESULTS.json`, then
`python3 -m llmrig_bench compare RESULTS.json` (the statistics need numpy and scipy, on the controller).
`determinism record BASELINE.json --model M` stores greedy token ids of a prompt set;
`determinism check BASELINE.json [--prompts SET] [--sampling JSON]` generates them again and names the first
difference (with other prompts or sampling, the check shows what such a change does);
`report RESULTS.json --out DIR` writes report.md, comparisons.json and the plots;
`stress WORKLOAD --cycles 6` runs sustained load and prints failures and speed drift per cycle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml  # PyYAML is on the controller; the hosts get workloads as JSON

    return yaml.safe_load(text)


def read_workload(path: Path) -> Any:
    """The parsed workload, or None after saying on stderr what is wrong with it (file, workload, field)."""
    from .workload import WorkloadError, parse

    try:
        return parse(load(path))
    except (WorkloadError, OSError, ValueError) as exc:
        print(f"llmrig-bench: {path}: {exc}", file=sys.stderr)
        return None


def prompt_list(text: str) -> list[Any]:
    """--prompts: a prompt set's name, or a JSON list of prompts; the prompts, validated as a workload's."""
    from .workload import parse

    spec = json.loads(text) if text.lstrip().startswith("[") else text
    return parse({"name": "determinism", "prompts": spec, "variants": {"A": {"model": "-"}}}).prompts


def determinism(args: argparse.Namespace) -> int:
    from . import determinism as det
    from .workload import WorkloadError

    key = args.key_file.read_text(encoding="utf-8").strip()
    try:
        prompts = prompt_list(args.prompts or "short") if args.prompts or args.action == "record" else None
        sampling = json.loads(args.sampling) if args.sampling else None
        if sampling is not None and not isinstance(sampling, dict):
            raise ValueError("--sampling: a JSON object")
    except (WorkloadError, ValueError) as exc:
        print(f"llmrig-bench: {exc}", file=sys.stderr)
        return 2
    if args.action == "record":
        if not args.model or prompts is None:
            print("llmrig-bench: determinism record needs --model", file=sys.stderr)
            return 2
        baseline = det.record(args.url, key, args.model, prompts, args.n_predict, sampling)
        args.baseline.write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")
        tokens = sum(len(p["tokens"]) for p in baseline["prompts"])
        print(f"baseline of {args.model}: {len(baseline['prompts'])} prompts, {tokens} tokens")
        return 0
    baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
    outcome = det.check(args.url, key, baseline, model=args.model, prompts=prompts, sampling=sampling)
    print(outcome.summary())
    if args.json:
        args.json.write_text(json.dumps(outcome.as_dict(), indent=1) + "\n", encoding="utf-8")
    return 0 if outcome.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrig-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chk_p = sub.add_parser("check", help="validate a workload")
    chk_p.add_argument("workload", type=Path)
    run_p = sub.add_parser("run", help="run a workload and write the raw records")
    run_p.add_argument("workload", type=Path)
    run_p.add_argument("--url", default="http://127.0.0.1:8080")
    run_p.add_argument("--key-file", type=Path, required=True)
    run_p.add_argument("--out", type=Path, required=True)
    run_p.add_argument("--build", default="", help="the llama.cpp build id, recorded with the results")
    cmp_p = sub.add_parser("compare", help="the variants of a run against the first: figures and verdicts")
    cmp_p.add_argument("results", type=Path)
    cmp_p.add_argument("--threshold", type=float, default=0.02, help="smallest change that matters (0.02 = 2 %%)")
    cmp_p.add_argument("--json", type=Path, help="write the comparisons here")
    st_p = sub.add_parser("stress", help="the first variant at the highest concurrency for N cycles")
    st_p.add_argument("workload", type=Path)
    st_p.add_argument("--url", default="http://127.0.0.1:8080")
    st_p.add_argument("--key-file", type=Path, required=True)
    st_p.add_argument("--cycles", type=int, default=6)
    st_p.add_argument("--out", type=Path, help="write the cycles as JSON")
    rep_p = sub.add_parser("report", help="report.md, comparisons.json and PNG plots of a run")
    rep_p.add_argument("results", type=Path)
    rep_p.add_argument("--out", type=Path, required=True, help="the report's directory")
    rep_p.add_argument("--threshold", type=float, default=0.02)
    rep_p.add_argument("--stress", type=Path, help="a stress run's JSON (stress --out), reported with its cycles")
    det_p = sub.add_parser("determinism", help="greedy token ids against a stored baseline")
    det_p.add_argument("action", choices=["record", "check"])
    det_p.add_argument("baseline", type=Path, help="the baseline file (written by record, read by check)")
    det_p.add_argument("--url", default="http://127.0.0.1:8080")
    det_p.add_argument("--key-file", type=Path, required=True)
    det_p.add_argument("--model", help="record: the model; check: another model than the baseline's")
    det_p.add_argument(
        "--prompts",
        help="a prompt set's name or a JSON list of prompts (record: short by default; check: instead of the"
        " baseline's)",
    )
    det_p.add_argument(
        "--sampling", help="sampling fields besides greedy (record) or changed (check), as JSON: '{\"temperature\": 1}'"
    )
    det_p.add_argument("--n-predict", type=int, default=32)
    det_p.add_argument("--json", type=Path, help="check: also write the outcome here")
    args = parser.parse_args(argv)

    if args.command == "determinism":
        return determinism(args)
    if args.command == "report":
        from .report import write  # matplotlib, numpy and scipy: the controller only

        cycles = json.loads(args.stress.read_text(encoding="utf-8")) if args.stress else None
        report = write(json.loads(args.results.read_text(encoding="utf-8")), args.out, args.threshold, cycles)
        print(f"wrote {report}")
        return 0

    if args.command in ("check", "stress", "run"):
        workload = read_workload(args.workload)
        if workload is None:
            return 2

    if args.command == "check":
        print(f"{workload.name}: {len(workload.prompts)} prompts, {len(workload.variants)} variants")
        return 0

    if args.command == "stress":
        from .stress import stress, summary

        result = stress(workload, args.url, args.key_file.read_text(encoding="utf-8").strip(), args.cycles)
        print(summary(result))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        return 1 if any(row["failed"] for row in result["cycles"]) else 0

    if args.command == "run":
        from .runner import BeforeFailed, run

        key = args.key_file.read_text(encoding="utf-8").strip()
        try:
            results = run(workload, args.url, key, build=args.build)
        except BeforeFailed as exc:
            print(f"llmrig-bench: {workload.name}: {exc}; the run stopped", file=sys.stderr)
            return 1
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        records = results["records"]
        failed = sum(1 for r in records if r["status"] != 200 or r["error"] is not None)
        swaps = sum(1 for r in records if r["swap"])
        print(
            f"{workload.name}: {len(records) - swaps} requests and {swaps} swaps, {failed} failed,"
            f" {results['seconds']:.1f} s"
        )
        return 1 if failed else 0

    from .compare import compare_run  # needs numpy and scipy: the controller only

    results = json.loads(args.results.read_text(encoding="utf-8"))
    comparisons = compare_run(results, threshold=args.threshold)
    for item in comparisons:
        print(item.line())
    if args.json:
        args.json.write_text(json.dumps([c.as_dict() for c in comparisons], indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
