"""The test containers' connection finds the cgroups a process joins to run as podman exec would run it:
checked on this process, whose cgroups are real (the Molecule verify compares a whole task's view with
podman exec's, tests/test_connection.py there)."""

from __future__ import annotations

import os
from pathlib import Path

from ansible_collections.llmrig.serving.plugins.connection.podman import _cgroup_procs


def test_the_cgroup_files_of_a_process_list_that_process():
    pid = str(os.getpid())
    files = _cgroup_procs(pid)
    assert files  # every mounted hierarchy this process is in (an unmounted v1 controller has no file)
    for procs in files:
        assert procs.endswith("/cgroup.procs") and pid in Path(procs).read_text().split(), procs


def test_systemd_s_init_scope_is_left_for_the_container_s_own_cgroup(tmp_path, monkeypatch):
    """podman exec puts a process in the container's cgroup, not in init.scope below it, where the container's
    systemd moved itself."""
    real_open = open
    table = "0::/libpod_parent/libpod-0123/init.scope\n"

    def fake_open(path, *args, **kwargs):
        if path == "/proc/4242/cgroup":
            target = tmp_path / "cgroup"
            target.write_text(table)
            return real_open(target, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    (files,) = _cgroup_procs("4242")
    assert files.endswith("/libpod_parent/libpod-0123/cgroup.procs")
