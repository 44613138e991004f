"""Grade completions: each one's program (task head, body, tests) run in the sandbox, and the scores: the
share of samples that passed, per level and over all tasks, and a level-weighted score (a level-4 task counts
four times a level-1 task), so that a model that solves harder tasks scores higher."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from . import sandbox
from .tasks import LEVELS, TaskSet, body


@dataclass(frozen=True)
class Graded:
    task: str
    level: int
    sample: int
    status: str
    output: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def grade(tasks: TaskSet, completions: dict[str, list[str]], timeout_s: float = 10.0) -> list[Graded]:
    """Every sample of every task; a task without completions counts as failed samples of nothing (0)."""
    out = []
    for task in tasks.tasks:
        for index, completion in enumerate(completions.get(task.id, [])):
            outcome = sandbox.run(task.program(body(completion)), timeout_s=timeout_s)
            out.append(Graded(task.id, task.level, index, outcome.status, outcome.output))
    return out


def scores(tasks: TaskSet, graded: list[Graded]) -> dict[str, Any]:
    """Pass rates per task (mean over its samples), per level and overall, and the level-weighted score."""
    per_task: dict[str, float] = {}
    for task in tasks.tasks:
        mine = [g for g in graded if g.task == task.id]
        per_task[task.id] = sum(g.passed for g in mine) / len(mine) if mine else 0.0
    levels = {}
    for level in LEVELS:
        ids = [t.id for t in tasks.tasks if t.level == level]
        if ids:
            levels[str(level)] = sum(per_task[i] for i in ids) / len(ids)
    weights = {t.id: t.level for t in tasks.tasks}
    return {
        "pass_rate": sum(per_task.values()) / len(per_task),
        "weighted": sum(per_task[i] * w for i, w in weights.items()) / sum(weights.values()),
        "levels": levels,
        "tasks": per_task,
        "samples": [asdict(g) for g in graded],
        "isolation": sandbox.isolation()[1],
    }
