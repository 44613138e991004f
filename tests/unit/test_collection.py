"""The in-repo collection's metadata tells the truth: version, modules and filters."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

COLLECTION = Path(__file__).resolve().parents[2] / "collections/ansible_collections/llmrig/serving"
MODULES = sorted(path.stem for path in (COLLECTION / "plugins/modules").glob("*.py"))
CONNECTIONS = sorted(path.stem for path in (COLLECTION / "plugins/connection").glob("*.py"))
FILTERS = sorted(
    name
    for path in (COLLECTION / "plugins/filter").glob("*.py")
    for name in importlib.import_module(f"ansible_collections.llmrig.serving.plugins.filter.{path.stem}")
    .FilterModule()
    .filters()
)


def test_the_changelog_starts_with_the_galaxy_version():
    version = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())["version"]
    first = re.search(r"^## (\S+)$", (COLLECTION / "CHANGELOG.md").read_text(), re.M)
    assert first and first.group(1) == version


def test_the_readme_lists_every_module_and_filter_and_nothing_else():
    readme = (COLLECTION / "README.md").read_text()
    named = set(re.findall(r"`llmrig\.serving\.([a-z_]+)`", readme))
    plugins = set(MODULES) | set(FILTERS) | set(CONNECTIONS)
    assert named == plugins, named ^ plugins


def test_the_changelog_names_every_module_and_filter():
    changelog = (COLLECTION / "CHANGELOG.md").read_text()
    for name in [*MODULES, *FILTERS, *CONNECTIONS]:
        assert f"`{name}`" in changelog, name
