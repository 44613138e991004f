"""Two inference hosts behind one gateway (molecule/multihost): mh-both is placed on both (a replica each),
mh-a on A, mh-b on B. Every name answers through the gateway with the official SDK, streaming included;
each router serves only its own entries and a request for B's model never reaches A; the gateway's overhead
against A's own endpoint in one interleaved run (figures printed); and with B stopped, the replica on A keeps
answering (the failures counted while B goes down are printed), B's model fails with a clear error, and
answers again once B is back. `llmrig status` shows each host's own models and exits 0, and 1 while B is
down."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest
import testinfra
from llmrig_testlib import API_KEY, REPO, gateway_overhead, inventory_for

GATEWAY = os.environ.get("LLMRIG_MH_GATEWAY_URL", "http://127.0.0.1:24000")
ROUTERS = {
    "llmrig-mh-a": os.environ.get("LLMRIG_MH_A_URL", "http://127.0.0.1:28080"),
    "llmrig-mh-b": os.environ.get("LLMRIG_MH_B_URL", "http://127.0.0.1:28081"),
}
GATEWAY_KEY = "llmrig-gateway-test-key-not-secret"
PLACED = {"llmrig-mh-a": {"mh-both", "mh-shared", "mh-a"}, "llmrig-mh-b": {"mh-both", "mh-shared", "mh-b"}}


def gateway(timeout: float = 120) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=GATEWAY_KEY, timeout=timeout, max_retries=0)


def journal(name: str, text: str) -> int:
    """Lines of the host's router journal that contain the text."""
    host = testinfra.get_host(f"podman://{name}")
    return int(host.run(f"journalctl -u llmrig-gateway --no-pager | grep -c -- {text!r} || true").stdout.strip())


def ask(client: openai.OpenAI, model: str, max_tokens: int = 6) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=max_tokens, temperature=0
    )
    return answer.choices[0].message.content or ""


