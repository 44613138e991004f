#!/usr/bin/python
# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_file
short_description: Place a checksum-verified model file in the models directory
description:
  - Downloads a model file by URL into a staging directory, resuming a partial download with an HTTP
    range request, or takes a file already staged on the host (copied there from the controller).
  - Verifies the sha256 before the file is moved into the models directory with an atomic rename, so the
    models directory never holds a partial or unverified file.
  - Records the verified checksum, size and mtime in O(state_dir); a later run trusts that record instead
    of hashing a multi-gigabyte file again.
  - With O(state=planned) it changes nothing and reports how many bytes are still needed and how many are
    free, for a disk-space preflight.
version_added: 0.1.0
author: llmrig authors
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  dest:
    description: Final path of the model file.
    type: path
    required: true
  sha256:
    description: Expected sha256 of the file, 64 hex characters.
    type: str
    required: true
  url:
    description: HTTP(S) URL to download from. Mutually exclusive with O(src).
    type: str
  src:
    description: A file already on the host (staged copy) to verify and move into place.
    type: path
  size:
    description: Expected size in bytes, when known (used by O(state=planned) instead of a HEAD request).
    type: int
  staging_dir:
    description: Directory for partial downloads; must be on the same filesystem as O(dest) for an atomic move.
    type: path
    required: true
  state_dir:
    description: Directory for the verification records.
    type: path
    required: true
  state:
    description: C(present) places the file; C(planned) only reports bytes needed and free.
    type: str
    choices: [present, planned]
    default: present
  timeout:
    description: Socket timeout in seconds for the download.
    type: int
    default: 60
extends_documentation_fragment:
  - ansible.builtin.files
"""

EXAMPLES = r"""
- name: Download and verify a model
  llmrig.serving.model_file:
    dest: /var/lib/llmrig/models/qwen.gguf
    url: https://example.org/qwen.gguf
    sha256: "{{ '0' * 64 }}"
    staging_dir: /var/lib/llmrig/staging
    state_dir: /var/lib/llmrig/verified
    owner: root
    group: llmrig
    mode: "0640"
"""

RETURN = r"""
sha256:
  description: The verified sha256.
  returned: state=present
  type: str
action:
  description: What was done, one of C(verified-record), C(verified-existing), C(downloaded), C(installed-staged).
  returned: state=present
  type: str
needed_bytes:
  description: Bytes still to transfer or copy for this file (0 when it is in place and verified).
  returned: state=planned
  type: int
in_place:
  description: Whether the file is in place and its verification record matches.
  returned: state=planned
  type: bool
free_bytes:
  description: Free bytes on the filesystem of O(staging_dir).
  returned: always
  type: int
