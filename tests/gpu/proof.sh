#!/usr/bin/env bash
# GPU proof run: on a host whose NVIDIA driver is already installed, with no network.
#  1. writes two synthetic GGUF models of a realistic shape (tests/gpu/make_synthetic_gguf.py)
#  2. builds llama.cpp for CUDA through the llmrig_llamacpp role from a source archive, and renders the
#     gateway (presets from a fleet of the two models) through the other roles (tests/gpu/proof.yml)
#  3. starts the gateway with the command the systemd unit would run, and measures through it
#     (tests/gpu/measure.py): memory used on the GPU while a model is loaded, decode tokens/s, cold swaps,
#     and the values the GPU tuning CLI reads (status only: nothing is changed on the GPU)
#  4. compares the VRAM planner's figure for each model with nvidia-smi (tests/gpu/compare_plan.py); run it
#     with CONTEXT=32768 and CONTEXT=131072 for the planner's GPU accuracy figures
# Usage (as root, from the repository root):
#   WHEELS=dir-with-ansible-core-and-gguf-wheels SOURCE_ARCHIVE=llama_cpp_python-0.3.36.tar.gz \
#     OUT=results-dir tests/gpu/proof.sh
# BACKEND=cpu and smaller SHAPE_* values run the same steps on a CPU host (a smoke test of the script).
# TOOLKIT=pypi CUDA_WHEELS=dir builds with NVIDIA's toolkit wheels from that directory (make cuda-build-check
# downloads them to .cache/wheels/cuda) instead of the host's nvcc: a GPU host without internet and without a
# CUDA toolkit builds too.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/llmrig-proof}
work=${WORK:-/var/tmp/llmrig-proof}
backend=${BACKEND:-cuda}
port=${PORT:-18180}
shape_a=${SHAPE_A:---layers 32 --width 4096 --ffn 14336 --heads 32 --kv-heads 8 --vocab 32000}
shape_b=${SHAPE_B:---layers 24 --width 4096 --ffn 14336 --heads 32 --kv-heads 8 --vocab 32000}
context=${CONTEXT:-32768}
mkdir -p "$out" "$work/models" "$work/cache"
exec > >(tee "$out/proof.log") 2>&1

echo "== host"
date -u +%Y-%m-%dT%H:%M:%SZ
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv || echo "no nvidia-smi"

echo "== controller tools (offline wheels)"
python3 -m venv --system-site-packages "$work/venv"
if [ -n "${WHEELS:-}" ]; then
  "$work/venv/bin/pip" install -q --no-index --find-links "$WHEELS" ansible-core gguf
fi
export PATH="$work/venv/bin:$PATH" ANSIBLE_CONFIG="$repo/ansible.cfg" ANSIBLE_ROLES_PATH="$repo/roles"
ansible --version | head -1

echo "== synthetic models"
for name in a b; do
  shape_var="shape_$name"
  if [ ! -s "$work/models/synthetic-$name.gguf" ]; then
    # shellcheck disable=SC2086
    python3 "$repo/tests/gpu/make_synthetic_gguf.py" "$work/models/synthetic-$name.gguf" ${!shape_var}
  fi
