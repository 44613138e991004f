"""The evaluation's task set and sandbox (tools/llmrig_eval): every shipped task is solvable (its reference
solution passes) and its tests can fail (an empty body and a wrong one fail), the sandbox contains what a
completion may do wrong, and the scores weigh harder tasks more."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from llmrig_eval import sandbox
from llmrig_eval.grade import grade, scores
from llmrig_eval.tasks import TaskError, body, parse

REPO = Path(__file__).resolve().parents[2]
TASKS = parse(yaml.safe_load((REPO / "files/eval/coding.yml").read_text()))


def test_the_shipped_set_runs_from_trivial_to_hard():
    levels = [t.level for t in TASKS.tasks]
    assert levels == sorted(levels) and set(levels) == {1, 2, 3, 4}
    assert len(TASKS.tasks) == 16


@pytest.mark.parametrize("task", TASKS.tasks, ids=lambda t: t.id)
def test_every_task_is_solvable_and_its_tests_can_fail(task):
    assert sandbox.run(task.program(task.solution)).status == "passed"
    assert sandbox.run(task.program("    return None\n")).status == "failed"
    assert sandbox.run(task.program("    pass\n")).status == "failed"


def test_a_completion_is_cut_where_the_function_ends():
    assert body(" a + b\n\nprint(add(1, 2))\nprint(add(3, 4))") == " a + b\n"
    assert body("    return x\ndef other():\n    pass") == "    return x"
    assert body(" s[::-1]\n\n\n\nclass X: pass") == " s[::-1]"


def test_the_sandbox_stops_loops_memory_hogs_and_writes_outside_its_directory():
    assert sandbox.run("while True:\n    pass\n", timeout_s=1).status == "timeout"
    assert sandbox.run("import os, time\nos.fork()\ntime.sleep(60)\n", timeout_s=1).status == "timeout"
    hog = sandbox.run("x = bytearray(4 << 30)\n")
    assert hog.status == "failed" and "MemoryError" in hog.output
    big = sandbox.run("open('f', 'wb').write(b'x' * (8 << 20))\n")
    assert big.status == "failed"  # past the 1 MiB file size limit
    assert sandbox.run("open('f', 'w').write('x')\n").status == "passed"  # its own directory is writable


def test_the_sandbox_has_no_network_where_the_kernel_allows_a_namespace():
    _, said = sandbox.isolation()
    if "no network" not in said:
        pytest.skip(f"this machine does not allow a network namespace: {said}")
    probe = sandbox.run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n")
    assert probe.status == "failed" and "Error" in probe.output


def test_scores_weigh_harder_tasks_more():
    right = {t.id: [t.solution] for t in TASKS.tasks}
    easy_only = {t.id: [t.solution if t.level == 1 else "    return None\n"] for t in TASKS.tasks}
    full, easy = scores(TASKS, grade(TASKS, right)), scores(TASKS, grade(TASKS, easy_only))
    assert full["pass_rate"] == full["weighted"] == 1.0
    assert easy["pass_rate"] == 0.25 and easy["levels"] == {"1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0}
    assert easy["weighted"] == 4 / 40  # four level-1 tasks of 4*1 + 4*2 + 4*3 + 4*4
    # two samples of one task, one right: half
    half = scores(TASKS, grade(TASKS, {"add": ["    return a + b\n", "    return a - b\n"]}))
    assert half["tasks"]["add"] == 0.5 and half["tasks"]["is_even"] == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tasks": []}, "a task set is a mapping"),
        ({"name": "s", "tasks": []}, "field 'tasks'"),
        ({"name": "s", "tasks": [{"id": "Bad"}]}, "task 1: field 'id'"),
        ({"name": "s", "tasks": [{"id": "a", "level": 5}]}, "task 'a': field 'level'"),
        (
            {"name": "s", "tasks": [{"id": "a", "level": 1, "prompt": "x = 1", "tests": "t", "solution": "s"}]},
            "'prompt'",
        ),
        (
            {"name": "s", "tasks": [{"id": "a", "level": 1, "prompt": "def a():", "tests": "", "solution": "s"}]},
            "'tests'",
        ),
    ],
)
def test_a_bad_task_set_is_refused_naming_the_task_and_field(data, message):
    with pytest.raises(TaskError, match=message.replace("(", r"\(")):
        parse(data)
