#!/usr/bin/python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway role's check after a new llama.cpp build: every fleet model must load and answer a token.

One model after the other (each request loads its model, evicting the one before), it sends a one-token
completion and, while it waits, watches the router's model list. A model process that exits while it loads
is listed there as failed with its exit status, and the check says so at once: a router whose model keeps
failing under load can leave a waiting request queued until its client gives up, which would make the check
wait out the whole load timeout.

With --models-max 1 the router evicts only an idle model, so while clients keep one model busy the check's
request for another waits in the queue and that model never starts loading. A model that has not started
loading after QUEUE_SECONDS is reported as not checked (a warning, not a failure): the new build did nothing
wrong. Once it loads, it has TIMEOUT_SECONDS to load and answer.

Prints one line per model that failed ("MODEL: why") or could not be checked ("warning: MODEL: ..."); exit
status 1 when any failed.

Usage: llmrig-gateway-check URL KEY_FILE TIMEOUT_SECONDS QUEUE_SECONDS MODEL...
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

WATCH_S = 0.25


def call(base: str, key: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Authorization": f"Bearer {key}"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def model_status(base: str, key: str, model: str) -> dict:
    """The model's status in the router's list (value, and failed with exit_code), {} when unknown."""
    try:
        status, text = call(base, key, "/models")
        listed = {item["id"]: item["status"] for item in json.loads(text)["data"]} if status == 200 else {}
    except (OSError, ValueError, KeyError):
        return {}
    return dict(listed.get(model, {}))


def check(base: str, key: str, model: str, timeout: float, queue_timeout: float) -> str | None:
    """None when the model answered; else what went wrong, or a warning that it could not be checked."""
    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            body = {"model": model, "prompt": "Hello", "max_tokens": 1}
            outcome["answer"] = call(base, key, "/v1/completions", body, timeout)
        except (OSError, ValueError) as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    start = time.monotonic()
    started = False  # the router began loading the model
    while asking.is_alive() and time.monotonic() < start + (timeout if started else queue_timeout):
        asking.join(WATCH_S)
        if not asking.is_alive():
            break
        state = model_status(base, key, model)
        if state.get("failed"):
            return f"{model}: its model process exited with status {state.get('exit_code')} while loading"
        if state.get("value") in ("loading", "loaded"):
            started = True
    if asking.is_alive() and not started:
        return (
            f"warning: {model}: not checked, it waited {queue_timeout:g} s for other models that requests keep busy"
            " (the router evicts only an idle model)"
        )
    if asking.is_alive():
        return f"{model}: no answer within {timeout:g} s"
    if "error" in outcome:
        return f"{model}: {outcome['error']}"
    status, text = outcome["answer"]  # type: ignore[misc]
    return None if status == 200 else f"{model}: HTTP {status} {' '.join(str(text).split())[:300]}"


def main(argv: list[str]) -> int:
    base, key_file, timeout, queue_timeout = argv[1].rstrip("/"), argv[2], float(argv[3]), float(argv[4])
    with open(key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()
    problems = [problem for model in argv[5:] if (problem := check(base, key, model, timeout, queue_timeout))]
    for problem in problems:
        print(problem)
    return 1 if any(not problem.startswith("warning: ") for problem in problems) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
