#!/usr/bin/env python3
"""Prometheus exporter for llama-server's router: which model is resident, loads, load time and failures.

The router itself has no metrics endpoint, and a child's metrics vanish with the child. This exporter
follows the router's own event stream (GET /models/sse), so every spawn, ready and exit is seen as it
happens, even when a swap is shorter than a scrape interval. GET /models is read at start, after every
reconnect and every --resync seconds, to fill in the current state.

The stream closes when the router stops, and what happens before the exporter is connected again (a new
router can spawn and lose a model a dozen times in its first half second) is not in it. So with
--journal-unit (the router's systemd unit; the role sets it) the counts come from the router's own log lines
in the journal ("spawning server instance with name=X on port P", "instance name=X exited with status N"),
which have no gaps, and the stream gives state and load time. A non-zero exit is a crash when that process
(its port) was seen ready in GET /models, else a load failure.

Without --journal-unit the stream counts too. The exporter reconnects every RECONNECT_S seconds, and a model
process that is running at the reconnect but was not known before (its arguments name another port: each
process gets its own) was loaded while the exporter was not connected: that load is counted too. Its load
time is unknown and not observed, and a process that came and went meanwhile is missed.

Metrics:
  llmrig_model_state{model,state}                 1 for the model's current router state, 0 for the others
  llmrig_model_loads_total{model}                 loads started (a swap is a load)
  llmrig_model_load_duration_seconds{model}       spawn to ready, histogram
  llmrig_model_last_load_timestamp_seconds{model} when the last load became ready (Unix time)
  llmrig_model_last_load_duration_seconds{model}  spawn to ready of that last load
  llmrig_model_load_failures_total{model}         loads that ended with a non-zero exit before ready
  llmrig_model_crashes_total{model}               ready model processes that exited with a non-zero status
  llmrig_gateway_up                               1 while the event stream is connected
  llmrig_gateway_event_stream_connects_total      connections made to the event stream
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STATES = ("unloaded", "loading", "loaded", "sleeping", "failed")
LOAD_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
LOG = logging.getLogger("llmrig-gateway-exporter")
RUNNING = ("loading", "loaded", "sleeping")
# seconds between attempts to reach the router's event stream: it is local and cheap, and every second
# without it is a second in which loads are seen only afterwards
RECONNECT_S = 0.5
# the router's log lines (server-models.cpp) for a spawn and for the end of a model process
SPAWN_LINE = re.compile(r"spawning server instance with name=(\S+) on port (\d+)")
EXIT_LINE = re.compile(r"instance name=(\S+) exited with status (-?\d+)")


def port_of(args: Iterable[str]) -> str:
    """The --port value in a model process's arguments ("" when there is none)."""
    for flag, value in itertools.pairwise(args):
        if flag == "--port":
            return value
    return ""


