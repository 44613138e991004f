#!/usr/bin/env bash
# Send one real completion through the demo endpoint and show the curl command a user would type.
set -euo pipefail
url=$1
key=$(cat "$2")
prompt="The capital of France is"
for _ in $(seq 60); do
  curl -sf "$url/health" >/dev/null && break
  sleep 1
done
body=$(printf '{"model": "gemma-a", "prompt": "%s", "max_tokens": 12, "temperature": 0}' "$prompt")
answer=$(curl -sS --fail-with-body "$url/v1/completions" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d "$body")
text=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["text"].strip())' <<<"$answer")
tokens=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["usage"]["completion_tokens"])' <<<"$answer")
cat <<MSG

The endpoint answered (model gemma-a, $tokens tokens):
  $prompt $text

Try it yourself (the key is in $2):
  curl $url/v1/completions \\
    -H "Authorization: Bearer \$(cat $2)" -H 'Content-Type: application/json' \\
    -d '$body'

List the models:     curl -H "Authorization: Bearer \$(cat $2)" $url/v1/models
OpenAI clients:      base_url=$url/v1  api_key=\$(cat $2)
What it is doing:    bin/llmrig status -i inventory/demo
Remove the demo:     make demo-down
MSG
