"""`llmrig status` (bin/llmrig status, or PYTHONPATH=tools python -m llmrig_status):

    llmrig status [-i INVENTORY] [-l LIMIT] [--json] [-- ANSIBLE-PLAYBOOK OPTIONS]

runs playbooks/status.yml on the inference hosts (read-only, check mode), with the vault as every playbook
reads it (ansible.cfg, or `-- --vault-password-file F`), and prints one compact table per host. Exit status:
0 when every host is healthy, 1 when one is unreachable or unhealthy, 2 when the playbook could not run at
all (its own output is then printed)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .report import hosts, parse, table

ROOT = Path(__file__).resolve().parents[2]


def ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook") or "ansible-playbook"


def run(args: argparse.Namespace) -> tuple[int, str, str]:
    command = [ansible_playbook(), str(ROOT / "playbooks/status.yml")]
    for inventory in args.inventory or []:
        command += ["-i", inventory]
    if args.limit:
        command += ["-l", args.limit]
    command += args.ansible
    environment = {
        **os.environ,
        "ANSIBLE_CONFIG": os.environ.get("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg")),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrig", description="llmrig on the controller")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="what every inference host is doing now")
    status.add_argument("-i", "--inventory", action="append", help="inventory, repeatable (default: ansible.cfg's)")
    status.add_argument("-l", "--limit", help="only these hosts (an Ansible pattern)")
    status.add_argument("--json", action="store_true", help="print each host's status as JSON")
    status.add_argument("ansible", nargs="*", help="more ansible-playbook options, after --")
    args = parser.parse_args(argv)
    returncode, stdout, stderr = run(args)
    record = parse(stdout)
    if record is None:
        sys.stderr.write(stdout + stderr)
        print(f"llmrig status: ansible-playbook exited {returncode} without a result", file=sys.stderr)
        return 2
    found = hosts(record)
    if not found:
        sys.stderr.write(stderr)
        print("llmrig status: the inventory has no host in llm_servers", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **(s.report or {}),
                        "host": s.host,
                        "healthy": s.healthy,
                        "reachable": s.reachable,
                        "problems": s.problems,
                    }
                    for s in found
                ],
                indent=2,
            )
        )
    else:
        for index, host in enumerate(found):
            if index:
                print()
            print("\n".join(table(host)))
    return 0 if all(host.healthy for host in found) else 1


if __name__ == "__main__":
    sys.exit(main())
