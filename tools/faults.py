#!/usr/bin/env python3
"""Fault suite: the ordinary events of a server's life, under load, against a live llmrig host.

Runs on the controller against the `make demo` container (`make faults`): requests go to the published
endpoint, faults are caused with `podman exec` (kill -9, systemctl restart), fleet changes with
ansible-playbook. Standard library only. Cases:

  kill-router-idle        kill -9 of the router while a model is resident and idle
  kill-router-stream      kill -9 of the router during a streamed request
  kill-model-stream       kill -9 of the model process during a streamed request
  restart-stream          systemctl restart with a streamed request in flight
  fleet-add               re-run site.yml adding a model whose file is new, clients on another model
  fleet-settings          re-run site.yml changing the settings of the model the clients use
  thrash                  16 clients, 1,000 requests over 3 models, streamed and not
  fleet-remove            re-run site.yml with the original fleet (a model removed), clients running
  upgrade                 re-run site.yml with another llama.cpp version (--upgrade-source), clients running
  rollback                re-run site.yml with a build whose models cannot start, clients running: it is
                          rolled back to the build that served; then the original build is put back

Per case: requests sent, non-2xx answers, client errors (no answer, a stream cut), recovery times, model
loads (the router's journal), p50/p95 latency, and the case's goal with met / not met. The exit status is 1
when a goal is not met. A benchmark-style report, not a timed test: the figures are printed and written
as JSON, and the goals are the ones in docs/faults.md.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UNIT = "llmrig-gateway"
PROMPT = "Count from one to one thousand, in words:"
CASES = (
    "kill-router-idle",
    "kill-router-stream",
    "kill-model-stream",
    "restart-stream",
    "fleet-add",
    "fleet-settings",
    "thrash",
    "fleet-remove",
    "upgrade",
    "rollback",
)
# the cases that change the host's fleet or llama.cpp build: the inventory's are put back after them
CHANGING = {"fleet-add", "fleet-settings", "fleet-remove", "upgrade", "rollback"}
# goals (docs/faults.md)
RECOVERY_GOAL_S = 3.0
RESTART_MARGIN_S = 2.0
NO_HANG_S = 5.0
SETTINGS_PAUSE_S = 0.3  # seconds a fleet-settings client waits after each answer
# the exporter reconnects every 0.5 s and reads the model list after each load
EXPORTER_CATCH_UP_S = 2.0


@dataclass
class Outcome:
    """One request as the client saw it."""

    status: int  # HTTP status; 0 when no answer came
    seconds: float
    error: str | None = None  # what broke on the client side (no answer, a stream cut off)
    tokens: int = 0
    done: bool = False  # a stream that ended with [DONE]
    finish_reason: str | None = None
    at: float = field(default_factory=time.monotonic)  # when it was sent
    answer: str | None = None  # the body of an HTTP error answer (what the router said)

    @property
    def refused(self) -> bool:
        """Turned away before any work was done: no connection, the router's 503 while it starts or drains, or
        a connection reset before any answer. The last is a connection the kernel had queued on the port when
        the stopping router closed it: the router never read the request, and a socket closed with unread
        data sends a reset. A router that dies while it answers has read the request; its socket closes with
        a FIN, which the client sees as RemoteDisconnected, a failure here."""
        if self.status == 503:
            return True
        said = self.error or ""
        return self.status == 0 and ("Connection refused" in said or "Connection reset by peer" in said)


def _request(base: str, key: str | None, path: str, body: dict) -> urllib.request.Request:
    req = urllib.request.Request(base.rstrip("/") + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    return req


def stream(
    base: str,
    key: str | None,
    model: str,
    max_tokens: int,
    on_first: Callable[[], None] | None = None,
    timeout: float = 120,
) -> Outcome:
    """A streamed /v1/completions request read to its end; on_first() runs once the first token arrived."""
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    start = time.monotonic()
    out = Outcome(status=0, seconds=0.0)
    try:
        with urllib.request.urlopen(_request(base, key, "/v1/completions", body), timeout=timeout) as resp:
            out.status = resp.status
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    out.done = True
                    break
                choice = json.loads(line[6:])["choices"][0]
                if choice.get("text"):
                    out.tokens += 1
                    if out.tokens == 1 and on_first is not None:
                        on_first()
                out.finish_reason = choice.get("finish_reason") or out.finish_reason
        if not out.done:
            out.error = "the stream ended without [DONE]"
    except urllib.error.HTTPError as err:
        out.status = err.code
    except Exception as exc:  # noqa: BLE001 - the suite reports whatever broke the request
        out.error = f"{type(exc).__name__}: {exc}"
    out.seconds = time.monotonic() - start
    return out


def complete(base: str, key: str | None, model: str, max_tokens: int = 8, timeout: float = 120) -> Outcome:
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    start = time.monotonic()
    try:
        with urllib.request.urlopen(_request(base, key, "/v1/completions", body), timeout=timeout) as resp:
            answer = json.loads(resp.read())
            tokens = answer.get("usage", {}).get("completion_tokens", 0)
            return Outcome(resp.status, time.monotonic() - start, tokens=tokens, done=True, at=start)
    except urllib.error.HTTPError as err:
        answer = err.read().decode(errors="replace")[:300]
        return Outcome(err.code, time.monotonic() - start, at=start, answer=answer)
    except Exception as exc:  # noqa: BLE001 - the suite reports whatever broke the request
        return Outcome(0, time.monotonic() - start, error=f"{type(exc).__name__}: {exc}", at=start)


# Where the router builds a model process's command line (tools/server/server-models.cpp of the llama.cpp
# tree in the llama-cpp-python 0.3.3x sdists), and what a broken build adds: an option llama-server does not
# know, so every model process exits at once while the router itself starts and answers /health.
SPAWN_LINE = "std::vector<std::string> child_args = inst.meta.args; // copy"
BROKEN_ARG = "--llmrig-broken-build"


def broken_source(sdist: Path, dest: Path) -> Path:
    """Write a source archive like the sdist (its llama.cpp tree only, same paths, so ccache still hits) whose
    router starts model processes that cannot start: a llama.cpp build that passes `llama-server --version`
    and /health but fails every model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    patched = 0
    with tarfile.open(sdist, "r:gz") as src, tarfile.open(dest, "w:gz", compresslevel=1) as out:
        for member in src:
            parts = member.name.split("/")
            if parts[1:3] != ["vendor", "llama.cpp"]:
                continue
            data = src.extractfile(member) if member.isfile() else None
            if data is not None and member.name.endswith("tools/server/server-models.cpp"):
                text = data.read().decode()
                if SPAWN_LINE not in text:
                    raise RuntimeError(f"{sdist}: the model spawn line changed; cannot make a broken build")
                raw = text.replace(SPAWN_LINE, f'{SPAWN_LINE}\nchild_args.push_back("{BROKEN_ARG}");').encode()
                member.size = len(raw)
                out.addfile(member, io.BytesIO(raw))
                patched += 1
            else:
                out.addfile(member, data)
    if patched != 1:
        raise RuntimeError(f"{sdist}: no tools/server/server-models.cpp under vendor/llama.cpp")
    return dest


