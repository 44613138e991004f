#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_validate
short_description: Validate the llmrig model fleet and render llama-server presets
description:
  - Checks every fleet entry (unknown fields, sources, sha256 format, duplicate names and aliases,
    numeric fields, choices) and fails with one message naming the entry and the field.
  - Returns the normalised fleet, the unique model files it needs and the C(--models-preset) INI text.
  - Changes nothing; run it on the controller (C(delegate_to: localhost)) before any host task.
version_added: 0.1.0
author: llmrig authors
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
  models_dir:
    description: Directory on the host that holds the model files; used for paths in the presets.
    type: path
    required: true
  global_options:
    description: Options for the presets' C([*]) section, applied to every model.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Validate the fleet
  llmrig.serving.fleet_validate:
    fleet: "{{ llmrig_fleet }}"
    models_dir: /var/lib/llmrig/models
  delegate_to: localhost
  register: __fleet
"""

RETURN = r"""
fleet:
  description: Normalised entries (sources carry C(file), C(sha256) and C(url) or C(path)).
  returned: success
  type: list
  elements: dict
files:
  description: Unique files the host needs, each with C(file), C(sha256) and C(url) or C(path).
  returned: success
  type: list
  elements: dict
presets_ini:
  description: Text of the llama-server C(--models-preset) file.
  returned: success
  type: str
names:
  description: Model ids clients can send, in fleet order (aliases not included).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import (
    FleetError,
    fleet_files,
    render_presets,
    validate_fleet,
)


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec={
            "fleet": {"type": "list", "elements": "raw", "required": True},
            "models_dir": {"type": "path", "required": True},
            "global_options": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )


def main() -> None:
    module = build_module()
    try:
        entries = validate_fleet(module.params["fleet"])
        presets = render_presets(entries, module.params["models_dir"], module.params["global_options"])
    except FleetError as exc:
        module.fail_json(msg=str(exc), entry=exc.entry, field=exc.field)
    except ValueError as exc:
        module.fail_json(msg=f"llmrig_gateway_global_options: {exc}")
    module.exit_json(
        changed=False,
        fleet=entries,
        files=fleet_files(entries),
        presets_ini=presets,
        names=[entry["name"] for entry in entries],
    )


if __name__ == "__main__":
    main()
