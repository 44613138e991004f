"""LLMRIG_TEST_ORDER=reverse runs the verifier's tests last to first (default: forward), a check that none
depends on the order they run in: each test sets up the state it needs, and one that changes the fleet puts
it back."""

from __future__ import annotations

import os


def pytest_collection_modifyitems(items: list) -> None:
    if os.environ.get("LLMRIG_TEST_ORDER") == "reverse":
        items.reverse()