class Tracker:
    """Turns router snapshots and events into metrics. Thread-safe; time comes from the caller."""

    def __init__(self, registry: CollectorRegistry, counts_from_journal: bool = False) -> None:
        self._lock = threading.Lock()
        # True: loads, failures and crashes come from journal_line(), events give state and load time only
        self.counts_from_journal = counts_from_journal
        # per model, the port of the process the journal saw spawned last, and of the last one seen ready
        self._spawned_port: dict[str, str] = {}
        self._ready_port: dict[str, str] = {}
        self._state: dict[str, str] = {}
        self._loading_since: dict[str, float] = {}
        # the arguments of each running model process last seen in GET /models (they hold its own port)
        self._instance: dict[str, tuple[str, ...]] = {}
        # models whose last-load gauges have a child (a load of theirs reached ready)
        self._last_loaded: set[str] = set()
        self.state = Gauge("llmrig_model_state", "Router state of each model", ["model", "state"], registry=registry)
        self.loads = Counter("llmrig_model_loads", "Model loads started by the router", ["model"], registry=registry)
        self.load_seconds = Histogram(
            "llmrig_model_load_duration_seconds",
            "Time from spawning a model process to the model being ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        # the last load that reached ready: when (Unix time) and how long it took; absent until one did
        self.last_load_end = Gauge(
            "llmrig_model_last_load_timestamp_seconds",
            "When the model's last load became ready (Unix time)",
            ["model"],
            registry=registry,
        )
        self.last_load_seconds = Gauge(
            "llmrig_model_last_load_duration_seconds",
            "Time from spawning to ready of the model's last load",
            ["model"],
            registry=registry,
        )
        self.load_failures = Counter(
            "llmrig_model_load_failures",
            "Loads that ended with a non-zero exit before ready",
            ["model"],
            registry=registry,
        )
        self.crashes = Counter(
            "llmrig_model_crashes",
            "Ready model processes that exited with a non-zero status",
            ["model"],
            registry=registry,
        )
        self.up = Gauge("llmrig_gateway_up", "1 while the router event stream is connected", registry=registry)
        self.connects = Counter(
            "llmrig_gateway_event_stream_connects", "Connections made to the router event stream", registry=registry
        )

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._state)

    def _set_state(self, model: str, state: str) -> None:
        if model not in self._state:
            # children start at zero so rate() and increase() see the first load
            self.loads.labels(model)
            self.load_failures.labels(model)
            self.crashes.labels(model)
            self.load_seconds.labels(model)
        self._state[model] = state
        for name in STATES:
            self.state.labels(model, name).set(1 if name == state else 0)

    def snapshot(self, models: Iterable[dict[str, Any]], now: float, reconnected: bool = False) -> None:
        """Adopt the router's view (GET /models). Counters are not touched (the events count), except after a
        reconnect: a running model process the exporter did not know was loaded while it was away."""
        with self._lock:
            seen = set()
            for entry in models:
                model = str(entry["id"])
                status = entry.get("status") or {}
                state = "failed" if status.get("failed") else str(status.get("value", "unloaded"))
                if state not in STATES:
                    state = "unloaded"
                seen.add(model)
                instance = tuple(str(arg) for arg in status.get("args") or ())
                port = port_of(instance)
                if state in ("loaded", "sleeping") and port:
                    self._ready_port[model] = port
                if state in RUNNING:
                    if (
                        reconnected
                        and not self.counts_from_journal
                        and instance
                        and self._instance.get(model) != instance
                    ):
                        LOG.info("counting a load of %s that happened while the event stream was down", model)
                        self.loads.labels(model).inc()
                    self._instance[model] = instance
                else:
                    self._instance.pop(model, None)
                if state == "loading" and self._state.get(model) != "loading":
                    self._loading_since[model] = now
                elif state != "loading":
                    self._loading_since.pop(model, None)
                self._set_state(model, state)
            for model in set(self._state) - seen:
                self._forget(model)

    def _forget(self, model: str) -> None:
        self._state.pop(model, None)
        self._instance.pop(model, None)
        self._loading_since.pop(model, None)
        for name in STATES:
            self.state.remove(model, name)
        for metric in (self.loads, self.load_failures, self.crashes, self.load_seconds):
            metric.remove(model)
        if model in self._last_loaded:
            self._last_loaded.discard(model)
            self.last_load_end.remove(model)
            self.last_load_seconds.remove(model)

    def event(self, event: dict[str, Any], now: float) -> bool:
        """Apply one router event. Returns True when the model list must be read again."""
        kind = event.get("event")
        model = str(event.get("model", ""))
        data = event.get("data") or {}
        status = data.get("status")
        with self._lock:
            if kind in ("models_reload", "model_remove"):
                return True
            if kind == "model_status" and status == "loading":
                # emitted once per spawn, before the child reports anything
                if not self.counts_from_journal:
                    self.loads.labels(model).inc()
                self._loading_since[model] = now
                self._set_state(model, "loading")
            elif kind == "status_change" and status == "loading":
                self._loading_since.setdefault(model, now)
                self._set_state(model, "loading")
            elif kind == "status_change" and status in ("loaded", "sleeping"):
                started = self._loading_since.pop(model, None)
                if started is not None and status == "loaded":
                    self.load_seconds.labels(model).observe(max(0.0, now - started))
                    self._last_loaded.add(model)
                    self.last_load_end.labels(model).set(now)
                    self.last_load_seconds.labels(model).set(max(0.0, now - started))
                self._set_state(model, str(status))
                # read the model list: it names the new process (its port), which a reconnect compares
                return status == "loaded"
            elif kind == "status_change" and status == "unloaded":
                exit_code = int(data.get("exit_code", 0) or 0)
                was = self._state.get(model)
                self._loading_since.pop(model, None)
                if exit_code != 0 and not self.counts_from_journal:
                    if was == "loading":
                        self.load_failures.labels(model).inc()
                    elif was in ("loaded", "sleeping"):
                        self.crashes.labels(model).inc()
                self._set_state(model, "failed" if exit_code != 0 else "unloaded")
            return model not in self._state and bool(model)

    def journal_line(self, message: str) -> None:
        """Count a spawn or an abnormal exit from one of the router's log lines (others are ignored)."""
        spawn, exit_ = SPAWN_LINE.search(message), EXIT_LINE.search(message)
        with self._lock:
            if spawn:
                model, port = spawn.groups()
                if model not in self._state:
                    self._set_state(model, "loading")
                self._spawned_port[model] = port
                self.loads.labels(model).inc()
            elif exit_ and int(exit_.group(2)) != 0:
                model = exit_.group(1)
                if model not in self._state:
                    self._set_state(model, "failed")
                port = self._spawned_port.get(model)
                if port is not None and self._ready_port.get(model) == port:
                    self.crashes.labels(model).inc()
                else:
                    self.load_failures.labels(model).inc()