def served(name: str) -> set[str]:
    """The names (ids and aliases) a host's own router lists (its GET /models, with the router's key)."""
    ask_models = urllib.request.Request(f"{ROUTERS[name]}/models", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(ask_models, timeout=30) as answer:
        models = json.load(answer)["data"]
    return {m["id"] for m in models} | {alias for m in models for alias in m.get("aliases", [])}


def test_each_router_serves_only_the_entries_placed_on_it():
    for name, names in PLACED.items():
        assert served(name) == names, (name, served(name))


def test_every_name_answers_through_the_gateway_streaming_included():
    client = gateway()
    assert {m.id for m in client.models.list()} == {"mh-both", "mh-shared", "mh-a", "mh-b"}
    for model in ("mh-both", "mh-shared", "mh-a", "mh-b"):
        assert ask(client, model), model
    chunks = list(
        client.chat.completions.create(
            model="mh-shared", messages=[{"role": "user", "content": "Count."}], max_tokens=8, stream=True
        )
    )
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_a_request_for_bs_model_never_reaches_a():
    spawn = "with name=mh-b on port"  # the router's line for a model process it starts (not mh-both's)
    before = {name: journal(name, spawn) for name in ROUTERS}
    for _ in range(3):
        assert ask(gateway(), "mh-b")
    # A's router has no such model (not in its presets, never spawned, never named in its journal)
    assert journal("llmrig-mh-a", spawn) == before["llmrig-mh-a"] == 0
    assert journal("llmrig-mh-b", spawn) >= max(1, before["llmrig-mh-b"])


def test_an_inference_hosts_router_answers_the_gateway_host_and_not_the_other_inference_host():
    """The firewall with a gateway host in the inventory: A's router port admits the gateway container (and
    this machine, listed for the harness), and resets a connection from B at once."""
    probe = "python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).status)' {}"
    from_gateway = testinfra.get_host("podman://llmrig-mh-gw").run(probe.format("http://llmrig-mh-a:8080/health"))
    from_b = testinfra.get_host("podman://llmrig-mh-b").run(probe.format("http://llmrig-mh-a:8080/health"))
    assert from_gateway.stdout.strip() == "200", from_gateway.stderr
    assert from_b.rc != 0 and "Connection refused" in from_b.stderr, (from_b.stdout, from_b.stderr)


@pytest.mark.quiet
def test_the_gateways_overhead_against_the_hosts_own_endpoint(tmp_path):
    key_file = tmp_path / "gateway-key"
    key_file.write_text(GATEWAY_KEY)
    gateway_overhead(ROUTERS["llmrig-mh-a"], GATEWAY, key_file, "mh-a", repetitions=5, base="host")


def llmrig_status(*args: str) -> subprocess.CompletedProcess:
    """`bin/llmrig status` with an inventory of this scenario's three containers."""
    servers = ["llm_servers", "llmrig_test"]
    containers = {"llmrig-mh-a": servers, "llmrig-mh-b": servers, "llmrig-mh-gw": ["llm_gateways", "llmrig_test"]}
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(REPO / "bin/llmrig"), "status", "-i", str(inventory_for(Path(tmp), containers)), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_llmrig_status_shows_each_hosts_own_models_and_exits_0():
    done = llmrig_status()
    print(f"\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    for host, names in PLACED.items():
        table = re.search(rf"^{host}: healthy\n(.*?)(?:\n\n|\Z)", done.stdout, re.M | re.S)
        assert table, f"no healthy table for {host}"
        shown = set(re.findall(r"^  (mh-[a-z-]+) +(?:loaded|unloaded|loading|sleeping) ", table[1], re.M))
        assert shown and shown <= names, (host, shown)
    table_a = re.search(r"^llmrig-mh-a: .*?(?:\n\n|\Z)", done.stdout, re.M | re.S)[0]
    assert not re.search(r"^  mh-b ", table_a, re.M), table_a  # B's own model is not on A
    as_json = json.loads(llmrig_status("--json").stdout)
    assert {status["host"] for status in as_json} == set(PLACED)
    assert all(status["healthy"] and status["build"]["id"] for status in as_json)


@pytest.fixture
def b_stopped():
    """Host B goes down as a whole (its container stops: systemd drains its router on the way) and comes back."""
    subprocess.run(["podman", "stop", "-t", "60", "llmrig-mh-b"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["podman", "start", "llmrig-mh-b"], check=True, capture_output=True)


def test_with_b_down_the_replica_on_a_answers_and_bs_model_fails_clearly(request):
    """A client keeps asking for the replicated model (a new request 0.1 s after each answer) while B goes down
    and stays down 20 s (and until 10 requests sent meanwhile are answered). Requests in flight on B when it
    goes may fail; every other one is answered, by A once B is gone, and none waits out a timeout (the gateway
    gives up on B in seconds and sends the request to A). A request for B's own model fails with an error that
    names it, in seconds."""
    outcomes: list[tuple[float, float, str]] = []  # start, seconds, outcome
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                ask(gateway(timeout=60), "mh-both", max_tokens=12)
                outcome = "ok"
            except openai.APIError as exc:
                outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
            outcomes.append((began, time.monotonic() - began, outcome))
            time.sleep(0.1)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(3)
    stopped_at = time.monotonic()
    request.getfixturevalue("b_stopped")
    down_at = time.monotonic()
    time.sleep(20)
    asked = time.monotonic()
    with pytest.raises(openai.APIError) as refused:
        ask(gateway(timeout=60), "mh-b")
    refused_after = time.monotonic() - asked
    status = llmrig_status()

    def answered_with_b_down() -> int:
        return sum(t > down_at and o == "ok" for t, _, o in outcomes)

    # at least 10 answers to requests sent with B down, however slow a busy machine makes them (60 s at most)
    deadline = time.monotonic() + 60
    while answered_with_b_down() < 10 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    thread.join()
    failed = [(round(t - stopped_at, 2), o) for t, _, o in outcomes if o != "ok"]
    slowest = max(outcomes, key=lambda o: o[1])
    print(
        f"\nmh-both through the gateway while B went down ({down_at - stopped_at:.1f} s) and stayed down 20 s:"
        f" {len(outcomes)} requests, {len(failed)} failed: {failed};"
        f" slowest {slowest[1]:.2f} s (started {slowest[0] - stopped_at:+.2f} s from the stop);"
        f" median {statistics.median(d for _, d, _ in outcomes):.2f} s"
    )
    print(f"mh-b with B down, after {refused_after:.2f} s: {type(refused.value).__name__}: {str(refused.value)[:300]}")
    # once B is down, every request for the replicated model is answered (by A); while it goes, at most one
    # request (the one in flight on it) fails
    assert all(o == "ok" for t, _, o in outcomes if t > down_at), failed
    assert len(failed) <= 1, failed
    assert answered_with_b_down() >= 10
    # nobody waits out a timeout: the gateway gives up on B within the kernel's settings (7 s to connect,
    # 13 s for unanswered data) and sends the request to A
    assert slowest[1] < 20, slowest
    assert "mh-b" in str(refused.value) and refused_after < 15
    # llmrig status says so: exit 1, B unhealthy with why (its container is stopped), A healthy
    print(status.stdout)
    assert status.returncode == 1, status.stdout + status.stderr
    assert re.search(r"^llmrig-mh-b: UNHEALTHY\n  ! \S", status.stdout, re.M), status.stdout
    assert re.search(r"^llmrig-mh-a: healthy$", status.stdout, re.M), status.stdout


def test_b_answers_again_once_it_is_back():
    """After the stop test B boots again; the gateway sends mh-b to it once its cooldown is over."""
    deadline = time.monotonic() + 120
    while True:
        try:
            assert ask(gateway(timeout=30), "mh-b")
            return
        except openai.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
