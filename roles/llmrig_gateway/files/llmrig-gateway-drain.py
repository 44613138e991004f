#!/usr/bin/python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ExecStop of llmrig-gateway: wait until no model is processing a request, then let systemd send SIGTERM.

The router stops on SIGTERM by closing its port, and its HTTP server then ends every streamed response at
once (cpp-httplib stops chunked responses when the server shuts down); only answers that are not streamed
run to their end. So a stop or restart first waits here, up to the drain timeout, until the running models
report no request in progress (llamacpp:requests_processing and _deferred in each model's /metrics, read
through the router without loading anything). The router keeps serving meanwhile. A router that does not
answer needs no drain.

With --reload MODELS (comma-separated) it is the gateway role's presets reload instead: it waits for those
models only (the ones whose preset changed, which the reload stops, cutting their requests in flight) and
asks the router to re-read the presets (GET /models?reload=1) the moment they are idle, polling faster, so
that a new request has as little time as possible to start in between. After the timeout it reloads anyway.

With --hold ROUTER -- COMMAND... it runs COMMAND while no request is in flight on any model and none can
start: a GPU setting (clock offsets, power limit) changes every model on the card at once, and must never
change under a request (the reference rig saw a clock change degrade a stream in flight). It waits until the
models are idle, stops the router process (SIGSTOP: new connections wait in the kernel's queue, nothing is
refused or proxied), reads each model process's own /metrics to be sure no request slipped in (one did: the
router goes on, and the wait starts again), runs COMMAND (at most HOLD_LIMIT_S), and lets the router go on
(SIGCONT) whatever happened. A guard process continues the router after HOLD_LIMIT_S should this script die.
ROUTER is the router's PID or its systemd unit. The exit status is COMMAND's; 75 when the models were never
idle within the timeout (COMMAND did not run).

Usage: llmrig-gateway-drain URL KEY_FILE TIMEOUT_SECONDS [--reload MODELS | --hold ROUTER -- COMMAND...]
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

POLL_S = 0.2
RELOAD_POLL_S = 0.02
# The router answers a reload once the models it unloads have exited. A model process told to exit while
# requests run in it can hang until the router kills it at its stop-timeout (docs/faults.md), so wait well
# past any stop-timeout a fleet would use.
RELOAD_TIMEOUT_S = 120
BUSY = re.compile(r"^llamacpp:requests_(processing|deferred) (\S+)$", re.M)
# the longest the router is held stopped for a --hold command; the guard continues it after this
HOLD_LIMIT_S = float(os.environ.get("LLMRIG_DRAIN_HOLD_LIMIT_S", "30"))
# --hold: the models were not idle within the timeout, so the command did not run (EX_TEMPFAIL)
NOT_IDLE = 75


def get(url: str, key: str, timeout: float = 5) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def listing(base: str, key: str) -> list[dict]:
    """The router's GET /models: every model with its status (and, running, its process's arguments)."""
    return json.loads(get(f"{base}/models", key))["data"]


def in_progress(metrics: str) -> int:
    """Requests in progress or waiting in one model process's /metrics text."""
    return sum(int(float(value)) for _, value in BUSY.findall(metrics))


def busy(base: str, key: str, only: set[str] | None = None, models: list[dict] | None = None) -> int:
    """Requests in progress or waiting, summed over the running models (or those of `only`); `models` is a
    reading of GET /models already made."""
    total = 0
    for model in listing(base, key) if models is None else models:
        if model["status"]["value"] != "loaded" or (only is not None and model["id"] not in only):
            continue
        query = urllib.parse.urlencode({"model": model["id"], "autoload": "false"})
        try:
            text = get(f"{base}/metrics?{query}", key)
        except urllib.error.HTTPError:
            continue  # unloaded since the list was read
        total += in_progress(text)
    return total


