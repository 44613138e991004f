"""A task set (files/eval/*.yml): Python functions to complete, graded by running their tests.

Each task has an id, a level (1 trivial .. 4 hard), a prompt (the function's head: signature and docstring),
tests (statements that raise when the function is wrong) and a reference solution (a body that passes them,
written flush left or indented).
Standard library only: the completions are fetched on the inference host."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

LEVELS = (1, 2, 3, 4)
ID = re.compile(r"^[a-z][a-z0-9_]*$")
# where a completion of a function body ends: the next top-level statement
STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", "\n\n\n"]


class TaskError(ValueError):
    pass


@dataclass(frozen=True)
class Task:
    id: str
    level: int
    prompt: str
    tests: str
    solution: str

    def program(self, completion: str) -> str:
        """The module the sandbox runs: the head, the model's body, then the tests."""
        return f"{self.prompt}{completion}\n\n{self.tests}"


@dataclass(frozen=True)
class TaskSet:
    name: str
    tasks: list[Task]


def parse(data: Any) -> TaskSet:
    """Validate a task set; every problem names the task and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        raise TaskError("a task set is a mapping with 'name' and 'tasks'")
    items = data.get("tasks")
    if not isinstance(items, list) or not items:
        raise TaskError(f"task set {data['name']!r}: field 'tasks': a non-empty list")
    tasks, seen = [], set()
    for index, item in enumerate(items, start=1):
        label = f"task set {data['name']!r}: task {index}"
        if not isinstance(item, dict):
            raise TaskError(f"{label}: a mapping")
        task_id = item.get("id")
        if not isinstance(task_id, str) or not ID.match(task_id):
            raise TaskError(f"{label}: field 'id': lowercase letters, digits and _, got {task_id!r}")
        label = f"task set {data['name']!r}: task {task_id!r}"
        if task_id in seen:
            raise TaskError(f"{label}: field 'id': used twice")
        seen.add(task_id)
        unknown = set(item) - {"id", "level", "prompt", "tests", "solution"}
        if unknown:
            raise TaskError(f"{label}: unknown fields {sorted(unknown)}")
        if item.get("level") not in LEVELS:
            raise TaskError(f"{label}: field 'level': one of {LEVELS}, got {item.get('level')!r}")
        for field in ("prompt", "tests", "solution"):
            if not isinstance(item.get(field), str) or not item[field].strip():
                raise TaskError(f"{label}: field {field!r}: Python source text is required")
        if not item["prompt"].lstrip().startswith("def "):
            raise TaskError(f"{label}: field 'prompt': the head of a function, starting with 'def '")
        # the solution is a body: written flush left in YAML, indented as the function's
        solution = textwrap.indent(textwrap.dedent(item["solution"]), "    ")
        tasks.append(Task(task_id, item["level"], item["prompt"], item["tests"], solution))
    return TaskSet(name=data["name"], tasks=tasks)


def body(completion: str) -> str:
    """The model's completion cut at the first top-level statement after the function's body."""
    cut = len(completion)
    for stop in STOPS:
        found = completion.find(stop)
        if found != -1:
            cut = min(cut, found)
    return completion[:cut]