"""

import hashlib
import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

CHUNK = 4 * 1024 * 1024


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "sha256": {"type": "str", "required": True},
            "url": {"type": "str"},
            "src": {"type": "path"},
            "size": {"type": "int"},
            "staging_dir": {"type": "path", "required": True},
            "state_dir": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "planned"], "default": "present"},
            "timeout": {"type": "int", "default": 60},
        },
        mutually_exclusive=[("url", "src")],
        required_one_of=[("url", "src")],
        add_file_common_args=True,
        supports_check_mode=True,
    )


def file_sha256(path: str, hasher=None) -> str:
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def record_path(module: AnsibleModule) -> str:
    return os.path.join(module.params["state_dir"], os.path.basename(module.params["dest"]) + ".json")


def record_matches(module: AnsibleModule) -> bool:
    """True when dest exists and the stored record says it was verified with this sha256 as it is now."""
    dest = module.params["dest"]
    try:
        with open(record_path(module), encoding="utf-8") as handle:
            record = json.load(handle)
        stat = os.stat(dest)
    except (OSError, ValueError):
        return False
    return record == {"sha256": module.params["sha256"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_record(module: AnsibleModule) -> None:
    stat = os.stat(module.params["dest"])
    record = {"sha256": module.params["sha256"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    tmp = record_path(module) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(tmp, record_path(module))


def remote_size(module: AnsibleModule) -> int | None:
    if module.params["size"] is not None:
        return module.params["size"]
    if not module.params["url"]:
        return None
    response = open_url(module.params["url"], method="HEAD", timeout=module.params["timeout"], follow_redirects="all")
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(module: AnsibleModule, partial: str) -> str:
    """Fetch the URL into `partial`, resuming what is there; return the sha256 of the whole file."""
    hasher = hashlib.sha256()
    offset = os.path.getsize(partial) if os.path.exists(partial) else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = open_url(
            module.params["url"], headers=headers, timeout=module.params["timeout"], follow_redirects="all"
        )
    except Exception as exc:  # noqa: BLE001 - open_url raises several unrelated types
        if offset and getattr(exc, "code", None) == 416:
            return file_sha256(partial, hasher)  # the partial file is already complete
        module.fail_json(msg=f"download of {module.params['url']} failed: {exc}")
    if offset and response.status == 206:
        file_sha256(partial, hasher)
        mode = "ab"
    else:
        mode = "wb"
    with open(partial, mode) as handle:
        for block in iter(lambda: response.read(CHUNK), b""):
            handle.write(block)
            hasher.update(block)
    return hasher.hexdigest()


def move_into_place(module: AnsibleModule, source: str, keep_source: bool) -> None:
    dest = module.params["dest"]
    file_args = module.load_file_common_arguments(module.params, path=source)
    module.set_fs_attributes_if_different(file_args, False)
    if keep_source:
        tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".incoming")
        shutil.copy2(source, tmp)
        module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params, path=tmp), False)
        os.replace(tmp, dest)
        return
    try:
        os.replace(source, dest)
    except OSError:
        # staging on another filesystem: copy beside dest under a hidden name, then rename atomically
        move_into_place(module, source, keep_source=True)
        os.unlink(source)


def disk_usage(path: str):
    """Usage of the filesystem that holds `path`, or its nearest existing parent (first run)."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path)


def main() -> None:
    module = build_module()
    params = module.params
    params["sha256"] = params["sha256"].lower()
    dest = params["dest"]
    usage = disk_usage(params["staging_dir"])
    if params["state"] == "planned":
        needed = 0
        in_place = record_matches(module)
        if not in_place:
            total = remote_size(module)
            partial = os.path.join(params["staging_dir"], os.path.basename(dest) + ".part")
            have = os.path.getsize(partial) if params["url"] and os.path.exists(partial) else 0
            needed = max((total or 0) - have, 0)
        module.exit_json(changed=False, in_place=in_place, needed_bytes=needed, free_bytes=usage.free)

    if record_matches(module):
        file_args = module.load_file_common_arguments(module.params)
        changed = module.set_fs_attributes_if_different(file_args, False)
        module.exit_json(changed=changed, sha256=params["sha256"], action="verified-record", free_bytes=usage.free)

    if os.path.exists(dest) and file_sha256(dest) == params["sha256"]:
        if not module.check_mode:
            file_args = module.load_file_common_arguments(module.params)
            module.set_fs_attributes_if_different(file_args, False)
            write_record(module)
        module.exit_json(changed=True, sha256=params["sha256"], action="verified-existing", free_bytes=usage.free)

    if module.check_mode:
        module.exit_json(changed=True, sha256=params["sha256"], action="would-install", free_bytes=usage.free)

    if params["url"]:
        partial = os.path.join(params["staging_dir"], os.path.basename(dest) + ".part")
        actual = download(module, partial)
        action = "downloaded"
    else:
        partial = params["src"]
        if not os.path.exists(partial):
            module.fail_json(msg=f"staged file {partial} does not exist")
        actual = file_sha256(partial)
        action = "installed-staged"
    if actual != params["sha256"]:
        os.unlink(partial)
        module.fail_json(
            msg=(
                f"sha256 mismatch for {os.path.basename(dest)}: expected {params['sha256']}, got {actual}; "
                f"the staged file was removed and {dest} was left as it was"
            ),
            expected=params["sha256"],
            actual=actual,
        )
    move_into_place(module, partial, keep_source=False)
    write_record(module)
    module.exit_json(changed=True, sha256=actual, action=action, free_bytes=usage.free)


if __name__ == "__main__":
    main()
