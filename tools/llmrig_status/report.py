"""Turn the JSON callback's record of playbooks/status.yml into one status per host and a compact table.

A host is healthy when its status was read and its rig_status result found nothing wrong; a host that was
unreachable, or a play that failed on it, is unhealthy with Ansible's message."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

REPORT_FACT = "llmrig_status_report"


@dataclass
class HostStatus:
    host: str
    reachable: bool = True
    problems: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None

    @property
    def healthy(self) -> bool:
        return self.reachable and self.report is not None and not self.problems


def parse(stdout: str) -> dict[str, Any] | None:
    """The JSON callback's record from ansible-playbook's output: one indented object printed at the end;
    other callbacks (ansible.cfg enables profile_tasks) may print their own lines before it."""
    start = re.search(r"^\{$", stdout, re.M)
    if start is None:
        return None
    try:
        record, _end = json.JSONDecoder().raw_decode(stdout, start.start())
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def hosts(record: dict[str, Any]) -> list[HostStatus]:
    """Each host's status from ansible.posix.json's output of playbooks/status.yml."""
    found: dict[str, HostStatus] = {}
    failed: dict[str, str] = {}  # each host's last failed task and its message (a rescued one too)
    for play in record.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                status = found.setdefault(host, HostStatus(host))
                if result.get("unreachable"):
                    status.reachable = False
                    status.problems.append(f"unreachable: {str(result.get('msg', '')).strip()}")
                elif result.get("failed"):
                    failed[host] = f"{task['task']['name']}: {_message(result)}"
                report = (result.get("ansible_facts") or {}).get(REPORT_FACT)
                if report is not None:
                    status.report = report
                    status.problems.extend(report.get("problems", []))
    for host, stats in record.get("stats", {}).items():
        status = found.setdefault(host, HostStatus(host))
        if stats.get("unreachable") and status.reachable:
            status.reachable = False
            status.problems.append("unreachable")
        elif stats.get("failures"):  # a rescued failure counts as rescued, not here
            status.problems.append(failed.get(host, "a task of the status play failed"))
    for status in found.values():
        if status.reachable and status.report is None and not status.problems:
            status.problems.append("the status play did not finish on this host")
    return sorted(found.values(), key=lambda status: status.host)


def _message(result: dict[str, Any]) -> str:
    """A failed result's message, with what the module or connection said on stderr (a fact-gathering
    failure's own message only says that the setup module failed)."""
    said = [str(result.get("msg", "")).strip()]
    for module in (result.get("failed_modules") or {}).values():
        said.append(str(module.get("module_stderr", "")).strip())
    said.append(str(result.get("module_stderr", "")).strip())
    return " ".join(part for part in said if part)[:500]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ago(at: float | None, now: float) -> str:
    if not at:
        return "not seen"
    seconds = max(0, int(now - at))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _planned(plan: dict[str, Any] | None, name: str) -> list[tuple[str, float]]:
    """Planned MiB on each device for one model, in the plan's device order (GPU 0, 1, ...; on a CPU host the
    host's RAM), with the device's name. Empty when the host has no plan: llama.cpp fits the model at load."""
    for model in (plan or {}).get("models", []):
        if model.get("name") == name:
            return [(str(device["gpu"]), float(device["total_mib"])) for device in model.get("devices", [])]
    return []


def _source(build: dict[str, Any]) -> str:
    """The build's source in a few words: the git ref, or the archive's checksum."""
    source = str(build.get("source", ""))
    if source.startswith("git:"):
        return source.rsplit("@", 1)[-1].split("=", 1)[0]
    if source.startswith("archive:"):
        return f"archive {source.split(':')[1][:12]}"
    return source


