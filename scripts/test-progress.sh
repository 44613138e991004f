#!/usr/bin/env bash
# make test's progress while the Molecule scenarios run side by side (make prints each one's output only when
# it ends): every LLMRIG_PROGRESS_SECONDS (120), one line per scenario whose log has been written since this
# started, with its Molecule action and the task or test it is at. Usage: test-progress.sh SCENARIO...
set -uo pipefail
cd "$(dirname "$0")/.."
interval=${LLMRIG_PROGRESS_SECONDS:-120}
started=$(date +%s)
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
while sleep "$interval"; do
  for scenario in "$@"; do
    log=.cache/molecule-$scenario.log
    [ -f "$log" ] && [ "$(stat -c %Y "$log")" -ge "$started" ] || continue
    grep -aq "SCENARIO RECAP" "$log" && continue
    action=$(strip <"$log" | grep -a "➜ [a-z]*: Executing" | tail -1 | sed 's/.*➜ \([a-z]*\):.*/\1/')
    at=$(strip <"$log" | grep -a -E "TASK \[|::test_" | tail -1 | sed 's/^[ │]*//' | cut -c1-90)
    printf '[%s +%dm] %s: %s, %s\n' "$(date -u +%T)" $((($(date +%s) - started) / 60)) "$scenario" \
      "${action:-starting}" "${at:-...}"
  done
done
