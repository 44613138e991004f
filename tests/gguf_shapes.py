"""GGUF files of a given architecture, written with the `gguf` package, for the VRAM planner's tests.

Two kinds:

- tiny models with random weights (F32 norms, F16 matrices) that the real llama-server loads, so that the
  buffers it logs can be compared with the planner's figures for the same file;
- shape files: the metadata and tensor table of a full-size model (its published architecture, quantized
  tensor types) followed by a sparse, all-zero data section. They cannot generate text, but everything the
  planner reads is there, so a fleet of models that cannot be downloaded here can still be planned.

Tensor shapes follow the tensors llama.cpp creates for the architecture (src/models/<arch>.cpp of the
pinned tree). Shapes are given in ggml order (ne0 first), as llama.cpp prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ALIGNMENT = 32  # GGUF's default data alignment


@dataclass
class Shape:
    """An architecture's metadata (keys without the `<arch>.` prefix) and its tensors (name, ggml shape,
    GGML type name)."""

    arch: str
    hparams: dict[str, Any]
    tensors: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)

    def add(self, name: str, shape: tuple[int, ...], kind: str = "F16") -> None:
        self.tensors.append((name, shape, "F32" if len(shape) == 1 else kind))

    def retype(self, kinds: dict[str, str]) -> Shape:
        """Give the matrices whose name contains a key of kinds that type (a quantization recipe's mix)."""
        for index, (name, dims, kind) in enumerate(self.tensors):
            match = next((new for part, new in kinds.items() if part in name), None)
            if match and len(dims) > 1 and kind != "F32":
                self.tensors[index] = (name, dims, match)
        return self


def vocabulary(size: int) -> tuple[list[str], list[int]]:
    """A SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then filler tokens."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    if size < len(tokens) + 1:
        raise ValueError(f"vocabulary must hold more than {len(tokens)} tokens")
    tokens += [f"\u2581tok{index}" for index in range(size - len(tokens))]
    types += [gguf.TokenType.NORMAL] * (size - len(types))
    return tokens, [int(kind) for kind in types]


def add_vocabulary(writer: Any, size: int) -> None:
    """Write vocabulary(size) to a GGUFWriter as a SentencePiece ('llama') tokenizer."""
    tokens, types = vocabulary(size)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


# ---------------------------------------------------------------------------------------------------------
# Architectures


def _mrope_sections(rope_dims: int) -> list[int]:
    """Qwen's multi-axis rope sections for rope_dims rotated dimensions, e.g. 64 -> [11, 11, 10, 0]."""
    half = rope_dims // 2
    part = -(-half // 3)
    return [part, part, half - 2 * part, 0]


def qwen35(
    *,
    n_layer: int,
    n_nextn: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    head_dim: int,
    linear_v_heads: int,
    linear_k_heads: int,
    linear_head_dim: int,
    vocab: int,
    interval: int = 4,
    d_conv: int = 4,
    context: int = 262144,
    matrix: str = "F16",
    experts: tuple[int, int, int] | None = None,
) -> Shape:
    """Qwen3.5/3.6 (qwen35, or qwen35moe with experts = (count, used, expert FFN size)): gated DeltaNet
    layers with one gated-attention layer every `interval`, then `n_nextn` multi-token-prediction blocks
    (full attention). n_layer counts the trunk only; block_count in the file is n_layer + n_nextn."""
    arch = "qwen35moe" if experts else "qwen35"
    value_dim, key_dim = linear_head_dim * linear_v_heads, linear_head_dim * linear_k_heads
    hparams: dict[str, Any] = {
        "block_count": n_layer + n_nextn,
        "nextn_predict_layers": n_nextn,
        "context_length": context,
        "embedding_length": n_embd,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        "attention.layer_norm_rms_epsilon": 1e-6,
        "rope.dimension_count": head_dim // 4,
        "rope.dimension_sections": _mrope_sections(head_dim // 4),
        "rope.freq_base": 10_000_000.0,
        "full_attention_interval": interval,
        "ssm.conv_kernel": d_conv,
        "ssm.inner_size": value_dim,
        "ssm.state_size": linear_head_dim,
        "ssm.time_step_rank": linear_v_heads,
        "ssm.group_count": linear_k_heads,
    }
    if experts:
        hparams.update(
            {
                "expert_count": experts[0],
                "expert_used_count": experts[1],
                "expert_feed_forward_length": experts[2],
                "expert_shared_feed_forward_length": experts[2],
            }
        )
    shape = Shape(arch, hparams)
    shape.add("token_embd.weight", (n_embd, vocab), matrix)
    shape.add("output_norm.weight", (n_embd,))
    shape.add("output.weight", (n_embd, vocab), matrix)

    def attention(prefix: str) -> None:
        shape.add(prefix + "attn_q.weight", (n_embd, head_dim * n_head * 2), matrix)  # query and gate
        shape.add(prefix + "attn_k.weight", (n_embd, head_dim * n_head_kv), matrix)
        shape.add(prefix + "attn_v.weight", (n_embd, head_dim * n_head_kv), matrix)
        shape.add(prefix + "attn_output.weight", (head_dim * n_head, n_embd), matrix)
        shape.add(prefix + "attn_q_norm.weight", (head_dim,))
        shape.add(prefix + "attn_k_norm.weight", (head_dim,))

    def ffn(prefix: str) -> None:
        if experts:
            count, _, n_ff_exp = experts
            shape.add(prefix + "ffn_gate_inp.weight", (n_embd, count), "F32")
            shape.add(prefix + "ffn_gate_exps.weight", (n_embd, n_ff_exp, count), matrix)
            shape.add(prefix + "ffn_up_exps.weight", (n_embd, n_ff_exp, count), matrix)
            shape.add(prefix + "ffn_down_exps.weight", (n_ff_exp, n_embd, count), matrix)
            shape.add(prefix + "ffn_gate_inp_shexp.weight", (n_embd,))
            shape.add(prefix + "ffn_gate_shexp.weight", (n_embd, n_ff_exp), matrix)
            shape.add(prefix + "ffn_up_shexp.weight", (n_embd, n_ff_exp), matrix)
            shape.add(prefix + "ffn_down_shexp.weight", (n_ff_exp, n_embd), matrix)
        else:
            shape.add(prefix + "ffn_gate.weight", (n_embd, n_ff), matrix)
            shape.add(prefix + "ffn_up.weight", (n_embd, n_ff), matrix)
            shape.add(prefix + "ffn_down.weight", (n_ff, n_embd), matrix)

    for il in range(n_layer + n_nextn):
        prefix = f"blk.{il}."
        shape.add(prefix + "attn_norm.weight", (n_embd,))
        shape.add(prefix + "post_attention_norm.weight", (n_embd,))
        if il >= n_layer or (il + 1) % interval == 0:
            attention(prefix)
        else:
            shape.add(prefix + "attn_qkv.weight", (n_embd, key_dim * 2 + value_dim), matrix)
            shape.add(prefix + "attn_gate.weight", (n_embd, value_dim), matrix)
            shape.add(prefix + "ssm_conv1d.weight", (d_conv, key_dim * 2 + value_dim), "F32")
            shape.add(prefix + "ssm_dt.bias", (linear_v_heads,))
            shape.add(prefix + "ssm_a", (linear_v_heads,))
            shape.add(prefix + "ssm_beta.weight", (n_embd, linear_v_heads), matrix)
            shape.add(prefix + "ssm_alpha.weight", (n_embd, linear_v_heads), matrix)
            shape.add(prefix + "ssm_norm.weight", (linear_head_dim,))
            shape.add(prefix + "ssm_out.weight", (value_dim, n_embd), matrix)
        ffn(prefix)
        if il >= n_layer:
            shape.add(prefix + "nextn.eh_proj.weight", (2 * n_embd, n_embd), matrix)
            shape.add(prefix + "nextn.enorm.weight", (n_embd,))
            shape.add(prefix + "nextn.hnorm.weight", (n_embd,))
            shape.add(prefix + "nextn.shared_head_norm.weight", (n_embd,))
    return shape


def gemma4(
    *,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv_swa: int,
    n_head_kv_full: int,
    head_dim_swa: int,
    head_dim_full: int,
    window: int,
    period: int,
    vocab: int,
    context: int = 262144,
    matrix: str = "F16",
) -> Shape:
    """Gemma 4 (dense): `period - 1` sliding-window layers, then one full-attention layer, with their own
    head sizes and KV head counts; tied embeddings (no output.weight), no shared KV layers."""
    pattern = [il % period < period - 1 for il in range(n_layer)]
    shape = Shape(
        "gemma4",
        {
            "block_count": n_layer,
            "context_length": context,
            "embedding_length": n_embd,
            "embedding_length_per_layer_input": 0,
            "feed_forward_length": n_ff,
            "attention.head_count": n_head,
            "attention.head_count_kv": [n_head_kv_swa if swa else n_head_kv_full for swa in pattern],
            "attention.key_length": head_dim_full,
            "attention.value_length": head_dim_full,
            "attention.key_length_swa": head_dim_swa,
            "attention.value_length_swa": head_dim_swa,
            "attention.sliding_window": window,
            "attention.sliding_window_pattern": pattern,
            "attention.layer_norm_rms_epsilon": 1e-6,
            "rope.dimension_count": head_dim_full,
            "rope.dimension_count_swa": head_dim_swa,
            "rope.freq_base": 1_000_000.0,
            "rope.freq_base_swa": 10_000.0,
            "final_logit_softcapping": 30.0,
        },
    )
    shape.add("token_embd.weight", (n_embd, vocab), matrix)
    shape.add("output_norm.weight", (n_embd,))
    shape.add("rope_freqs.weight", (head_dim_full // 2,))
    for il, swa in enumerate(pattern):
        prefix, head_dim = f"blk.{il}.", head_dim_swa if swa else head_dim_full
        kv_width = head_dim * (n_head_kv_swa if swa else n_head_kv_full)
        shape.add(prefix + "attn_norm.weight", (n_embd,))
        shape.add(prefix + "attn_q.weight", (n_embd, head_dim * n_head), matrix)
        shape.add(prefix + "attn_k.weight", (n_embd, kv_width), matrix)
        shape.add(prefix + "attn_v.weight", (n_embd, kv_width), matrix)
        shape.add(prefix + "attn_output.weight", (head_dim * n_head, n_embd), matrix)
        shape.add(prefix + "attn_q_norm.weight", (head_dim,))
        shape.add(prefix + "attn_k_norm.weight", (head_dim,))
        shape.add(prefix + "post_attention_norm.weight", (n_embd,))
        shape.add(prefix + "ffn_norm.weight", (n_embd,))
        shape.add(prefix + "ffn_gate.weight", (n_embd, n_ff), matrix)
        shape.add(prefix + "ffn_up.weight", (n_embd, n_ff), matrix)
        shape.add(prefix + "ffn_down.weight", (n_ff, n_embd), matrix)
        shape.add(prefix + "post_ffw_norm.weight", (n_embd,))
    return shape


def projector(n_params: int, kind: str = "F16") -> Shape:
    """A stand-in for a vision projector (mmproj) of the given size: the planner only counts its bytes."""
    shape = Shape("clip", {})
    width = 4096
    shape.add("v.weights.weight", (width, n_params // width), kind)
    return shape


# ---------------------------------------------------------------------------------------------------------
# Writing


def _type(kind: str) -> Any:
    import gguf

    return gguf.GGMLQuantizationType[kind]


def tensor_bytes(shape: tuple[int, ...], kind: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[_type(kind)]
    elements = int(np.prod(shape))
    if shape[0] % block:
        raise ValueError(f"a row of {shape[0]} values is not a whole number of {kind} blocks of {block}")
    return elements // block * size


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def weight_bytes(shape: Shape) -> int:
    return sum(tensor_bytes(dims, kind) for _, dims, kind in shape.tensors)


def _writer(path: Path, shape: Shape, vocab: int | None) -> Any:
    import gguf

    writer = gguf.GGUFWriter(path, shape.arch)
    writer.add_name(f"llmrig-test-{shape.arch}")
    for key, value in shape.hparams.items():
        full = f"{shape.arch}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        else:
            writer.add_array(full, value)
    if vocab:
        add_vocabulary(writer, vocab)
    return writer


def write_random(path: Path, shape: Shape, vocab: int, seed: int = 0) -> None:
    """A loadable model with random weights: F32 for vectors, F16 for matrices (tiny shapes only)."""
    writer = _writer(path, shape, vocab)
    rng = np.random.default_rng(seed)
    for name, dims, kind in shape.tensors:
        numpy_shape = tuple(reversed(dims))
        if kind == "F32":
            array = np.ones(numpy_shape) if name.endswith("norm.weight") else rng.standard_normal(numpy_shape) * 0.02
            writer.add_tensor(name, array.astype(np.float32))
        else:
            scale = 1.0 / np.sqrt(dims[0])
            writer.add_tensor(name, (rng.standard_normal(numpy_shape) * scale).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_sparse(path: Path, shape: Shape) -> int:
    """A shape file: header and tensor table as a real file of this shape would have them, then a sparse
    data section of the right length (no disk blocks). Returns the file size."""
    writer = _writer(path, shape, None)
    for name, dims, kind in shape.tensors:
        writer.add_tensor_info(
            name, tuple(reversed(dims)), np.dtype(np.float32), tensor_bytes(dims, kind), raw_dtype=_type(kind)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    data = sum(_aligned(tensor_bytes(dims, kind)) for _, dims, kind in shape.tensors)
    with open(path, "r+b") as handle:
        start = _aligned(handle.seek(0, 2))
        handle.truncate(start + data)
    return start + data
