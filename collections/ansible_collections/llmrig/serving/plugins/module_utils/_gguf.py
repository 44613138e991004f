"""GGUF metadata for the VRAM planner: what llama.cpp's allocation depends on, read with the gguf package
from a local file or, before a download, from a URL with HTTP range requests; cached by sha256.

Private to the llmrig.serving collection (module_utils); no Ansible imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
# Version of the parsed metadata kept in the cache: a cache written by an older planner is read again
# from the file instead of being trusted (2: MTP blocks, per-layer head sizes).
META_CACHE_VERSION = 2
# Layer patterns llama.cpp hard-codes per architecture (llama-model.cpp: hparams.set_swa_pattern(n)):
# with pattern n, layer il uses the sliding window unless il % n == n - 1.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6}


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
