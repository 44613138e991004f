# Copyright: (c) 2026, llmrig authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet validation and the llama-server preset options of each entry.

Private to the llmrig.serving collection. Pure Python (no Ansible imports) so the same code runs in
the modules, the filters and the unit tests. Every error names the fleet entry and the field.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlparse

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
SPLIT_MODES = ("none", "layer", "row", "tensor")
FLASH_ATTN = ("on", "off", "auto")
SPEC_TYPES = (
    "none",
    "draft-simple",
    "draft-eagle3",
    "draft-mtp",
    "ngram-simple",
    "ngram-map-k",
    "ngram-map-k4v",
    "ngram-mod",
    "ngram-cache",
)

ENTRY_FIELDS = (
    "name",
    "aliases",
    "source",
    "context",
    "cache_type_k",
    "cache_type_v",
    "gpu_layers",
    "split_mode",
    "tensor_split",
    "main_gpu",
    "flash_attn",
    "parallel",
    "threads",
    "speculative",
    "mmproj",
    "sampling",
    "load_on_startup",
    "keep_cached",
    "extra_args",
    "candidate_for",
    "published_scores",
    "hosts",
)
# fields that say how the entry is evaluated, not how it is served
EVALUATION_FIELDS = ("candidate_for", "published_scores")
PUBLISHED_FIELDS = ("benchmark", "score", "source")
# an incumbent replaced by a promotion keeps serving under this suffix (the way back)
PREVIOUS_SUFFIX = "--previous"
SOURCE_FIELDS = ("url", "path", "sha256", "file", "size")
SPECULATIVE_FIELDS = ("type", "draft_n_max", "draft_n_min", "draft_p_min", "cache_type_k", "cache_type_v", "model")
# fleet sampling field -> llama-server option (long name without dashes)
SAMPLING_OPTIONS = {
    "temperature": "temp",
    "top_p": "top-p",
    "top_k": "top-k",
    "min_p": "min-p",
    "repeat_penalty": "repeat-penalty",
    "presence_penalty": "presence-penalty",
    "frequency_penalty": "frequency-penalty",
}
INT_SAMPLING = ("top_k",)

# llama-server options that a fleet field (or the gateway itself) owns: extra_args may not set them.
RESERVED_OPTIONS = {
    "model": "source",
    "m": "source",
    "mmproj": "mmproj",
    "mm": "mmproj",
    "alias": "aliases",
    "a": "aliases",
    "ctx-size": "context",
    "c": "context",
    "cache-type-k": "cache_type_k",
    "ctk": "cache_type_k",
    "cache-type-v": "cache_type_v",
    "ctv": "cache_type_v",
    "n-gpu-layers": "gpu_layers",
    "gpu-layers": "gpu_layers",
    "ngl": "gpu_layers",
    "split-mode": "split_mode",
    "sm": "split_mode",
    "tensor-split": "tensor_split",
    "ts": "tensor_split",
    "main-gpu": "main_gpu",
    "mg": "main_gpu",
    "flash-attn": "flash_attn",
    "fa": "flash_attn",
    "parallel": "parallel",
    "np": "parallel",
    "threads": "threads",
    "t": "threads",
    "spec-type": "speculative.type",
    "spec-draft-n-max": "speculative.draft_n_max",
    "spec-draft-n-min": "speculative.draft_n_min",
    "spec-draft-p-min": "speculative.draft_p_min",
    "spec-draft-type-k": "speculative.cache_type_k",
    "ctkd": "speculative.cache_type_k",
    "cache-type-k-draft": "speculative.cache_type_k",
    "spec-draft-type-v": "speculative.cache_type_v",
    "ctvd": "speculative.cache_type_v",
    "cache-type-v-draft": "speculative.cache_type_v",
    "spec-draft-model": "speculative.model",
    "model-draft": "speculative.model",
    "md": "speculative.model",
    "load-on-startup": "load_on_startup",
    "host": "the gateway (llmrig_gateway_host)",
    "port": "the gateway (llmrig_gateway_port)",
    "api-key": "the gateway (vault_llmrig_api_key)",
    "api-key-file": "the gateway (vault_llmrig_api_key)",
    "models-dir": "the gateway",
    "models-preset": "the gateway",
    "models-max": "the gateway (llmrig_gateway_models_max)",
    "models-autoload": "the gateway",
    "metrics": "the gateway",
}
# Options that recent llama.cpp renamed or removed: point at what replaced them.
RENAMED_OPTIONS = {
    "draft-max": "was renamed: set speculative.draft_n_max (--spec-draft-n-max)",
    "draft-min": "was renamed: set speculative.draft_n_min (--spec-draft-n-min)",
    "draft": "was renamed: set speculative.draft_n_max (--spec-draft-n-max)",
    "draft-p-min": "was renamed: set speculative.draft_p_min (--spec-draft-p-min)",
    "no-mmap": "was replaced by load-mode: use extra_args: {load-mode: none}",
    "mlock": "was replaced by load-mode: use extra_args: {load-mode: mlock}",
}
for _field, _option in SAMPLING_OPTIONS.items():
    RESERVED_OPTIONS[_option] = "sampling." + _field
