"""Fleet plans: every validated fleet entry planned on the host's GPUs (or, for a CPU build, its RAM) with
the memory model of module_utils._vram, the GPU fields checked against the GPUs that exist, `context: max`
resolved, and which models fit together. Typed results; `to_dict` gives the JSON the module returns.

Private to the llmrig.serving collection (module_utils); no Ansible imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.llmrig.serving.plugins.module_utils._fleet import entry_label
from ansible_collections.llmrig.serving.plugins.module_utils._gguf import MIB, ModelMeta
from ansible_collections.llmrig.serving.plugins.module_utils._vram import (
    DEFAULT_OVERHEAD_MIB,
    KV_TYPES_BY_SIZE,
    DeviceUse,
    Settings,
    entry_settings,
    fits,
    kv_cells,
    kv_streams,
    kv_total,
    largest_context,
    mib,
    plan_devices,
    row_bytes,
    rs_snapshots,
)

WEIGHTS_REMEDY = "fewer gpu_layers, another tensor_split or a smaller quantization is needed"


class PlanError(Exception):
    """An entry cannot be planned or does not fit; the message names the entry and the field."""

    def __init__(self, entry: str, field_: str, reason: str) -> None:
        self.entry = entry
        self.field = field_
        self.reason = reason
        super().__init__(f"fleet entry {entry}: field '{field_}': {reason}")


@dataclass(frozen=True)
class Gpu:
    """One device to plan for: a GPU, or (host_memory) the RAM of a CPU build."""

    name: str
    memory_mib: int
    overhead_mib: int = DEFAULT_OVERHEAD_MIB
    host_memory: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_overhead_mib: int = DEFAULT_OVERHEAD_MIB) -> Gpu:
        return cls(
            name=str(data.get("name", "")),
            memory_mib=int(data["memory_mib"]),
            overhead_mib=int(data.get("overhead_mib", default_overhead_mib)),
            host_memory=bool(data.get("host_memory", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DevicePlan:
    """What one model needs on one device."""

    gpu: Gpu
    use: DeviceUse
    capacity: int  # bytes the model may use there: memory less the margin

    @property
    def fits(self) -> bool:
        return self.use.total <= self.capacity

    @property
    def short_mib(self) -> float:
        return mib(self.use.total - self.capacity)

    def to_dict(self) -> dict[str, Any]:
        use = self.use
        return {
            "gpu": self.gpu.name,
            "memory_mib": self.gpu.memory_mib,
            "weights_mib": mib(use.weights),
            "kv_mib": mib(use.kv),
            "recurrent_mib": mib(use.recurrent),
            "compute_mib": mib(use.compute),
            "overhead_mib": mib(use.overhead),
            "total_mib": mib(use.total),
            "free_after_mib": mib(self.gpu.memory_mib * MIB - use.total),
            "fits": self.fits,
        }


@dataclass
class ModelPlan:
    """One fleet entry planned: its settings, its metadata and its need on each device."""

    index: int
    name: str
    file: str
    meta: ModelMeta
    settings: Settings
    devices: list[DevicePlan]
    need: _Need = field(repr=False, compare=False)  # re-plans the entry at other settings
    context_max: bool = False  # the entry asked for `context: max`
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return entry_label(self.index, self.name)

    @property
    def fits(self) -> bool:
        return all(device.fits for device in self.devices)

    @property
    def totals(self) -> list[int]:
        return [device.use.total for device in self.devices]

    def to_dict(self) -> dict[str, Any]:
        settings = self.settings
        full, swa = kv_cells(self.meta, settings)
        return {
            "name": self.name,
            "file": self.file,
            "arch": self.meta.arch,
            "context": settings.context,
            "context_max": self.context_max,
            "cache_type_k": settings.cache_type_k,
            "cache_type_v": settings.cache_type_v,
            "parallel": settings.parallel,
            "kv_cells_per_stream": {"full": full, "sliding_window": swa},
            "kv_streams": kv_streams(settings),
            "context_per_slot": settings.context if settings.unified else full,
            "devices": [device.to_dict() for device in self.devices],
            "total_mib": mib(sum(self.totals)),
            "fits": self.fits,
            "notes": list(self.notes),
        }


@dataclass
class FleetPlan:
    gpus: list[Gpu]
    margin_mib: int
    models: list[ModelPlan]
    models_max: int
    pairs_that_fit: list[list[str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "margin_mib": self.margin_mib,
            "models": [model.to_dict() for model in self.models],
            "models_max": self.models_max,
            "pairs_that_fit": [list(pair) for pair in self.pairs_that_fit],
        }


class Devices:
    """The devices of one plan: capacities after the margin and the per-process overheads, in bytes."""

    def __init__(self, gpus: list[Gpu], margin_mib: int) -> None:
        self.gpus = gpus
        self.margin_mib = margin_mib
        self.capacity = [(gpu.memory_mib - margin_mib) * MIB for gpu in gpus]
        self.overhead = [gpu.overhead_mib * MIB for gpu in gpus]
        self.host_memory = len(gpus) == 1 and gpus[0].host_memory

    def plan(self, meta: ModelMeta, settings: Settings, overhead: bool = True) -> list[DeviceUse]:
        return plan_devices(meta, settings, self.capacity, self.overhead if overhead else [0] * len(self.gpus))

    def describe(self, position: int) -> str:
        gpu = self.gpus[position]
        return f"GPU {position} ({gpu.name or 'unnamed'}, {gpu.memory_mib} MiB, margin {self.margin_mib} MiB)"


def _check_gpu_fields(label: str, entry: dict[str, Any], devices: Devices) -> None:
    """The entry's GPU fields must name GPUs that exist (a CPU build ignores them, llama.cpp only warns)."""
    if devices.host_memory:
        return
    count = len(devices.gpus)
    plural = "GPU" if count == 1 else "GPUs"
    split = entry.get("tensor_split")
    if split is not None and len(split) > count:
        raise PlanError(label, "tensor_split", f"has {len(split)} values but the host has {count} {plural}")
    main_gpu = entry.get("main_gpu", 0)
    if main_gpu >= count:
        raise PlanError(label, "main_gpu", f"is {main_gpu} but the host has {count} {plural} (0 to {count - 1})")


