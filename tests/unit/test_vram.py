"""The VRAM planner's arithmetic, each component checked by hand or against figures llama.cpp logged.

Reference figures: the CPU log of llama-server for the test model (gemma 3 270M, -c 8192 -ctk/-ctv q8_0,
4 slots): "CPU_Mapped model buffer size = 235.16 MiB", non-SWA "KV buffer size = 12.75 MiB" (8192 cells,
3 layers), SWA "KV buffer size = 19.92 MiB" (2560 cells, 15 layers); and the H100 measurements in
../shared/reference/measured-h100-baseline.md (8B/32B dense models, q8_0 KV, n_ubatch 512, FA on).
"""

from __future__ import annotations

import pytest
from ansible_collections.llmrig.serving.plugins.module_utils import _gguf as gguf
from ansible_collections.llmrig.serving.plugins.module_utils import _vram as vram

MIB = 1024 * 1024

GEMMA_270M = {
    "general.architecture": "gemma3",
    "gemma3.block_count": 18,
    "gemma3.embedding_length": 640,
    "gemma3.feed_forward_length": 2048,
    "gemma3.attention.head_count": 4,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 256,
    "gemma3.attention.value_length": 256,
    "gemma3.attention.sliding_window": 512,
    "gemma3.context_length": 32768,
}


def dense(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8, layer_bytes=0, output_bytes=0):
    """A dense llama-like model; tensors: one per layer plus the output head and token_embd."""
    fields = {
        "general.architecture": "llama",
        "llama.block_count": n_layer,
        "llama.embedding_length": n_embd,
        "llama.feed_forward_length": n_ff,
        "llama.attention.head_count": n_head,
        "llama.attention.head_count_kv": n_head_kv,
    }
    tensors = [gguf.Tensor(f"blk.{il}.ffn_down.weight", layer_bytes) for il in range(n_layer)]
    tensors += [gguf.Tensor("output.weight", output_bytes), gguf.Tensor("token_embd.weight", 300 * MIB)]
    return gguf.meta_from_fields(fields, tensors)


def test_kv_row_sizes_per_cache_type():
    assert vram.row_bytes("f16", 1024) == 2048
    assert vram.row_bytes("q8_0", 1024) == 1088  # 32 blocks of 34 bytes
    assert vram.row_bytes("q4_0", 1024) == 576
    with pytest.raises(ValueError, match="whole number"):
        vram.row_bytes("q8_0", 100)


def test_dense_kv_matches_the_h100_log():
    # 32768 x 32 layers x 8 kv heads x 128 x (K+V) x 34/32 bytes = 2176 MiB, as llama-server logged
    meta = dense()
    settings = vram.Settings(context=32768, cache_type_k="q8_0", cache_type_v="q8_0")
    assert vram.kv_total(meta, settings) == 2176 * MIB
    assert vram.kv_total(meta, vram.Settings(context=32768)) == 4096 * MIB  # f16
    # mixed types: K q8_0 + V f16
    mixed = vram.Settings(context=32768, cache_type_k="q8_0", cache_type_v="f16")
    assert vram.kv_total(meta, mixed) == (1088 + 2048) * MIB


def test_context_is_padded_to_256_cells():
    meta = dense(n_layer=1, n_head_kv=1, n_embd=128, n_head=1)
    assert vram.kv_cells(meta, vram.Settings(context=1000)) == (1024, 0)
    assert vram.kv_total(meta, vram.Settings(context=1000)) == 1024 * 128 * 2 * 2


def test_gemma3_sliding_window_layers_match_the_cpu_log():
    meta = gguf.meta_from_fields(GEMMA_270M, [])
    assert meta.swa_layers.count(False) == 3  # layers 5, 11, 17
    assert [il for il, swa in enumerate(meta.swa_layers) if not swa] == [5, 11, 17]
    settings = vram.Settings(context=8192, cache_type_k="q8_0", cache_type_v="q8_0", parallel=4, unified=True)
    assert vram.kv_cells(meta, settings) == (8192, 2560)  # 512 x 4 slots + 512 ubatch
    full = sum(vram.layer_kv_bytes(meta, settings, il) for il in (5, 11, 17))
    assert full == 12.75 * MIB
    assert vram.kv_total(meta, settings) - full == pytest.approx(19.92 * MIB, abs=0.005 * MIB)


def test_sliding_window_never_exceeds_the_context():
    meta = gguf.meta_from_fields(GEMMA_270M, [])
    assert vram.kv_cells(meta, vram.Settings(context=2048, parallel=4, unified=True)) == (2048, 2048)
    assert vram.kv_cells(meta, vram.Settings(context=32768, parallel=1)) == (32768, 1024)


