"""scripts/role_docs.py --check: defaults, argument_specs and README tables agree, defaults included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def check(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/role_docs.py"), "--check"], cwd=tmp_path, capture_output=True, text=True
    )


def copy_roles(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "roles", tmp_path / "roles")
    return tmp_path / "roles"


def test_the_repository_roles_pass(tmp_path):
    copy_roles(tmp_path)
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_spec_default_that_differs_from_defaults_main_fails(tmp_path):
    roles = copy_roles(tmp_path)
    defaults = roles / "llmrig_gateway/defaults/main.yml"
    defaults.write_text(
        defaults.read_text().replace("llmrig_gateway_stop_timeout: 10", "llmrig_gateway_stop_timeout: 15")
    )
    result = check(tmp_path)
    assert result.returncode == 1
    assert (
        "llmrig_gateway: llmrig_gateway_stop_timeout: argument_specs default 10 differs from defaults/main.yml 15"
        in result.stderr
    )


def test_a_default_missing_from_the_spec_fails(tmp_path):
    roles = copy_roles(tmp_path)
    defaults = roles / "llmrig_base/defaults/main.yml"
    defaults.write_text(defaults.read_text() + "llmrig_base_extra: 1\n")
    result = check(tmp_path)
    assert result.returncode == 1
    assert "only in defaults ['llmrig_base_extra']" in result.stderr