def failure(output: str) -> str:
    """What made an ansible-playbook run fail: its fatal lines and the message after each, on one line."""
    lines = output.splitlines()
    said = [
        " ".join(" ".join(lines[index : index + 8]).split())[:600]
        for index, line in enumerate(lines)
        if line.startswith(("fatal:", "failed:")) or "[ERROR]" in line
    ]
    return " || ".join(said) or output[-1500:]


def started(count: int, target: Callable[[], None]) -> list[threading.Thread]:
    """`count` threads running target, started."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


class Host:
    """The container that runs the rig, reached with podman exec."""

    def __init__(self, container: str) -> None:
        self.container = container

    def run(self, argv: list[str], check: bool = True) -> str:
        proc = subprocess.run(["podman", "exec", self.container, *argv], capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sh(self, command: str, check: bool = True) -> str:
        return self.run(["sh", "-c", command], check)

    def router(self) -> int:
        return int(self.sh(f"systemctl show -p MainPID --value {UNIT}").strip())

    def children(self, parent: int) -> list[int]:
        script = (
            "import os\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: stat = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
            "    except OSError: continue\n"
            f"    if int(stat[1]) == {parent}: print(pid)\n"
        )
        return [int(pid) for pid in self.run(["python3", "-c", script]).split()]

    def alive(self, pid: int) -> bool:
        return self.sh(f"test -d /proc/{pid} && echo yes", check=False).strip() == "yes"

    def cursor(self) -> str:
        out = self.sh(f"journalctl -u {UNIT} -n 0 --show-cursor --no-pager", check=False)
        return out.strip().rsplit("-- cursor: ", 1)[-1]

    def journal_since(self, cursor: str) -> str:
        """The router's journal lines after the cursor."""
        return self.sh(f"journalctl -u {UNIT} --no-pager -o cat --after-cursor '{cursor}'", check=False)

    def journal_counts(self, cursor: str) -> dict[str, list[int]]:
        """Per model, from the router's journal after the cursor: [loads, exits with a non-zero status]."""
        log = self.journal_since(cursor)
        counts: dict[str, list[int]] = {}
        for model in re.findall(r"spawning server instance with name=(\S+) on port", log):
            counts.setdefault(model, [0, 0])[0] += 1
        for model, status in re.findall(r"instance name=(\S+) exited with status (-?\d+)", log):
            if int(status) != 0:
                counts.setdefault(model, [0, 0])[1] += 1
        return counts

    def monitoring_mark(self) -> tuple[dict[str, list[int]], str]:
        """The gateway exporter's counts and the journal's cursor now, for monitoring_since()."""
        return self.exporter_counts(), self.cursor()

    def monitoring_since(
        self, mark: tuple[dict[str, list[int]], str], journal: dict[str, list[int]] | None = None
    ) -> tuple[dict, dict]:
        """Per model [loads, abnormal exits] since the mark: (the router's journal, the gateway exporter). A
        model that left the fleet leaves the exporter too: only the models it still reports are compared.
        `journal`: the journal's counts since the mark when the caller has read them already."""
        before, cursor = mark
        after = self.exporter_counts()
        exporter = {
            model: [now - then for now, then in zip(counts, before.get(model, [0, 0]), strict=True)]
            for model, counts in after.items()
        }
        counted = self.journal_counts(cursor) if journal is None else journal
        return {m: counted.get(m, [0, 0]) for m in after}, exporter

    def exporter_counts(self, port: int = 9410) -> dict[str, list[int]]:
        """Per model, from the gateway exporter: [loads, load failures + crashes]."""
        script = (
            f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
        )
        counts: dict[str, list[int]] = {}
        for name, model, value in re.findall(
            r'^llmrig_model_(loads|load_failures|crashes)_total\{model="([^"]+)"\} (\S+)$',
            self.run(["python3", "-c", script]),
            re.M,
        ):
            counts.setdefault(model, [0, 0])[0 if name == "loads" else 1] += int(float(value))
        return counts