def test_one_stream_per_slot_when_parallel_is_set():
    # llama-server -c 8192 -np 4 (f16) logged 2048 cells x 4 seqs for the 3 full layers (24.00 MiB) and
    # 1024 cells x 4 seqs for the 15 sliding-window layers (60.00 MiB): each slot gets 8192 / 4 tokens
    meta = gguf.meta_from_fields(GEMMA_270M, [])
    settings = vram.Settings(context=8192, parallel=4)
    assert vram.kv_cells(meta, settings) == (2048, 1024)
    full = sum(vram.layer_kv_bytes(meta, settings, il) for il in (5, 11, 17))
    assert (full, vram.kv_total(meta, settings) - full) == (24 * MIB, 60 * MIB)


def test_unknown_sliding_window_layout_counts_every_layer_in_full():
    fields = {**GEMMA_270M, "general.architecture": "newarch"}
    fields = {k.replace("gemma3.", "newarch."): v for k, v in fields.items()}
    meta = gguf.meta_from_fields(fields, [])
    assert meta.n_swa == 0 and not any(meta.swa_layers)
    assert "every layer counted as full attention" in meta.notes[0]


def test_hybrid_recurrent_layers_hold_state_not_kv():
    fields = {
        "general.architecture": "qwen3next",
        "qwen3next.block_count": 8,
        "qwen3next.embedding_length": 2048,
        "qwen3next.feed_forward_length": 5120,
        "qwen3next.attention.head_count": 16,
        "qwen3next.attention.head_count_kv": 2,
        "qwen3next.attention.key_length": 256,
        "qwen3next.attention.value_length": 256,
        "qwen3next.full_attention_interval": 4,
        "qwen3next.ssm.conv_kernel": 4,
        "qwen3next.ssm.inner_size": 4096,
        "qwen3next.ssm.state_size": 128,
        "qwen3next.ssm.group_count": 16,
    }
    meta = gguf.meta_from_fields(fields, [])
    assert [il for il, r in enumerate(meta.recurrent_layers) if not r] == [3, 7]
    # conv: (4 - 1) x (4096 + 2 x 16 x 128) = 24576; ssm: 128 x 4096 = 524288; f32, per sequence
    assert (meta.recurrent_r, meta.recurrent_s) == (24576, 524288)
    settings = vram.Settings(context=4096, parallel=2, unified=True)
    assert vram.kv_total(meta, settings) == 2 * 4096 * (2 * 256 * 2) * 2  # 2 attention layers, f16
    recurrent = sum(vram.layer_recurrent_bytes(meta, settings, il) for il in range(8))
    assert recurrent == 6 * 2 * (24576 + 524288) * 4


def test_layer_split_follows_llama_cpp():
    # 4 layers + output over 2 equal GPUs: positions 0, .2, .4 on GPU 0; .6, .8 on GPU 1
    assert vram.layer_devices(4, 2, [1, 1], None) == [0, 0, 0, 1, 1]
    assert vram.layer_devices(4, 2, [3, 1], None) == [0, 0, 0, 0, 1]
    # -ngl 2: the last layer and the output head are offloaded, the rest stays on the CPU
    assert vram.layer_devices(4, 2, [1, 1], 2) == [None, None, None, 0, 1]
    assert vram.layer_devices(4, 1, [1], 0) == [None] * 5


