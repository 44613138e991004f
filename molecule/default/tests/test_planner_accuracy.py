"""The VRAM planner against the buffers the real llama-server allocates for the test model (CPU build).

llama-server is started on the Molecule host at several contexts, KV cache types and slot counts, with
fitting off and log verbosity 4; its log reports the model buffer and each KV cache. The planner reads the
same GGUF on the controller. Target of the issue: within 3 % or 256 MiB; what the log allows to check is
far tighter, so the test asks for the log's own rounding (0.01 MiB).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.llmrig.serving.plugins.module_utils import _vram as vram

REPO = Path(__file__).resolve().parents[3]
MODEL = "gemma-3-270m-q4_k_m.gguf"
SERVER = "/opt/llmrig/llama.cpp/current/bin/llama-server"
CASES = [
    (context, kv_type, parallel)
    for context in (2048, 8192, 32768)
    for kv_type in ("f16", "q8_0")
    for parallel in (None, 1, 4)  # None: llama-server picks 4 slots sharing one unified cache
]
RESULTS: list[tuple] = []


@pytest.fixture(scope="module")
def meta():
    return vram.read_gguf(str(REPO / ".cache/models" / MODEL))


def logged_buffers(host, context: int, kv_type: str, parallel: int | None) -> tuple[float, float, str]:
    """(model buffer MiB, KV MiB summed over the caches, log) of one llama-server start."""
    slots = "" if parallel is None else f"-np {parallel}"
    command = (
        f"timeout 60 {SERVER} -m /var/lib/llmrig/models/{MODEL} -c {context} -ctk {kv_type} -ctv {kv_type} "
        f"{slots} --fit off -t 2 -lv 4 --host 127.0.0.1 --port 18399 > /tmp/planner-check.log 2>&1 & pid=$!; "
        "for i in $(seq 300); do grep -q 'model loaded' /tmp/planner-check.log && break; sleep 0.1; done; "
        "kill $pid; wait $pid; cat /tmp/planner-check.log"
    )
    log = host.run("bash -c %s", command).stdout
    weights = [float(v) for v in re.findall(r"CPU_Mapped model buffer size =\s+([\d.]+) MiB", log)]
    kv = [float(v) for v in re.findall(r"llama_kv_cache: size =\s+([\d.]+) MiB", log)]
    assert weights and kv, log[-3000:]
    return sum(weights), sum(kv), log


@pytest.mark.parametrize("context,kv_type,parallel", CASES)
def test_planner_matches_the_buffers_llama_server_logs(host, meta, context, kv_type, parallel):
    weights, kv, log = logged_buffers(host, context, kv_type, parallel)
    entry = {"context": context, "cache_type_k": kv_type, "cache_type_v": kv_type}
    if parallel is not None:
        entry["parallel"] = parallel
    settings = vram.entry_settings(entry)
    planned_kv = vram.kv_total(meta, settings) / vram.MIB
    planned_weights = meta.weight_bytes / vram.MIB
    cells = [int(v) for v in re.findall(r"size = (\d+) cells", log)]
    RESULTS.append((context, kv_type, parallel, cells, weights, planned_weights, kv, planned_kv))
    assert planned_weights == pytest.approx(weights, abs=0.01)
    assert planned_kv == pytest.approx(kv, abs=0.011)  # two caches, each rounded to 0.01 MiB in the log
    assert sorted(cells) == sorted(c for c in vram.kv_cells(meta, settings) if c)


def test_print_the_comparison(capsys):
    assert len(RESULTS) == len(CASES)
    with capsys.disabled():
        print("\ncontext  kv    slots  cells (full, swa)   weights log/plan (MiB)   KV log/plan (MiB)")
        for context, kv_type, parallel, cells, weights, p_weights, kv, p_kv in RESULTS:
            print(
                f"{context:>7}  {kv_type:<5} {parallel or 'auto'!s:>5}  {cells!s:<18} "
                f"{weights:>9.2f} / {p_weights:<9.2f}    {kv:>8.2f} / {p_kv:.2f}"
            )
