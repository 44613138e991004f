#!/usr/bin/env python3
"""Evaluate every PromQL expression of the Grafana dashboards and the Prometheus rule files against a live
Prometheus, and report which failed and which returned no data.

  promql_check.py --prometheus http://127.0.0.1:9090 --dashboards files/grafana-dashboards \\
      --rules roles/llmrig_prometheus/files/llmrig.rules.yml --require-data llmrig-host,llmrig-inference

Grafana's variables are replaced before a query is sent: $host, $model and other template variables by `.*`
(what "All" selects), $__rate_interval by --rate-interval. A variable query label_values(SELECTOR, label) is
checked as SELECTOR. An expression fails when Prometheus refuses it (parse or evaluation error). With
--require-data, the listed dashboards' expressions must also return at least one series, except those
matching --allow-empty. Exit status 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)
VARIABLE = re.compile(r"\$(\{[a-zA-Z_][a-zA-Z0-9_]*\}|[a-zA-Z_][a-zA-Z0-9_]*)")


@dataclass
class Expression:
    source: str  # "dashboard <uid> panel <id> <refId>", "dashboard <uid> variable <name>" or "rules <file> <name>"
    group: str  # the dashboard uid, or "rules"
    expr: str


@dataclass
class Outcome:
    expression: Expression
    query: str
    error: str
    series: int


def substitute(expr: str, rate_interval: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        if name in ("__rate_interval", "__interval", "__range"):
            return rate_interval
        if name.startswith("__"):
            raise ValueError(f"unsupported Grafana variable ${name}")
        return ".*"

    return VARIABLE.sub(replace, expr)


def dashboard_expressions(path: Path) -> list[Expression]:
    board = json.loads(path.read_text())
    uid = str(board["uid"])
    found = []
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = LABEL_VALUES.match(text)
        if match:
            found.append(Expression(f"dashboard {uid} variable {var['name']}", uid, match.group("selector")))
        elif text and not text.startswith("label_values("):
            found.append(Expression(f"dashboard {uid} variable {var['name']}", uid, text))
    panels = list(board.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append(
                    Expression(f"dashboard {uid} panel {panel['id']} {target.get('refId', '?')}", uid, target["expr"])
                )
    return found


def rule_expressions(path: Path) -> list[Expression]:
    document = yaml.safe_load(path.read_text())
    found = []
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("record") or rule.get("alert")
            found.append(Expression(f"rules {path.name} {name}", "rules", str(rule["expr"])))
    return found


def collect(dashboards: list[Path], rules: list[Path]) -> list[Expression]:
    expressions: list[Expression] = []
    for root in dashboards:
        files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
        for path in files:
            expressions.extend(dashboard_expressions(path))
    for path in rules:
        expressions.extend(rule_expressions(path))
    return expressions


def query(prometheus: str, expr: str, timeout: float = 30.0) -> tuple[str, int]:
    """Return (error, number of series) of an instant query; error is empty on success."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(prometheus.rstrip("/") + "/api/v1/query", data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            return f"HTTP {exc.code}", 0
    if body.get("status") != "success":
        return f"{body.get('errorType', 'error')}: {body.get('error', body)}", 0
    result = body["data"]["result"]
    return "", len(result) if isinstance(result, list) else 1


def evaluate(prometheus: str, expressions: list[Expression], rate_interval: str) -> list[Outcome]:
    outcomes = []
    for expression in expressions:
        try:
            text = substitute(expression.expr, rate_interval)
        except ValueError as exc:
            outcomes.append(Outcome(expression, expression.expr, str(exc), 0))
            continue
        error, series = query(prometheus, text)
        outcomes.append(Outcome(expression, text, error, series))
    return outcomes


def report(
    outcomes: list[Outcome], require_data: set[str], allow_empty: list[re.Pattern[str]]
) -> tuple[list[str], int]:
    """Return the problems found, and how many expressions were evaluated without error."""
    problems = []
    for outcome in outcomes:
        where = outcome.expression.source
        if outcome.error:
            problems.append(f"FAILED  {where}: {outcome.error}\n        {outcome.query}")
        elif (
            outcome.series == 0
            and outcome.expression.group in require_data
            and not any(p.search(outcome.expression.expr) for p in allow_empty)
        ):
            problems.append(f"NO DATA {where}\n        {outcome.query}")
    return problems, sum(1 for o in outcomes if not o.error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", required=True, help="base URL of the Prometheus to query")
    parser.add_argument("--dashboards", type=Path, action="append", default=[], help="dashboard file or directory")
    parser.add_argument("--rules", type=Path, action="append", default=[], help="Prometheus rule file")
    parser.add_argument("--rate-interval", default="5m", help="value of $__rate_interval")
    parser.add_argument("--require-data", default="", help="comma-separated dashboard uids that must return data")
    parser.add_argument("--allow-empty", action="append", default=[], help="regex of expressions allowed no data")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args(argv)

    expressions = collect(args.dashboards, args.rules)
    outcomes = evaluate(args.prometheus, expressions, args.rate_interval)
    require = {uid for uid in args.require_data.split(",") if uid}
    problems, succeeded = report(outcomes, require, [re.compile(p) for p in args.allow_empty])
    with_data = sum(1 for o in outcomes if o.series and not o.error)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"source": o.expression.source, "query": o.query, "error": o.error, "series": o.series}
                    for o in outcomes
                ],
                indent=2,
            )
        )
    for problem in problems:
        print(problem)
    groups = sorted({o.expression.group for o in outcomes})
    print(
        f"evaluated {len(outcomes)} expressions ({', '.join(groups)}): {succeeded} succeeded, "
        f"{len(outcomes) - succeeded} failed, {with_data} returned data; {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
