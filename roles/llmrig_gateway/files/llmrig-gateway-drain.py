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

Usage: llmrig-gateway-drain URL KEY_FILE TIMEOUT_SECONDS
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
BUSY = re.compile(r"^llamacpp:requests_(processing|deferred) (\S+)$", re.M)


def get(url: str, key: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def busy(base: str, key: str) -> int:
    """Requests in progress or waiting, summed over the running models."""
    models = json.loads(get(f"{base}/models", key))["data"]
    total = 0
    for model in models:
        if model["status"]["value"] != "loaded":
            continue
        query = urllib.parse.urlencode({"model": model["id"], "autoload": "false"})
        try:
            text = get(f"{base}/metrics?{query}", key)
        except urllib.error.HTTPError:
            continue  # unloaded since the list was read
        total += sum(int(float(value)) for _, value in BUSY.findall(text))
    return total


def main(argv: list[str]) -> int:
    base, key_file, timeout = argv[1].rstrip("/"), argv[2], float(argv[3])
    with open(key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()
    deadline = time.monotonic() + timeout
    start, reported = time.monotonic(), False
    while True:
        try:
            in_flight = busy(base, key)
        except (OSError, ValueError, KeyError):
            return 0  # the router is gone or not answering: nothing to drain
        if in_flight == 0:
            if reported:
                print(f"llmrig-gateway-drain: drained after {time.monotonic() - start:.1f} s")
            return 0
        if not reported:
            print(f"llmrig-gateway-drain: waiting for {in_flight} request(s) in flight (at most {timeout:g} s)")
            reported = True
        if time.monotonic() >= deadline:
            print(f"llmrig-gateway-drain: {in_flight} request(s) still in flight after {timeout:g} s; stopping anyway")
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