def test_weights_go_to_their_layers_device_and_token_embd_stays_on_the_host():
    meta = dense(n_layer=4, layer_bytes=100 * MIB, output_bytes=50 * MIB)
    uses = vram.plan_devices(meta, vram.Settings(context=4096, tensor_split=[1, 1]), [16 * 1024 * MIB] * 2, [0, 0])
    assert [u.weights // MIB for u in uses] == [300, 150]
    one_layer = vram.layer_kv_bytes(meta, vram.Settings(context=4096), 0)
    assert [u.kv for u in uses] == [3 * one_layer, one_layer]


def test_compute_estimate_is_within_3_percent_of_the_h100_logs():
    # compute buffer logged on the H100 (MiB): 8B 192.09 @32k, 672.09 @128k; 32B 212.09 @32k, 680.09 @128k
    cases = [
        (dense(), 32768, 192.09),
        (dense(), 131072, 672.09),
        (dense(n_layer=64, n_embd=5120, n_ff=25600, n_head=40), 32768, 212.09),
        (dense(n_layer=64, n_embd=5120, n_ff=25600, n_head=40), 131072, 680.09),
    ]
    for meta, context, logged in cases:
        estimate = vram.compute_bytes(meta, vram.Settings(context=context)) / MIB
        assert abs(estimate - logged) / logged < 0.03, (context, estimate, logged)


def test_whole_plan_against_nvidia_smi_on_the_h100():
    # 32B Q4_K_M at 32768, q8_0 KV: CUDA0 model buffer 17248.74 MiB; nvidia-smi used 22419 MiB
    per_layer = (17248.74 * MIB - 400 * MIB) / 64
    meta = dense(n_layer=64, n_embd=5120, n_ff=25600, n_head=40, layer_bytes=int(per_layer), output_bytes=400 * MIB)
    settings = vram.Settings(context=32768, cache_type_k="q8_0", cache_type_v="q8_0", split_mode="none")
    [use] = vram.plan_devices(meta, settings, [81559 * MIB], [600 * MIB])
    assert use.kv == 4352 * MIB
    total = use.total / MIB
    assert abs(total - 22419) / 22419 < 0.03, total


def test_largest_fitting_context():
    meta = dense(layer_bytes=100 * MIB, output_bytes=0)
    settings = vram.Settings(context=131072, cache_type_k="q8_0", cache_type_v="q8_0", split_mode="none")
    capacity = [8 * 1024 * MIB]
    best = vram.largest_fitting_context(meta, settings, capacity, [600 * MIB])
    assert best % 1024 == 0 and 0 < best < 131072
    fits = vram.plan_devices(meta, vram.Settings(**{**settings.__dict__, "context": best}), capacity, [600 * MIB])
    over = vram.plan_devices(
        meta, vram.Settings(**{**settings.__dict__, "context": best + 1024}), capacity, [600 * MIB]
    )
    assert fits[0].total <= capacity[0] < over[0].total


def test_tied_embeddings_put_a_copy_of_token_embd_on_the_output_device():
    fields = {**GEMMA_270M}
    tensors = [gguf.Tensor(f"blk.{il}.ffn_down.weight", MIB) for il in range(18)]
    tensors.append(gguf.Tensor("token_embd.weight", 170 * MIB))  # no output.weight: tied, as in gemma
    meta = gguf.meta_from_fields(fields, tensors)
    uses = vram.plan_devices(meta, vram.Settings(context=2048, tensor_split=[1, 1]), [8192 * MIB] * 2, [0, 0])
    assert [u.weights // MIB for u in uses] == [10, 8 + 170]
    # on a CPU build there is one copy, in RAM
    [ram] = vram.plan_devices(meta, vram.Settings(context=2048, host_memory=True), [8192 * MIB], [0])
    assert ram.weights == 188 * MIB


QWEN35_MTP = {
    # a Qwen3.6-27B-shaped file: 64 trunk layers (16 of them attention) and one MTP block
    "general.architecture": "qwen35",
    "qwen35.block_count": 65,
    "qwen35.nextn_predict_layers": 1,
    "qwen35.embedding_length": 5120,
    "qwen35.feed_forward_length": 17408,
    "qwen35.attention.head_count": 24,
    "qwen35.attention.head_count_kv": 4,
    "qwen35.attention.key_length": 256,
    "qwen35.attention.value_length": 256,
    "qwen35.full_attention_interval": 4,
    "qwen35.ssm.conv_kernel": 4,
    "qwen35.ssm.inner_size": 6144,
    "qwen35.ssm.state_size": 128,
    "qwen35.ssm.group_count": 16,
}


def test_mtp_blocks_are_attention_layers_outside_the_trunk():
    meta = gguf.meta_from_fields(QWEN35_MTP, [])
    assert (meta.n_layer, meta.n_nextn, meta.n_trunk) == (65, 1, 64)
    # (il + 1) % 4 would make block 64 recurrent; llama.cpp marks MTP blocks non-recurrent
    assert meta.recurrent_layers.count(True) == 48 and not meta.recurrent_layers[64]
    assert meta.n_head_kv[64] == 4


def test_mtp_kv_lives_in_the_mtp_context_only_with_draft_mtp():
    meta = gguf.meta_from_fields(QWEN35_MTP, [])
    row = 4 * 256 * 34 // 32  # q8_0 row of 4 KV heads x 256: 1088 bytes
    plain = vram.Settings(context=131072, cache_type_k="q8_0", cache_type_v="q8_0", parallel=1)
    mtp = vram.Settings(**{**plain.__dict__, "spec_type": "draft-mtp", "draft_n_max": 2})
    # main context: the 16 trunk attention layers, 131072 cells, K + V: 16 x 131072 x 2176 = 4352 MiB
    assert vram.kv_total(meta, plain) == vram.kv_total(meta, mtp) == 16 * 131072 * 2 * row == 4352 * MIB
    assert vram.kv_total(meta, plain, mtp_context=True) == 0
    # the MTP context's cache is f16 unless its own types are set (--spec-draft-type-k/v)
    assert vram.kv_total(meta, mtp, mtp_context=True) == 131072 * 2 * (4 * 256 * 2) == 512 * MIB
    quantized = vram.Settings(**{**mtp.__dict__, "draft_cache_type_k": "q8_0", "draft_cache_type_v": "q8_0"})
    assert vram.kv_total(meta, quantized, mtp_context=True) == 131072 * 2 * row == 272 * MIB
    entry = {"context": 4096, "speculative": {"type": "draft-mtp", "cache_type_k": "q8_0", "cache_type_v": "q4_0"}}
    assert vram.entry_settings(entry).draft_kv_types == ("q8_0", "q4_0")


def test_recurrent_state_is_kept_once_per_draft_token_for_rollback():
    meta = gguf.meta_from_fields(QWEN35_MTP, [])
    # conv (4 - 1) x (6144 + 2 x 16 x 128) = 30720 and ssm 128 x 6144 = 786432 f32 per layer and sequence
    per_seq = 48 * (30720 + 786432) * 4
    plain = vram.Settings(context=4096, parallel=4, unified=True)
    assert vram.recurrent_total(meta, plain) == 4 * per_seq
    mtp = vram.Settings(**{**plain.__dict__, "spec_type": "draft-mtp", "draft_n_max": 2})
    assert vram.rs_snapshots(meta, mtp) == 3
    assert vram.recurrent_total(meta, mtp) == 4 * 3 * per_seq
    # llama-server's default draft length is 3; an n-gram drafter never rolls the state back
    default = vram.Settings(**{**plain.__dict__, "spec_type": "draft-mtp"})
    assert vram.rs_snapshots(meta, default) == 4
    assert vram.rs_snapshots(meta, vram.Settings(**{**plain.__dict__, "spec_type": "ngram-simple"})) == 1


def test_mtp_block_weights_load_only_with_draft_mtp():
    tensors = [gguf.Tensor(f"blk.{il}.ffn_down.weight", 100 * MIB) for il in range(65)]
    tensors += [gguf.Tensor("output.weight", 50 * MIB), gguf.Tensor("token_embd.weight", 50 * MIB)]
    meta = gguf.meta_from_fields(QWEN35_MTP, tensors)
    plain = vram.Settings(context=4096, parallel=1)
    mtp = vram.Settings(context=4096, parallel=1, spec_type="draft-mtp")
    assert vram.loaded_weight_bytes(meta, plain) == (64 * 100 + 100) * MIB
    assert vram.loaded_weight_bytes(meta, mtp) == (65 * 100 + 100) * MIB
    [without] = vram.plan_devices(meta, plain, [80000 * MIB], [0])
    [with_mtp] = vram.plan_devices(meta, mtp, [80000 * MIB], [0])
    assert with_mtp.weights - without.weights == 100 * MIB
    # the MTP context reserves its own compute buffer
    assert with_mtp.compute == 2 * without.compute


GEMMA4 = {
    # Gemma 4 31B: 5 sliding-window layers (16 KV heads of 256) then one global layer (4 KV heads of 512)
    "general.architecture": "gemma4",
    "gemma4.block_count": 12,
    "gemma4.embedding_length": 5376,
    "gemma4.feed_forward_length": 21504,
    "gemma4.attention.head_count": 32,
    "gemma4.attention.head_count_kv": [16, 16, 16, 16, 16, 4] * 2,
    "gemma4.attention.key_length": 512,
    "gemma4.attention.value_length": 512,
    "gemma4.attention.key_length_swa": 256,
    "gemma4.attention.value_length_swa": 256,
    "gemma4.attention.sliding_window": 1024,
    "gemma4.attention.sliding_window_pattern": [True] * 5 + [False] + [True] * 5 + [False],
}


def test_sliding_window_layers_use_their_own_head_size():
    meta = gguf.meta_from_fields(GEMMA4, [])
    settings = vram.Settings(context=65536, cache_type_k="q8_0", cache_type_v="q8_0", parallel=1)
    assert vram.kv_cells(meta, settings) == (65536, 1536)  # window 1024 + ubatch 512
    # global layer: 65536 cells x 2 x (4 x 512) q8_0 = 65536 x 4352 bytes; SWA: 1536 x 2 x (16 x 256)
    assert vram.layer_kv_bytes(meta, settings, 5) == 65536 * 2 * 2176
    assert vram.layer_kv_bytes(meta, settings, 0) == 1536 * 2 * 4352
    assert vram.kv_total(meta, settings) == 2 * 65536 * 2 * 2176 + 10 * 1536 * 2 * 4352


def test_compute_estimate_copies_the_largest_layer_cache():
    meta = gguf.meta_from_fields(GEMMA4, [])
    settings = vram.Settings(context=65536, parallel=1)
    # global layer: 65536 cells x 4 heads x (512 + 512) x 2 bytes = 512 MiB (a SWA layer's: 1536 x 16 x 512 x 2)
    mask, ffn = 65536 * 512 * 2, 512 * 21504 * 4
    assert vram.compute_bytes(meta, settings) == 512 * MIB + mask + ffn
