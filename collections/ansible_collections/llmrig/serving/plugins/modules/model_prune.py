#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_prune
short_description: Remove model files, records and partial downloads the fleet no longer needs
description:
  - Removes from O(models_dir) every file that is not one of O(keep) (with O(models=true)), from
    O(state_dir) the verification record of every file that is no longer in O(models_dir), and from
    O(staging_dir) every partial download whose sha256 is not kept, every staged copy of a file that is not
    kept and what an interrupted upload left there.
  - Only the top level of each directory is looked at; directories other than the upload scratch space are
    left alone.
  - In check mode it removes nothing and reports what it would remove and how many bytes that frees, which
    the disk-space preflight counts as free.
version_added: 0.3.1
author: llmrig authors
options:
  models_dir:
    description: Directory of verified model files.
    type: path
    required: true
  staging_dir:
    description: Directory of partial downloads and staged copies.
    type: path
    required: true
  state_dir:
    description: Directory of verification records.
    type: path
    required: true
  keep:
    description: The files the fleet needs, each with C(file) and C(sha256).
    type: list
    elements: dict
    required: true
  models:
    description: Also remove model files that are not kept (otherwise only records, partials and staged copies).
    type: bool
    default: true
  scratch:
    description: Name of the upload scratch directory inside O(staging_dir); what is in it is removed.
    type: str
    default: .ansible-tmp
extends_documentation_fragment:
  - llmrig.serving.attributes
"""

EXAMPLES = r"""
- name: Remove what the fleet no longer needs
  llmrig.serving.model_prune:
    models_dir: /var/lib/llmrig/models
    staging_dir: /var/lib/llmrig/staging
    state_dir: /var/lib/llmrig/verified
    keep: "{{ llmrig_planner_plan.files }}"
"""

RETURN = r"""
removed:
  description: Paths removed (or, in check mode, that would be removed).
  returned: always
  type: list
  elements: str
freed_bytes:
  description: Bytes those paths held.
  returned: always
  type: int
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def _files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names if os.path.isfile(os.path.join(directory, name))]


def _tree_size(path: str) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        total += sum(
            os.path.getsize(os.path.join(root, name)) for name in names if os.path.isfile(os.path.join(root, name))
        )
    return total


def unwanted(params: dict) -> list[tuple[str, int]]:
    """Paths to remove and their sizes."""
    keep_files = {item["file"] for item in params["keep"]}
    keep_shas = {str(item["sha256"]).lower() for item in params["keep"]}
    found: list[tuple[str, int]] = []
    models = _files(params["models_dir"])
    if params["models"]:
        models_left = set()
        for path in models:
            if os.path.basename(path) in keep_files:
                models_left.add(os.path.basename(path))
            else:
                found.append((path, os.path.getsize(path)))
    else:
        models_left = {os.path.basename(path) for path in models}
    for path in _files(params["state_dir"]):
        name = os.path.basename(path)
        if not (name.endswith(".json") and name[: -len(".json")] in models_left):
            found.append((path, os.path.getsize(path)))
    for path in _files(params["staging_dir"]):
        name = os.path.basename(path)
        partial_of = name[: -len(".part")] if name.endswith(".part") else None
        if (partial_of is not None and partial_of in keep_shas) or (partial_of is None and name in keep_files):
            continue
        found.append((path, os.path.getsize(path)))
    scratch = os.path.join(params["staging_dir"], params["scratch"])
    if params["scratch"] and os.path.isdir(scratch):
        # what interrupted uploads left; the directory itself stays for the next upload
        for name in sorted(os.listdir(scratch)):
            path = os.path.join(scratch, name)
            found.append((path, _tree_size(path) if os.path.isdir(path) else os.path.getsize(path)))
    return found


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "models_dir": {"type": "path", "required": True},
            "staging_dir": {"type": "path", "required": True},
            "state_dir": {"type": "path", "required": True},
            "keep": {"type": "list", "elements": "dict", "required": True},
            "models": {"type": "bool", "default": True},
            "scratch": {"type": "str", "default": ".ansible-tmp"},
        },
        supports_check_mode=True,
    )
    for item in module.params["keep"]:
        if "file" not in item or "sha256" not in item:
            module.fail_json(msg=f"keep: every item needs file and sha256, got {sorted(item)}")
    found = unwanted(module.params)
    if not module.check_mode:
        for path, _size in found:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    module.exit_json(
        changed=bool(found), removed=[path for path, _size in found], freed_bytes=sum(size for _path, size in found)
    )


if __name__ == "__main__":
    main()
