"""`llmrig status`: the tables and exit status from records of playbooks/status.yml's real runs on the demo
host (fixtures/status/: busy - two requests in flight on gemma-a; down - the router stopped; gone - a host
whose container does not exist), trimmed to the report task and the stats. And the command itself, run for
real against an inventory whose only host does not exist: exit 1, naming the host and why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from llmrig_status.report import hosts, parse, table

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures/status"


def record(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def lines_of(name: str) -> list[str]:
    (status,) = hosts(record(name))
    report = status.report or {}
    loaded = [m["last_load_at"] for m in report.get("models", []) if m.get("last_load_at")]
    return table(status, now=max(loaded, default=0) + 30)


def row(lines: list[str], model: str) -> list[str]:
    return next(line.split() for line in lines if line.split()[:1] == [model])


def test_a_busy_host_is_healthy_with_its_resident_model_requests_and_last_loads():
    (status,) = hosts(record("busy"))
    assert status.healthy and status.reachable and not status.problems
    lines = lines_of("busy")
    assert lines[0] == "llmrig-demo: healthy"
    assert lines[1].startswith("  llama.cpp build f6fa51486192 (cpu, archive 832db0699007, 3 patches): up to date")
    # model, state, context, K/V, planned MiB on the host's RAM, in flight, queued, last load
    assert row(lines, "gemma-a")[:7] == ["gemma-a", "loaded", "2048", "f16/f16", "279", "RAM", "2"]
    assert " ".join(row(lines, "gemma-a")).endswith("30 s ago, 0.8 s")
    assert row(lines, "gemma-b")[:6] == ["gemma-b", "unloaded", "4096", "q8_0/q8_0", "269", "RAM"]
    assert row(lines, "gemma-kept")[-2:] == ["not", "seen"]
    assert "  resident: gemma-a (at most 1 at once)" in lines


def test_a_host_whose_router_does_not_answer_is_unhealthy_and_its_models_unknown():
    (status,) = hosts(record("down"))
    assert status.reachable and not status.healthy
    assert status.problems == [
        "the router at http://127.0.0.1:8080 does not answer: <urlopen error [Errno 111] Connection refused>"
    ]
    lines = lines_of("down")
    assert lines[0] == "llmrig-demo: UNHEALTHY"
    assert row(lines, "gemma-a")[1] == "unknown"
    assert lines[-1].startswith("  ! the router at http://127.0.0.1:8080 does not answer")


def test_a_host_that_cannot_be_reached_is_unhealthy_with_what_the_connection_said():
    (status,) = hosts(record("gone"))
    assert not status.healthy and status.report is None
    assert table(status) == [
        "llmrig-nosuch: UNHEALTHY",
        "  ! Gathering Facts: The following modules failed to execute: ansible.legacy.setup. Error: no container with"
        ' name or ID "llmrig-nosuch" found: no such container',
    ]


def test_unreachable_in_the_stats_alone_is_unhealthy_too():
    (status,) = hosts({"plays": [], "stats": {"far": {"unreachable": 1, "failures": 0}}})
    assert not status.healthy and status.problems == ["unreachable"]


def test_the_record_is_found_after_other_callbacks_lines():
    text = "Friday 04 December 2026 {not json} ****\n" + json.dumps(record("busy"), indent=4) + "\nPLAY RECAP\n"
    assert parse(text) == record("busy")
    assert parse("no record here\n") is None


def test_llmrig_status_exits_1_and_names_a_host_that_does_not_exist(tmp_path):
    """The real command: ansible-playbook runs playbooks/status.yml against a podman container that is not
    there."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(ROOT / "group_vars")
    connection = {"ansible_connection": "llmrig.serving.podman", "ansible_python_interpreter": "/usr/bin/python3"}
    groups = {group: {"hosts": {"llmrig-unit-nosuch": None}} for group in ("llm_servers", "llmrig_test")}
    hosts_file = {"all": {"vars": connection, "children": groups}}
    (inventory / "hosts.yml").write_text(json.dumps(hosts_file))
    done = subprocess.run(
        [str(ROOT / "bin/llmrig"), "status", "-i", str(inventory)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stdout + done.stderr
    # without pipelining the podman connection fails on its first command: unreachable, with Ansible's words
    assert done.stdout.startswith("llmrig-unit-nosuch: UNHEALTHY\n  ! unreachable: "), done.stdout


def test_a_gpu_host_shows_memory_in_use_beside_the_plan_the_tuning_and_a_pending_reboot():
    """The GPU lines from a report shaped like rig_status's on a 2-GPU host (no GPU here to record one)."""
    device = {"gpu": "NVIDIA GeForce RTX 4080", "total_mib": 0.0}
    report = {
        "build": {
            "id": "aaaa",
            "backend": "cuda",
            "source": "git:https://x/llama.cpp@b7001=abc",
            "pending": {"wanted": "bbbb", "installed": False, "error": ""},
        },
        "fleet": [{"name": "big", "context": 65536, "cache_type_k": "q8_0", "cache_type_v": "q8_0"}],
        "plan": {
            "models": [{"name": "big", "devices": [{**device, "total_mib": 14500.4}, {**device, "total_mib": 13200}]}]
        },
        "models": [
            {
                "id": "big",
                "state": "loaded",
                "in_flight": 1,
                "queued": 2,
                "last_load_at": 970.0,
                "last_load_seconds": 41.2,
            }
        ],
        "gpus": [
            {"index": 0, "name": "NVIDIA GeForce RTX 4080", "used_mib": 14800, "total_mib": 16376},
            {"index": 1, "name": "NVIDIA GeForce RTX 4080", "used_mib": 13410, "total_mib": 16376},
        ],
        "tuning": {'llmrig_gpu_power_limit_watts{gpu="0"}': 250.0, "llmrig_gpu_tuning_success": 1.0},
        "reboot_pending": ["/run/llmrig-nvidia-reboot-required"],
        "models_max": 1,
        "router_up": True,
    }
    (status,) = hosts(
        {
            "plays": [
                {
                    "tasks": [
                        {
                            "task": {"name": "Report the status"},
                            "hosts": {"gpu": {"ansible_facts": {"llmrig_status_report": report}}},
                        }
                    ]
                }
            ],
            "stats": {"gpu": {"failures": 0}},
        }
    )
    lines = table(status, now=1000.0)
    assert lines[1] == "  llama.cpp build aaaa (cuda, b7001): build bbbb pending (not built yet)"
    assert row(lines, "big") == [
        "big",
        "loaded",
        "65536",
        "q8_0/q8_0",
        "14,500",
        "+",
        "13,200",
        "1",
        "2",
        "30",
        "s",
        "ago,",
        "41.2",
        "s",
    ]
    assert (
        "  gpu0 NVIDIA GeForce RTX 4080: 14,800 of 16,376 MiB used; planned for the resident models 14,500 MiB" in lines
    )
    assert (
        "  gpu1 NVIDIA GeForce RTX 4080: 13,410 of 16,376 MiB used; planned for the resident models 13,200 MiB" in lines
    )
    assert '  GPU tuning: power_limit_watts{gpu="0"} 250; last run ok' in lines
    assert "  reboot pending (/run/llmrig-nvidia-reboot-required)" in lines


def test_a_failed_model_makes_the_host_unhealthy_but_the_router_still_answers(tmp_path):
    """rig_status run as Ansible runs it, against a stand-in router over real HTTP whose list has a model in
    the failed state: the host is unhealthy, and the other models' states are still the router's."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llmrig_testlib import run_module

    listing = {
        "data": [
            {"id": "ok", "status": {"value": "unloaded"}},
            {"id": "broken", "status": {"value": "unloaded", "failed": True, "exit_code": 1}},
        ]
    }

    class Router(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(listing if self.path == "/models" else {"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Router)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_module(
            "rig_status",
            tmp_path,
            url=f"http://127.0.0.1:{server.server_port}",
            api_key="unit-key",
            install_dir=str(tmp_path),
            reboot_markers=[],
        )
    finally:
        server.shutdown()
    assert result["router_up"] is True and result["healthy"] is False, result
    assert result["problems"] == ["model broken failed (exit code 1)"]
    assert [(m["id"], m["state"]) for m in result["models"]] == [("ok", "unloaded"), ("broken", "failed")]