done
sha_a=$(sha256sum "$work/models/synthetic-a.gguf" | cut -d' ' -f1)
sha_b=$(sha256sum "$work/models/synthetic-b.gguf" | cut -d' ' -f1)
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
layers=$([ "$backend" = cuda ] && echo all || echo 0)
python3 - "$work/vars.json" <<PY
import json, sys
fleet = [
    {"name": "synthetic-a", "source": {"path": "$work/models/synthetic-a.gguf", "sha256": "$sha_a"},
     "context": $context, "gpu_layers": "$layers" if "$layers" == "all" else 0, "flash_attn": "on" if "$backend" == "cuda" else "auto"},
    {"name": "synthetic-b", "source": {"path": "$work/models/synthetic-b.gguf", "sha256": "$sha_b"},
     "context": $context, "gpu_layers": "$layers" if "$layers" == "all" else 0,
     "cache_type_k": "q8_0", "cache_type_v": "q8_0", "split_mode": "layer", "tensor_split": [1], "main_gpu": 0},
]
extra = {
    "llmrig_planner_fleet": fleet, "llmrig_planner_models_dir": "/var/lib/llmrig/models", "llmrig_gateway_api_key": "$key",
    # the shared settings group_vars/all/llmrig.yml wires in (the proof runs the roles without group_vars)
    "llmrig_base_user": "llmrig", "llmrig_base_group": "llmrig", "llmrig_base_data_dir": "/var/lib/llmrig",
    "llmrig_base_config_dir": "/etc/llmrig", "llmrig_models_dir": "/var/lib/llmrig/models", "llmrig_models_group": "llmrig",
    "llmrig_gateway_user": "llmrig", "llmrig_gateway_group": "llmrig", "llmrig_gateway_config_dir": "/etc/llmrig",
    "llmrig_gateway_models_dir": "/var/lib/llmrig/models", "llmrig_llamacpp_install_dir": "/opt/llmrig/llama.cpp",
    "llmrig_gateway_binary": "/opt/llmrig/llama.cpp/current/bin/llama-server",
    "llmrig_gateway_port": $port, "llmrig_gateway_manage_service": False,
    "llmrig_llamacpp_source": "archive", "llmrig_llamacpp_archive_path": "${SOURCE_ARCHIVE:?set SOURCE_ARCHIVE}",
    "llmrig_llamacpp_archive_subdir": "vendor/llama.cpp", "llmrig_llamacpp_backend": "$backend",
    "llmrig_llamacpp_install_build_deps": False, "llmrig_llamacpp_cuda_toolkit_package": "",
    "llmrig_llamacpp_cuda_toolkit_source": "${TOOLKIT:-apt}", "llmrig_llamacpp_cuda_pypi_wheelhouse": "${CUDA_WHEELS:-}",
    "llmrig_llamacpp_ccache_dir": "${CCACHE_DIR:-/var/cache/llmrig/ccache}",
    "llmrig_llamacpp_targets": ["llama-server"], "llmrig_base_packages": [],
}
json.dump(extra, open(sys.argv[1], "w"), indent=1)
PY

echo "== build and render through the roles"
start=$(date +%s)
ansible-playbook -i localhost, "$repo/tests/gpu/proof.yml" -e "@$work/vars.json"
echo "playbook_seconds=$(( $(date +%s) - start ))" | tee "$out/build.txt"
python3 -c "import json; print(json.dumps(json.load(open('/opt/llmrig/llama.cpp/current/BUILD-INFO.json')), indent=1))" \
  | tee "$out/BUILD-INFO.json"

echo "== gateway (the unit's ExecStart, as the service user)"
cmd=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/llmrig-gateway.service)
unit_env=$(sed -n 's/^Environment=//p' /etc/systemd/system/llmrig-gateway.service)
chown llmrig "$work/cache"
# the unit's environment (device order, the key file), then a cache directory of this run's own
# shellcheck disable=SC2086
env $unit_env LLAMA_CACHE="$work/cache" setsid runuser -u llmrig -- $cmd > "$out/gateway.log" 2>&1 &
gateway=$!
trap 'kill -- -"$gateway" 2>/dev/null || kill "$gateway" 2>/dev/null || true' EXIT
printf '{"gpus": [{"index": 0}]}\n' > "$work/tuning.json"
python3 "$repo/tests/gpu/measure.py" --url "http://127.0.0.1:$port" --key "$key" \
  --tuning-cli "$repo/roles/llmrig_gpu_tuning/files/llmrig_gpu_tuning.py" --tuning-config "$work/tuning.json" \
  --json "$out/proof.json"

echo "== VRAM planner vs nvidia-smi (target: within 3 % or 256 MiB)"
python3 "$repo/tests/gpu/compare_plan.py" --vars "$work/vars.json" --proof "$out/proof.json" \
  --json "$out/plan-compare.json" || echo "the planner missed the target: see $out/plan-compare.json"