RESERVED_OPTIONS["temperature"] = "sampling.temperature"


def entry_label(index: int, name: Any) -> str:
    """How every message names a fleet entry: 'name' (#position), or #position while it has no name."""
    return f"'{name}' (#{index + 1})" if isinstance(name, str) and name else f"#{index + 1}"


class FleetError(ValueError):
    """A fleet entry is invalid. The message names the entry and the field."""

    def __init__(self, entry: str, field: str, reason: str) -> None:
        self.entry = entry
        self.field = field
        self.reason = reason
        super().__init__(f"fleet entry {entry}: field '{field}': {reason}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _EntryChecker:
    """Validates one fleet entry; `label` is how messages name it."""

    def __init__(self, index: int, entry: Any) -> None:
        self.index = index
        self.entry = entry
        name = entry.get("name") if isinstance(entry, dict) else None
        self.label = entry_label(index, name)

    def fail(self, field: str, reason: str) -> FleetError:
        return FleetError(self.label, field, reason)

    def check_keys(self, value: dict, allowed: tuple, prefix: str) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail(prefix + str(key), "unknown field; allowed: " + ", ".join(allowed))

    def int_field(self, value: Any, field: str, minimum: int = 0, maximum: int | None = None) -> int:
        if not _is_int(value):
            raise self.fail(field, f"must be an integer, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and <= {maximum}"
            raise self.fail(field, f"must be >= {minimum}{upper}, got {value}")
        return int(value)

    def choice_field(self, value: Any, field: str, choices: tuple) -> str:
        if value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}; got {value!r}")
        return str(value)

    def source(self, value: Any, field: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, "must be a mapping with 'url' or 'path', and 'sha256'")
        self.check_keys(value, SOURCE_FIELDS, field + ".")
        url, path = value.get("url"), value.get("path")
        if (url is None) == (path is None):
            raise self.fail(field, "set exactly one of 'url' or 'path'")
        if url is not None:
            parsed = urlparse(url) if isinstance(url, str) else None
            if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise self.fail(field + ".url", f"must be an http(s) URL, got {url!r}")
            default_file = posixpath.basename(parsed.path)
        else:
            if not isinstance(path, str) or not path.startswith("/"):
                raise self.fail(field + ".path", f"must be an absolute path on the controller, got {path!r}")
            default_file = posixpath.basename(path)
        sha = value.get("sha256")
        if sha is None:
            raise self.fail(field + ".sha256", "is required: the file is verified before it is used")
        if not isinstance(sha, str) or not SHA256_RE.match(sha.lower()):
            raise self.fail(field + ".sha256", "must be 64 hexadecimal characters")
        file_name = value.get("file", default_file)
        if not isinstance(file_name, str) or not FILE_RE.match(file_name):
            raise self.fail(field + ".file", f"must be a plain file name (letters, digits, '._+-'), got {file_name!r}")
        location = {"url": url} if url is not None else {"path": path}
        size = value.get("size")
        if size is not None:
            location["size"] = self.int_field(size, field + ".size", 1)
        return {**location, "sha256": sha.lower(), "file": file_name}


def _check_names(checker: _EntryChecker, entry: dict) -> tuple[str, list[str]]:
    name = entry.get("name")
    if name is None:
        raise checker.fail("name", "is required")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise checker.fail("name", f"must match {NAME_RE.pattern}, got {name!r}")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list):
        raise checker.fail("aliases", "must be a list of names")
    for alias in aliases:
        if not isinstance(alias, str) or not NAME_RE.match(alias):
            raise checker.fail("aliases", f"alias {alias!r} must match {NAME_RE.pattern}")
    return name, list(aliases)


