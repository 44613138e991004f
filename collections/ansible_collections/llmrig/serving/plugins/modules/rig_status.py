#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rig_status
short_description: Read what an inference host is doing now, from what its services already expose
description:
  - >-
    Reads the router's C(GET /health) and C(GET /models), each loaded model's own C(/metrics) through the
    router (with C(autoload=false), so that reading never loads a model), the gateway exporter's metrics (the
    last load of each model), the build that C(current) points at, the GPU tuning textfile, a pending reboot,
    and on GPU hosts the memory each GPU uses (C(nvidia-smi)).
  - >-
    Changes nothing and never fails for what it finds. A service that does not answer is reported in
    RV(problems) and RV(healthy) is false; only bad arguments fail the module.
version_added: 0.4.2
author: llmrig authors
options:
  url:
    description: The router's base URL on the host.
    type: str
    required: true
  api_key:
    description: The key the router asks for (from the vault).
    type: str
    required: true
    no_log: true
  exporter_url:
    description: The gateway exporter's metrics URL; empty when the host runs none.
    type: str
    default: ""
  install_dir:
    description: llama.cpp's install directory, which holds C(current) and one directory per build id.
    type: path
    required: true
  tuning_textfile:
    description: The GPU tuning textfile (Prometheus text); empty when the host has none.
    type: str
    default: ""
  reboot_markers:
    description: Files whose presence says a reboot is pending.
    type: list
    elements: path
    default: [/run/llmrig-nvidia-reboot-required, /run/reboot-required]
  gpus:
    description: Ask C(nvidia-smi) for each GPU's memory in use.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: float
    default: 5
extends_documentation_fragment:
  - llmrig.serving.attributes
"""

EXAMPLES = r"""
- name: Read the host's state
  llmrig.serving.rig_status:
    url: http://127.0.0.1:8080
    api_key: "{{ vault_llmrig_api_key }}"
    exporter_url: http://127.0.0.1:9410/metrics
    install_dir: /opt/llmrig/llama.cpp
"""

RETURN = r"""
healthy:
  description: The router answered its health check and its model list, and no model is in the failed state.
  returned: always
  type: bool
router_up:
  description: The router answered its health check and its model list.
  returned: always
  type: bool
problems:
  description: What made the host unhealthy, one sentence each.
  returned: always
  type: list
  elements: str
models:
  description: >-
    Each model the router knows - C(id), C(state) (unloaded, loading, loaded, sleeping, failed), C(in_flight)
    and C(queued) (requests being processed and deferred, loaded models only), C(last_load_at) (Unix time)
    and C(last_load_seconds) (from the exporter, null when it saw no load).
  returned: always
  type: list
  elements: dict
build:
  description: C(id) of the build C(current) points at and its manifest's fields (C(version), C(backend), ...).
  returned: always
  type: dict
gpus:
  description: Each GPU's C(index), C(name), C(used_mib) and C(total_mib) (with O(gpus) only).
  returned: always
  type: list
  elements: dict
tuning:
  description: The GPU tuning textfile's samples, metric name with labels to value.
  returned: always
  type: dict
reboot_pending:
  description: The reboot markers that exist.
  returned: always
  type: list
  elements: str
"""

import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)", re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
STATES = ("unloaded", "loading", "loaded", "sleeping", "failed")


def samples(text: str) -> dict[str, float]:
    """Prometheus text exposition: each sample's name with its labels, to its value."""
    found = {}
    for name, value in SAMPLE.findall(text):
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