def _resolve_context(label: str, entry: dict[str, Any], need: _Need, settings: Settings) -> int:
    """`context: max`: the largest context (a multiple of 1024) that fits the entry's devices with the
    margin - projector and draft model included - never above the ceiling nor the model's trained context."""
    limits = [value for value in (entry.get("context_ceiling"), need.meta.context_train) if value]
    if not limits:
        raise PlanError(
            label, "context", "max needs a ceiling ({max: N}): the model's metadata gives no trained context"
        )
    best = largest_context(lambda context: need.fits(replace(settings, context=context)), min(limits))
    if best == 0:
        raise PlanError(label, "context", "max: no context fits; " + WEIGHTS_REMEDY)
    return best


def _notes(meta: ModelMeta, settings: Settings) -> list[str]:
    notes = list(meta.notes)
    if meta.n_nextn and settings.mtp:
        rollback = (
            f"; recurrent state kept {rs_snapshots(meta, settings)}x for draft rollback"
            if any(meta.recurrent_layers)
            else ""
        )
        notes.append(
            f"draft-mtp: {meta.n_nextn} MTP block(s) loaded; their KV cache "
            f"({mib(kv_total(meta, settings, mtp_context=True))} MiB) and a second compute buffer belong to the "
            "MTP context" + rollback
        )
    elif meta.n_nextn:
        notes.append(f"{meta.n_nextn} MTP block(s) in the file, not loaded without speculative.type draft-mtp")
    return notes


class _Need:
    """What one entry needs on each device at given settings: the model, plus its vision projector's weights
    on the main GPU and its draft model (same cells and split, the draft KV cache types)."""

    def __init__(self, entry: dict[str, Any], metas: dict[str, ModelMeta], devices: Devices) -> None:
        self.meta = metas[entry["source"]["file"]]
        self.devices = devices
        mmproj = entry.get("mmproj")
        self.projector = metas.get(mmproj["file"]) if mmproj else None
        draft = entry.get("speculative", {}).get("model")
        self.draft = metas.get(draft["file"]) if draft else None

    def uses(self, settings: Settings) -> list[DeviceUse]:
        uses = self.devices.plan(self.meta, settings)
        if self.projector is not None:
            uses[settings.main_gpu if len(uses) > 1 else 0].weights += self.projector.weight_bytes
        if self.draft is not None:
            draft_settings = replace(
                settings,
                cache_type_k=settings.draft_cache_type_k,
                cache_type_v=settings.draft_cache_type_v,
                spec_type="none",
            )
            for device, use in enumerate(self.devices.plan(self.draft, draft_settings, overhead=False)):
                uses[device].weights += use.weights
                uses[device].kv += use.kv
        return uses

    def fits(self, settings: Settings) -> bool:
        return fits(self.uses(settings), self.devices.capacity)


