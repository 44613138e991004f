#!/usr/bin/env bash
# Repeats what failed in a Molecule run at the very end of its output, where a short CI log tail shows it:
# pytest's summary lines of failed tests, the first assertion lines, and a failed Ansible task's name.
set -uo pipefail
log=${1:?usage: molecule-failures.sh LOG}
plain=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log")
echo "==== what failed in $log ===="
grep -E '^(FAILED|ERROR) ' <<<"$plain" | cut -c1-400 | head -20
grep -E '^E ' <<<"$plain" | cut -c1-300 | head -25
grep -E -B1 '^fatal: |^failed: ' <<<"$plain" | cut -c1-400 | head -12
grep -E '^[0-9.]+s (call|setup|teardown) ' <<<"$plain" | head -12
exit 0