def parse_sse(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Yield the JSON payload of each `data:` event of a server-sent event stream."""
    buffer: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("data:"):
            buffer.append(line[5:].lstrip())
        elif not line and buffer:
            try:
                yield json.loads("\n".join(buffer))
            except ValueError:
                LOG.warning("ignoring an event that is not JSON: %r", buffer)
            buffer = []


class Router:
    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def models(self) -> list[dict[str, Any]]:
        request = urllib.request.Request(self.url + "/models", headers=self.headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return list(json.load(response)["data"])

    def events(self) -> Any:
        request = urllib.request.Request(self.url + "/models/sse", headers=self.headers)
        # no read timeout: the stream is quiet between swaps, and closes when the router stops
        return urllib.request.urlopen(request, timeout=None)


def follow(
    router: Router, tracker: Tracker, clock: Callable[[], float], stop: threading.Event, retry: float = RECONNECT_S
) -> None:
    """Follow the event stream until stop is set, reconnecting every `retry` seconds."""
    connected_before, failures = False, 0
    while not stop.is_set():
        try:
            with router.events() as stream:
                tracker.up.set(1)
                tracker.connects.inc()
                tracker.snapshot(router.models(), clock(), reconnected=connected_before)
                connected_before, failures = True, 0
                for event in parse_sse(stream):
                    if tracker.event(event, clock()):
                        tracker.snapshot(router.models(), clock())
        except (OSError, ValueError, KeyError) as exc:
            # once when the router goes away, then about once a minute while it stays away
            if failures % max(1, round(60 / retry)) == 0:
                LOG.warning("router event stream: %s", exc)
            failures += 1
        tracker.up.set(0)
        stop.wait(retry)


def open_journal(unit: str) -> Any:
    """A reader of the unit's journal lines from now on (python3-systemd; the exporter's user is in the
    systemd-journal group). Counters start at zero with the exporter, like every Prometheus counter."""
    from systemd import journal  # only where --journal-unit is set

    reader = journal.Reader()
    reader.add_match(_SYSTEMD_UNIT=unit)
    reader.seek_tail()
    reader.get_previous()
    return reader


def follow_journal(reader: Any, tracker: Tracker, stop: threading.Event) -> None:
    """Feed the journal's new lines to the tracker until stop is set. An exporter that can no longer read
    the journal exits (systemd starts it again) rather than serve counts that stopped."""
    try:
        while not stop.is_set():
            for entry in reader:
                tracker.journal_line(str(entry.get("MESSAGE", "")))
            reader.wait(1.0)
    except Exception:  # any failure ends the process
        LOG.exception("reading the router's journal failed")
        os._exit(1)


def resync(router: Router, tracker: Tracker, clock: Callable[[], float], every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            tracker.snapshot(router.models(), clock())
        except (OSError, ValueError, KeyError) as exc:
            LOG.warning("router model list: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", default="http://127.0.0.1:8080", help="the router's base URL")
    parser.add_argument("--api-key-file", help="file holding the router's API key")
    parser.add_argument("--listen-address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9410)
    parser.add_argument("--resync", type=float, default=30.0, help="seconds between GET /models reads")
    parser.add_argument(
        "--journal-unit", help="the router's systemd unit: count loads and failures from its journal lines"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)

    api_key = ""
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as handle:
            api_key = handle.read().strip()
    registry = CollectorRegistry()
    tracker = Tracker(registry, counts_from_journal=bool(args.journal_unit))
    router = Router(args.router, api_key, timeout=10.0)
    stop = threading.Event()
    start_http_server(args.port, addr=args.listen_address, registry=registry)
    threading.Thread(target=resync, args=(router, tracker, time.time, args.resync, stop), daemon=True).start()
    if args.journal_unit:
        reader = open_journal(args.journal_unit)
        threading.Thread(target=follow_journal, args=(reader, tracker, stop), daemon=True).start()
    LOG.info("serving metrics on %s:%d for %s", args.listen_address, args.port, args.router)
    follow(router, tracker, time.time, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