def plan_entry(index: int, entry: dict[str, Any], metas: dict[str, ModelMeta], devices: Devices) -> ModelPlan:
    """Plan one validated entry (module_utils._fleet.validate_entry); metas maps file -> metadata."""
    label = entry_label(index, entry["name"])
    _check_gpu_fields(label, entry, devices)
    wants_max = entry["context"] == "max"
    settings = entry_settings({**entry, "context": 1024} if wants_max else entry, devices.host_memory)
    need = _Need(entry, metas, devices)
    if wants_max:
        settings = replace(settings, context=_resolve_context(label, entry, need, settings))
    uses = need.uses(settings)
    notes = _notes(need.meta, settings)
    if need.projector is not None:
        notes.append("vision projector weights on the main GPU; its image-encoding buffers are not modelled")
    if need.draft is not None:
        notes.append("draft model planned with the same context and split, KV in the draft cache types")
    plans = [DevicePlan(gpu, use, cap) for gpu, use, cap in zip(devices.gpus, uses, devices.capacity, strict=True)]
    return ModelPlan(index, entry["name"], entry["source"]["file"], need.meta, settings, plans, need, wants_max, notes)


def _suggestions(model: ModelPlan) -> str:
    """What would fit instead: the largest context, and cheaper KV cache types at the asked context."""
    settings, need = model.settings, model.need
    context = largest_context(lambda value: need.fits(replace(settings, context=value)), settings.context)
    parts = [f"context {context} fits" if context else "no context fits: " + WEIGHTS_REMEDY]
    for kv_type in KV_TYPES_BY_SIZE:
        if row_bytes(kv_type, 256) >= row_bytes(settings.cache_type_k, 256):
            break
        if need.fits(replace(settings, cache_type_k=kv_type, cache_type_v=kv_type)):
            parts.append(f"or cache_type_k/v {kv_type} at context {settings.context}")
            break
    return "; ".join(parts)


def shortfall(model: ModelPlan, devices: Devices) -> PlanError:
    """The error for a model that does not fit, on its worst device. It names `context` when a smaller
    context would help, and `source` when the weights and the fixed overhead alone are already too much."""
    worst = max((d for d in model.devices if not d.fits), key=lambda d: d.short_mib)
    position = model.devices.index(worst)
    use = worst.use
    needs = (
        f"needs {mib(use.total):.0f} MiB on {devices.describe(position)}: {worst.short_mib:.0f} MiB short "
        f"(weights {mib(use.weights):.0f}, KV {mib(use.kv):.0f}, compute {mib(use.compute):.0f}, "
        f"overhead {mib(use.overhead):.0f})"
    )
    if use.weights + use.overhead > worst.capacity:
        return PlanError(model.label, "source", f"{needs}; the weights alone do not fit: " + WEIGHTS_REMEDY)
    return PlanError(model.label, "context", f"{needs}; " + _suggestions(model))


def coresidency(models: list[ModelPlan], devices: Devices) -> tuple[int, list[list[str]]]:
    """Which models fit on the devices together. Each model process brings its own overhead, so the sum of
    their per-device totals must fit. Returns the largest count of models that can always be resident
    together (what --models-max may be) and every pair that fits."""
    totals = [model.totals for model in models]
    capacity = devices.capacity
    pairs = [
        [models[a].name, models[b].name]
        for a in range(len(models))
        for b in range(a + 1, len(models))
        if all(totals[a][d] + totals[b][d] <= capacity[d] for d in range(len(capacity)))
    ]
    # the LRU evicts by count: --models-max n is only safe if ANY n models fit together,
    # which is the case when the n largest per device fit
    safe = 0
    for n in range(1, len(models) + 1):
        if all(sum(sorted((t[d] for t in totals), reverse=True)[:n]) <= capacity[d] for d in range(len(capacity))):
            safe = n
    return max(safe, 1), pairs


