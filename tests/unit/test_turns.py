"""The verifiers' turns (tests/llmrig_turns.py) with real flock(2) locks, taken from threads: flock locks
belong to open file descriptions, so two opens of one file in one process contend as two processes would."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import llmrig_turns
import pytest


class Taker(threading.Thread):
    """Takes a turn, notes when it got it, and holds it until released."""

    def __init__(self, quiet: bool, name: str, entered: list[str]) -> None:
        super().__init__(daemon=True)
        self.quiet, self.label, self.entered = quiet, name, entered
        self.inside = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        with llmrig_turns.turn(self.quiet, self.label):
            self.entered.append(self.label)
            self.inside.set()
            self.release.wait(10)


def held(lock: Path) -> bool:
    """Whether anyone holds the lock file (an exclusive try that fails)."""
    with open(lock, "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def wait_until(condition, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def turns_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(llmrig_turns, "TURNS", tmp_path)
    monkeypatch.setattr(llmrig_turns, "SAY_WAITS_FROM_S", 0.1)
    return tmp_path


def test_ordinary_tests_share_the_cpus():
    entered: list[str] = []
    first, second = Taker(False, "a", entered), Taker(False, "b", entered)
    first.start()
    assert first.inside.wait(5)
    second.start()
    assert second.inside.wait(5), "a second ordinary test waited for the first"
    for taker in (first, second):
        taker.release.set()
        taker.join(5)


def test_a_quiet_test_waits_for_the_running_ones_and_holds_off_the_ones_that_come_after_it(turns_dir, capsys):
    entered: list[str] = []
    running = Taker(False, "running", entered)
    running.start()
    assert running.inside.wait(5)
    quiet = Taker(True, "quiet", entered)
    quiet.start()
    # the quiet test holds the turnstile while it waits for the running test to end
    wait_until(lambda: held(turns_dir / "gate.lock"))
    later = Taker(False, "later", entered)
    later.start()
    time.sleep(0.3)
    assert entered == ["running"]
    running.release.set()
    assert quiet.inside.wait(5)
    time.sleep(0.3)
    assert entered == ["running", "quiet"], "an ordinary test ran beside a quiet one"
    quiet.release.set()
    assert later.inside.wait(5)
    later.release.set()
    for taker in (running, quiet, later):
        taker.join(5)
    assert entered == ["running", "quiet", "later"]
    waits = capsys.readouterr().err
    assert "[quiet: waited" in waits and "for the CPUs to itself]" in waits
    assert "[later: waited" in waits and "for a quiet test to end]" in waits


def test_quiet_tests_run_last_and_reverse_turns_the_whole_order(monkeypatch):
    class Item:
        def __init__(self, name: str, quiet: bool) -> None:
            self.name, self.quiet = name, quiet

        def get_closest_marker(self, name: str):
            return object() if name == "quiet" and self.quiet else None

    def order(setting: str) -> list[str]:
        monkeypatch.setenv("LLMRIG_TEST_ORDER", setting)
        items = [Item("q1", True), Item("a", False), Item("q2", True), Item("b", False)]
        llmrig_turns.pytest_collection_modifyitems(items)
        return [item.name for item in items]

    assert order("forward") == ["a", "b", "q1", "q2"]
    assert order("reverse") == ["q2", "q1", "b", "a"]