def _check_gpu(checker: _EntryChecker, entry: dict, out: dict) -> None:
    if "gpu_layers" in entry:
        layers = entry["gpu_layers"]
        if layers in ("auto", "all"):
            out["gpu_layers"] = layers
        else:
            out["gpu_layers"] = checker.int_field(layers, "gpu_layers")
    if "split_mode" in entry:
        out["split_mode"] = checker.choice_field(entry["split_mode"], "split_mode", SPLIT_MODES)
    if "tensor_split" in entry:
        split = entry["tensor_split"]
        if (
            not isinstance(split, list)
            or not split
            or not all(_is_number(part) and part >= 0 for part in split)
            or not any(part > 0 for part in split)
        ):
            raise checker.fail("tensor_split", f"must be a list of non-negative numbers, one per GPU, got {split!r}")
        out["tensor_split"] = list(split)
    if "main_gpu" in entry:
        out["main_gpu"] = checker.int_field(entry["main_gpu"], "main_gpu")


def _check_context(checker: _EntryChecker, value: Any) -> dict:
    """An integer, or `max` (optionally `{max: ceiling}`): the largest context that fits, resolved by the
    planner, never above the ceiling nor the model's trained context."""
    if value == "max":
        return {"context": "max"}
    if isinstance(value, dict):
        checker.check_keys(value, ("max",), "context.")
        if "max" not in value:
            raise checker.fail("context", "a mapping must be {max: <ceiling in tokens>}")
        return {"context": "max", "context_ceiling": checker.int_field(value["max"], "context.max", minimum=1)}
    if not _is_int(value):
        raise checker.fail("context", f"must be an integer, max or {{max: <ceiling>}}, got {value!r}")
    return {"context": checker.int_field(value, "context", minimum=1)}


def _check_speculative(checker: _EntryChecker, value: Any) -> dict:
    if not isinstance(value, dict):
        raise checker.fail("speculative", "must be a mapping (" + ", ".join(SPECULATIVE_FIELDS) + ")")
    checker.check_keys(value, SPECULATIVE_FIELDS, "speculative.")
    out: dict[str, Any] = {"type": checker.choice_field(value.get("type"), "speculative.type", SPEC_TYPES)}
    for key in ("draft_n_max", "draft_n_min"):
        if key in value:
            out[key] = checker.int_field(value[key], "speculative." + key)
    if "draft_n_min" in out and "draft_n_max" in out and out["draft_n_min"] > out["draft_n_max"]:
        raise checker.fail("speculative.draft_n_min", "must not exceed speculative.draft_n_max")
    if "draft_p_min" in value:
        p_min = value["draft_p_min"]
        if not _is_number(p_min) or not 0 <= p_min <= 1:
            raise checker.fail("speculative.draft_p_min", f"must be a number from 0 to 1, got {p_min!r}")
        out["draft_p_min"] = p_min
    for key in ("cache_type_k", "cache_type_v"):
        if key in value:
            out[key] = checker.choice_field(value[key], "speculative." + key, KV_CACHE_TYPES)
    if "model" in value:
        out["model"] = checker.source(value["model"], "speculative.model")
    elif out["type"] in ("draft-simple", "draft-eagle3"):
        raise checker.fail("speculative.model", f"is required for type {out['type']}")
    return out


