#!/usr/bin/env bash
# Repeats what failed in a Molecule run at the very end of its output, where a short CI log tail shows it:
# pytest's short test summary, the first assertion lines, and failed Ansible tasks. Molecule indents what
# its steps print behind "│" and wraps long lines; both are undone before searching.
set -uo pipefail
log=${1:?usage: molecule-failures.sh LOG}
plain=$(sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[[:space:]]*│ \{0,1\}//' "$log")
echo "==== what failed in $log ===="
awk '/short test summary info/ {on = 1} on {print} on && /(failed|error).* in [0-9.]+s/ {exit}' <<<"$plain" \
  | cut -c1-300 | head -30
grep -E '^E ' <<<"$plain" | cut -c1-300 | head -25
grep -E -B1 '^(fatal|failed): ' <<<"$plain" | grep -v 'FAILED - RETRYING' | cut -c1-300 | head -12
exit 0
