#!/usr/bin/env bash
# Prove the top-level group_vars/ reaches every inventory's hosts (through each inventory's group_vars
# symlink) and that every playbook parses. Fails when llmrig_fleet or the sentinel is missing on a host.
set -euo pipefail
status=0
for inventory in inventory/*/; do
  inventory=${inventory%/}
  for host in $(ansible-inventory -i "$inventory" --playbook-dir playbooks --list | python3 -c \
      'import json, sys; d = json.load(sys.stdin); print(" ".join(d["_meta"]["hostvars"]))'); do
    if ansible-inventory -i "$inventory" --playbook-dir playbooks --host "$host" | python3 -c \
        'import json, sys; v = json.load(sys.stdin); sys.exit(0 if v.get("llmrig_group_vars_loaded") is True and isinstance(v.get("llmrig_fleet"), list) else 1)'; then
      echo "ok: $inventory: $host gets llmrig_fleet from group_vars/"
    else
      echo "FAIL: $inventory: $host does not get llmrig_fleet from group_vars/ (is $inventory/group_vars a symlink to ../../group_vars?)" >&2
      status=1
    fi
  done
done
for playbook in playbooks/*.yml; do
  ansible-playbook -i inventory/demo --syntax-check "$playbook" >/dev/null
  echo "ok: syntax of $playbook"
done
exit $status