def labelled(found: dict[str, float], metric: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric, each with its labels."""
    out = []
    for name, value in found.items():
        base, _, rest = name.partition("{")
        if base == metric:
            out.append((dict(LABEL.findall(rest)), value))
    return out


def get(url: str, key: str, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode("utf-8", errors="replace")


def state_of(entry: dict) -> str:
    status = entry.get("status") or {}
    if status.get("failed"):
        return "failed"
    value = str(status.get("value", "unloaded"))
    return value if value in STATES else "unloaded"


def router(params: dict, problems: list[str]) -> list[dict] | None:
    """The router's models with their states and requests; None when it does not answer."""
    base, key, timeout = params["url"].rstrip("/"), params["api_key"], params["timeout"]
    try:
        get(f"{base}/health", "", timeout)
        listing = json.loads(get(f"{base}/models", key, timeout))["data"]
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"the router at {base} does not answer: {exc}")
        return None
    models = []
    for entry in listing:
        model = {"id": str(entry["id"]), "state": state_of(entry), "in_flight": None, "queued": None}
        if model["state"] == "failed":
            exit_code = (entry.get("status") or {}).get("exit_code")
            problems.append(f"model {model['id']} failed (exit code {exit_code})")
        if model["state"] == "loaded":
            query = urllib.parse.urlencode({"model": model["id"], "autoload": "false"})
            try:
                found = samples(get(f"{base}/metrics?{query}", key, timeout))
                model["in_flight"] = int(found.get("llamacpp:requests_processing", 0))
                model["queued"] = int(found.get("llamacpp:requests_deferred", 0))
            except (OSError, ValueError):
                pass  # unloaded since the list was read, or its metrics are off: unknown, not a problem
        models.append(model)
    return models


def last_loads(url: str, timeout: float) -> dict[str, tuple[float, float]]:
    """Per model, when its last load became ready and how long it took, from the gateway exporter."""
    if not url:
        return {}
    try:
        found = samples(get(url, "", timeout))
    except (OSError, ValueError):
        return {}
    ended = {labels.get("model", ""): v for labels, v in labelled(found, "llmrig_model_last_load_timestamp_seconds")}
    took = {labels.get("model", ""): v for labels, v in labelled(found, "llmrig_model_last_load_duration_seconds")}
    return {model: (ended[model], took.get(model, 0.0)) for model in ended}


def build(install_dir: str) -> dict:
    current = os.path.join(install_dir, "current")
    if not os.path.islink(current):
        return {"id": ""}
    build_id = os.path.basename(os.readlink(current).rstrip("/"))
    record: dict = {}
    try:
        with open(os.path.join(install_dir, build_id, "BUILD-INFO.json"), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        pass
    return {**record, "id": build_id}


def gpus(module: AnsibleModule, problems: list[str]) -> list[dict]:
    smi = module.get_bin_path("nvidia-smi")
    if not smi:
        problems.append("nvidia-smi is not installed")
        return []
    query = ["--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run([smi, *query], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        problems.append(f"nvidia-smi did not answer: {exc}")
        return []
    if done.returncode != 0:
        problems.append(f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:300]}")
        return []
    found = []
    for line in done.stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 4 and fields[0].isdigit():
            used = int(fields[2]) if fields[2].isdigit() else None
            total = int(fields[3]) if fields[3].isdigit() else None
            found.append({"index": int(fields[0]), "name": fields[1], "used_mib": used, "total_mib": total})
    return found


def tuning(path: str) -> dict[str, float]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return samples(handle.read())
    except OSError:
        return {}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "api_key": {"type": "str", "required": True, "no_log": True},
            "exporter_url": {"type": "str", "default": ""},
            "install_dir": {"type": "path", "required": True},
            "tuning_textfile": {"type": "str", "default": ""},
            "reboot_markers": {
                "type": "list",
                "elements": "path",
                "default": ["/run/llmrig-nvidia-reboot-required", "/run/reboot-required"],
            },
            "gpus": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    params = module.params
    problems: list[str] = []
    listed = router(params, problems)
    models = listed or []
    loads = last_loads(params["exporter_url"], params["timeout"])
    for model in models:
        at, took = loads.get(model["id"], (None, None))
        model["last_load_at"], model["last_load_seconds"] = at, took
    devices = gpus(module, problems) if params["gpus"] else []
    module.exit_json(
        changed=False,
        healthy=not problems,
        router_up=listed is not None,
        problems=problems,
        models=models,
        build=build(params["install_dir"]),
        gpus=devices,
        tuning=tuning(params["tuning_textfile"]),
        reboot_pending=[path for path in params["reboot_markers"] if os.path.exists(path)],
    )


if __name__ == "__main__":
    main()
