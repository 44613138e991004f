#!/usr/bin/python3
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gateway role's check after a new llama.cpp build: every fleet model must load and answer a token.

One model after the other (each request loads its model, evicting the one before), it sends a one-token
completion and, while it waits, watches the router's model list. A model process that exits while it loads
is listed there as failed with its exit status, and the check says so at once: a router whose model keeps
failing under load can leave a waiting request queued until its client gives up, which would make the check
wait out the whole load timeout. Prints one line per model that failed; exit status 1 when any did.

Usage: llmrig-gateway-check URL KEY_FILE TIMEOUT_SECONDS MODEL...
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


def exit_status(base: str, key: str, model: str) -> int | None:
    """The exit status of the model's process when the router lists it as failed, else None."""
    try:
        status, text = call(base, key, "/models")
        listed = {item["id"]: item["status"] for item in json.loads(text)["data"]} if status == 200 else {}
    except (OSError, ValueError, KeyError):
        return None
    state = listed.get(model, {})
    return int(state.get("exit_code", -1)) if state.get("failed") else None


def check(base: str, key: str, model: str, timeout: float) -> str | None:
    """None when the model answered; else what went wrong."""
    outcome: dict[str, object] = {}

    def ask() -> None:
        try:
            body = {"model": model, "prompt": "Hello", "max_tokens": 1}
            outcome["answer"] = call(base, key, "/v1/completions", body, timeout)
        except (OSError, ValueError) as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    deadline = time.monotonic() + timeout
    while asking.is_alive() and time.monotonic() < deadline:
        asking.join(WATCH_S)
        if asking.is_alive() and (code := exit_status(base, key, model)) is not None:
            return f"{model}: its model process exited with status {code} while loading"
    if asking.is_alive():
        return f"{model}: no answer within {timeout:g} s"
    if "error" in outcome:
        return f"{model}: {outcome['error']}"
    status, text = outcome["answer"]  # type: ignore[misc]
    return None if status == 200 else f"{model}: HTTP {status} {' '.join(str(text).split())[:300]}"


def main(argv: list[str]) -> int:
    base, key_file, timeout, models = argv[1].rstrip("/"), argv[2], float(argv[3]), argv[4:]
    with open(key_file, encoding="utf-8") as handle:
        key = handle.readline().strip()
    failures = [problem for model in models if (problem := check(base, key, model, timeout))]
    for problem in failures:
        print(problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
