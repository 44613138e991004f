#!/usr/bin/env bash
# Run a command (the playbook) and, while it runs, print the llama.cpp build's progress from inside the
# container every 15 s: Ansible itself shows nothing until a multi-minute compile task ends.
set -euo pipefail
container=$1
shift
(
  last=""
  while sleep 15; do
    line=$(podman exec "$container" sh -c 'tail -n 1 /var/cache/llmrig/llama.cpp-build/*/build.log 2>/dev/null' \
      2>/dev/null | grep -o '^\[ *[0-9]*%\].*' | cut -c1-100 || true)
    if [ -n "$line" ] && [ "$line" != "$last" ]; then
      echo "    llama.cpp build: $line" >&2
      last=$line
    fi
  done
) &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT
"$@"
