"""The test containers' Ansible connection (llmrig.serving.podman) enters a running container with nsenter
instead of podman exec: a task must then see what it would see under podman exec. The same shell task runs
both ways on the live container (a named remote user, here root, takes podman exec) and must see the same
capabilities, resource limits, cgroups, environment, working directory and init process."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from llmrig_testlib import REPO, TEST_HOST

PROBE = (
    "grep ^Cap /proc/self/status; echo nofile $(ulimit -n); grep ^Max.processes /proc/self/limits; "
    "cat /proc/self/cgroup; echo cwd $(pwd); env | grep -v -e ^PWD= -e ^SHLVL= -e ^_= | sort; "
    "echo pid1 $(cat /proc/1/comm)"
)


def through_the_connection(command: str, *args: str, module: str = "ansible.builtin.shell") -> tuple[str, str]:
    """The command as a shell task runs through the project's connection: its output, and the connection's
    log at -vvv, which names the command line that entered the container. The log goes to a file: where
    verbose messages are displayed (stdout, or stderr with ANSIBLE_VERBOSE_TO_STDERR) is the environment's
    choice, and the fresh-clone CI saw none of them on stdout."""
    with tempfile.TemporaryDirectory() as scratch:
        logfile = Path(scratch) / "ansible.log"
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_VERBOSITY="0",
            ANSIBLE_LOG_PATH=str(logfile),
            ANSIBLE_LOG_VERBOSITY="3",
        )
        done = subprocess.run(
            [
                *("ansible", "all", "-i", f"{TEST_HOST},", "-c", "llmrig.serving.podman"),
                *("-e", "ansible_pipelining=true", *args, "-m", module, "-a", command),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        log = logfile.read_text(encoding="utf-8")
    output = done.stdout.split(" | CHANGED | rc=0 >>\n", 1)[1]
    return output, log


def test_a_task_runs_as_under_podman_exec():
    entered, log = through_the_connection(PROBE)
    assert "RUN nsenter --target" in log
    executed, log = through_the_connection(PROBE, "-u", "root")
    assert "RUN nsenter" not in log and f"b'exec', b'--interactive', b'--user', b'root', b'{TEST_HOST}'" in log
    assert entered.strip().split("\n") == executed.strip().split("\n")
    assert "nofile 20000" in entered and "pid1 systemd" in entered


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_a_named_user_gets_podman_exec(user):
    """A remote user (ansible_user) is podman exec's job: nsenter is for the default user only (raw: nobody
    has no home for a module's temporary files)."""
    output, log = through_the_connection("id -un", "-u", user, module="ansible.builtin.raw")
    assert output.strip() == user
    assert "RUN nsenter" not in log and f"b'--user', b'{user}'" in log
