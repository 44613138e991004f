"""Loaded for every scenario's verifier (pytest's rootdir is the repository's): the turns of verifiers that
run side by side in `make test` (tests/llmrig_turns.py), quiet tests last and alone, and
LLMRIG_TEST_ORDER=reverse."""

from __future__ import annotations

from llmrig_turns import pytest_collection_modifyitems, pytest_configure, pytest_runtest_protocol

__all__ = ["pytest_collection_modifyitems", "pytest_configure", "pytest_runtest_protocol"]
