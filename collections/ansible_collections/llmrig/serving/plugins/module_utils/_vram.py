"""VRAM planner, the memory model: what one model needs on each GPU, from its GGUF metadata (module_utils._gguf).

The arithmetic follows how llama.cpp allocates (src/llama-kv-cache*.cpp, llama-memory-recurrent.cpp,
llama-context.cpp of the pinned tree):

- weights: the bytes of each tensor as stored; repeating layers (blk.N.*) go to the device that holds layer N
  under the layer split, the output head to the device after the last layer, token_embd stays in host RAM
  (a model with tied embeddings gets a copy of it on the output device as its output head);
- KV cache: per attention layer, cells x row size of its K and V (n_embd_head x n_head_kv elements in the
  cache type). Full-attention layers hold n_ctx cells (padded to 256); sliding-window layers hold
  pad256(min(n_ctx, n_swa x n_seq + n_ubatch)) with a unified cache; recurrent layers hold no KV but a
  fixed f32 state per sequence, kept 1 + draft_n_max times when a drafting speculative type needs to roll
  the state back (llama_memory_recurrent: n_rs_seq);
- multi-token prediction (MTP): the model's nextn blocks (the last `nextn_predict_layers` blocks) are
  loaded only with `draft-mtp`; their KV cache lives in a second (MTP) context of the same cells per
  stream, which also has its own compute buffer;
- compute buffer: estimated from the measured H100 figures (n_ubatch 512, flash attention on): an f16
  copy of the largest layer cache, the n_ctx x n_ubatch f16 mask, and the FFN activations;
- a fixed per-process overhead (CUDA context, cuBLAS): measured 600 MiB on an H100, an input per GPU model.

Where a model's layout is not known well enough (an unknown sliding-window pattern), the planner counts
the larger figure (every layer full attention) and says so, so a plan errs towards not fitting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ansible_collections.llmrig.serving.plugins.module_utils._gguf import MIB, ModelMeta, Tensor

# (elements per block, bytes per block) of the KV cache types llama-server accepts
KV_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}
# cheaper first, for suggestions
KV_TYPES_BY_SIZE = ("q4_0", "iq4_nl", "q4_1", "q5_0", "q5_1", "q8_0", "f16")
# Architectures whose recurrent state llama.cpp can roll back after rejected drafts (llama-arch.cpp:
# llm_arch_supports_rs_rollback): with a drafting speculative type they keep 1 + draft_n_max states.
RS_ROLLBACK_ARCHS = frozenset(
    {
        "kimi-k3",
        "qwen35",
        "qwen35moe",
        "qwen4exp",
        "deepseek4",
        "glm5-next",
        "nemotron_h",
        "nemotron_h_moe",
        "lfm2",
        "lfm2moe",
        "bailingmoe3",
    }
)
# speculative types that roll the target's recurrent state back (common.h: need_n_rs_seq); of the fleet's
# types, draft-mtp and draft-eagle3
RS_ROLLBACK_SPEC_TYPES = frozenset({"draft-mtp", "draft-eagle3"})
DEFAULT_DRAFT_N_MAX = 3  # common_params_speculative_draft::n_max


def row_bytes(kv_type: str, elements: int) -> int:
    block, size = KV_TYPES[kv_type]
    if elements % block:
        raise ValueError(f"{elements} elements are not a whole number of {kv_type} blocks of {block}")
    return elements // block * size


def pad(value: int, to: int) -> int:
    return (value + to - 1) // to * to


@dataclass
class Settings:
    """The fleet entry's settings that change memory."""

    context: int
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    parallel: int = 1
    # one KV stream shared by all slots (llama-server's default when it picks the slot count itself), or
    # one stream per slot, each with context / parallel cells (the default when parallel is set)
    unified: bool = False
    n_ubatch: int = 512
    gpu_layers: int | None = None  # None: all layers
    tensor_split: list[float] | None = None
    split_mode: str = "layer"
    main_gpu: int = 0
    host_memory: bool = False  # a CPU build: everything, token_embd included, lives in host RAM
    spec_type: str = "none"
    draft_n_max: int = DEFAULT_DRAFT_N_MAX
    # the draft (MTP or draft-model) context's KV cache types: llama-server's --spec-draft-type-k/v, f16
    # unless set, whatever the main context uses
    draft_cache_type_k: str = "f16"
    draft_cache_type_v: str = "f16"

    @property
    def mtp(self) -> bool:
        return self.spec_type == "draft-mtp"

    @property
    def draft_kv_types(self) -> tuple[str, str]:
        return self.draft_cache_type_k, self.draft_cache_type_v


@dataclass
class DeviceUse:
    weights: int = 0
    kv: int = 0
    recurrent: int = 0
    compute: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.recurrent + self.compute + self.overhead


def kv_streams(settings: Settings) -> int:
    return 1 if settings.unified else max(settings.parallel, 1)


