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
  - The partial download is named after the sha256, so it is only ever resumed with bytes of the same file.
    A transfer that ends early, times out or is answered with the wrong range keeps the partial and fails
    with "incomplete, run again"; only a complete file whose sha256 differs is removed.
  - Verifies the sha256 before the file is moved into the models directory with an atomic rename, so the
    models directory never holds a partial or unverified file.
  - Records the verified checksum, size and mtime in O(state_dir); a later run trusts that record instead
    of hashing a multi-gigabyte file again.
  - With O(state=planned) it reports how many bytes are still needed and how many are free, for a
    disk-space preflight. A file already in place without a record is hashed then and its record written,
    so it is not counted as needed.
version_added: 0.1.0
author: llmrig authors
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
    description:
      - Expected size in bytes, when known. Used by O(state=planned) instead of asking the server, and to tell a
        cut transfer from a wrong file.
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
  needed_by:
    description:
      - "Who needs the file, for example C(fleet entry 'coder' (#2): field 'source'). Every failure message starts
        with it, so it names what to fix."
    type: str
extends_documentation_fragment:
  - llmrig.serving.attributes
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
  description:
    - What was done, one of C(verified-record), C(verified-existing), C(downloaded), C(installed-staged),
      C(would-install).
  returned: state=present
  type: str
needed_bytes:
  description: Bytes still to transfer or copy for this file (0 when it is in place and verified).
  returned: state=planned
  type: int
in_place:
  description: Whether the file is in place and verified (by its record, or hashed now).
  returned: state=planned
  type: bool
total_bytes:
  description: Size of the file (from O(size), the server, or the file in place); null when unknown.
  returned: state=planned
  type: int
free_bytes:
  description: Free bytes on the filesystem of O(staging_dir).
  returned: always
  type: int
"""

import errno
import hashlib
import http.client
import json
import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

CHUNK = 4 * 1024 * 1024
CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# what a dropped or stalled connection raises while the body is read
TRANSFER_ERRORS = (OSError, http.client.HTTPException)


class Incomplete(Exception):
    """The transfer stopped before the whole file arrived; the partial file is kept for the next run."""

    def __init__(self, why: str, total: int | None = None, disk_full: bool = False) -> None:
        super().__init__(why)
        self.total = total
        self.disk_full = disk_full


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
            "needed_by": {"type": "str"},
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


def size_of(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0


def record_path(module: AnsibleModule) -> str:
    return os.path.join(module.params["state_dir"], os.path.basename(module.params["dest"]) + ".json")


def partial_path(module: AnsibleModule) -> str:
    """Named after the content, so a partial is never resumed with another file's bytes."""
    return os.path.join(module.params["staging_dir"], module.params["sha256"] + ".part")


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


def _length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def remote_size(module: AnsibleModule) -> tuple[int | None, str]:
    """The file's size and, when it cannot be known, why. HEAD first; servers that refuse HEAD (403/405, e.g.
    signed object-store links) are asked for one byte, whose Content-Range names the total."""
    url, timeout = module.params["url"], module.params["timeout"]
    reasons = []
    try:
        response = open_url(url, method="HEAD", timeout=timeout, follow_redirects="all")
        length = _length(response)
        if length is not None:
            return length, ""
        reasons.append("HEAD gave no Content-Length")
    except (HTTPError, URLError, *TRANSFER_ERRORS) as exc:
        reasons.append(f"HEAD failed: {exc}")
    try:
        response = open_url(url, headers={"Range": "bytes=0-0"}, timeout=timeout, follow_redirects="all")
        match = CONTENT_RANGE_RE.match(response.headers.get("Content-Range") or "")
        if response.status == 206 and match and match.group(3) != "*":
            return int(match.group(3)), ""
        if response.status == 200 and _length(response) is not None:
            return _length(response), ""
        reasons.append(f"a one-byte range request gave HTTP {response.status} without a total size")
    except (HTTPError, URLError, *TRANSFER_ERRORS) as exc:
        reasons.append(f"a one-byte range request failed: {exc}")
    return None, "; ".join(reasons)