def _check_sampling(checker: _EntryChecker, value: Any) -> dict:
    if not isinstance(value, dict):
        raise checker.fail("sampling", "must be a mapping of " + ", ".join(SAMPLING_OPTIONS))
    checker.check_keys(value, tuple(SAMPLING_OPTIONS), "sampling.")
    out = {}
    for key, item in value.items():
        if key in INT_SAMPLING:
            out[key] = checker.int_field(item, "sampling." + key)
        elif not _is_number(item):
            raise checker.fail("sampling." + key, f"must be a number, got {item!r}")
        else:
            out[key] = item
    return out


def _option_problem(key: Any, item: Any, reserved: dict[str, str]) -> str | None:
    """Why a llama-server option (a preset line) may not be set this way, or None; reserved maps the options
    that may not be set there to why."""
    if not isinstance(key, str) or not OPTION_RE.match(key):
        return "option names are llama-server long options without leading dashes"
    if key in RENAMED_OPTIONS:
        return RENAMED_OPTIONS[key]
    if key in reserved:
        return reserved[key]
    if item is None or isinstance(item, (dict, list)):
        return f"must be a string, number or boolean, got {item!r}"
    if isinstance(item, str) and (not item or any(char in item for char in ";#\r\n")):
        return "must be a non-empty single line without ';' or '#' (INI comment characters)"
    return None


def _check_extra_args(checker: _EntryChecker, value: Any) -> dict:
    if not isinstance(value, dict):
        raise checker.fail("extra_args", "must be a mapping of llama-server option (without dashes) to value")
    out = {}
    for key, item in value.items():
        problem = _option_problem(key, item, _EXTRA_ARGS_RESERVED)
        if problem:
            raise checker.fail(f"extra_args.{key}", problem)
        out[key] = item
    return out


# Fleet fields that may also be set for every model in the presets' [*] section: they change no memory the
# planner counts. Any other field's option there would make every plan wrong, so it is set per entry.
GLOBAL_FIELDS = ("threads", "flash_attn", *("sampling." + name for name in SAMPLING_OPTIONS))
_EXTRA_ARGS_RESERVED = {key: f"is managed by {owner}; set it there" for key, owner in RESERVED_OPTIONS.items()}
_GLOBAL_RESERVED = {
    key: f"is managed by {owner}; set it there"
    if owner.startswith("the gateway")
    else f"is managed by the fleet field '{owner}'; set it in each entry"
    for key, owner in RESERVED_OPTIONS.items()
    if owner not in GLOBAL_FIELDS
}


class GlobalOptionError(ValueError):
    """A global preset option is refused; the message names the variable and the option."""


def check_global_options(options: Any, variable: str = "llmrig_gateway_global_options") -> dict:
    """Check the options of the presets' [*] section the way extra_args are checked. An option that a fleet
    field owns is refused there unless it changes no memory the planner counts (GLOBAL_FIELDS)."""
    if not isinstance(options, dict):
        raise GlobalOptionError(f"{variable}: must be a mapping of llama-server option (without dashes) to value")
    for key, item in options.items():
        problem = _option_problem(key, item, _GLOBAL_RESERVED)
        if problem:
            raise GlobalOptionError(f"{variable}: option '{key}': {problem}")
    return dict(options)


