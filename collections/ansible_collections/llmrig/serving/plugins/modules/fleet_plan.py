#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_plan
short_description: Plan the VRAM every llmrig fleet entry needs on each GPU, and fail if one does not fit
description:
  - Reads each model's GGUF metadata and tensor table with the C(gguf) package, from the local file or,
    for a URL source, with HTTP range requests before anything is downloaded.
  - Computes per GPU the weights, KV cache, recurrent state, compute buffer and per-process overhead of each
    entry at its full context, and fails naming the entry, the GPU, the shortfall and the largest context
    (or a cheaper KV cache type) that would fit.
  - Also returns how many models fit together (the largest safe C(--models-max)) and which pairs do.
  - Changes nothing on any host; run it on the controller (C(delegate_to: localhost)).
version_added: 0.2.0
author: llmrig authors
requirements:
  - gguf (Python package) on the controller
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  fleet:
    description: The fleet, a list of model entries (see group_vars/all/fleet.yml).
    type: list
    elements: raw
    required: true
  gpus:
    description:
      - The GPUs, each C(name), C(memory_mib) (total memory) and optionally C(overhead_mib) (fixed per model
        process; default I(overhead_mib)).
    type: list
    elements: dict
    required: true
  margin_mib:
    description: Memory kept free on every GPU.
    type: int
    default: 512
  overhead_mib:
    description: Fixed memory of each model process on each GPU it uses (CUDA context, cuBLAS).
    type: int
    default: 600
  cache_dir:
    description: Controller directory where parsed GGUF metadata is kept by sha256; empty for none.
    type: path
  json_path:
    description: Also write the plan as JSON to this controller path.
    type: path
"""

EXAMPLES = r"""
- name: Plan the fleet on two 16 GB GPUs
  llmrig.serving.fleet_plan:
    fleet: "{{ llmrig_fleet }}"
    gpus:
      - {name: RTX 4080 SUPER, memory_mib: 16376}
      - {name: RTX 4080 SUPER, memory_mib: 16376}
  delegate_to: localhost
  register: __plan
"""

RETURN = r"""
plan:
  description: Per model and GPU, the planned MiB of each component, the total and what is left free.
  returned: success
  type: dict
table:
  description: The plan as text, one line per model and GPU.
  returned: success
  type: str
models_max:
  description: How many models fit on the GPUs together whichever they are (a safe C(--models-max)).
  returned: success
  type: int
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import FleetError, validate_fleet
from ansible_collections.llmrig.serving.plugins.module_utils._vram import (
    PlanError,
    load_metas,
    plan_fleet,
    table,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "fleet": {"type": "list", "elements": "raw", "required": True},
            "gpus": {"type": "list", "elements": "dict", "required": True},
            "margin_mib": {"type": "int", "default": 512},
            "overhead_mib": {"type": "int", "default": 600},
            "cache_dir": {"type": "path"},
            "json_path": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    gpus = []
    for index, gpu in enumerate(params["gpus"]):
        if not isinstance(gpu.get("memory_mib"), int) or gpu["memory_mib"] <= 0:
            module.fail_json(msg=f"gpus[{index}]: memory_mib must be a positive integer, got {gpu.get('memory_mib')!r}")
        gpus.append({"overhead_mib": params["overhead_mib"], **gpu})
    if not gpus:
        module.fail_json(msg="gpus: at least one GPU is needed to plan")
    try:
        entries = validate_fleet(params["fleet"])
    except FleetError as exc:
        module.fail_json(msg=str(exc), entry=exc.entry, field=exc.field)
    try:
        metas = load_metas(entries, params["cache_dir"])
    except ImportError:
        module.fail_json(msg=missing_required_lib("gguf"))
    except (OSError, ValueError, KeyError) as exc:
        module.fail_json(msg=f"reading the models' GGUF metadata: {exc}")
    try:
        plan = plan_fleet(entries, metas, gpus, params["margin_mib"])
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    if params["json_path"] and not module.check_mode:
        os.makedirs(os.path.dirname(params["json_path"]) or ".", exist_ok=True)
        with open(params["json_path"], "w", encoding="utf-8") as handle:
            json.dump(plan, handle, indent=2)
    module.exit_json(changed=False, plan=plan, table=table(plan), models_max=plan["models_max"])


if __name__ == "__main__":
    main()
