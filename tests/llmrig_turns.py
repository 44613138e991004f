"""Turns for the Molecule verifiers when `make test` runs scenarios side by side.

Most verifier tests only need their own container and may overlap tests of another scenario. A test marked
`quiet` measures speed (a benchmark's verdict, an A/B, a regression gate) and must not share the CPUs: it
waits until no test of any scenario is running and holds the others off until it ends. One shared lock
(`quiet.lock`: shared for ordinary tests, exclusive for quiet ones) and a turnstile in front of it (`gate.lock`,
so that a waiting quiet test is not starved by ordinary tests that keep arriving) in the repository's
.cache/test-turns/, taken with flock(2) for each test's setup, call and teardown together (a module fixture
that benchmarks runs in the setup of its first test). Quiet tests run last in each verifier, after the
scenarios have converged. molecule/conftest.py loads these hooks for every scenario."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TURNS = Path(__file__).resolve().parents[1] / ".cache" / "test-turns"
# a wait this long or longer is printed
SAY_WAITS_FROM_S = 1.0


@contextmanager
def turn(quiet: bool, name: str) -> Iterator[None]:
    """Hold the shared lock (quiet: the exclusive one) while the block runs; say how long it waited."""
    TURNS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(TURNS / "gate.lock", "a") as gate, open(TURNS / "quiet.lock", "a") as held:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(held, fcntl.LOCK_EX if quiet else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        waited = time.monotonic() - started
        if waited >= SAY_WAITS_FROM_S:
            kind = "the CPUs to itself" if quiet else "a quiet test to end"
            print(f"\n[{name}: waited {waited:.0f} s for {kind}]", file=sys.stderr)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def is_quiet(item: pytest.Item) -> bool:
    return item.get_closest_marker("quiet") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quiet: measures speed; runs with no other verifier test beside it")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Quiet tests last (in their order), then LLMRIG_TEST_ORDER=reverse turns the whole order round: a
    check that no test depends on the ones before it (each sets up the state it needs)."""
    items.sort(key=is_quiet)
    if os.environ.get("LLMRIG_TEST_ORDER") == "reverse":
        items.reverse()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with turn(is_quiet(item), item.name):
        yield
