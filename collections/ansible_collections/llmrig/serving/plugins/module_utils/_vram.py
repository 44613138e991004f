"""VRAM planner: what each fleet entry needs on each GPU, from the model's GGUF metadata and tensor table.

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

from dataclasses import dataclass, field, replace
from typing import Any

MIB = 1024 * 1024
# Version of the parsed metadata kept in the cache: a cache written by an older planner is read again
# from the file instead of being trusted (2: MTP blocks, per-layer head sizes).
META_CACHE_VERSION = 2

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

# Layer patterns llama.cpp hard-codes per architecture (llama-model.cpp: hparams.set_swa_pattern(n)):
# with pattern n, layer il uses the sliding window unless il % n == n - 1.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6}
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
class Tensor:
    name: str
    n_bytes: int


@dataclass
class ModelMeta:
    """What the planner needs from a GGUF file."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: list[int]  # per layer; 0 for a layer without attention
    head_k: int
    head_v: int
    head_k_swa: int = 0  # 0: the same as head_k (key_length_swa of gemma3n/gemma4)
    head_v_swa: int = 0
    n_nextn: int = 0  # the last n_nextn blocks are multi-token-prediction blocks
    n_swa: int = 0
    swa_layers: list[bool] = field(default_factory=list)
    recurrent_layers: list[bool] = field(default_factory=list)
    recurrent_r: int = 0  # f32 elements of conv state per sequence and recurrent layer
    recurrent_s: int = 0  # f32 elements of ssm state per sequence and recurrent layer
    context_train: int = 0
    tensors: list[Tensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_trunk(self) -> int:
        """Layers of the model proper, without the MTP blocks."""
        return self.n_layer - self.n_nextn

    def head_sizes(self, il: int) -> tuple[int, int]:
        if self.swa_layers[il]:
            return self.head_k_swa or self.head_k, self.head_v_swa or self.head_v
        return self.head_k, self.head_v


def meta_from_fields(fields: dict[str, Any], tensors: list[Tensor]) -> ModelMeta:
    """Build ModelMeta from GGUF key/values (already decoded to Python values) and the tensor table."""
    arch = str(fields["general.architecture"])

    def key(name: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{name}", default)

    n_layer = int(key("block_count"))
    n_embd = int(key("embedding_length"))
    n_head = key("attention.head_count", 0)
    n_head = int(max(n_head) if isinstance(n_head, list) else n_head)
    raw_kv = key("attention.head_count_kv", n_head)
    n_head_kv = [int(v) for v in raw_kv] if isinstance(raw_kv, list) else [int(raw_kv)] * n_layer
    head_k = int(key("attention.key_length", n_embd // n_head if n_head else 0))
    head_v = int(key("attention.value_length", head_k))
    n_ff = key("feed_forward_length", 0)
    n_ff = int(max(n_ff) if isinstance(n_ff, list) else n_ff)
    meta = ModelMeta(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=head_k,
        head_v=head_v,
        head_k_swa=int(key("attention.key_length_swa", 0) or 0),
        head_v_swa=int(key("attention.value_length_swa", 0) or 0),
        n_nextn=int(key("nextn_predict_layers", 0) or 0),
        context_train=int(key("context_length", 0)),
        tensors=tensors,
    )
    n_trunk = meta.n_trunk

    n_swa = int(key("attention.sliding_window", 0) or 0)
    pattern = key("attention.sliding_window_pattern")
    if n_swa:
        meta.n_swa = n_swa
        if isinstance(pattern, list):
            meta.swa_layers = [bool(v) for v in pattern] + [False] * (n_layer - len(pattern))
        elif arch in SWA_PATTERNS or pattern:
            period = int(pattern or SWA_PATTERNS[arch])
            meta.swa_layers = [il < n_trunk and il % period < period - 1 for il in range(n_layer)]
        else:
            meta.notes.append(
                f"{arch}: sliding-window layout unknown to the planner; every layer counted as full attention"
            )
            meta.n_swa = 0
    if not meta.swa_layers:
        meta.swa_layers = [False] * n_layer

    interval = key("full_attention_interval")
    listed = key("attention.recurrent_layers")
    d_conv, d_inner = int(key("ssm.conv_kernel", 0) or 0), int(key("ssm.inner_size", 0) or 0)
    d_state, n_group = int(key("ssm.state_size", 0) or 0), int(key("ssm.group_count", 0) or 0)
    # the MTP blocks are attention blocks (llama_hparams::set_recr_pattern)
    if isinstance(listed, list):
        meta.recurrent_layers = [bool(v) and il < n_trunk for il, v in enumerate(listed)]
        meta.recurrent_layers += [False] * (n_layer - len(listed))
    elif interval or arch in ("qwen35", "qwen35moe"):
        period = int(interval or 4)  # qwen35's default when the key is missing
        meta.recurrent_layers = [il < n_trunk and (il + 1) % period != 0 for il in range(n_layer)]
    elif d_inner and not any(meta.n_head_kv):
        meta.recurrent_layers = [True] * n_layer
    else:
        meta.recurrent_layers = [False] * n_layer
    if any(meta.recurrent_layers):
        meta.recurrent_r = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
        meta.recurrent_s = d_state * d_inner
        for il, recurrent in enumerate(meta.recurrent_layers):
            if recurrent:
                meta.n_head_kv[il] = 0
    return meta


def _meta_from_reader(reader: Any, projector: bool) -> ModelMeta:
    fields: dict[str, Any] = {}
    for name, field_ in reader.fields.items():
        if name.startswith("tokenizer.") or name.startswith("GGUF."):
            continue
        fields[name] = field_.contents()
    tensors = [Tensor(t.name, int(t.n_bytes)) for t in reader.tensors]
    if projector:
        arch = str(fields.get("general.architecture", "clip"))
        return ModelMeta(arch, 0, 0, 0, 0, [], 0, 0, tensors=tensors)
    return meta_from_fields(fields, tensors)


def read_gguf(path: str, projector: bool = False) -> ModelMeta:
    """Read the metadata and tensor table of a local GGUF file with the gguf package."""
    from gguf import GGUFReader  # imported here: only the planner needs it

    return _meta_from_reader(GGUFReader(path), projector)


def read_gguf_url(url: str, projector: bool = False, first: int = 8 * MIB, timeout: float = 60) -> ModelMeta:
    """Read a remote GGUF's metadata with HTTP range requests, before (and without) downloading it: the
    fetched head is written at the start of a sparse file of the full size, and more is fetched until the
    metadata and tensor table lie inside what was fetched."""
    import tempfile
    import urllib.request

    from gguf import GGUFReader

    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
        size = int(response.headers["Content-Length"])
    want = min(first, size)
    with tempfile.NamedTemporaryFile(suffix=".gguf") as sparse:
        while True:
            request = urllib.request.Request(url, headers={"Range": f"bytes=0-{want - 1}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status != 206 and want < size:
                    raise ValueError(f"{url}: the server ignores range requests (HTTP {response.status})")
                head = response.read(want)
            sparse.seek(0)
            sparse.truncate(size)
            sparse.write(head)
            sparse.flush()
            try:
                reader = GGUFReader(sparse.name)
                if reader.data_offset <= len(head):
                    return _meta_from_reader(reader, projector)
            except (ValueError, IndexError, KeyError, UnicodeDecodeError):
                if want >= size:
                    raise
            if want >= size:
                raise ValueError(f"{url}: no complete GGUF header in {size} bytes")
            want = min(want * 4, size)


def meta_to_json(meta: ModelMeta) -> dict[str, Any]:
    data = dict(meta.__dict__)
    data["tensors"] = [[t.name, t.n_bytes] for t in meta.tensors]
    return data


def meta_from_json(data: dict[str, Any]) -> ModelMeta:
    values = dict(data)
    values["tensors"] = [Tensor(name, n_bytes) for name, n_bytes in data["tensors"]]
    return ModelMeta(**values)


def load_metas(entries: list[dict[str, Any]], cache_dir: str | None) -> dict[str, ModelMeta]:
    """The metadata of every file the entries name (model, projector, draft model), keyed by file name.
    Parsed metadata is cached by sha256 in cache_dir, so a plan is quick and needs no network the second
    time."""
    import json
    import os

    wanted: dict[str, tuple[dict[str, Any], bool]] = {}
    for entry in entries:
        wanted.setdefault(entry["source"]["file"], (entry["source"], False))
        if "mmproj" in entry:
            wanted.setdefault(entry["mmproj"]["file"], (entry["mmproj"], True))
        draft = entry.get("speculative", {}).get("model")
        if draft:
            wanted.setdefault(draft["file"], (draft, False))
    metas = {}
    for file, (source, projector) in wanted.items():
        name = f"{source['sha256']}.v{META_CACHE_VERSION}.json"
        cached = os.path.join(cache_dir, name) if cache_dir else None
        if cached and os.path.exists(cached):
            with open(cached, encoding="utf-8") as handle:
                metas[file] = meta_from_json(json.load(handle))
            continue
        if "path" in source:
            meta = read_gguf(os.path.expanduser(source["path"]), projector)
        else:
            meta = read_gguf_url(source["url"], projector)
        if cached:
            os.makedirs(cache_dir or ".", exist_ok=True)
            with open(cached + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(meta_to_json(meta), handle)
            os.replace(cached + ".tmp", cached)
        metas[file] = meta
    return metas


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


def largest_fitting_context(
    meta: ModelMeta, settings: Settings, capacity: list[int], overhead: list[int], step: int = 1024
) -> int:
    """The largest context (a multiple of step) whose plan fits every device's capacity; 0 if none."""
    low, high = 0, max(settings.context, step) // step
    while low < high:
        middle = (low + high + 1) // 2
        trial = Settings(**{**settings.__dict__, "context": middle * step})
        if fits(plan_devices(meta, trial, capacity, overhead), capacity):
            low = middle
        else:
            high = middle - 1
    return low * step


# ---------------------------------------------------------------------------------------------------------
# Fleet plans


class PlanError(Exception):
    """A fleet entry does not fit; the message names the entry, the GPU, the shortfall and what would fit."""


DEFAULT_PARALLEL = 4  # llama-server's automatic slot count (-np -1), as its log reports
DEFAULT_OVERHEAD_MIB = 600  # per model process and GPU, measured on an H100


def device_limits(gpus: list[dict[str, Any]], margin_mib: int) -> tuple[list[int], list[int]]:
    """(bytes each GPU may hold after the margin, fixed overhead bytes per process on each GPU)."""
    capacity = [(int(g["memory_mib"]) - margin_mib) * MIB for g in gpus]
    overhead = [int(g.get("overhead_mib", DEFAULT_OVERHEAD_MIB)) * MIB for g in gpus]
    return capacity, overhead


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


def plan_entry(
    entry: dict[str, Any],
    metas: dict[str, ModelMeta],
    gpus: list[dict[str, Any]],
    margin_mib: int,
) -> dict[str, Any]:
    """Plan one validated entry on the GPUs [{name, memory_mib, overhead_mib, host_memory}]; metas maps
    file -> meta. A single device with host_memory true stands for the RAM of a CPU build."""
    settings = entry_settings(entry, host_memory=bool(gpus[0].get("host_memory")) and len(gpus) == 1)
    meta = metas[entry["source"]["file"]]
    capacity, overhead = device_limits(gpus, margin_mib)
    uses = plan_devices(meta, settings, capacity, overhead)
    extra: list[str] = list(meta.notes)
    if meta.n_nextn and settings.mtp:
        extra.append(
            f"draft-mtp: {meta.n_nextn} MTP block(s) loaded; their KV cache "
            f"({mib(kv_total(meta, settings, mtp_context=True))} MiB) and a second compute buffer belong to the "
            "MTP context"
            + (
                f"; recurrent state kept {rs_snapshots(meta, settings)}x for draft rollback"
                if any(meta.recurrent_layers)
                else ""
            )
        )
    elif meta.n_nextn:
        extra.append(f"{meta.n_nextn} MTP block(s) in the file, not loaded without speculative.type draft-mtp")
    if "mmproj" in entry and entry["mmproj"]["file"] in metas:
        projector = metas[entry["mmproj"]["file"]]
        uses[settings.main_gpu if len(gpus) > 1 else 0].weights += projector.weight_bytes
        extra.append("vision projector weights on the main GPU; its image-encoding buffers are not modelled")
    draft = entry.get("speculative", {}).get("model")
    if draft and draft["file"] in metas:
        # the draft model's context: the same cells and split, the draft KV cache types
        draft_settings = replace(
            settings,
            cache_type_k=settings.draft_cache_type_k,
            cache_type_v=settings.draft_cache_type_v,
            spec_type="none",
        )
        for device, use in enumerate(plan_devices(metas[draft["file"]], draft_settings, capacity, [0] * len(gpus))):
            uses[device].weights += use.weights
            uses[device].kv += use.kv
        extra.append("draft model planned with the same context and split, KV in the draft cache types")
    devices = []
    for gpu, use, cap in zip(gpus, uses, capacity, strict=True):
        devices.append(
            {
                "gpu": gpu.get("name", ""),
                "memory_mib": int(gpu["memory_mib"]),
                "weights_mib": mib(use.weights),
                "kv_mib": mib(use.kv),
                "recurrent_mib": mib(use.recurrent),
                "compute_mib": mib(use.compute),
                "overhead_mib": mib(use.overhead),
                "total_mib": mib(use.total),
                "free_after_mib": mib(int(gpu["memory_mib"]) * MIB - use.total),
                "fits": use.total <= cap,
            }
        )
    return {
        "name": entry["name"],
        "file": entry["source"]["file"],
        "arch": meta.arch,
        "context": settings.context,
        "cache_type_k": settings.cache_type_k,
        "cache_type_v": settings.cache_type_v,
        "parallel": settings.parallel,
        "kv_cells_per_stream": dict(zip(("full", "sliding_window"), kv_cells(meta, settings), strict=True)),
        "kv_streams": kv_streams(settings),
        "context_per_slot": settings.context if settings.unified else kv_cells(meta, settings)[0],
        "devices": devices,
        "total_mib": mib(sum(u.total for u in uses)),
        "fits": all(d["fits"] for d in devices),
        "notes": extra,
        "_uses": uses,
        "_meta": meta,
        "_settings": settings,
    }


def suggestions(plan: dict[str, Any], gpus: list[dict[str, Any]], margin_mib: int) -> str:
    """What would fit instead: the largest context, and cheaper KV cache types at the asked context."""
    meta: ModelMeta = plan["_meta"]
    settings: Settings = plan["_settings"]
    capacity, overhead = device_limits(gpus, margin_mib)
    parts = []
    context = largest_fitting_context(meta, settings, capacity, overhead)
    if context:
        parts.append(f"context {context} fits")
    else:
        parts.append("no context fits: fewer gpu_layers or a smaller quantization is needed")
    for kv_type in KV_TYPES_BY_SIZE:
        if row_bytes(kv_type, 256) >= row_bytes(settings.cache_type_k, 256):
            break
        trial = Settings(**{**settings.__dict__, "cache_type_k": kv_type, "cache_type_v": kv_type})
        if fits(plan_devices(meta, trial, capacity, overhead), capacity):
            parts.append(f"or cache_type_k/v {kv_type} at context {settings.context}")
            break
    return "; ".join(parts)


def shortfall_message(index: int, plan: dict[str, Any], gpus: list[dict[str, Any]], margin_mib: int) -> str:
    worst = max(
        (d for d in plan["devices"] if not d["fits"]),
        key=lambda d: d["total_mib"] - (d["memory_mib"] - margin_mib),
    )
    position = plan["devices"].index(worst)
    short = worst["total_mib"] - (worst["memory_mib"] - margin_mib)
    return (
        f"fleet entry '{plan['name']}' (#{index + 1}): field 'context': needs {worst['total_mib']:.0f} MiB on "
        f"GPU {position} ({worst['gpu'] or 'unnamed'}, {worst['memory_mib']} MiB, margin {margin_mib} MiB): "
        f"{short:.0f} MiB short (weights {worst['weights_mib']:.0f}, KV {worst['kv_mib']:.0f}, "
        f"compute {worst['compute_mib']:.0f}, overhead {worst['overhead_mib']:.0f}); "
        + suggestions(plan, gpus, margin_mib)
    )


def coresidency(plans: list[dict[str, Any]], gpus: list[dict[str, Any]], margin_mib: int) -> dict[str, Any]:
    """Which models fit on the GPUs together. Each model process brings its own overhead, so the sum of
    their per-device totals must fit. Returns the largest count of models that can always be resident
    together (what --models-max may be) and every pair that fits."""
    capacity, _ = device_limits(gpus, margin_mib)
    totals = [[u.total for u in plan["_uses"]] for plan in plans]

    def fit_together(indices: tuple[int, ...]) -> bool:
        return all(sum(totals[i][d] for i in indices) <= capacity[d] for d in range(len(gpus)))

    pairs = [
        [plans[a]["name"], plans[b]["name"]]
        for a in range(len(plans))
        for b in range(a + 1, len(plans))
        if fit_together((a, b))
    ]
    # the LRU evicts by count: --models-max n is only safe if ANY n models fit together,
    # which is the case when the n largest per device fit
    safe = 0
    for n in range(1, len(plans) + 1):
        if all(sum(sorted((t[d] for t in totals), reverse=True)[:n]) <= capacity[d] for d in range(len(gpus))):
            safe = n
    return {"models_max": max(safe, 1), "pairs_that_fit": pairs}


def plan_fleet(
    entries: list[dict[str, Any]], metas: dict[str, ModelMeta], gpus: list[dict[str, Any]], margin_mib: int
) -> dict[str, Any]:
    """Plan every entry; raise PlanError for the first that does not fit."""
    plans = [plan_entry(entry, metas, gpus, margin_mib) for entry in entries]
    for index, plan in enumerate(plans):
        if not plan["fits"]:
            raise PlanError(shortfall_message(index, plan, gpus, margin_mib))
    return {
        "gpus": gpus,
        "margin_mib": margin_mib,
        "models": [{k: v for k, v in plan.items() if not k.startswith("_")} for plan in plans],
        **coresidency(plans, gpus, margin_mib),
    }


def table(plan: dict[str, Any]) -> str:
    """The plan as a text table: one line per model and GPU."""
    head = f"{'model':<24} {'gpu':<4} {'weights':>9} {'kv':>9} {'state':>7} {'compute':>8} {'overhead':>8} "
    head += f"{'total':>9} {'of':>7} {'free':>8}  context, kv types"
    lines = [head, "-" * len(head)]
    for model in plan["models"]:
        for number, device in enumerate(model["devices"]):
            if not device["total_mib"]:
                continue
            lines.append(
                f"{model['name'][:24]:<24} {number:<4} {device['weights_mib']:>9.0f} {device['kv_mib']:>9.0f} "
                f"{device['recurrent_mib']:>7.0f} {device['compute_mib']:>8.0f} {device['overhead_mib']:>8.0f} "
                f"{device['total_mib']:>9.0f} {device['memory_mib']:>7} {device['free_after_mib']:>8.0f}  "
                f"{model['context']}, {model['cache_type_k']}/{model['cache_type_v']}"
                + ("" if device["fits"] else "  DOES NOT FIT")
            )
        for note in model["notes"]:
            lines.append(f"  note: {note}")
    lines.append(f"(MiB; margin kept free per GPU: {plan['margin_mib']} MiB)")
    lines.append(f"models that fit together at any time (--models-max): {plan['models_max']}")
    for pair in plan["pairs_that_fit"]:
        lines.append(f"  fit together: {pair[0]} + {pair[1]}")
    return "\n".join(lines)