def reload(base: str, key: str) -> int:
    try:
        get(f"{base}/models?reload=1", key, RELOAD_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        print(f"llmrig-gateway-drain: the presets reload failed: {exc}", file=sys.stderr)
        return 1
    return 0


def loaded_ports(models: list[dict]) -> dict[str, int]:
    """The port of each running model's own llama-server (its --port in a reading of GET /models)."""
    ports = {}
    for model in models:
        args = model["status"].get("args") or []
        if model["status"]["value"] == "loaded" and "--port" in args:
            ports[model["id"]] = int(args[args.index("--port") + 1])
    return ports


def busy_directly(ports: dict[str, int], key: str) -> int:
    """Requests in progress or waiting in the model processes, read from each one's own /metrics (the
    router may be stopped). A process that does not answer is not serving anything."""
    total = 0
    for port in ports.values():
        try:
            text = get(f"http://127.0.0.1:{port}/metrics", key)
        except OSError:
            continue
        total += in_progress(text)
    return total


def router_pid(router: str) -> int:
    """The router's PID; 0 when its unit has no running main process."""
    if router.isdigit():
        return int(router)
    found = subprocess.run(
        ["systemctl", "show", "--property=MainPID", "--value", router], capture_output=True, text=True, check=False
    )
    return int(found.stdout.strip() or 0)


def idle_ports(base: str, key: str) -> dict[str, int] | None:
    """The running models' ports when none has a request in flight; None when one has, or the router does
    not answer (it may be starting: wait)."""
    try:
        models = listing(base, key)
        return loaded_ports(models) if busy(base, key, models=models) == 0 else None
    except (OSError, ValueError, KeyError):
        return None


def hold(base: str, key: str, timeout: float, router: str, command: list[str]) -> int:
    """Run `command` while no request is in flight and the router is stopped (see the module's doc)."""
    pid = router_pid(router)
    if pid <= 0:  # no router, no request: the command runs as it is
        done = subprocess.run(command, timeout=HOLD_LIMIT_S, check=False).returncode
        print(f"llmrig-gateway-drain: {router} is not running, nothing to hold; {command[0]} exited {done}")
        return done
    deadline, start, attempts = time.monotonic() + timeout, time.monotonic(), 0
    while True:
        ports = idle_ports(base, key)
        if ports is not None:
            os.kill(pid, signal.SIGSTOP)
            guard = subprocess.Popen(  # continues the router should this script die while it is held
                ["sh", "-c", f"sleep {HOLD_LIMIT_S:g}; kill -CONT {pid}"], start_new_session=True
            )
            try:
                if busy_directly(ports, key) == 0:
                    held = time.monotonic()
                    try:
                        done = subprocess.run(command, timeout=HOLD_LIMIT_S, check=False).returncode
                    except subprocess.TimeoutExpired:
                        print(f"llmrig-gateway-drain: {command[0]} ran past {HOLD_LIMIT_S} s", file=sys.stderr)
                        done = 1
                    print(
                        f"llmrig-gateway-drain: held the router {time.monotonic() - held:.2f} s with no request"
                        f" in flight, after {time.monotonic() - start:.1f} s and {attempts} request(s) that"
                        f" slipped in; {command[0]} exited {done}"
                    )
                    return done
                attempts += 1
            finally:
                os.kill(pid, signal.SIGCONT)
                os.killpg(guard.pid, signal.SIGKILL)
                guard.wait()
        if time.monotonic() >= deadline:
            print(
                f"llmrig-gateway-drain: the models were not idle within {timeout:g} s; {command[0]} did not run",
                file=sys.stderr,
            )
            return NOT_IDLE
        time.sleep(RELOAD_POLL_S)


def main(argv: list[str]) -> int:
    base, key_file, timeout = argv[1].rstrip("/"), argv[2], float(argv[3])
    with open(key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()
    if len(argv) > 7 and argv[4] == "--hold" and argv[6] == "--":
        return hold(base, key, timeout, argv[5], argv[7:])
    reloading = len(argv) > 5 and argv[4] == "--reload"
    only = {name for name in argv[5].split(",") if name} if reloading else None
    poll = RELOAD_POLL_S if reloading else POLL_S
    deadline = time.monotonic() + timeout
    start, reported = time.monotonic(), False
    while True:
        try:
            in_flight = busy(base, key, only)
        except (OSError, ValueError, KeyError):
            in_flight = 0  # the router is gone or not answering: nothing to drain
        if in_flight == 0:
            done = reload(base, key) if reloading else 0
            if reported:
                print(f"llmrig-gateway-drain: drained after {time.monotonic() - start:.1f} s")
            return done
        if not reported:
            print(f"llmrig-gateway-drain: waiting for {in_flight} request(s) in flight (at most {timeout:g} s)")
            reported = True
        if time.monotonic() >= deadline:
            then = "reloading" if reloading else "stopping"
            print(f"llmrig-gateway-drain: {in_flight} request(s) still in flight after {timeout:g} s; {then} anyway")
            return reload(base, key) if reloading else 0
        time.sleep(poll)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
