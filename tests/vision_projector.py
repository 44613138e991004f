"""A vision projector (mmproj) for the gemma test model, written with the `gguf` package, and a test image.

No vision GGUF can be downloaded on the machines this project is tested on, so the vision path (a fleet
entry with `mmproj`, llama-server's `--mmproj`, an `image_url` in a chat request) is proven with a projector
of llama.cpp's `gemma3` type (a SigLIP encoder, average pooling, RMS norm, projection to the text model's
width) that has one small encoder layer and random weights. The text model takes its image embeddings and
answers; what it says about the image means nothing. Keys and tensor names follow the pinned tree's
tools/mtmd (clip-impl.h, clip.cpp, models/siglip.cpp).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

IMAGE_SIZE = 128  # pixels; 8 x 8 patches of 16, pooled 4 x 4 into 2 x 2 = 4 image tokens
PATCH_SIZE = 16
WIDTH = 64  # the encoder's width
FFN = 128
HEADS = 4


def text_width(model: Path) -> int:
    """The text model's embedding width, which the projector's output must have."""
    import gguf

    reader = gguf.GGUFReader(model)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    field = reader.fields[f"{arch}.embedding_length"]
    return int(field.parts[field.data[0]][0])


def write_gemma3_projector(path: Path, projection_dim: int, seed: int = 0) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name("llmrig-test-gemma3-projector (random weights)")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", FFN)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.projection_dim", projection_dim)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    rng = np.random.default_rng(seed)
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # ggml order (ne0 first), as llama.cpp prints shapes; numpy gets them reversed
    tensors: list[tuple[str, tuple[int, ...]]] = [
        ("v.patch_embd.weight", (PATCH_SIZE, PATCH_SIZE, 3, WIDTH)),
        ("v.patch_embd.bias", (WIDTH,)),
        ("v.position_embd.weight", (WIDTH, patches)),
        ("v.post_ln.weight", (WIDTH,)),
        ("v.post_ln.bias", (WIDTH,)),
        ("mm.soft_emb_norm.weight", (WIDTH,)),
        ("mm.input_projection.weight", (projection_dim, WIDTH)),
    ]
    block = "v.blk.0."
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        tensors += [(f"{block}{name}.weight", (WIDTH, WIDTH)), (f"{block}{name}.bias", (WIDTH,))]
    tensors += [
        (f"{block}ln1.weight", (WIDTH,)),
        (f"{block}ln1.bias", (WIDTH,)),
        (f"{block}ln2.weight", (WIDTH,)),
        (f"{block}ln2.bias", (WIDTH,)),
        (f"{block}ffn_up.weight", (WIDTH, FFN)),
        (f"{block}ffn_up.bias", (FFN,)),
        (f"{block}ffn_down.weight", (FFN, WIDTH)),
        (f"{block}ffn_down.bias", (WIDTH,)),
    ]
    for name, dims in tensors:
        shape = tuple(reversed(dims))
        if name == "v.position_embd.weight":  # added to F32 activations: CPU adds take no F16 operand
            writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
        elif len(dims) == 1:
            norm = name.endswith(".weight")  # a norm's scale; biases start at zero
            writer.add_tensor(name, (np.ones(shape) if norm else np.zeros(shape)).astype(np.float32))
        else:
            writer.add_tensor(name, (rng.standard_normal(shape) / np.sqrt(dims[0])).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def png(width: int = 96, height: int = 64) -> bytes:
    """An RGB PNG with a colour gradient (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(value for x in range(width) for value in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