def validate_entry(index: int, entry: Any) -> dict:
    """Validate one entry and return it normalised (sources resolved to file names)."""
    checker = _EntryChecker(index, entry)
    if not isinstance(entry, dict):
        raise checker.fail("(entry)", f"must be a mapping, got {type(entry).__name__}")
    checker.check_keys(entry, ENTRY_FIELDS, "")
    name, aliases = _check_names(checker, entry)
    out: dict[str, Any] = {"name": name, "aliases": aliases}
    if "source" not in entry:
        raise checker.fail("source", "is required (url + sha256, or path + sha256)")
    out["source"] = checker.source(entry["source"], "source")
    if "context" not in entry:
        raise checker.fail("context", "is required (tokens, an integer, or max)")
    out.update(_check_context(checker, entry["context"]))
    for key in ("cache_type_k", "cache_type_v"):
        if key in entry:
            out[key] = checker.choice_field(entry[key], key, KV_CACHE_TYPES)
    _check_gpu(checker, entry, out)
    if "flash_attn" in entry:
        out["flash_attn"] = checker.choice_field(entry["flash_attn"], "flash_attn", FLASH_ATTN)
    if "parallel" in entry:
        out["parallel"] = checker.int_field(entry["parallel"], "parallel", minimum=1)
    if "threads" in entry:
        out["threads"] = checker.int_field(entry["threads"], "threads", minimum=1)
    if "speculative" in entry:
        out["speculative"] = _check_speculative(checker, entry["speculative"])
    if "mmproj" in entry:
        out["mmproj"] = checker.source(entry["mmproj"], "mmproj")
    if "sampling" in entry:
        out["sampling"] = _check_sampling(checker, entry["sampling"])
    for key in ("load_on_startup", "keep_cached"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise checker.fail(key, f"must be true or false, got {entry[key]!r}")
            out[key] = entry[key]
    if "extra_args" in entry:
        out["extra_args"] = _check_extra_args(checker, entry["extra_args"])
    if "candidate_for" in entry:
        if not isinstance(entry["candidate_for"], str) or not NAME_RE.match(entry["candidate_for"]):
            raise checker.fail("candidate_for", f"the name of another fleet entry, got {entry['candidate_for']!r}")
        out["candidate_for"] = entry["candidate_for"]
    if "published_scores" in entry:
        out["published_scores"] = _check_published(checker, entry["published_scores"])
    if "hosts" in entry:
        hosts = entry["hosts"]
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise checker.fail("hosts", f"must be a non-empty list of inventory host or group names, got {hosts!r}")
        out["hosts"] = list(hosts)
    return out


def _check_published(checker: _EntryChecker, value: Any) -> list[dict]:
    """Scores a vendor or leaderboard published for the model: shown in evaluation reports as claims, never
    as measured results, so each needs its source."""
    if not isinstance(value, list):
        raise checker.fail("published_scores", "must be a list of {benchmark, score, source}")
    out = []
    for index, item in enumerate(value):
        field = f"published_scores[{index}]"
        if not isinstance(item, dict):
            raise checker.fail(field, "must be a mapping of benchmark, score and source")
        checker.check_keys(item, PUBLISHED_FIELDS, field + ".")
        for key in PUBLISHED_FIELDS:
            if key not in item:
                raise checker.fail(f"{field}.{key}", "is required")
        if not isinstance(item["benchmark"], str) or not isinstance(item["source"], str) or not item["source"]:
            raise checker.fail(field, "benchmark and source are text (source: where the score was published)")
        if not _is_number(item["score"]):
            raise checker.fail(f"{field}.score", f"must be a number, got {item['score']!r}")
        out.append({key: item[key] for key in PUBLISHED_FIELDS})
    return out


def _entry_sources(entry: dict) -> list[tuple[str, dict]]:
    sources = [("source", entry["source"])]
    if "mmproj" in entry:
        sources.append(("mmproj", entry["mmproj"]))
    if "model" in entry.get("speculative", {}):
        sources.append(("speculative.model", entry["speculative"]["model"]))
    return sources


def apply_overrides(fleet: Any, overrides: Any, variable: str = "llmrig_fleet_overrides") -> Any:
    """The fleet with a host's overrides merged in: {entry name: {field: value}}, a mapping field (sampling,
    speculative, extra_args) merged one level deep. This is where a tuning run writes what it kept, per host;
    the merged entries are then validated like any other. An override for no entry fails, naming it."""
    if not overrides:
        return fleet
    if not isinstance(overrides, dict):
        raise FleetError("(overrides)", variable, "must be a mapping of fleet entry name to {field: value}")
    if not isinstance(fleet, list):
        return fleet  # validate_fleet says what is wrong with it
    names = {entry.get("name") for entry in fleet if isinstance(entry, dict)}
    for name, fields in overrides.items():
        if name not in names:
            raise FleetError(f"{name!r}", variable, f"{name!r} is not an entry of the fleet")
        if not isinstance(fields, dict):
            raise FleetError(f"{name!r}", variable, "must map field names to values")
    merged = []
    for entry in fleet:
        fields = overrides.get(entry.get("name")) if isinstance(entry, dict) else None
        if not fields:
            merged.append(entry)
            continue
        out = dict(entry)
        for key, value in fields.items():
            both = isinstance(out.get(key), dict) and isinstance(value, dict)
            out[key] = {**out[key], **value} if both else value
        merged.append(out)
    return merged


def validate_fleet(fleet: Any) -> list[dict]:
    """Validate the whole fleet; raise FleetError on the first problem."""
    if not isinstance(fleet, list) or not fleet:
        raise FleetError("(fleet)", "llmrig_fleet", "must be a non-empty list of model entries")
    entries = [validate_entry(index, entry) for index, entry in enumerate(fleet)]
    owners: dict[str, str] = {}
    files: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(entries):
        label = entry_label(index, entry["name"])
        for field, routable in [("name", entry["name"])] + [("aliases", alias) for alias in entry["aliases"]]:
            if routable in owners:
                raise FleetError(label, field, f"{routable!r} is already used by entry {owners[routable]}")
            owners[routable] = label
        for field, source in _entry_sources(entry):
            known = files.get(source["file"])
            if known is not None and known[0] != source["sha256"]:
                raise FleetError(
                    label, field + ".file", f"{source['file']!r} is also used by entry {known[1]} with another sha256"
                )
            files[source["file"]] = (source["sha256"], label)
    names = {entry["name"]: entry for entry in entries}
    for index, entry in enumerate(entries):
        incumbent = entry.get("candidate_for")
        if incumbent is None:
            continue
        label = entry_label(index, entry["name"])
        if incumbent == entry["name"] or incumbent not in names:
            raise FleetError(label, "candidate_for", f"{incumbent!r} is not another entry of the fleet (by name)")
        if "candidate_for" in names[incumbent]:
            raise FleetError(label, "candidate_for", f"{incumbent!r} is itself a candidate; name the incumbent")
    return entries


def place(entries: list[dict], host: str, inventory: dict[str, list[str]], servers: list[str]) -> list[dict]:
    """The entries `host` serves: every entry without `hosts`, and those whose `hosts` name it or a group it is
    in. `inventory` is Ansible's `groups` (group name to its hosts), `servers` the inference hosts. A name that
    is neither a host nor a group of the inventory fails, naming the entry, as does a placement on no inference
    host, or a candidate placed where its incumbent is not."""
    known_hosts = set(inventory.get("all", [])) | {h for members in inventory.values() for h in members}
    placed: list[tuple[int, dict]] = []
    for index, entry in enumerate(entries):
        names = entry.get("hosts")
        if names is None:
            placed.append((index, entry))
            continue
        label = entry_label(index, entry["name"])
        members: set[str] = set()
        for name in names:
            if name in inventory:
                members.update(inventory[name])
            elif name in known_hosts:
                members.add(name)
            else:
                raise FleetError(label, "hosts", f"{name!r} is neither a host nor a group of the inventory")
        if not members & set(servers):
            raise FleetError(
                label, "hosts", f"{', '.join(names)} has no inference host (inference hosts: {', '.join(servers)})"
            )
        if host in members:
            placed.append((index, entry))
    here = {entry["name"] for _, entry in placed}
    for index, entry in placed:
        incumbent = entry.get("candidate_for")
        if incumbent is not None and incumbent not in here:
            raise FleetError(
                entry_label(index, entry["name"]),
                "hosts",
                f"placed on {host}, where its incumbent {incumbent!r} is not",
            )
    if not placed:
        raise FleetError("(fleet)", "hosts", f"no entry is placed on {host}; an inference host serves at least one")
    return [entry for _, entry in placed]


def apply_promotions(fleet: Any, promoted: Any, variable: str = "llmrig_fleet_promoted") -> Any:
    """The fleet after promotions ({incumbent: candidate}, written by playbooks/promote.yml): the candidate
    takes the incumbent's name (as an alias) and aliases, so clients that call them get the candidate; the
    incumbent keeps serving as <name>--previous, without aliases, the way back. Applied after the overrides
    and before validation; a pair that does not match a candidate_for of the fleet fails, naming it."""
    if not promoted:
        return fleet
    if not isinstance(promoted, dict):
        raise FleetError("(promotions)", variable, "must be a mapping of incumbent name to candidate name")
    if not isinstance(fleet, list):
        return fleet
    by_name = {entry.get("name"): entry for entry in fleet if isinstance(entry, dict)}
    for incumbent, candidate in promoted.items():
        entry = by_name.get(candidate)
        if not isinstance(entry, dict) or entry.get("candidate_for") != incumbent or incumbent not in by_name:
            raise FleetError(
                f"{candidate!r}", variable, f"{candidate!r} is not an entry with candidate_for: {incumbent!r}"
            )
    out = []
    for entry in fleet:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in promoted:
            old = dict(entry, name=name + PREVIOUS_SUFFIX, aliases=[])
            old.pop("load_on_startup", None)
            old.pop("keep_cached", None)
            out.append(old)
        elif isinstance(entry, dict) and promoted.get(entry.get("candidate_for")) == name:
            incumbent = by_name[entry["candidate_for"]]
            new = {key: value for key, value in entry.items() if key != "candidate_for"}
            new["aliases"] = [incumbent["name"], *incumbent.get("aliases", []), *entry.get("aliases", [])]
            out.append(new)
        else:
            out.append(entry)
    return out


def fleet_files(entries: list[dict]) -> list[dict]:
    """Unique files the fleet needs on the host: file, sha256, url or path, used_by (the entries and fields
    that name it, as the fleet's messages do, for the messages of the file's download) and keep_cached (an
    entry that uses it keeps its files in the page cache)."""
    seen: dict[str, dict] = {}
    for index, entry in enumerate(entries):
        for field, source in _entry_sources(entry):
            item = seen.setdefault(source["file"], {**source, "used_by": [], "keep_cached": False})
            item["used_by"].append(f"fleet entry {entry_label(index, entry['name'])}: field '{field}'")
            item["keep_cached"] = item["keep_cached"] or bool(entry.get("keep_cached"))
    return list(seen.values())


def ini_value(value: Any) -> str:
    """A preset value as llama-server's INI parser reads it (booleans true/false, lists comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(ini_value(item) for item in value)
    text = str(value)
    if "\n" in text:
        raise ValueError(f"preset values must be one line, got {text!r}")
    return text


def preset_options(entry: dict, models_dir: str) -> list[tuple[str, Any]]:
    """llama-server options (long names, no dashes) for one validated entry, in a stable order."""

    def path(source: dict) -> str:
        return posixpath.join(models_dir, source["file"])

    options: list[tuple[str, Any]] = [("model", path(entry["source"]))]
    if entry["aliases"]:
        options.append(("alias", entry["aliases"]))
    options.append(("ctx-size", entry["context"]))
    simple = (
        ("cache_type_k", "cache-type-k"),
        ("cache_type_v", "cache-type-v"),
        ("gpu_layers", "n-gpu-layers"),
        ("split_mode", "split-mode"),
        ("tensor_split", "tensor-split"),
        ("main_gpu", "main-gpu"),
        ("flash_attn", "flash-attn"),
        ("parallel", "parallel"),
        ("threads", "threads"),
    )
    options.extend((option, entry[field]) for field, option in simple if field in entry)
    if "mmproj" in entry:
        options.append(("mmproj", path(entry["mmproj"])))
    spec = entry.get("speculative")
    if spec:
        options.append(("spec-type", spec["type"]))
        for field, option in (
            ("draft_n_max", "spec-draft-n-max"),
            ("draft_n_min", "spec-draft-n-min"),
            ("draft_p_min", "spec-draft-p-min"),
            ("cache_type_k", "spec-draft-type-k"),
            ("cache_type_v", "spec-draft-type-v"),
        ):
            if field in spec:
                options.append((option, spec[field]))
        if "model" in spec:
            options.append(("spec-draft-model", path(spec["model"])))
    for field, value in entry.get("sampling", {}).items():
        options.append((SAMPLING_OPTIONS[field], value))
    if "load_on_startup" in entry:
        options.append(("load-on-startup", entry["load_on_startup"]))
    options.extend(entry.get("extra_args", {}).items())
    return options
