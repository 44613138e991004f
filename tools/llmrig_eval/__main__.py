"""Model evaluation, run by the llmrig_eval role (roles/llmrig_eval):

    python -m llmrig_eval check TASKS.yml                    validate a task set, print it as JSON
    python -m llmrig_eval complete TASKS.json --model M ...  completions through the endpoint (on the host)
    python -m llmrig_eval grade TASKS.yml COMPLETIONS.json --out SCORES.json   run them in the sandbox
    python -m llmrig_eval lm-eval --python P --model M --tasks T ... --out DIR  an lm-eval run (controller)
    python -m llmrig_eval verdict DIR --incumbent A --candidate B               verdict.json, .md and a plot

Bad input exits 2 with one line naming the field."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yml", ".yaml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrig-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate a task set").add_argument("tasks", type=Path)
    comp = sub.add_parser("complete", help="completions of a task set from one model")
    comp.add_argument("tasks", type=Path, help="the task set as JSON (check's output)")
    comp.add_argument("--model", required=True)
    comp.add_argument("--samples", type=int, default=1)
    comp.add_argument("--max-tokens", type=int, default=160)
    comp.add_argument("--url", default="http://127.0.0.1:8080")
    comp.add_argument("--key-file", type=Path, required=True)
    comp.add_argument("--out", type=Path, required=True)
    grd = sub.add_parser("grade", help="run completions' tests in the sandbox")
    grd.add_argument("tasks", type=Path)
    grd.add_argument("completions", type=Path)
    grd.add_argument("--out", type=Path, required=True)
    lme = sub.add_parser("lm-eval", help="an lm-eval run through the endpoint, summarised in DIR/summary.json")
    lme.add_argument("--python", required=True, help="the interpreter of an environment with lm_eval[api]")
    lme.add_argument("--model", required=True)
    lme.add_argument("--api", choices=["chat", "completions"], default="chat")
    lme.add_argument("--tasks", required=True, nargs="+")
    lme.add_argument("--task-dir", type=Path, required=True, help="lm-eval's working directory and include path")
    lme.add_argument("--limit", type=int, default=0, help="documents per task (0: all)")
    lme.add_argument("--url", required=True)
    lme.add_argument("--key-file", type=Path, required=True)
    lme.add_argument("--out", type=Path, required=True)
    ver = sub.add_parser("verdict", help="decide from the scores, the A/B comparisons and the fleet's claims")
    ver.add_argument(
        "dir", type=Path, help="holds tasks.json, scores-<model>.json, speed/comparisons.json, published.json"
    )
    ver.add_argument("--incumbent", required=True)
    ver.add_argument("--candidate", required=True)
    args = parser.parse_args(argv)

    if args.command == "complete":
        from .complete import complete

        key = args.key_file.read_text(encoding="utf-8").strip()
        tasks = load(args.tasks)["tasks"]
        result = complete(args.url, key, args.model, tasks, args.samples, args.max_tokens)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(
            f"{args.model}: {len(tasks)} tasks x {args.samples} samples in {result['seconds']:.1f} s,"
            f" {len(result['errors'])} failed requests"
        )
        return 1 if result["errors"] else 0

    if args.command == "lm-eval":
        return lm_eval(args)

    import yaml

    from .tasks import TaskError, parse

    try:
        tasks = parse(load(args.tasks if args.command != "verdict" else args.dir / "tasks.json"))
    except (TaskError, OSError, ValueError, yaml.YAMLError) as exc:
        print(f"task set {args.tasks if args.command != 'verdict' else args.dir}: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(json.dumps({"name": tasks.name, "tasks": [vars(t) for t in tasks.tasks]}))
        return 0
    if args.command == "grade":
        from .grade import grade, scores

        completions = load(args.completions)
        result = scores(tasks, grade(tasks, completions["tasks"]))
        result["model"] = completions["model"]
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"{completions['model']}: pass rate {result['pass_rate']:.0%}, weighted {result['weighted']:.3f}")
        return 0

    from llmrig_tune.evidence import decode_comparison

    from .verdict import markdown, plot, verdict

    work = args.dir
    names = (args.incumbent, args.candidate)
    all_scores = {name: load(work / f"scores-{name}.json") for name in names}
    speed = decode_comparison(load(work / "speed" / "comparisons.json"), "candidate", "baseline")
    published = load(work / "published.json")
    weights = {t.id: t.level for t in tasks.tasks}
    # lm-eval's scores of both, where the run had lm-eval (roles/llmrig_eval: llmrig_eval_lm_eval_python)
    ran = (work / "lm-eval").is_dir()
    external = {name: load(work / "lm-eval" / name / "summary.json") for name in names} if ran else {}
    result = verdict(args.incumbent, args.candidate, all_scores, weights, speed, published, external)
    samples = load(work / f"completions-{args.candidate}.json")["samples"]
    (work / "verdict.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (work / "verdict.md").write_text(markdown(result, tasks.name, samples), encoding="utf-8")
    plot(result, str(work / "quality.png"))
    print(result["decision"])
    return 0


def lm_eval(args: argparse.Namespace) -> int:
    from .external import command, run, summary

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "lm-eval.log"
    argv = command(args.python, args.url, args.api, args.model, args.tasks, args.limit, args.out.resolve())
    status = run(argv, args.key_file, args.task_dir, log)
    if status != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        print(f"lm-eval for {args.model} exited {status} (log: {log}):\n" + "\n".join(tail), file=sys.stderr)
        return 1
    result = summary(args.out)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    scores = [f"{task} {metric} {s['value']:.3f}" for task, m in result["tasks"].items() for metric, s in m.items()]
    print(f"{args.model}: {result['harness']}: " + ", ".join(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
