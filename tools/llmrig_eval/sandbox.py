"""Run a program written by a model, with limits: its own temporary directory, an empty environment, CPU
time, address space, file size and open files capped, its process group killed at the timeout; no network
(a new network namespace through unshare, when the kernel allows it); and, when the grader runs as root, as
the nobody user (setpriv). This keeps a wrong or hostile completion from hanging, filling the machine or
reaching out; it is not a virtual machine, so the grader runs on the controller, never on the inference
host, and never as a user that holds secrets worth more than that machine's own."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache

NOBODY = 65534
# the system's interpreter: a virtual environment's may sit below a home the nobody user cannot enter
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | timeout
    output: str  # the last lines of what it printed (the traceback of a failed assert)
    seconds: float


def _limits(cpu_s: int, memory_mib: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mib << 20, memory_mib << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@cache
def isolation() -> tuple[list[str], str]:
    """The command prefix and what it gives: no network where unshare works, the nobody user under root."""
    prefix: list[str] = []
    said = []
    unshare = shutil.which("unshare")
    if unshare:
        net = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
        if subprocess.run([*net, "true"], capture_output=True, check=False).returncode == 0:
            prefix, said = net, ["no network (own network namespace)"]
    if not said:
        said = ["network NOT isolated (unshare not permitted here)"]
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        prefix += [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        said.append("user nobody")
    return prefix, ", ".join(said)


def run(program: str, timeout_s: float = 10.0, memory_mib: int = 512) -> Outcome:
    import time

    prefix, _ = isolation()
    with tempfile.TemporaryDirectory(prefix="llmrig-eval-") as work:
        os.chmod(work, 0o777)  # the nobody user writes its own files here, nowhere else
        path = os.path.join(work, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program)
        os.chmod(path, 0o644)
        start = time.monotonic()
        proc = subprocess.Popen(
            [*prefix, PYTHON, "-I", "-S", path],
            cwd=work,
            env={"PATH": "/usr/bin:/bin", "HOME": work},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mib),  # only resource limits, no locks
        )
        try:
            output, _ = proc.communicate(timeout=timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = "timeout"
        seconds = time.monotonic() - start
    text = output.decode(errors="replace")
    return Outcome(status=status, output="\n".join(text.splitlines()[-6:])[-1500:], seconds=seconds)