def fail(module: AnsibleModule, msg: str, **result) -> None:
    """fail_json with the message prefixed by who needs the file (needed_by)."""
    needed_by = module.params["needed_by"]
    module.fail_json(msg=f"{needed_by}: {msg}" if needed_by else msg, **result)


def _incomplete_message(module: AnsibleModule, partial: str, exc: Incomplete) -> str:
    have = size_of(partial)
    of = f" of {exc.total}" if exc.total is not None else ""
    then = (
        f"free space on the models filesystem ({have} bytes of it are the partial file {partial}, kept to "
        "resume the download) and run again"
        if exc.disk_full
        else f"the partial file {partial} was kept; run again to resume"
    )
    return f"download of {os.path.basename(module.params['dest'])} is incomplete ({have}{of} bytes): {exc}; {then}."


def _skip_matching_prefix(response, partial: str, offset: int) -> None:
    """The server ignored the range and sends the file from byte 0: its first `offset` bytes must be the
    partial's bytes (else it is another document, e.g. an error page) and are dropped."""
    with open(partial, "rb") as handle:
        left = offset
        while left:
            block = response.read(min(CHUNK, left))
            if not block:
                raise Incomplete("the server ignored the range request and its answer ended before the resume point")
            if handle.read(len(block)) != block:
                raise Incomplete(
                    "the server ignored the range request (HTTP 200) and sent content that differs from the "
                    "partial file (an error page?)"
                )
            left -= len(block)