@dataclass
class Case:
    name: str
    goal: str
    outcomes: list[Outcome] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    loads: int = 0
    met: bool = False
    notes: list[str] = field(default_factory=list)
    # per model [loads, abnormal exits] from the router's journal and from the gateway exporter
    journal: dict[str, list[int]] = field(default_factory=dict)
    exporter: dict[str, list[int]] = field(default_factory=dict)

    @property
    def monitoring_true(self) -> bool:
        models = set(self.journal) | set(self.exporter)
        return all(self.journal.get(m, [0, 0]) == self.exporter.get(m, [0, 0]) for m in models)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(o.seconds for o in self.outcomes if o.status == 200 and o.error is None)
        p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else None
        return {
            "case": self.name,
            "requests": len(self.outcomes),
            "non_2xx": sum(1 for o in self.outcomes if o.status not in (0, 200)),
            "client_errors": sum(1 for o in self.outcomes if o.status == 0 or o.error is not None),
            "recovery_s": [round(value, 3) for value in self.recovery_s],
            "loads": self.loads,
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p95_s": round(p95, 3) if p95 is not None else None,
            "goal": self.goal,
            "met": self.met and self.monitoring_true,
            "monitoring": {"journal": self.journal, "exporter": self.exporter, "equal": self.monitoring_true},
            "notes": self.notes,
        }


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base = args.url
        self.key = Path(args.key_file).read_text().strip()
        self.host = Host(args.container)
        self.inventory = args.inventory
        self.models: list[str] = []

    # helpers

    def serving_again(self, since: float, model: str, timeout: float = 120) -> float:
        """Seconds from `since` until a completion on the model answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if complete(self.base, self.key, model, max_tokens=1, timeout=10).status == 200:
                return time.monotonic() - since
            time.sleep(0.05)
        raise RuntimeError(f"{model} did not answer within {timeout} s")

    def serving_build(self) -> str:
        """The llama.cpp build directory the first model's process runs from (its command line in GET /models;
        the router's /proc/PID/exe needs CAP_SYS_PTRACE, which root lacks in the container)."""
        self.resident(self.models[0])
        request = urllib.request.Request(self.base.rstrip("/") + "/models")
        request.add_header("Authorization", f"Bearer {self.key}")
        with urllib.request.urlopen(request, timeout=30) as resp:
            models = json.loads(resp.read())["data"]
        args = next(item["status"]["args"] for item in models if item["id"] == self.models[0])
        return str(args[0]).rsplit("/bin/", 1)[0]

    def resident(self, model: str) -> None:
        outcome = complete(self.base, self.key, model, max_tokens=1)
        if outcome.status != 200:
            raise RuntimeError(f"{model}: HTTP {outcome.status} {outcome.error}")

    def cold_load_s(self, model: str) -> float:
        """Time of a 1-token completion that has to load the model (the other one is made resident)."""
        other = next(name for name in self.models if name != model)
        self.resident(other)
        return complete(self.base, self.key, model, max_tokens=1).seconds

    def playbook(self, extra_vars: dict | None) -> tuple[int, str]:
        """site.yml against the host, with extra variables (None: the inventory as it is)."""
        command = ["ansible-playbook", "-i", self.inventory, str(REPO / "playbooks/site.yml")]
        with tempfile.TemporaryDirectory() as tmp:
            if extra_vars is not None:
                extra = Path(tmp, "extra.json")
                extra.write_text(json.dumps(extra_vars))
                command += ["-e", f"@{extra}"]
            try:
                proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
            except subprocess.TimeoutExpired as exc:
                said = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
                return 124, f"{said or ''}\nsite.yml did not end within {exc.timeout:g} s"
        return proc.returncode, proc.stdout + proc.stderr

    def fleet(self) -> list[dict]:
        out = subprocess.run(
            ["ansible-inventory", "-i", self.inventory, "--host", self.host.container],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return list(json.loads(out.stdout)["llmrig_fleet"])

    def under_load(self, model: str, clients: int, action: Callable[[], None], pause: float = 0.0) -> list[Outcome]:
        """Run action() while `clients` threads send completions to the model, each waiting `pause` seconds
        after an answer before its next request; returns their outcomes."""
        stop, outcomes, lock = threading.Event(), [], threading.Lock()

        def client() -> None:
            while not stop.is_set():
                outcome = complete(self.base, self.key, model, max_tokens=8, timeout=120)
                with lock:
                    outcomes.append(outcome)
                stop.wait(pause)

        threads = started(clients, client)
        try:
            action()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        return outcomes

    # cases

    def kill_router_idle(self, runs: int) -> Case:
        case = Case("kill-router-idle", f"serving again <= {RECOVERY_GOAL_S} s, old model process gone")
        model = self.models[0]
        gone = True
        for _ in range(runs):
            self.resident(model)
            router = self.host.router()
            children = self.host.children(router)
            start = time.monotonic()
            self.host.sh(f"kill -9 {router}")
            case.recovery_s.append(self.serving_again(start, model))
            gone = gone and not any(self.host.alive(pid) for pid in children)
        case.met = gone and max(case.recovery_s) <= RECOVERY_GOAL_S
        return case

    def kill_stream(self, runs: int, target: str) -> Case:
        """kill -9 of the router or of the model process once the first token of a stream has arrived."""
        model = self.models[0]
        if target == "router":
            case = Case(
                "kill-router-stream", f"client error within {NO_HANG_S} s, serving again <= {RECOVERY_GOAL_S} s"
            )
        else:
            case = Case("kill-model-stream", f"client error within {NO_HANG_S} s, next request 200")
        for _ in range(runs):
            self.resident(model)
            router = self.host.router()
            victim = router if target == "router" else self.host.children(router)[0]
            killed: dict[str, float] = {}

            def kill(victim: int = victim, killed: dict[str, float] = killed) -> None:
                killed["at"] = time.monotonic()
                self.host.sh(f"kill -9 {victim}")

            outcome = stream(self.base, self.key, model, max_tokens=400, on_first=kill, timeout=60)
            case.outcomes.append(outcome)
            ended = time.monotonic()
            case.notes.append(f"client saw: HTTP {outcome.status}, {outcome.error}, {outcome.tokens} tokens")
            case.recovery_s.append(self.serving_again(killed["at"], model))
            if ended - killed["at"] > NO_HANG_S or (outcome.error is None and outcome.status == 200):
                case.notes.append(f"not met: the stream ended {ended - killed['at']:.1f} s after the kill, cleanly")
                return case
        limit = RECOVERY_GOAL_S if target == "router" else 60.0
        case.met = max(case.recovery_s) <= limit
        return case

    def restart_stream(self, runs: int) -> Case:
        model = self.models[0]
        load = self.cold_load_s(model)
        case = Case(
            "restart-stream",
            f"the stream finishes; serving again <= drain + model load ({load:.2f} s) + {RESTART_MARGIN_S} s",
        )
        met = True
        for _ in range(runs):
            self.resident(model)
            began: dict[str, float] = {}

            def restart(began: dict[str, float] = began) -> None:
                began["at"] = time.monotonic()
                threading.Thread(target=self.host.sh, args=(f"systemctl restart {UNIT}",)).start()

            old_router = self.host.router()
            outcome = stream(self.base, self.key, model, max_tokens=300, on_first=restart, timeout=120)
            drained = time.monotonic() - began["at"]
            # the old router serves until the drain ends: count only answers of the new one
            while self.host.router() in (0, old_router):
                time.sleep(0.05)
            total = self.serving_again(began["at"], model)
            case.outcomes.append(outcome)
            case.recovery_s.append(total)
            case.notes.append(f"drain {drained:.2f} s ({outcome.tokens} tokens), serving again after {total:.2f} s")
            met = met and outcome.error is None and outcome.done and total <= drained + load + RESTART_MARGIN_S
        case.met = met
        return case

    def fleet_change(self, name: str, fleet: list | None, model: str, pause: float = 0.0) -> Case:
        case = Case(name, "0 failed requests, router PID unchanged, no restart")
        router = self.host.router()
        result: dict[str, Any] = {}

        def run() -> None:
            result["rc"], result["output"] = self.playbook(None if fleet is None else {"llmrig_fleet": fleet})

        case.outcomes = self.under_load(model, clients=2, action=run, pause=pause)
        if pause:
            case.notes.append(f"each client waits {pause} s after an answer (an agent's think time)")
        restarted = "RUNNING HANDLER [llmrig_gateway : Restart llmrig gateway]" in result["output"]
        same_router = self.host.router() == router
        failed = sum(1 for o in case.outcomes if o.status != 200 or o.error is not None)
        if result["rc"] != 0:
            case.notes.append("site.yml failed: " + failure(result["output"]))
        if restarted or not same_router:
            case.notes.append(f"the gateway was restarted (handler ran: {restarted}, new PID: {not same_router})")
        case.notes.append(f"{failed} failed requests during the change")
        case.met = result["rc"] == 0 and not restarted and same_router and failed == 0
        return case

    def switch_build(self, name: str, source: Path, expect_rollback: bool) -> Case:
        """site.yml with another llama.cpp source archive while two clients send completions."""
        model = self.models[0]
        if expect_rollback:
            goal = "site.yml fails saying why; the build that served serves again (errors while the broken one serves)"
        else:
            goal = "the new build serves; no request fails (refused only while the routers change: the recovery figure)"
        case = Case(name, goal)
        before, router = self.serving_build(), self.host.router()
        result: dict[str, Any] = {}

        def run() -> None:
            began = time.monotonic()
            result["rc"], result["output"] = self.playbook({"llmrig_llamacpp_archive_path": str(source.resolve())})
            result["seconds"] = time.monotonic() - began

        case.outcomes = self.under_load(model, clients=2, action=run)
        after = self.serving_build()
        output = " ".join(result["output"].split())
        refused = [o for o in case.outcomes if o.refused]
        failed = [o for o in case.outcomes if o.status != 200 and not o.refused]
        window = max(o.at for o in refused) - min(o.at for o in refused) if refused else 0.0
        if failed:
            window_failed = max(o.at for o in failed) - min(o.at for o in failed)
            kinds = sorted({f"HTTP {o.status}" if o.status else str(o.error)[:60] for o in failed})
            case.notes.append(f"{len(failed)} failed over {window_failed:.1f} s: {', '.join(kinds)}")
        case.recovery_s.append(window)
        case.notes.append(
            f"site.yml {result['seconds']:.0f} s, exit {result['rc']}; build {Path(before).name} -> {Path(after).name}"
            f" (router PID {router} -> {self.host.router()}); {len(refused)} refused over {window:.2f} s"
        )
        if expect_rollback:
            said = re.search(r"llama\.cpp build \S+ failed its check after the upgrade .*?which serves again", output)
            case.notes.append(said.group(0)[:400] if said else "NO ROLLBACK MESSAGE: " + result["output"][-1500:])
            case.met = result["rc"] != 0 and said is not None and after == before
        else:
            if result["rc"] != 0:
                case.notes.append("site.yml failed: " + failure(result["output"]))
            case.met = result["rc"] == 0 and after != before and not failed
        return case

    def thrash(self, clients: int, requests: int, seed: int) -> Case:
        case = Case("thrash", f"{requests} requests, {clients} clients, over {len(self.models)} models: 0 failures")
        rng = random.Random(seed)
        plan = [(rng.choice(self.models), rng.random() < 0.5) for _ in range(requests)]
        lock, outcomes = threading.Lock(), []

        def client() -> None:
            while True:
                with lock:
                    if not plan:
                        return
                    model, streamed = plan.pop()
                if streamed:
                    outcome = stream(self.base, self.key, model, max_tokens=8, timeout=300)
                else:
                    outcome = complete(self.base, self.key, model, max_tokens=8, timeout=300)
                with lock:
                    outcomes.append(outcome)

        for thread in started(clients, client):
            thread.join()
        case.outcomes = outcomes
        case.met = all(o.status == 200 and o.error is None for o in outcomes)
        return case

    def watched(self, run: Callable[[], Case]) -> Case:
        """Run a case and compare what the router's journal and the gateway exporter counted meanwhile."""
        mark = self.host.monitoring_mark()
        case = run()
        time.sleep(EXPORTER_CATCH_UP_S)
        journal = self.host.journal_counts(mark[1])
        case.loads = sum(loads for loads, _ in journal.values())  # removed models' loads included
        case.journal, case.exporter = self.host.monitoring_since(mark, journal)
        return case


def table(cases: list[dict[str, Any]]) -> str:
    head = f"{'case':<20} {'sent':>5} {'non2xx':>6} {'errors':>6} {'loads':>5} {'p50 s':>6} {'p95 s':>6}  recovery s"
    lines = [head, "-" * len(head)]
    for c in cases:
        recovery = ", ".join(f"{value:.2f}" for value in c["recovery_s"]) or "-"
        p50 = f"{c['p50_s']:.2f}" if c["p50_s"] is not None else "-"
        p95 = f"{c['p95_s']:.2f}" if c["p95_s"] is not None else "-"
        lines.append(
            f"{c['case']:<20} {c['requests']:>5} {c['non_2xx']:>6} {c['client_errors']:>6} {c['loads']:>5}"
            f" {p50:>6} {p95:>6}  {recovery}"
        )
        lines.append(f"{'':<20} goal: {c['goal']}: {'met' if c['met'] else 'NOT MET'}")
        seen = c["monitoring"]
        lines.append(
            f"{'':<20} loads and abnormal exits, journal {seen['journal']} exporter {seen['exporter']}:"
            f" {'equal' if seen['equal'] else 'DIFFERENT'}"
        )
        lines.extend(f"{'':<20} {note}" for note in c["notes"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="llmrig-demo")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key-file", default=".cache/demo/api-key")
    parser.add_argument("--inventory", default="inventory/demo")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each kill and restart case")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--upgrade-source",
        type=Path,
        help="another llama.cpp version's source archive (a llama-cpp-python sdist) for the upgrade case",
    )
    parser.add_argument(
        "--broken-from",
        type=Path,
        help="sdist to patch into a build whose models cannot start, for the rollback case",
    )
    parser.add_argument(
        "--settings-pause",
        type=float,
        default=SETTINGS_PAUSE_S,
        help="seconds a fleet-settings client waits after each answer (0: back to back, see docs/faults.md)",
    )
    parser.add_argument("--cases", help=f"comma-separated cases to run (default: all of {', '.join(CASES)})")
    args = parser.parse_args(argv)

    suite = Suite(args)
    original = suite.fleet()
    suite.models = [entry["name"] for entry in original][:2]
    if len(suite.models) < 2:
        parser.error("the fleet needs two models")
    added = dict(original[0], name="faults-extra", aliases=[], context=1024)
    added["source"] = dict(original[0]["source"], file="faults-extra.gguf")
    wanted = set(args.cases.split(",")) if args.cases else set(CASES)
    unknown = wanted - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; the cases are {', '.join(CASES)}")
    if "upgrade" in wanted and not args.upgrade_source:
        wanted.discard("upgrade")
    if "rollback" in wanted and not args.broken_from:
        wanted.discard("rollback")
    cases: list[Case] = []

    def run(name: str, case: Callable[[], Case]) -> None:
        if name in wanted:
            cases.append(suite.watched(case))

    run("kill-router-idle", lambda: suite.kill_router_idle(args.runs))
    run("kill-router-stream", lambda: suite.kill_stream(args.runs, "router"))
    run("kill-model-stream", lambda: suite.kill_stream(args.runs, "model"))
    run("restart-stream", lambda: suite.restart_stream(args.runs))
    fleet = [*original, added]
    run("fleet-add", lambda: suite.fleet_change("fleet-add", fleet, suite.models[0]))
    # the settings of the model the clients use change: the router restarts that model once it is idle.
    # Clients that never pause leave it no idle moment, and llama.cpp's model process ends its requests
    # when told to exit, so these clients pause as agents do between turns (docs/faults.md).
    if "fleet-settings" in wanted:
        fleet = [dict(original[0], context=2 * int(original[0]["context"])), *original[1:], added]
        run("fleet-settings", lambda: suite.fleet_change("fleet-settings", fleet, suite.models[0], args.settings_pause))
    if {"fleet-add", "fleet-settings"} & wanted:
        suite.models.append("faults-extra")
    run("thrash", lambda: suite.thrash(args.clients, args.requests, args.seed))
    # the model added above leaves the fleet as the cases before left it (a removal only)
    run("fleet-remove", lambda: suite.fleet_change("fleet-remove", fleet[:-1], suite.models[0]))
    suite.models = suite.models[:2]
    run("upgrade", lambda: suite.switch_build("upgrade", args.upgrade_source, False))
    with tempfile.TemporaryDirectory() as tmp:
        if "rollback" in wanted:
            broken = broken_source(args.broken_from, Path(tmp, "llama-cpp-broken.tar.gz"))
            run("rollback", lambda: suite.switch_build("rollback", broken, True))
    restored = 0
    if wanted & CHANGING:
        restored, output = suite.playbook(None)
        if restored != 0:
            print("putting the inventory's fleet and llama.cpp build back failed:\n" + output[-3000:], file=sys.stderr)
    results = [case.summary() for case in cases]
    print(table(results))
    if args.json:
        raw = {case.name: [asdict(o) for o in case.outcomes] for case in cases}
        Path(args.json).write_text(json.dumps({"cases": results, "outcomes": raw}, indent=1))
    return 0 if all(c["met"] for c in results) and restored == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
