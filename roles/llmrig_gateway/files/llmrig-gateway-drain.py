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

Usage: llmrig-gateway-drain URL KEY_FILE TIMEOUT_SECONDS [--reload MODELS]
"""

from __future__ import annotations

import json
import re
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


def get(url: str, key: str, timeout: float = 5) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def busy(base: str, key: str, only: set[str] | None = None) -> int:
    """Requests in progress or waiting, summed over the running models (or those of `only`)."""
    models = json.loads(get(f"{base}/models", key))["data"]
    total = 0
    for model in models:
        if model["status"]["value"] != "loaded" or (only is not None and model["id"] not in only):
            continue
        query = urllib.parse.urlencode({"model": model["id"], "autoload": "false"})
        try:
            text = get(f"{base}/metrics?{query}", key)
        except urllib.error.HTTPError:
            continue  # unloaded since the list was read
        total += sum(int(float(value)) for _, value in BUSY.findall(text))
    return total


def reload(base: str, key: str) -> int:
    try:
        get(f"{base}/models?reload=1", key, RELOAD_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        print(f"llmrig-gateway-drain: the presets reload failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    base, key_file, timeout = argv[1].rstrip("/"), argv[2], float(argv[3])
    reloading = len(argv) > 5 and argv[4] == "--reload"
    only = {name for name in argv[5].split(",") if name} if reloading else None
    poll = RELOAD_POLL_S if reloading else POLL_S
    with open(key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()
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