def _row(cells: list[str], widths: list[int]) -> str:
    return "  " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def table(status: HostStatus, now: float | None = None) -> list[str]:
    """The lines for one host."""
    now = time.time() if now is None else now
    head = f"{status.host}: {'healthy' if status.healthy else 'UNHEALTHY'}"
    report = status.report
    if report is None:
        return [head, *(f"  ! {problem}" for problem in status.problems)]
    build = report.get("build", {})
    pending = build.get("pending", {})
    if pending.get("error"):
        upgrade = f"cannot compute the next build: {pending['error']}"
    elif pending.get("wanted") and pending["wanted"] != build.get("id"):
        upgrade = f"build {pending['wanted']} pending ({'built' if pending.get('installed') else 'not built yet'})"
    else:
        upgrade = "up to date"
    patches = len(build.get("patches") or [])
    described = ", ".join(
        part
        for part in (str(build.get("backend", "")), _source(build), f"{patches} patches" if patches else "")
        if part
    )
    lines = [
        head,
        f"  llama.cpp build {build.get('id') or 'none'}{f' ({described})' if described else ''}: {upgrade}",
    ]
    fleet = {entry["name"]: entry for entry in report.get("fleet", [])}
    routed = {model["id"]: model for model in report.get("models", [])}
    widths = [max([5, *(len(name) for name in fleet)]), 10, 7, 9, 11, 9, 6, 0]
    heads = ["model", "state", "context", "KV (K/V)", "planned MiB", "in flight", "queued", "last load"]
    lines.append(_row(heads, widths))
    resident: dict[int, float] = {}  # planned MiB of the running models, per device
    for name, entry in fleet.items():
        model = routed.get(name, {})
        state = model.get("state", "not routed" if report.get("router_up", True) else "unknown")
        planned = _planned(report.get("plan"), name)
        if state in ("loaded", "loading", "sleeping"):
            for device, (_gpu, mib) in enumerate(planned):
                resident[device] = resident.get(device, 0.0) + mib
        took = model.get("last_load_seconds")
        last = _ago(model.get("last_load_at"), now) + (f", {took:.1f} s" if took else "")
        kv = f"{entry.get('cache_type_k') or 'f16'}/{entry.get('cache_type_v') or 'f16'}"
        lines.append(
            _row(
                [
                    name,
                    state,
                    str(entry.get("context", "-")),
                    kv,
                    " + ".join(_mib(mib) + (" RAM" if gpu == "host RAM" else "") for gpu, mib in planned) or "-",
                    "-" if model.get("in_flight") is None else str(model["in_flight"]),
                    "-" if model.get("queued") is None else str(model["queued"]),
                    last,
                ],
                widths,
            )
        )
    running = [name for name in fleet if routed.get(name, {}).get("state") in ("loaded", "loading", "sleeping")]
    lines.append(f"  resident: {', '.join(running) or 'none'} (at most {report.get('models_max', '?')} at once)")
    for extra in sorted(set(routed) - set(fleet)):
        lines.append(f"  (the router also serves {extra}, which the fleet does not name: {routed[extra]['state']})")
    for gpu in report.get("gpus", []):
        lines.append(
            f"  gpu{gpu['index']} {gpu.get('name', '')}: {_mib(gpu.get('used_mib'))} of {_mib(gpu.get('total_mib'))}"
            f" MiB used; planned for the resident models {_mib(resident.get(gpu['index']))} MiB"
        )
    tuning = report.get("tuning") or {}
    if tuning:
        values = ", ".join(
            f"{name.removeprefix('llmrig_gpu_')} {value:g}"
            for name, value in sorted(tuning.items())
            if not name.startswith("llmrig_gpu_tuning_success")
        )
        run = {1: "ok", 0: "FAILED"}.get(int(tuning.get("llmrig_gpu_tuning_success", -1)), "unknown")
        lines.append(f"  GPU tuning: {values or 'nothing set'}; last run {run}")
    if report.get("reboot_pending"):
        lines.append(f"  reboot pending ({', '.join(report['reboot_pending'])})")
    lines.extend(f"  ! {problem}" for problem in status.problems)
    return lines
