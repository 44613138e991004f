"""The gateway exporter's event handling, fed with an event stream recorded from the real llama-server router.

fixtures/router-events.sse was captured with `curl -N .../models/sse` while requests went to model a, then b,
then a again (router with --models-max 1), after which the process of a was killed with SIGKILL.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "llmrig_gateway_exporter", ROOT / "roles/llmrig_monitoring_exporters/files/llmrig_gateway_exporter.py"
)
assert spec and spec.loader
exporter = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = exporter
spec.loader.exec_module(exporter)

RECORDED = (Path(__file__).parent / "fixtures/router-events.sse").read_bytes()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def replay(tracker, events, start=100.0, step=0.5):
    now = start
    for event in events:
        tracker.event(event, now)
        now += step
    return now


def new_tracker():
    registry = CollectorRegistry()
    return registry, exporter.Tracker(registry)


def test_parse_sse_yields_each_data_event():
    events = list(exporter.parse_sse(RECORDED.splitlines(keepends=True)))
    assert len(events) == 18
    assert events[0] == {"model": "a", "event": "model_status", "data": {"status": "loading"}}
    assert events[-1]["data"] == {"status": "unloaded", "exit_code": 1}


def test_parse_sse_skips_non_json_and_joins_multiline_data():
    lines = [b"data: {not json\n", b"\n", b'data: {"a":\n', b"data: 1}\n", b"\n"]
    assert list(exporter.parse_sse(lines)) == [{"a": 1}]


def test_recorded_swaps_count_loads_durations_and_the_crash():
    registry, tracker = new_tracker()
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": {"value": "unloaded"}}], 99)
    replay(tracker, exporter.parse_sse(RECORDED.splitlines(keepends=True)))

    assert value(registry, "llmrig_model_loads_total", model="a") == 2
    assert value(registry, "llmrig_model_loads_total", model="b") == 1
    # each load went through 5 events (spawn, 3x loading progress, loaded) at 0.5 s apart: 2.0 s
    assert value(registry, "llmrig_model_load_duration_seconds_count", model="a") == 2
    assert value(registry, "llmrig_model_load_duration_seconds_sum", model="a") == 4.0
    assert value(registry, "llmrig_model_load_duration_seconds_sum", model="b") == 2.0
    # the last load of each model: when it became ready (the replay's clock) and how long it took
    assert value(registry, "llmrig_model_last_load_duration_seconds", model="a") == 2.0
    assert value(registry, "llmrig_model_last_load_timestamp_seconds", model="a") > value(
        registry, "llmrig_model_last_load_timestamp_seconds", model="b"
    )
    # evictions exit 0 and are not failures; the SIGKILL of a ready model is a crash, not a load failure
    assert value(registry, "llmrig_model_crashes_total", model="a") == 1
    assert value(registry, "llmrig_model_crashes_total", model="b") == 0
    assert value(registry, "llmrig_model_load_failures_total", model="a") == 0
    assert value(registry, "llmrig_model_state", model="a", state="failed") == 1
    assert value(registry, "llmrig_model_state", model="b", state="unloaded") == 1
    assert value(registry, "llmrig_model_state", model="b", state="loaded") == 0


def test_exit_while_loading_is_a_load_failure():
    registry, tracker = new_tracker()
    replay(
        tracker,
        [
            {"model": "big", "event": "model_status", "data": {"status": "loading"}},
            {"model": "big", "event": "status_change", "data": {"status": "unloaded", "exit_code": 1}},
        ],
    )
    assert value(registry, "llmrig_model_load_failures_total", model="big") == 1
    assert value(registry, "llmrig_model_crashes_total", model="big") == 0
    assert value(registry, "llmrig_model_load_duration_seconds_count", model="big") == 0
    assert value(registry, "llmrig_model_state", model="big", state="failed") == 1


def test_snapshot_sets_state_without_counting_loads_and_forgets_removed_models():
    registry, tracker = new_tracker()
    tracker.snapshot(
        [
            {"id": "a", "status": {"value": "loaded"}},
            {"id": "b", "status": {"value": "unloaded", "exit_code": 9, "failed": True}},
        ],
        10,
    )
    assert value(registry, "llmrig_model_state", model="a", state="loaded") == 1
    assert value(registry, "llmrig_model_state", model="b", state="failed") == 1
    assert value(registry, "llmrig_model_loads_total", model="a") == 0
    tracker.snapshot([{"id": "a", "status": {"value": "loaded"}}], 11)
    assert tracker.models() == ["a"]
    assert value(registry, "llmrig_model_state", model="b", state="failed") is None


def test_a_removed_model_loses_its_last_load():
    registry, tracker = new_tracker()
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": {"value": "unloaded"}}], 0)
    assert value(registry, "llmrig_model_last_load_timestamp_seconds", model="a") is None  # none yet
    tracker.event({"model": "a", "event": "model_status", "data": {"status": "loading"}}, 1000.0)
    tracker.event({"model": "a", "event": "status_change", "data": {"status": "loaded"}}, 1003.5)
    assert value(registry, "llmrig_model_last_load_timestamp_seconds", model="a") == 1003.5
    assert value(registry, "llmrig_model_last_load_duration_seconds", model="a") == 3.5
    tracker.snapshot([{"id": "b", "status": {"value": "unloaded"}}], 1004)
    assert value(registry, "llmrig_model_last_load_timestamp_seconds", model="a") is None
    assert value(registry, "llmrig_model_last_load_duration_seconds", model="a") is None


def test_reload_and_unknown_models_ask_for_a_new_model_list():
    _, tracker = new_tracker()
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}], 0)
    assert tracker.event({"model": "*", "event": "models_reload"}, 1) is True
    assert tracker.event({"model": "a", "event": "status_change", "data": {"status": "loading"}}, 1) is False
    # a model that is ready: read the list, which names its new process
    assert tracker.event({"model": "a", "event": "status_change", "data": {"status": "loaded"}}, 1) is True


def running(port: int) -> dict:
    return {"value": "loaded", "args": ["/opt/llama-server", "--port", str(port)]}


def test_a_load_missed_while_disconnected_is_counted_once_after_the_reconnect():
    registry, tracker = new_tracker()
    tracker.snapshot([{"id": "a", "status": running(4001)}, {"id": "b", "status": {"value": "unloaded"}}], 0)
    # the same process seen again: by the periodic read, or after a reconnect (the stream dropped, the
    # router did not restart): nothing was missed
    tracker.snapshot([{"id": "a", "status": running(4001)}, {"id": "b", "status": {"value": "unloaded"}}], 1)
    tracker.snapshot(
        [{"id": "a", "status": running(4001)}, {"id": "b", "status": {"value": "unloaded"}}], 2, reconnected=True
    )
    assert value(registry, "llmrig_model_loads_total", model="a") == 0
    # the router restarted and loaded b before the exporter was back: one load of b, none of a
    tracker.snapshot(
        [{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": running(4002)}], 3, reconnected=True
    )
    assert value(registry, "llmrig_model_loads_total", model="b") == 1
    assert value(registry, "llmrig_model_loads_total", model="a") == 0
    assert value(registry, "llmrig_model_state", model="b", state="loaded") == 1
    # a later periodic read of the same process counts nothing more
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": running(4002)}], 4)
    assert value(registry, "llmrig_model_loads_total", model="b") == 1


class FakeRouter(BaseHTTPRequestHandler):
    """Serves the recorded stream over real HTTP, then closes it like a stopping router."""

    def do_GET(self):
        assert self.headers["Authorization"] == "Bearer sekret"
        if self.path == "/models":
            models = [{"id": name, "status": {"value": "unloaded"}} for name in ("a", "b")]
            body = json.dumps({"data": models}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(RECORDED)

    def log_message(self, *args):
        pass


def test_follow_reads_the_stream_over_http_and_marks_the_gateway_down_when_it_closes():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRouter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry, tracker = new_tracker()
    router = exporter.Router(f"http://127.0.0.1:{server.server_address[1]}", "sekret", timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=exporter.follow, args=(router, tracker, lambda: 0.0, stop), daemon=True)
    thread.start()
    seen_down_after_stream = False
    for _ in range(200):
        if value(registry, "llmrig_model_loads_total", model="b") == 1 and value(registry, "llmrig_gateway_up") == 0:
            seen_down_after_stream = True
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(timeout=5)
    server.shutdown()
    assert seen_down_after_stream
    assert value(registry, "llmrig_model_loads_total", model="a") >= 2
    assert value(registry, "llmrig_gateway_event_stream_connects_total") >= 1


def test_counts_from_the_journal_survive_what_the_stream_missed():
    """A new router spawns and loses a model before the exporter is back on its stream: the journal has it."""
    registry = CollectorRegistry()
    tracker = exporter.Tracker(registry, counts_from_journal=True)
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": {"value": "unloaded"}}], 0)
    for _ in range(3):
        tracker.journal_line("srv        load: spawning server instance with name=a on port 40001")
        tracker.journal_line("srv    operator(): instance name=a exited with status 1")
    assert value(registry, "llmrig_model_loads_total", model="a") == 3
    assert value(registry, "llmrig_model_load_failures_total", model="a") == 3
    assert value(registry, "llmrig_model_crashes_total", model="a") == 0
    # the stream, when it sees a load, sets state and load time but counts nothing (the journal does)
    tracker.journal_line("srv        load: spawning server instance with name=b on port 40002")
    tracker.event({"model": "b", "event": "model_status", "data": {"status": "loading"}}, 10)
    tracker.event({"model": "b", "event": "status_change", "data": {"status": "loaded"}}, 12)
    tracker.snapshot([{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": running(40002)}], 12)
    assert value(registry, "llmrig_model_loads_total", model="b") == 1
    assert value(registry, "llmrig_model_load_duration_seconds_sum", model="b") == 2.0
    assert value(registry, "llmrig_model_state", model="b", state="loaded") == 1
    # the ready process (port 40002) killed: a crash, whichever of the stream and the journal comes first
    tracker.event({"model": "b", "event": "status_change", "data": {"status": "unloaded", "exit_code": -9}}, 20)
    tracker.journal_line("srv    operator(): instance name=b exited with status -9")
    assert value(registry, "llmrig_model_crashes_total", model="b") == 1
    assert value(registry, "llmrig_model_load_failures_total", model="b") == 0
    # an eviction exits 0; a reconnect that finds a process it did not know counts nothing in this mode
    tracker.journal_line("srv        load: spawning server instance with name=a on port 40003")
    tracker.journal_line("srv    operator(): instance name=a exited with status 0")
    tracker.snapshot(
        [{"id": "a", "status": {"value": "unloaded"}}, {"id": "b", "status": running(40004)}], 30, reconnected=True
    )
    assert value(registry, "llmrig_model_loads_total", model="a") == 4
    assert value(registry, "llmrig_model_load_failures_total", model="a") == 3
    assert value(registry, "llmrig_model_loads_total", model="b") == 1


def test_a_new_process_that_dies_before_it_is_seen_ready_is_a_load_failure():
    registry = CollectorRegistry()
    tracker = exporter.Tracker(registry, counts_from_journal=True)
    tracker.journal_line("spawning server instance with name=a on port 40001")
    tracker.snapshot([{"id": "a", "status": running(40001)}], 1)
    # the next process of a (another port) exits before any model list showed it ready
    tracker.journal_line("spawning server instance with name=a on port 40005")
    tracker.journal_line("instance name=a exited with status 1")
    assert value(registry, "llmrig_model_load_failures_total", model="a") == 1
    assert value(registry, "llmrig_model_crashes_total", model="a") == 0
    # lines that are neither are ignored
    tracker.journal_line("srv  proxy_reque: proxying request to model a on port 40005")
    assert value(registry, "llmrig_model_loads_total", model="a") == 2


def test_port_of_reads_the_port_argument():
    assert exporter.port_of(["/opt/llama-server", "--port", "4001", "--ctx-size", "512"]) == "4001"
    assert exporter.port_of(["/opt/llama-server"]) == ""