def _open_from(module: AnsibleModule, partial: str, offset: int, total: int | None):
    """Open the URL at `offset`; return the response positioned at `offset` and the file's total size."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = open_url(
            module.params["url"], headers=headers, timeout=module.params["timeout"], follow_redirects="all"
        )
    except HTTPError as exc:
        if offset and exc.code == 416:
            return None, total  # nothing past the partial: it should be the whole file
        raise Incomplete(f"the server answered HTTP {exc.code} {exc.reason}") from exc
    except (URLError, *TRANSFER_ERRORS) as exc:
        raise Incomplete(f"could not reach {module.params['url']}: {exc}") from exc
    status = response.status
    if status == 206:
        match = CONTENT_RANGE_RE.match(response.headers.get("Content-Range") or "")
        if not match or int(match.group(1)) != offset:
            raise Incomplete(
                f"asked for bytes from {offset}, the server sent Content-Range "
                f"{response.headers.get('Content-Range')!r}"
            )
        if match.group(3) != "*":
            total = int(match.group(3))
    elif status == 200:
        length = _length(response)
        if length is not None:
            total = length
        if offset:
            _skip_matching_prefix(response, partial, offset)
    else:
        raise Incomplete(f"the server answered HTTP {status}")
    return response, total


def download(module: AnsibleModule, partial: str, total: int | None) -> str:
    """Fetch the URL into `partial`, resuming what is there; return the sha256 of the whole file.
    Raises Incomplete, with the partial kept, when the whole file did not arrive."""
    offset = size_of(partial)
    if total is not None and offset > total:
        os.unlink(partial)  # longer than the file: not a prefix of it
        offset = 0
    hasher = hashlib.sha256()
    if offset:
        file_sha256(partial, hasher)
    try:
        if total is None or offset < total:
            response, total = _open_from(module, partial, offset, total)
            if response is not None:
                _append(response, partial, hasher)
        if total is not None and size_of(partial) < total:
            raise Incomplete("the server closed the connection early")
    except TRANSFER_ERRORS as exc:  # while the body was read (the prefix check included)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise Incomplete(f"the models filesystem is full ({exc})", total, disk_full=True) from exc
        raise Incomplete(f"the transfer broke off ({exc})", total) from exc
    except Incomplete as exc:
        exc.total = total
        raise
    return hasher.hexdigest()


def _append(response, partial: str, hasher) -> None:
    # read1 returns what has arrived instead of waiting for a whole chunk, so a stall loses nothing received
    read = getattr(response, "read1", response.read)
    with open(partial, "ab") as handle:
        for block in iter(lambda: read(CHUNK), b""):
            handle.write(block)
            hasher.update(block)


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


def remove_staged_copy(module: AnsibleModule) -> None:
    """A staged copy is only needed until dest is verified."""
    src = module.params["src"]
    if src and not module.check_mode and os.path.isfile(src):
        os.unlink(src)


def adopt_existing(module: AnsibleModule, expected_size: int | None) -> bool:
    """dest holds the right bytes but has no (matching) record: write one. Sizes are compared before hashing."""
    dest = module.params["dest"]
    if not os.path.isfile(dest) or (expected_size is not None and os.path.getsize(dest) != expected_size):
        return False
    if file_sha256(dest) != module.params["sha256"]:
        return False
    if not module.check_mode:
        module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params), False)
        write_record(module)
    return True


def plan(module: AnsibleModule, free: int) -> None:
    params = module.params
    if record_matches(module):
        module.exit_json(
            changed=False, in_place=True, needed_bytes=0, total_bytes=size_of(params["dest"]), free_bytes=free
        )
    total, why = params["size"], ""
    if total is None and params["url"]:
        total, why = remote_size(module)
    if adopt_existing(module, total):
        module.exit_json(
            changed=not module.check_mode,
            in_place=True,
            needed_bytes=0,
            total_bytes=size_of(params["dest"]),
            free_bytes=free,
            action="verified-existing",
        )
    if total is None:
        fail(
            module,
            f"the size of {os.path.basename(params['dest'])} cannot be known for the disk-space check ({why}); "
            f"set source.size (bytes) in its fleet entry",
        )
    have = size_of(partial_path(module)) if params["url"] else 0
    if params["src"] and size_of(params["src"]) == total:
        have = total  # already staged in full
    module.exit_json(
        changed=False, in_place=False, needed_bytes=max(total - have, 0), total_bytes=total, free_bytes=free
    )


def main() -> None:
    module = build_module()
    params = module.params
    params["sha256"] = params["sha256"].lower()
    dest = params["dest"]
    free = disk_usage(params["staging_dir"]).free
    if params["state"] == "planned":
        plan(module, free)

    if record_matches(module):
        file_args = module.load_file_common_arguments(module.params)
        changed = module.set_fs_attributes_if_different(file_args, False)
        remove_staged_copy(module)
        module.exit_json(changed=changed, sha256=params["sha256"], action="verified-record", free_bytes=free)

    if adopt_existing(module, params["size"]):
        remove_staged_copy(module)
        module.exit_json(changed=True, sha256=params["sha256"], action="verified-existing", free_bytes=free)

    if module.check_mode:
        module.exit_json(changed=True, sha256=params["sha256"], action="would-install", free_bytes=free)

    if params["url"]:
        partial = partial_path(module)
        try:
            actual = download(module, partial, params["size"])
        except Incomplete as exc:
            fail(module, _incomplete_message(module, partial, exc), incomplete=True)
        action = "downloaded"
    else:
        partial = params["src"]
        if not os.path.exists(partial):
            fail(module, f"staged file {partial} does not exist")
        actual = file_sha256(partial)
        action = "installed-staged"
    if actual != params["sha256"]:
        received = os.path.getsize(partial)
        os.unlink(partial)
        fail(
            module,
            f"sha256 mismatch for {os.path.basename(dest)}: all {received} bytes arrived but their sha256 is "
            f"{actual}, expected {params['sha256']}; the staged file was removed and {dest} was left as it was",
            expected=params["sha256"],
            actual=actual,
        )
    move_into_place(module, partial, keep_source=False)
    write_record(module)
    module.exit_json(changed=True, sha256=actual, action=action, free_bytes=free)


if __name__ == "__main__":
    main()