def kv_cells(meta: ModelMeta, settings: Settings) -> tuple[int, int]:
    """Cells per KV stream: (full-attention layers, sliding-window layers), as llama_context and
    llama_kv_cache_iswa size them."""
    n_ctx = pad(settings.context, 256)
    streams = kv_streams(settings)
    per_stream = n_ctx if streams == 1 else pad(n_ctx // streams, 256)
    window = meta.n_swa * (max(settings.parallel, 1) if settings.unified else 1) + settings.n_ubatch
    swa = pad(min(per_stream, window), 256) if meta.n_swa else 0
    return per_stream, swa


def layer_kv_bytes(meta: ModelMeta, settings: Settings, il: int, mtp_context: bool = False) -> int:
    """KV cache of layer il in the main context, or (mtp_context) in the MTP draft context, which holds
    only the nextn blocks. The main context never holds them."""
    if meta.recurrent_layers[il] or meta.n_head_kv[il] == 0:
        return 0
    if (il >= meta.n_trunk) != mtp_context or (mtp_context and not settings.mtp):
        return 0
    full, swa = kv_cells(meta, settings)
    cells = (swa if meta.swa_layers[il] else full) * kv_streams(settings)
    head_k, head_v = meta.head_sizes(il)
    type_k, type_v = settings.draft_kv_types if mtp_context else (settings.cache_type_k, settings.cache_type_v)
    k = row_bytes(type_k, head_k * meta.n_head_kv[il])
    v = row_bytes(type_v, head_v * meta.n_head_kv[il])
    return cells * (k + v)


def rs_snapshots(meta: ModelMeta, settings: Settings) -> int:
    """Recurrent states kept per sequence: 1, plus draft_n_max for rolling back rejected drafts."""
    rollback = meta.arch in RS_ROLLBACK_ARCHS and settings.spec_type in RS_ROLLBACK_SPEC_TYPES
    return 1 + (settings.draft_n_max if rollback else 0)


def layer_recurrent_bytes(meta: ModelMeta, settings: Settings, il: int) -> int:
    if not meta.recurrent_layers[il]:
        return 0
    return max(settings.parallel, 1) * rs_snapshots(meta, settings) * (meta.recurrent_r + meta.recurrent_s) * 4


def layer_devices(n_layer: int, n_devices: int, split: list[float], gpu_layers: int | None) -> list[int | None]:
    """Device of each layer and of the output head (index n_layer), as llama.cpp's load_tensors assigns
    them: with n_gpu_layers = ngl, layers from n_layer + 1 - ngl on are offloaded, and offloaded layer il
    goes to the first device whose cumulative share of the split exceeds (il - first) / offloaded.
    None: the layer stays on the CPU."""
    ngl = n_layer + 1 if gpu_layers is None else gpu_layers
    first = max(n_layer + 1 - ngl, 0)
    offloaded = min(ngl, n_layer + 1)
    total = float(sum(split))
    bounds, acc = [], 0.0
    for share in split:
        acc += share / total
        bounds.append(acc)
    out: list[int | None] = []
    for il in range(n_layer + 1):
        if il < first or offloaded <= 0:
            out.append(None)
            continue
        position = (il - first) / offloaded
        out.append(next((d for d, bound in enumerate(bounds) if position < bound), n_devices - 1))
    return out


def compute_bytes(meta: ModelMeta, settings: Settings) -> int:
    """Estimated compute buffer of one device (see the module docstring). The f16 copy is of the largest
    layer cache: a sliding-window layer's holds only its window's cells."""
    n_ctx = pad(settings.context, 256)
    swa_cells = kv_cells(meta, settings)[1] * kv_streams(settings)
    kv_copy = 0
    for il, n_head_kv in enumerate(meta.n_head_kv):
        if n_head_kv and not meta.recurrent_layers[il]:
            cells = swa_cells if meta.swa_layers[il] else n_ctx
            kv_copy = max(kv_copy, cells * sum(meta.head_sizes(il)) * n_head_kv * 2)
    mask = n_ctx * settings.n_ubatch * 2
    ffn = settings.n_ubatch * meta.n_ff * 4
    return kv_copy + mask + ffn


def tensor_layer(name: str) -> int | None:
    if name.startswith("blk."):
        return int(name.split(".", 2)[1])
    return None


def loaded(meta: ModelMeta, settings: Settings, tensor: Tensor) -> bool:
    """Whether llama.cpp loads the tensor: the nextn (MTP) blocks only with draft-mtp (TENSOR_SKIP)."""
    il = tensor_layer(tensor.name)
    return il is None or il < meta.n_trunk or settings.mtp


def plan_devices(meta: ModelMeta, settings: Settings, capacity: list[int], overhead: list[int]) -> list[DeviceUse]:
    """Bytes each GPU needs for this model (the per-process overhead once per device used). Without a
    tensor_split, llama.cpp splits by free memory: the GPUs' capacities stand in for it."""
    n_devices = len(capacity)
    uses = [DeviceUse() for _ in range(n_devices)]
    if settings.split_mode == "none" or n_devices == 1:
        split = [1.0 if d == (settings.main_gpu if n_devices > 1 else 0) else 0.0 for d in range(n_devices)]
    else:
        split = settings.tensor_split or [float(c) for c in capacity]
    devices = layer_devices(meta.n_layer, n_devices, split, settings.gpu_layers)
    names = {tensor.name for tensor in meta.tensors}
    for tensor in meta.tensors:
        if not loaded(meta, settings, tensor):
            continue
        il = tensor_layer(tensor.name)
        if tensor.name == "token_embd.weight" and "output.weight" not in names and not settings.host_memory:
            # tied embeddings: llama.cpp puts a copy of token_embd on the output device as the output head
            output_device = devices[meta.n_layer]
            if output_device is not None:
                uses[output_device].weights += tensor.n_bytes
            continue
        if settings.host_memory:
            uses[0].weights += tensor.n_bytes
            continue
        if il is None:
            # the output head (and its norm) follows the layers; token_embd stays in host RAM
            device = devices[meta.n_layer] if tensor.name.startswith("output") else None
        else:
            device = devices[il]
        if device is not None:
            uses[device].weights += tensor.n_bytes
    mtp_devices: set[int] = set()
    for il in range(meta.n_layer):
        device = 0 if settings.host_memory else devices[il]
        if device is not None:
            uses[device].kv += layer_kv_bytes(meta, settings, il)
            uses[device].recurrent += layer_recurrent_bytes(meta, settings, il)
            mtp_kv = layer_kv_bytes(meta, settings, il, mtp_context=True)
            if mtp_kv:
                uses[device].kv += mtp_kv
                mtp_devices.add(device)
    compute = compute_bytes(meta, settings)
    for device, use in enumerate(uses):
        if use.weights or use.kv:
            # the MTP context reserves a compute buffer of its own on the device of its blocks
            use.compute = compute * (2 if device in mtp_devices else 1)
            use.overhead = overhead[device]
    return uses


def kv_total(meta: ModelMeta, settings: Settings, mtp_context: bool = False) -> int:
    return sum(layer_kv_bytes(meta, settings, il, mtp_context) for il in range(meta.n_layer))


def recurrent_total(meta: ModelMeta, settings: Settings) -> int:
    return sum(layer_recurrent_bytes(meta, settings, il) for il in range(meta.n_layer))


def loaded_weight_bytes(meta: ModelMeta, settings: Settings) -> int:
    return sum(t.n_bytes for t in meta.tensors if loaded(meta, settings, t))


def mib(value: int) -> float:
    return round(value / MIB, 2)


def fits(uses: list[DeviceUse], capacity: list[int]) -> bool:
    return all(use.total <= cap for use, cap in zip(uses, capacity, strict=True))


def largest_context(fits_at: Callable[[int], bool], ceiling: int, step: int = 1024) -> int:
    """The largest context, a multiple of step and at most ceiling (rounded down), for which fits_at holds;
    0 if none. Memory grows with the context, so a binary search finds it."""
    low, high = 0, max(ceiling, step) // step
    while low < high:
        middle = (low + high + 1) // 2
        if fits_at(middle * step):
            low = middle
        else:
            high = middle - 1
    return low * step


def largest_fitting_context(
    meta: ModelMeta, settings: Settings, capacity: list[int], overhead: list[int], step: int = 1024
) -> int:
    """The largest context (a multiple of step) whose plan fits every device's capacity; 0 if none."""

    def fits_at(context: int) -> bool:
        return fits(plan_devices(meta, replace(settings, context=context), capacity, overhead), capacity)

    return largest_context(fits_at, settings.context, step)


DEFAULT_PARALLEL = 4  # llama-server's automatic slot count (-np -1), as its log reports
DEFAULT_OVERHEAD_MIB = 600  # per model process and GPU, measured on an H100


def entry_settings(entry: dict[str, Any], host_memory: bool = False) -> Settings:
    """Memory-relevant settings of a validated fleet entry (module_utils._fleet.validate_entry)."""
    gpu_layers = entry.get("gpu_layers")
    unified = entry.get("extra_args", {}).get("kv-unified")
    speculative = entry.get("speculative", {})
    return Settings(
        context=int(entry["context"]),
        cache_type_k=entry.get("cache_type_k", "f16"),
        cache_type_v=entry.get("cache_type_v", "f16"),
        parallel=int(entry.get("parallel", DEFAULT_PARALLEL)),
        unified="parallel" not in entry if unified is None else unified in (True, "true", "on", 1),
        gpu_layers=gpu_layers if isinstance(gpu_layers, int) else None,
        tensor_split=[float(v) for v in entry["tensor_split"]] if "tensor_split" in entry else None,
        split_mode=entry.get("split_mode", "layer"),
        main_gpu=int(entry.get("main_gpu", 0)),
        host_memory=host_memory,
        spec_type=speculative.get("type", "none"),
        draft_n_max=int(speculative.get("draft_n_max", DEFAULT_DRAFT_N_MAX)),
        draft_cache_type_k=speculative.get("cache_type_k", "f16"),
        draft_cache_type_v=speculative.get("cache_type_v", "f16"),
    )
