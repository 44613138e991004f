#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_plan
short_description: Validate the llmrig fleet once and resolve it into the plan every role consumes
description:
  - Validates every fleet entry (unknown fields, sources, sha256 format, duplicate names and aliases,
    numeric fields, choices) and fails with one message naming the entry and the field.
  - When GPUs (or the host's RAM) are given, plans each entry's memory per device from the model's GGUF
    metadata and tensor table (read with the C(gguf) package from the local file or, for a URL source, with
    HTTP range requests before anything is downloaded). Fails naming the entry, the field, the device, the
    shortfall and what would fit; checks C(tensor_split) and C(main_gpu) against the GPUs; resolves
    C(context=max) to the largest context that fits.
  - Returns the resolved fleet - entries, the unique files the host needs, each model's llama-server preset
    options, C(models_max) and C(fit) - that the models, gateway and monitoring roles render from.
  - Changes nothing on any host; run it on the controller (C(delegate_to=localhost)).
version_added: 0.2.0
author: llmrig authors
requirements:
  - gguf (Python package) on the controller, when GPUs are given
options:
  fleet:
    description: The fleet, a list of model entries (see group_vars/all/fleet.yml).
    type: list
    elements: raw
    required: true
  overrides:
    description:
      - Per host, fields of fleet entries that replace the fleet's, a mapping of entry name to a mapping of
        field to value (a mapping field is merged one level deep), validated with the entry. The tuned values
        of playbooks/tune.yml come this way too.
    type: dict
    default: {}
  promoted:
    description:
      - Per host, promotions written by playbooks/promote.yml, a mapping of incumbent name to candidate name,
        applied after the overrides; the candidate takes the incumbent's name and aliases, the incumbent
        serves as <name>--previous.
    type: dict
    default: {}
  models_dir:
    description: Directory on the host that holds the model files; used for the paths in the presets.
    type: path
    required: true
  gpus:
    description:
      - The devices, each C(name), C(memory_mib) (total memory) and optionally C(overhead_mib) (fixed per model
        process; default I(overhead_mib)); one device with C(host_memory=true) stands for a CPU build's RAM.
      - Empty - the fleet is validated but not planned (llama-server's load-time fitting stays on).
    type: list
    elements: dict
    default: []
  host:
    description: The host planned for; named in a message about a model that does not fit.
    type: str
    default: ""
  inventory:
    description:
      - The inventory's groups (Ansible's C(groups)). When given, entries with C(hosts) are placed - the host
        serves an entry without C(hosts), or one whose C(hosts) name it or a group it is in.
      - Empty - every entry is the host's.
    type: dict
    default: {}
  servers:
    description: The inference hosts; an entry's C(hosts) must take in at least one of them.
    type: list
    elements: str
    default: []
  margin_mib:
    description: Memory kept free on every GPU.
    type: int
    default: 512
  overhead_mib:
    description: Fixed memory of each model process on each GPU it uses (CUDA context, cuBLAS).
    type: int
    default: 600
  host_ram_mib:
    description:
      - The host's RAM in MiB, against which the files of C(keep_cached) entries are checked; 0 when unknown
        (then an entry that keeps its files fails).
    type: int
    default: 0
  ram_reserve_mib:
    description: RAM the files kept in the page cache must leave to the system and the services.
    type: int
    default: 4096
  cache_dir:
    description: Controller directory where parsed GGUF metadata is kept by sha256; empty for none.
    type: path
  json_path:
    description: Also write the plan as JSON to this controller path.
    type: path
extends_documentation_fragment:
  - llmrig.serving.attributes
"""

EXAMPLES = r"""
- name: Resolve the fleet for two 16 GB GPUs
  llmrig.serving.fleet_plan:
    fleet: "{{ llmrig_fleet }}"
    models_dir: /var/lib/llmrig/models
    gpus:
      - {name: RTX 4080 SUPER, memory_mib: 16376}
      - {name: RTX 4080 SUPER, memory_mib: 16376}
  delegate_to: localhost
  register: __plan
"""

RETURN = r"""
fleet:
  description: Validated entries, C(context) resolved to tokens (sources carry C(file), C(sha256), C(url) or C(path)).
  returned: success
  type: list
  elements: dict
files:
  description: Unique files the host needs, each with C(file), C(sha256) and C(url) or C(path).
  returned: success
  type: list
  elements: dict
names:
  description: Model ids clients can send, in fleet order (aliases not included).
  returned: success
  type: list
  elements: str
presets:
  description: Per model, C(name) and C(options), the llama-server preset lines as [option, value] pairs.
  returned: success
  type: list
  elements: dict
planned:
  description: Whether the fleet was planned (GPUs or host RAM were given).
  returned: success
  type: bool
fit:
  description: Whether llama-server's load-time fitting should stay on (true when the fleet is not planned).
  returned: success
  type: bool
models_max:
  description: How many models fit on the GPUs together whichever they are (a safe C(--models-max)); 1 unplanned.
  returned: success
  type: int
page_cache:
  description:
    - The files of C(keep_cached) entries, C(files) (name to MiB) and C(kept_mib), with C(available_mib) (what
      the host's RAM leaves them) when there are any.
  returned: success
  type: dict
plan:
  description: Per model and GPU, the planned MiB of each component, the total and what is left free; null unplanned.
  returned: success
  type: dict
table:
  description: The plan as text, one line per model and GPU.
  returned: success
  type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import (
    FleetError,
    apply_overrides,
    apply_promotions,
    entry_label,
    fleet_files,
    place,
    preset_options,
    validate_fleet,
)
from ansible_collections.llmrig.serving.plugins.module_utils._gguf import load_metas
from ansible_collections.llmrig.serving.plugins.module_utils._plan import (
    Gpu,
    PlanError,
    page_cache_budget,
    plan_fleet,
    table,
)

UNPLANNED = "no GPUs known and no host-memory planning: the fleet is not planned (llama.cpp --fit stays on)"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "fleet": {"type": "list", "elements": "raw", "required": True},
            "overrides": {"type": "dict", "default": {}},
            "promoted": {"type": "dict", "default": {}},
            "models_dir": {"type": "path", "required": True},
            "gpus": {"type": "list", "elements": "dict", "default": []},
            "margin_mib": {"type": "int", "default": 512},
            "overhead_mib": {"type": "int", "default": 600},
            "host_ram_mib": {"type": "int", "default": 0},
            "ram_reserve_mib": {"type": "int", "default": 4096},
            "cache_dir": {"type": "path"},
            "json_path": {"type": "path"},
            "host": {"type": "str", "default": ""},
            "inventory": {"type": "dict", "default": {}},
            "servers": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    for index, gpu in enumerate(params["gpus"]):
        if not isinstance(gpu.get("memory_mib"), int) or gpu["memory_mib"] <= 0:
            module.fail_json(msg=f"gpus[{index}]: memory_mib must be a positive integer, got {gpu.get('memory_mib')!r}")
    gpus = [Gpu.from_dict(gpu, params["overhead_mib"]) for gpu in params["gpus"]]
    try:
        merged = apply_overrides(params["fleet"], params["overrides"])
        entries = validate_fleet(apply_promotions(merged, params["promoted"]))
        if params["inventory"]:
            entries = place(entries, params["host"], params["inventory"], params["servers"])
    except FleetError as exc:
        module.fail_json(msg=str(exc), entry=exc.entry, field=exc.field)
    plan = None
    page_cache: dict = {"files": {}, "kept_mib": 0}
    if gpus or any(entry.get("keep_cached") for entry in entries):
        try:
            metas = load_metas(entries, params["cache_dir"])
        except ImportError:
            module.fail_json(msg=missing_required_lib("gguf"))
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(msg=f"reading the models' GGUF metadata: {exc}")
        try:
            planned = plan_fleet(entries, metas, gpus, params["margin_mib"]) if gpus else None
            page_cache = page_cache_budget(entries, metas, params["host_ram_mib"], params["ram_reserve_mib"], planned)
        except PlanError as exc:
            # several hosts plan the same fleet: the message says which one the entry does not fit
            if params["host"]:
                exc = PlanError(exc.entry, exc.field, f"on host {params['host']}: {exc.reason}")
            module.fail_json(msg=str(exc), entry=exc.entry, field=exc.field)
        if planned is not None:
            plan = planned.to_dict()
            for entry, model in zip(entries, plan["models"], strict=True):
                entry["context"] = model["context"]
    for index, entry in enumerate(entries):
        if entry["context"] == "max":
            error = FleetError(
                entry_label(index, entry["name"]), "context", "max needs a plan: give the planner GPUs or host RAM"
            )
            module.fail_json(msg=str(error), entry=error.entry, field=error.field)
    if plan is not None and params["json_path"] and not module.check_mode:
        os.makedirs(os.path.dirname(params["json_path"]) or ".", exist_ok=True)
        with open(params["json_path"], "w", encoding="utf-8") as handle:
            json.dump(plan, handle, indent=2)
    module.exit_json(
        changed=False,
        fleet=entries,
        files=fleet_files(entries),
        names=[entry["name"] for entry in entries],
        presets=[
            {"name": entry["name"], "options": [list(pair) for pair in preset_options(entry, params["models_dir"])]}
            for entry in entries
        ],
        planned=plan is not None,
        fit=plan is None,
        models_max=plan["models_max"] if plan else 1,
        plan=plan,
        page_cache=page_cache,
        table=table(plan) if plan else UNPLANNED,
    )


if __name__ == "__main__":
    main()
