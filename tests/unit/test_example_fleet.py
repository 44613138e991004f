"""The example fleet in group_vars/all/fleet.yml, planned for the reference rig of group_vars/nvidia_gpus.yml.

Its models live on Hugging Face, which this project's machines cannot reach, so each is replaced by a shape
file (tests/gguf_shapes.py): the model's published architecture with a tensor-type mix whose size matches
a published file of that quantization, written as a GGUF header and tensor table over a sparse data section.
The planner reads exactly what it would read from the real file's header. The fleet entries themselves
(context, KV types, split, slots, speculative settings, projector) are the file's, unchanged, and the
margin and overhead are the planner role's defaults.

Sources of the architectures: the Qwen3.6-27B and Qwen3.6-35B-A3B model cards (layers, widths, heads,
layer layout, experts), the Gemma 4 31B model card and conversions of it (60 layers, 5376 wide, 32 heads,
sliding-window layers with 16 KV heads of 256 and every sixth layer global with 4 KV heads of 512, window
1024, vocabulary 262144). Reference sizes: see REFERENCE_BYTES.
"""

from __future__ import annotations

from pathlib import Path

import gguf_shapes
import llmrig_testlib
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def qwen36_27b() -> gguf_shapes.Shape:
    shape = gguf_shapes.qwen35(
        n_layer=64, n_nextn=1, n_embd=5120, n_ff=17408, n_head=24, n_head_kv=4, head_dim=256,
        linear_v_heads=48, linear_k_heads=16, linear_head_dim=128, vocab=248320, matrix="Q4_K",
    )  # fmt: skip
    return shape.retype({"ffn_down": "Q6_K", "attn_v": "Q6_K", "output.weight": "Q6_K", "token_embd": "Q6_K"})


def qwen36_35b_a3b() -> gguf_shapes.Shape:
    shape = gguf_shapes.qwen35(
        n_layer=40, n_nextn=1, n_embd=2048, n_ff=512, n_head=16, n_head_kv=2, head_dim=256,
        linear_v_heads=32, linear_k_heads=16, linear_head_dim=128, vocab=248320, matrix="IQ4_XS",
        experts=(256, 8, 512),
    )  # fmt: skip
    return shape.retype({"blk.40.": "Q8_0"})  # the MTP block in Q8_0


def gemma4_31b() -> gguf_shapes.Shape:
    shape = gguf_shapes.gemma4(
        n_layer=60, n_embd=5376, n_ff=21504, n_head=32, n_head_kv_swa=16, n_head_kv_full=4,
        head_dim_swa=256, head_dim_full=512, window=1024, period=6, vocab=262144, matrix="IQ3_S",
    )  # fmt: skip
    return shape.retype({"ffn_up": "IQ3_XXS", "token_embd": "Q4_K"})


SHAPES = {
    "Qwen3.6-27B-MTP-UD-Q4_K_XL.gguf": qwen36_27b,
    "Qwen3.6-35B-A3B-MTP-IQ4_XS.gguf": qwen36_35b_a3b,
    "gemma-4-31B-it-IQ3_XS.gguf": gemma4_31b,
    "mmproj-gemma-4-31B-it-F16.gguf": lambda: gguf_shapes.projector(726_000_000),
}
# Published sizes the shapes are matched to (bytes):
# - unsloth/Qwen3.6-27B-MTP-GGUF UD-Q4_K_XL: "17.9 GB" (download size quoted by users of that file);
# - Qwen3.6-35B-A3B IQ4_XS with the MTP block in Q8_0: 19,393,459,552 (localweights' IQ4_XS-Q8nextn file;
#   the example's byteshape file is of the same family and was not reachable to check);
# - gemma-4-31B-it IQ3_XS: "13.1 GB" (a published base IQ3_XS quantization);
# - the Gemma 4 31B vision projector: 772 MB as Q8_0, so about 1.45 GB as F16.
REFERENCE_BYTES = {
    "Qwen3.6-27B-MTP-UD-Q4_K_XL.gguf": 17.9e9,
    "Qwen3.6-35B-A3B-MTP-IQ4_XS.gguf": 19_393_459_552,
    "gemma-4-31B-it-IQ3_XS.gguf": 13.1e9,
    "mmproj-gemma-4-31B-it-F16.gguf": 772e6 * 16 / 8.5,
}


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


@pytest.fixture(scope="module")
def example_fleet(tmp_path_factory) -> list[dict]:
    """group_vars/all/fleet.yml with each source pointing at its shape file."""
    work = tmp_path_factory.mktemp("shapes")
    fleet = load("group_vars/all/fleet.yml")["llmrig_fleet"]
    for entry in fleet:
        for field in ("source", "mmproj"):
            if field not in entry:
                continue
            file = entry[field].get("file") or entry[field]["url"].rsplit("/", 1)[-1]
            assert file in SHAPES, f"{entry['name']}: no shape for {file}; add one to SHAPES"
            path = work / file
            gguf_shapes.write_sparse(path, SHAPES[file]())
            # the planner does not check the sha256 (the models role does); any well-formed value will do
            entry[field] = {"path": str(path), "sha256": "0" * 64, "file": file}
    return fleet


@pytest.mark.parametrize("file", sorted(SHAPES))
def test_shapes_match_the_published_file_sizes(file):
    size = gguf_shapes.weight_bytes(SHAPES[file]())
    assert size == pytest.approx(REFERENCE_BYTES[file], rel=0.03)


def test_the_example_fleet_fits_the_reference_rig_with_the_margin(example_fleet, tmp_path, capsys):
    defaults = load("roles/llmrig_planner/defaults/main.yml")
    gpus = load("group_vars/nvidia_gpus.yml")["llmrig_planner_gpus"]
    result = llmrig_testlib.run_module(
        "fleet_plan",
        tmp_path,
        fleet=example_fleet,
        models_dir="/var/lib/llmrig/models",
        gpus=gpus,
        margin_mib=defaults["llmrig_planner_margin_mib"],
        overhead_mib=defaults["llmrig_planner_overhead_mib"],
    )
    assert not result.get("failed"), result.get("msg")
    with capsys.disabled():
        print("\n" + result["table"])
    models = result["plan"]["models"]
    assert [m["name"] for m in models] == [e["name"] for e in example_fleet]
    for model in models:
        for device in model["devices"]:
            assert device["fits"]
            assert device["free_after_mib"] >= defaults["llmrig_planner_margin_mib"]
    # on 2x16 GB one of these models fills the GPUs: the router must never keep two
    assert result["models_max"] == 1
