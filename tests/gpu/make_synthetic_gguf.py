#!/usr/bin/env python3
"""Write a GGUF of a realistic transformer shape with random weights, for GPU proof runs without downloads.

Architecture `llama` (dense, grouped-query attention, SwiGLU), F16 weights, a SentencePiece-style vocabulary
of byte tokens plus filler. The weights are random, so the text is noise; memory use, load time and decode
speed are those of a real model of the same shape. Tensors are streamed to disk one at a time, so a model
larger than RAM can be written. Needs the `gguf` package (and numpy).

Default shape: an 8B-class model (32 layers, 4096 wide, 14336 FFN, 32 heads, 8 KV heads, 32000 tokens),
about 15 GiB.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gguf_shapes import add_vocabulary

LOG = logging.getLogger("synthetic-gguf")


def tensor_shapes(layers: int, width: int, ffn: int, heads: int, kv_heads: int, vocab: int) -> list[tuple]:
    """(name, numpy shape) of every tensor; numpy shape is (rows=out, cols=in) as llama.cpp expects."""
    head_dim = width // heads
    kv_width = kv_heads * head_dim
    shapes: list[tuple] = [("token_embd.weight", (vocab, width))]
    for block in range(layers):
        prefix = f"blk.{block}."
        shapes += [
            (prefix + "attn_norm.weight", (width,)),
            (prefix + "attn_q.weight", (width, width)),
            (prefix + "attn_k.weight", (kv_width, width)),
            (prefix + "attn_v.weight", (kv_width, width)),
            (prefix + "attn_output.weight", (width, width)),
            (prefix + "ffn_norm.weight", (width,)),
            (prefix + "ffn_gate.weight", (ffn, width)),
            (prefix + "ffn_up.weight", (ffn, width)),
            (prefix + "ffn_down.weight", (width, ffn)),
        ]
    shapes += [("output_norm.weight", (width,)), ("output.weight", (vocab, width))]
    return shapes


def write(path: Path, layers: int, width: int, ffn: int, heads: int, kv_heads: int, vocab: int, ctx: int) -> int:
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"llmrig-synthetic-{layers}x{width}")
    writer.add_context_length(ctx)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(width // heads)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_vocabulary(writer, vocab)

    shapes = tensor_shapes(layers, width, ffn, heads, kv_heads, vocab)
    for name, shape in shapes:
        dtype = np.float32 if len(shape) == 1 else np.float16
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    total = 0
    for index, (name, shape) in enumerate(shapes):
        if len(shape) == 1:
            array = np.ones(shape, dtype=np.float32)  # norms
        else:
            scale = 1.0 / np.sqrt(shape[1])
            array = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)
        writer.write_tensor_data(array)
        total += array.size
        if index % 20 == 0:
            LOG.info("wrote %s (%d/%d tensors)", name, index + 1, len(shapes))
    writer.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--context", type=int, default=131072, help="trained context recorded in the metadata")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    params = write(opts.output, opts.layers, opts.width, opts.ffn, opts.heads, opts.kv_heads, opts.vocab, opts.context)
    LOG.info("%s: %.2f B parameters, %.2f GiB", opts.output, params / 1e9, opts.output.stat().st_size / 2**30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
