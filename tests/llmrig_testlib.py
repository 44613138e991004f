"""Helpers shared by the Testinfra suites: HTTP calls to the gateway and process listings in the container."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import faults
from faults import Outcome, stream

REPO = Path(__file__).resolve().parents[1]
GATEWAY_URL = os.environ.get("LLMRIG_GATEWAY_URL", "http://127.0.0.1:18080")
API_KEY = os.environ.get("LLMRIG_API_KEY", "llmrig-test-key-not-secret")
# the Molecule container (named after its scenario, .config/molecule/config.yml)
TEST_HOST = os.environ.get("LLMRIG_TEST_HOST", "llmrig-default")

# Lists llama-server processes inside the container as JSON: pid, ppid, uid.
PROCESS_SCRIPT = r"""
import json, os
out = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        with open(f'/proc/{pid}/comm') as f:
            comm = f.read().strip()
        with open(f'/proc/{pid}/status') as f:
            status = dict(line.split(':', 1) for line in f if ':' in line)
    except OSError:
        continue
    if comm == 'llama-server':
        out.append({'pid': int(pid), 'ppid': int(status['PPid']), 'uid': int(status['Uid'].split()[0])})
print(json.dumps(out))
"""


def request(
    method: str, path: str, body: dict | None = None, key: str | None = API_KEY, timeout: float = 120
) -> tuple[int, Any]:
    """One HTTP request to the gateway; returns (status, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(GATEWAY_URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def model_states() -> dict[str, str]:
    status, body = request("GET", "/models")
    assert status == 200, body
    return {item["id"]: item["status"]["value"] for item in body["data"]}


def complete(model: str, prompt: str = "The capital of France is", max_tokens: int = 16) -> dict:
    status, body = request(
        "POST",
        "/v1/completions",
        {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "cache_prompt": False},
    )
    assert status == 200, f"completion on {model}: HTTP {status}: {body}"
    return body


def llama_processes(host) -> list[dict]:
    result = host.run("python3 -c %s", PROCESS_SCRIPT)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def model_children(host) -> list[dict]:
    """llama-server processes whose parent is the router (the systemd service's main process)."""
    router = router_pid(host)
    return [proc for proc in llama_processes(host) if proc["ppid"] == router]


def wait_for(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def plain(output: str) -> str:
    """A playbook's output without its colours (Molecule's environment forces them on) and with its lines
    joined, as one line of words."""
    import re

    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", output).split())


def recap_changed(output: str, host: str) -> int | None:
    """The changed count of a host in a playbook's PLAY RECAP."""
    import re

    found = re.search(rf"{re.escape(host)} : ok=\d+ changed=(\d+) ", plain(output))
    return int(found.group(1)) if found else None


def sdk_clients(base_url: str, key: str, timeout: float = 120) -> tuple[Any, Any]:
    """The official OpenAI and Anthropic clients for base_url (the OpenAI one under /v1), without retries (every
    error shows) and without keep-alive: each request on a new connection. The router (cpp-httplib) sometimes
    closes a kept-alive connection without saying so, and a request sent on it then fails with "Server
    disconnected without sending a response" (seen in side-by-side runs, twice in one, even between two
    requests made back to back); the SDKs' default retries hide that, max_retries=0 does not."""
    import anthropic
    import httpx2
    import openai

    fresh = httpx2.Limits(max_connections=10, max_keepalive_connections=0)
    oai = openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key=key,
        timeout=timeout,
        max_retries=0,
        http_client=openai.DefaultHttpx2Client(limits=fresh),
    )
    claude = anthropic.Anthropic(
        base_url=base_url,
        api_key=key,
        timeout=timeout,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(limits=fresh),
    )
    return oai, claude


def inventory_for(directory: Path, containers: dict[str, list[str]]) -> Path:
    """An inventory in the directory for live Molecule containers, each in the given groups, with the
    repository's group_vars and the scenario's host_vars. Returns its path."""
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "group_vars")
    host_vars = REPO / "molecule" / os.environ.get("MOLECULE_SCENARIO_NAME", "default") / "host_vars"
    if host_vars.is_dir():
        (inventory / "host_vars").symlink_to(host_vars)
    children: dict[str, dict] = {}
    for container, groups in containers.items():
        for group in groups:
            children.setdefault(group, {"hosts": {}})["hosts"][container] = None
    connection = {"ansible_connection": "llmrig.serving.podman", "ansible_pipelining": True}
    (inventory / "hosts.yml").write_text(json.dumps({"all": {"children": children, "vars": connection}}))
    return inventory


def run_playbook(
    container: str, groups: list[str], playbook: str, extra_vars: dict | None = None, *args: str, timeout: int = 600
):
    """Run a playbook of this repository against a live Molecule container, with the repository's
    group_vars and the container in the given inventory groups. Returns (exit status, combined output)."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = inventory_for(Path(tmp), {container: groups})
        command = ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / playbook), *args]
        if extra_vars is not None:
            extra = Path(tmp, "extra.json")
            extra.write_text(json.dumps(extra_vars))
            command += ["-e", f"@{extra}"]
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        started = time.monotonic()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        # where a test's time goes (the verifiers run with -s): the playbook runs are most of it
        tasks = len(re.findall(r"^TASK \[", result.stdout, re.M))
        print(f"\n[{playbook}: exit {result.returncode}, {tasks} tasks, {time.monotonic() - started:.1f} s]")
        return result.returncode, result.stdout + result.stderr


def run_module(module: str, work_dir: Path, **args: Any) -> dict:
    """Run one of this repository's Ansible modules as Ansible would (args file, collections on the path)
    and return its JSON result."""
    import sys

    path = REPO / "collections/ansible_collections/llmrig/serving/plugins/modules" / f"{module}.py"
    args_file = work_dir / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'collections'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, str(path), str(args_file)], capture_output=True, text=True, env=env)
    return json.loads(proc.stdout)


def stream_completion(model: str, max_tokens: int, on_first=None, timeout: float = 120) -> Outcome:
    """A streamed completion through the gateway, read to its end (tools/faults.py's client)."""
    return stream(GATEWAY_URL, API_KEY, model, max_tokens, on_first=on_first, timeout=timeout)


def router_pid(host) -> int:
    return int(host.run("systemctl show -p MainPID --value llmrig-gateway").stdout.strip())


class Load:
    """Completions to one model (gemma-a), one after the other with `pause` seconds between them, while a
    playbook runs."""

    def __init__(self, model: str = "gemma-a", pause: float = 0.05) -> None:
        self.model = model
        self.pause = pause
        self.outcomes: list[faults.Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(self.pause):
            self.outcomes.append(faults.complete(GATEWAY_URL, API_KEY, self.model, max_tokens=8, timeout=60))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, what: str) -> tuple[list, list]:
        """(answers with an HTTP error, requests that broke off), printed; requests refused while the routers
        changed (no connection, or the new router's 503 before it is ready) are counted apart."""
        refused = [o for o in self.outcomes if o.refused]
        http = [o for o in self.outcomes if o.status not in (0, 200) and not o.refused]
        broken = [o for o in self.outcomes if o.status == 0 and not o.refused]
        print(
            f"\n{what}: {len(self.outcomes)} requests, {len(http)} HTTP errors, {len(broken)} broke off,"
            f" {len(refused)} refused"
        )
        for outcome in (http + broken)[:5]:
            print(f"  {outcome.status} {outcome.error}")
        return http, broken


def gateway_overhead(
    host_url: str, gateway_url: str, gateway_key_file: Path, model: str, repetitions: int, base: str = "host"
) -> None:
    """The gateway against a host's own endpoint in one interleaved harness run (streamed chat), as clients
    see it: the decode rate of the streamed tokens and the time to the first one, printed as JSON lines (the
    targets are read from the figures, never asserted). Every request must be answered."""
    from llmrig_bench.compare import compare_run
    from llmrig_bench.runner import run
    from llmrig_bench.workload import parse

    workload = {
        "name": "gateway-overhead",
        "api": "chat",
        "max_tokens": 48,
        "prompts": "short",
        "repetitions": repetitions,
        "sampling": {"temperature": 0, "seed": 1},
        "variants": {
            base: {"model": model},
            "gateway": {"model": model, "url": gateway_url, "key_file": str(gateway_key_file)},
        },
    }
    results = run(parse(workload), host_url, API_KEY)
    failed = [r for r in results["records"] if r.get("error")]
    assert not failed, failed[:3]
    figures = {c.metric: c for c in compare_run(results)}
    print()
    for metric in (f"client_decode_tps gateway v {base} @1", f"ttft_s gateway v {base} @1"):
        c = figures[metric]
        line = {"metric": metric, "n": [c.n_a, c.n_b], base: c.median_a, "gateway": c.median_b}
        line.update(ratio=c.median_b / c.median_a, added=c.median_b - c.median_a, interval=[c.ci_low, c.ci_high])
        print(json.dumps(dict(line, verdict=c.verdict)))
