# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""containers.podman.podman with pipelining, for the test and demo containers."""

from __future__ import annotations

DOCUMENTATION = r"""
name: podman
short_description: Run tasks in a podman container, with pipelining
description:
  - The C(containers.podman.podman) connection, with one change. That plugin runs C(podman exec) without
    C(--interactive), so a module sent on standard input never arrives, and it turns pipelining off. This one
    passes C(--interactive) whenever there is input, so pipelining works. Every task then takes one
    C(podman exec) instead of four or five (make a temporary directory, copy the module, make it executable,
    run it, remove it).
  - It also mounts the container's file system only for a task that copies a file, not for every task (the
    original runs C(podman mount) whenever a task connects, as long as a C(podman exec)).
  - As root, a command enters the running container with C(nsenter) (about 10 ms) instead of C(podman exec)
    (about 180 ms, more than the module itself takes for most tasks), in the container's namespaces and root,
    its cgroups, with its environment, working directory, resource limits and capability bounding set, as
    C(podman exec) would start it. The container's seccomp filter and security labels are not applied. Another
    user, a container that is not running, or a host without C(nsenter) get C(podman exec).
  - llmrig's demo and test containers use it; production hosts are reached over SSH.
author: llmrig authors
extends_documentation_fragment:
  - ansible.builtin.connection_pipelining
options:
  remote_addr:
    description: The name or ID of the container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: User to run commands as inside the container.
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments to pass to the podman command line.
    default: ''
    ini:
      - section: defaults
        key: podman_extra_args
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_executable:
    description: Executable for podman command.
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import json
import os
import resource
import shlex
import shutil
import subprocess

from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible.utils.display import Display
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

display = Display()


class Connection(PodmanConnection):
    transport = "llmrig.serving.podman"
    has_pipelining = True

    def _connect(self):
        """Connected without a podman call: the file system is mounted by the first file transfer."""
        self._mount_point = None
        self._mounted = False
        self._looked_for_way_in = False
        self._way_in: tuple[list[str], list[tuple[int, int, int]], list[str]] | None = None
        self._connected = True
        return self

    def _mount(self) -> None:
        if not self._mounted:
            PodmanConnection._connect(self)
            self._mounted = True

    @ensure_connect
    def put_file(self, in_path, out_path):
        self._mount()
        super().put_file(in_path, out_path)

    @ensure_connect
    def fetch_file(self, in_path, out_path):
        self._mount()
        super().fetch_file(in_path, out_path)

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        args = ["exec", "--interactive"] if in_data is not None else ["exec"]
        if self.user:
            args += ["--user", self.user]
        if not self._looked_for_way_in:
            # once per task: a task's commands (a template: stat, then copy) find the same container
            self._way_in = None if self.user else self._entry()
            self._looked_for_way_in = True
        if self._way_in is None:
            return self._podman(args, argv, in_data)
        command, limits, cgroups = self._way_in
        display.vvv(f"RUN {shlex.join(['nsenter', *command[1:]])} {shlex.join(argv)}", host=self._container_id)
        try:
            process = subprocess.Popen(
                [to_bytes(a, errors="surrogate_or_strict") for a in command + argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=lambda: _join(cgroups, limits),
            )
        except subprocess.SubprocessError as error:
            # the child could not join the container's cgroups (on a cgroup v2 host a container cgroup whose
            # controllers systemd inside has delegated takes no process): podman exec knows the way in
            display.vvv(f"nsenter not used ({error}): podman exec", host=self._container_id)
            return self._podman(args, argv, in_data)
        stdout, stderr = process.communicate(input=in_data)
        return process.returncode, stdout, stderr

    def _entry(self) -> tuple[list[str], list[tuple[int, int, int]], list[str]] | None:
        """What enters the container as podman exec would: the nsenter command line, the resource limits
        and the cgroup.procs files of the container's cgroups. None where podman exec has to do it."""
        nsenter = shutil.which("nsenter")
        if os.geteuid() != 0 or nsenter is None:
            return None
        fields = "\t".join(
            (
                "{{.State.Pid}}",
                "{{json .Config.Env}}",
                "{{.Config.WorkingDir}}",
                "{{json .EffectiveCaps}}",
                "{{json .HostConfig.Ulimits}}",
                "{{.ID}}",
            )
        )
        rc, out, _ = self._podman(["inspect", "--type", "container", "--format", fields])
        if rc != 0 or out.startswith((b"0\t", b"\t")):
            return None
        pid, env, workdir, caps, ulimits, ident = to_native(out).strip().split("\t")
        keep = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in json.loads(caps) or []])
        command = [nsenter, "--target", pid, "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"]
        # nsenter resolves --wd before it enters the container's root: env changes directory inside it
        command += ["--root", "--", "/usr/bin/setpriv", f"--bounding-set={keep}", "--", "/usr/bin/env", "-i"]
        # podman exec leaves out what podman generated: container_uuid, and HOSTNAME where it is the short ID
        # (a hostname the container was given stays; seen with podman 4.3)
        generated = f"HOSTNAME={ident[:12]}"
        variables = [v for v in json.loads(env) if not v.startswith("container_uuid=") and v != generated]
        command += [f"--chdir={workdir or '/'}", *variables]
        limits = [
            (getattr(resource, item["Name"]), item["Soft"], item["Hard"])
            for item in json.loads(ulimits) or []
            if hasattr(resource, item["Name"])
        ]
        return command, limits, _cgroup_procs(pid)


def _cgroup_procs(pid: str) -> list[str]:
    """The cgroup.procs files of the cgroups podman exec puts a process in: the container's own, in every
    hierarchy (its init process sits in init.scope below them, where systemd moved it)."""
    with open("/proc/cgroups", encoding="utf-8") as table:
        controllers = {line.split()[0] for line in table if not line.startswith("#")}
    mounts: dict[str, str] = {}
    with open("/proc/self/mounts", encoding="utf-8") as table:
        for line in table:
            _, point, kind, options = line.split()[:4]
            if kind == "cgroup2":
                mounts["0::"] = point
            elif kind == "cgroup":
                names = [o for o in options.split(",") if o in controllers or o.startswith("name=")]
                mounts[",".join(sorted(names))] = point
    paths = []
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as table:
        for line in table:
            number, names, path = line.rstrip("\n").split(":", 2)
            key = "0::" if number == "0" else ",".join(sorted(names.split(",")))
            if key in mounts:
                paths.append(os.path.join(mounts[key], path.removesuffix("/init.scope").lstrip("/"), "cgroup.procs"))
    return paths


def _join(cgroups: list[str], limits: list[tuple[int, int, int]]) -> None:
    """In the child, before nsenter runs: into the container's cgroups, under its resource limits."""
    for procs in cgroups:
        with open(procs, "w", encoding="ascii") as handle:
            handle.write("0")
    for name, soft, hard in limits:
        resource.setrlimit(name, (soft, hard))