def plan_fleet(
    entries: list[dict[str, Any]], metas: dict[str, ModelMeta], gpus: list[Gpu], margin_mib: int
) -> FleetPlan:
    """Plan every entry; raise PlanError for the first that cannot be planned or does not fit."""
    devices = Devices(gpus, margin_mib)
    models = []
    for index, entry in enumerate(entries):
        model = plan_entry(index, entry, metas, devices)
        if not model.fits:
            raise shortfall(model, devices)
        models.append(model)
    models_max, pairs = coresidency(models, devices)
    return FleetPlan(gpus, margin_mib, models, models_max, pairs)


def page_cache_budget(
    entries: list[dict[str, Any]],
    metas: dict[str, ModelMeta],
    host_ram_mib: int,
    reserve_mib: int,
    plan: FleetPlan | None,
) -> dict[str, Any]:
    """The files the fleet keeps in the page cache (keep_cached) against the host's RAM. What they may use is
    the RAM less the reserve and, on a CPU build, less what the resident models themselves need (models_max
    times the largest). Raise PlanError on the first keeping entry when they need more; otherwise return the
    figures for the plan's output."""
    kept: dict[str, int] = {}
    first = ""
    for index, entry in enumerate(entries):
        if not entry.get("keep_cached"):
            continue
        first = first or entry_label(index, entry["name"])
        files = [entry["source"]["file"]] + [entry[k]["file"] for k in ("mmproj",) if k in entry]
        files += [entry["speculative"]["model"]["file"]] if "model" in entry.get("speculative", {}) else []
        for name in files:
            kept[name] = -(-metas[name].weight_bytes // MIB)  # whole MiB, rounded up
    if not kept:
        return {"files": {}, "kept_mib": 0}
    if host_ram_mib <= 0:
        raise PlanError(
            first,
            "keep_cached",
            "the host's RAM size is unknown, so the kept files cannot be checked against it"
            " (llmrig_planner_host_ram_mib gives it where the host is not asked)",
        )
    models_mib = 0
    if plan is not None and len(plan.gpus) == 1 and plan.gpus[0].host_memory:
        largest = max(sum(device.use.total for device in model.devices) for model in plan.models)
        models_mib = plan.models_max * -(-largest // MIB)
    available = host_ram_mib - reserve_mib - models_mib
    need = sum(kept.values())
    if need > available:
        listing = ", ".join(f"{name} {size} MiB" for name, size in kept.items())
        models = f", less {models_mib} MiB for the resident models" if models_mib else ""
        raise PlanError(
            first,
            "keep_cached",
            f"the files kept in the page cache need {need} MiB ({listing}); the host's {host_ram_mib} MiB of RAM,"
            f" less the {reserve_mib} MiB reserve{models}, leave {available} MiB",
        )
    return {"files": kept, "kept_mib": need, "available_mib": available}


def table(plan: dict[str, Any]) -> str:
    """The plan (FleetPlan.to_dict) as a text table: one line per model and GPU."""
    head = f"{'model':<24} {'gpu':<4} {'weights':>9} {'kv':>9} {'state':>7} {'compute':>8} {'overhead':>8} "
    head += f"{'total':>9} {'of':>7} {'free':>8}  context, kv types"
    lines = [head, "-" * len(head)]
    for model in plan["models"]:
        context = f"{model['context']} (max)" if model.get("context_max") else str(model["context"])
        for number, device in enumerate(model["devices"]):
            if not device["total_mib"]:
                continue
            lines.append(
                f"{model['name'][:24]:<24} {number:<4} {device['weights_mib']:>9.0f} {device['kv_mib']:>9.0f} "
                f"{device['recurrent_mib']:>7.0f} {device['compute_mib']:>8.0f} {device['overhead_mib']:>8.0f} "
                f"{device['total_mib']:>9.0f} {device['memory_mib']:>7} {device['free_after_mib']:>8.0f}  "
                f"{context}, {model['cache_type_k']}/{model['cache_type_v']}"
                + ("" if device["fits"] else "  DOES NOT FIT")
            )
        for note in model["notes"]:
            lines.append(f"  note: {note}")
    lines.append(f"(MiB; margin kept free per GPU: {plan['margin_mib']} MiB)")
    lines.append(f"models that fit together at any time (--models-max): {plan['models_max']}")
    for pair in plan["pairs_that_fit"]:
        lines.append(f"  fit together: {pair[0]} + {pair[1]}")
    return "\n".join(lines)
