"""Unit tests: every fleet validation rule, each entry's preset options and the global options check."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.llmrig.serving.plugins.module_utils._fleet import (
    FleetError,
    GlobalOptionError,
    check_global_options,
    fleet_files,
    ini_value,
    preset_options,
    validate_fleet,
)

SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
OTHER_SHA = "0" * 64


def entry(**overrides):
    base = {
        "name": "model-a",
        "source": {"url": "https://models.example/a/model-a.Q4_K_M.gguf", "sha256": SHA},
        "context": 4096,
    }
    base.update(overrides)
    return base


def fails(fleet, entry_label: str, field: str, reason_part: str = "") -> FleetError:
    with pytest.raises(FleetError) as info:
        validate_fleet(fleet)
    err = info.value
    assert err.entry == entry_label
    assert err.field == field
    assert reason_part in err.reason
    assert str(err).startswith(f"fleet entry {entry_label}: field '{field}': ")
    return err


def test_minimal_entry_is_valid_and_normalised():
    (out,) = validate_fleet([entry()])
    assert out == {
        "name": "model-a",
        "aliases": [],
        "source": {"url": "https://models.example/a/model-a.Q4_K_M.gguf", "sha256": SHA, "file": "model-a.Q4_K_M.gguf"},
        "context": 4096,
    }


def test_full_entry_is_valid():
    full = entry(
        aliases=["a", "coder"],
        cache_type_k="q8_0",
        cache_type_v="q5_1",
        gpu_layers="all",
        split_mode="layer",
        tensor_split=[1, 1.5],
        main_gpu=1,
        flash_attn="on",
        parallel=2,
        threads=8,
        speculative={"type": "draft-mtp", "draft_n_max": 3, "draft_n_min": 1, "draft_p_min": 0.6},
        mmproj={"path": "/srv/models/mmproj-a.gguf", "sha256": OTHER_SHA},
        sampling={"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "repeat_penalty": 1.05},
        load_on_startup=True,
        extra_args={"load-mode": "mmap", "cache-ram": 0, "no-mmproj-offload": False},
    )
    (out,) = validate_fleet([full])
    assert out["mmproj"]["file"] == "mmproj-a.gguf"
    assert out["speculative"]["draft_n_max"] == 3


def test_sha256_is_lowercased():
    (out,) = validate_fleet([entry(source={"path": "/m/a.gguf", "sha256": SHA.upper()})])
    assert out["source"]["sha256"] == SHA


def test_fleet_must_be_a_non_empty_list():
    fails([], "(fleet)", "llmrig_fleet", "non-empty list")
    fails({"name": "x"}, "(fleet)", "llmrig_fleet", "non-empty list")


def test_entry_must_be_a_mapping():
    fails(["model-a"], "#1", "(entry)", "mapping")


def test_unknown_key():
    fails([entry(contxt=4096)], "'model-a' (#1)", "contxt", "unknown field")


def test_unknown_nested_keys():
    fails([entry(source={"url": "https://x/a.gguf", "sha256": SHA, "md5": "x"})], "'model-a' (#1)", "source.md5")
    fails([entry(sampling={"temp": 0.5})], "'model-a' (#1)", "sampling.temp", "unknown field")
    fails([entry(speculative={"type": "draft-mtp", "draft_max": 2})], "'model-a' (#1)", "speculative.draft_max")


def test_name_is_required_and_well_formed():
    nameless = entry()
    del nameless["name"]
    fails([nameless], "#1", "name", "required")
    fails([entry(name="has space")], "'has space' (#1)", "name", "must match")
    fails([entry(name="[bracket]")], "'[bracket]' (#1)", "name", "must match")


def test_aliases_must_be_a_list_of_names():
    fails([entry(aliases="coder")], "'model-a' (#1)", "aliases", "list")
    fails([entry(aliases=["ok", "not ok"])], "'model-a' (#1)", "aliases", "'not ok'")


def test_source_is_required():
    sourceless = entry()
    del sourceless["source"]
    fails([sourceless], "'model-a' (#1)", "source", "required")


def test_source_needs_exactly_one_of_url_and_path():
    fails([entry(source={"sha256": SHA})], "'model-a' (#1)", "source", "exactly one")
    both = {"url": "https://x/a.gguf", "path": "/m/a.gguf", "sha256": SHA}
    fails([entry(source=both)], "'model-a' (#1)", "source", "exactly one")


def test_source_url_and_path_format():
    fails([entry(source={"url": "ftp://x/a.gguf", "sha256": SHA})], "'model-a' (#1)", "source.url", "http")
    fails([entry(source={"path": "models/a.gguf", "sha256": SHA})], "'model-a' (#1)", "source.path", "absolute")


def test_source_size_is_optional_and_reaches_the_files():
    (out,) = validate_fleet([entry(source={"url": "https://x/a.gguf", "sha256": SHA, "size": 1234})])
    assert fleet_files([out]) == [
        {
            "url": "https://x/a.gguf",
            "size": 1234,
            "sha256": SHA,
            "file": "a.gguf",
            "used_by": ["fleet entry 'model-a' (#1): field 'source'"],
            "keep_cached": False,
        }
    ]
    fails(
        [entry(source={"url": "https://x/a.gguf", "sha256": SHA, "size": 0})], "'model-a' (#1)", "source.size", ">= 1"
    )
    fails([entry(source={"url": "https://x/a.gguf", "sha256": SHA, "size": "big"})], "'model-a' (#1)", "source.size")


def test_sha256_is_required():
    fails([entry(source={"url": "https://x/a.gguf"})], "'model-a' (#1)", "source.sha256", "required")


@pytest.mark.parametrize("bad", ["abc", SHA[:-1], SHA + "0", "g" * 64, "replace-me", 12345])
def test_bad_sha256_format(bad):
    fails([entry(source={"url": "https://x/a.gguf", "sha256": bad})], "'model-a' (#1)", "source.sha256", "64 hex")


def test_file_name_must_be_plain():
    fails([entry(source={"url": "https://x/", "sha256": SHA})], "'model-a' (#1)", "source.file", "plain file name")
    bad = {"url": "https://x/a.gguf", "sha256": SHA, "file": "../a.gguf"}
    fails([entry(source=bad)], "'model-a' (#1)", "source.file")


def test_context_is_required():
    no_context = entry()
    del no_context["context"]
    fails([no_context], "'model-a' (#1)", "context", "required")


@pytest.mark.parametrize("bad", ["32k", "4096", 4096.0, True, None, [4096]])
def test_non_integer_context(bad):
    fails([entry(context=bad)], "'model-a' (#1)", "context", "must be an integer")


def test_context_must_be_positive():
    fails([entry(context=0)], "'model-a' (#1)", "context", ">= 1")


def test_kv_cache_types():
    fails([entry(cache_type_k="q8")], "'model-a' (#1)", "cache_type_k", "one of")
    fails([entry(cache_type_v="fp16")], "'model-a' (#1)", "cache_type_v", "one of")


def test_gpu_layers():
    assert validate_fleet([entry(gpu_layers=99)])[0]["gpu_layers"] == 99
    assert validate_fleet([entry(gpu_layers="auto")])[0]["gpu_layers"] == "auto"
    fails([entry(gpu_layers="most")], "'model-a' (#1)", "gpu_layers", "integer")
    fails([entry(gpu_layers=-1)], "'model-a' (#1)", "gpu_layers", ">= 0")


def test_split_settings():
    fails([entry(split_mode="rows")], "'model-a' (#1)", "split_mode", "one of")
    fails([entry(tensor_split="1,1")], "'model-a' (#1)", "tensor_split", "list")
    fails([entry(tensor_split=[])], "'model-a' (#1)", "tensor_split")
    fails([entry(tensor_split=[0, 0])], "'model-a' (#1)", "tensor_split")
    fails([entry(tensor_split=[1, -1])], "'model-a' (#1)", "tensor_split")
    fails([entry(main_gpu="0")], "'model-a' (#1)", "main_gpu", "integer")


def test_flash_attn_parallel_threads():
    fails([entry(flash_attn=True)], "'model-a' (#1)", "flash_attn", "one of")
    fails([entry(parallel=0)], "'model-a' (#1)", "parallel", ">= 1")
    fails([entry(threads="8")], "'model-a' (#1)", "threads", "integer")


def test_speculative_rules():
    fails([entry(speculative="mtp")], "'model-a' (#1)", "speculative", "mapping")
    fails([entry(speculative={"type": "mtp"})], "'model-a' (#1)", "speculative.type", "draft-mtp")
    fails([entry(speculative={"type": "draft-mtp", "draft_n_max": "3"})], "'model-a' (#1)", "speculative.draft_n_max")
    both = {"type": "draft-mtp", "draft_n_max": 1, "draft_n_min": 2}
    fails([entry(speculative=both)], "'model-a' (#1)", "speculative.draft_n_min", "must not exceed")
    fails([entry(speculative={"type": "draft-mtp", "draft_p_min": 2})], "'model-a' (#1)", "speculative.draft_p_min")
    fails([entry(speculative={"type": "draft-simple"})], "'model-a' (#1)", "speculative.model", "required")
    bad_model = {"type": "draft-simple", "model": {"url": "https://x/d.gguf", "sha256": "nope"}}
    fails([entry(speculative=bad_model)], "'model-a' (#1)", "speculative.model.sha256")
    bad_kv = {"type": "draft-mtp", "cache_type_k": "q8"}
    fails([entry(speculative=bad_kv)], "'model-a' (#1)", "speculative.cache_type_k", "q8_0")
    # the draft context's KV types have a field, so the option is refused in extra_args
    fails([entry(extra_args={"ctkd": "q8_0"})], "'model-a' (#1)", "extra_args.ctkd", "speculative.cache_type_k")


def test_mmproj_is_a_source():
    fails([entry(mmproj="/m/mmproj.gguf")], "'model-a' (#1)", "mmproj", "mapping")
    fails([entry(mmproj={"path": "/m/mmproj.gguf"})], "'model-a' (#1)", "mmproj.sha256", "required")


def test_sampling_values():
    fails([entry(sampling="greedy")], "'model-a' (#1)", "sampling", "mapping")
    fails([entry(sampling={"temperature": "0.5"})], "'model-a' (#1)", "sampling.temperature", "number")
    fails([entry(sampling={"top_k": 2.5})], "'model-a' (#1)", "sampling.top_k", "integer")


def test_load_on_startup_is_boolean():
    fails([entry(load_on_startup="yes")], "'model-a' (#1)", "load_on_startup", "true or false")


def test_extra_args_rules():
    fails([entry(extra_args=["--foo"])], "'model-a' (#1)", "extra_args", "mapping")
    fails([entry(extra_args={"--foo": 1})], "'model-a' (#1)", "extra_args.--foo", "without leading dashes")
    fails([entry(extra_args={"ctx-size": 8192})], "'model-a' (#1)", "extra_args.ctx-size", "managed by context")
    fails([entry(extra_args={"port": 9000})], "'model-a' (#1)", "extra_args.port", "gateway")
    fails([entry(extra_args={"api-key": "x"})], "'model-a' (#1)", "extra_args.api-key", "gateway")
    fails([entry(extra_args={"temp": 0.1})], "'model-a' (#1)", "extra_args.temp", "sampling.temperature")
    fails([entry(extra_args={"override-tensor": ["a", "b"]})], "'model-a' (#1)", "extra_args.override-tensor")
    fails([entry(extra_args={"draft-max": 4})], "'model-a' (#1)", "extra_args.draft-max", "speculative.draft_n_max")
    fails([entry(extra_args={"no-mmap": True})], "'model-a' (#1)", "extra_args.no-mmap", "load-mode")
    fails([entry(extra_args={"chat-template": "a;b"})], "'model-a' (#1)", "extra_args.chat-template", "';'")


def test_duplicate_names():
    fails([entry(), entry()], "'model-a' (#2)", "name", "already used by entry 'model-a' (#1)")


def test_duplicate_aliases():
    first = entry(aliases=["coder"])
    second = entry(name="model-b", aliases=["coder"])
    fails([first, second], "'model-b' (#2)", "aliases", "'coder' is already used")
    fails([entry(aliases=["model-b"]), entry(name="model-b")], "'model-b' (#2)", "name", "already used")
    fails([entry(aliases=["x", "x"])], "'model-a' (#1)", "aliases", "'x' is already used")


def test_same_file_with_different_checksums():
    second = entry(name="model-b", source={"path": "/m/model-a.Q4_K_M.gguf", "sha256": OTHER_SHA})
    fails([entry(), second], "'model-b' (#2)", "source.file", "another sha256")


def test_same_file_twice_is_one_download():
    fleet = validate_fleet([entry(), entry(name="model-b", context=8192)])
    files = fleet_files(fleet)
    assert [item["file"] for item in files] == ["model-a.Q4_K_M.gguf"]
    # its download's messages name both entries
    assert files[0]["used_by"] == [
        "fleet entry 'model-a' (#1): field 'source'",
        "fleet entry 'model-b' (#2): field 'source'",
    ]


def test_fleet_files_include_projector_and_draft():
    full = entry(
        mmproj={"url": "https://x/mmproj-a.gguf", "sha256": OTHER_SHA},
        speculative={"type": "draft-simple", "model": {"path": "/m/draft.gguf", "sha256": "1" * 64}},
    )
    files = fleet_files(validate_fleet([full]))
    assert [item["file"] for item in files] == ["model-a.Q4_K_M.gguf", "mmproj-a.gguf", "draft.gguf"]
    assert files[2]["path"] == "/m/draft.gguf"
    assert files[1]["used_by"] == ["fleet entry 'model-a' (#1): field 'mmproj'"]
    assert files[2]["used_by"] == ["fleet entry 'model-a' (#1): field 'speculative.model'"]


def test_validation_does_not_modify_input():
    fleet = [entry(aliases=["x"])]
    before = copy.deepcopy(fleet)
    validate_fleet(fleet)
    assert fleet == before


def preset_lines(fleet_entry: dict) -> list[str]:
    return [f"{key} = {ini_value(value)}" for key, value in preset_options(fleet_entry, "/var/lib/llmrig/models")]


def test_preset_options():
    fleet = validate_fleet(
        [
            entry(
                aliases=["a", "b"],
                cache_type_k="q8_0",
                tensor_split=[3, 1],
                speculative={"type": "draft-mtp", "draft_n_max": 2, "cache_type_k": "q8_0", "cache_type_v": "q4_0"},
                sampling={"temperature": 0.6, "top_k": 20},
                load_on_startup=True,
                extra_args={"load-mode": "mmap", "jinja": True},
            ),
            entry(name="model-b", context=8192),
        ]
    )
    assert preset_lines(fleet[0]) == [
        "model = /var/lib/llmrig/models/model-a.Q4_K_M.gguf",
        "alias = a,b",
        "ctx-size = 4096",
        "cache-type-k = q8_0",
        "tensor-split = 3,1",
        "spec-type = draft-mtp",
        "spec-draft-n-max = 2",
        "spec-draft-type-k = q8_0",
        "spec-draft-type-v = q4_0",
        "temp = 0.6",
        "top-k = 20",
        "load-on-startup = true",
        "load-mode = mmap",
        "jinja = true",
    ]
    assert preset_lines(fleet[1]) == ["model = /var/lib/llmrig/models/model-a.Q4_K_M.gguf", "ctx-size = 8192"]


@pytest.mark.parametrize("value", ["max", {"max": 65536}])
def test_context_max(value):
    [resolved] = validate_fleet([entry(context=value)])
    assert resolved["context"] == "max"
    assert resolved.get("context_ceiling") == (65536 if isinstance(value, dict) else None)


@pytest.mark.parametrize(("value", "field"), [({"max": "big"}, "context.max"), ({"limit": 4}, "context.limit")])
def test_bad_context_max(value, field):
    fails([entry(context=value)], "'model-a' (#1)", field)


def test_global_options_that_change_no_memory_are_accepted():
    options = {"threads": 2, "flash-attn": "on", "temp": 0.7, "stop-timeout": 10, "fit": "off", "jinja": True}
    assert check_global_options(options) == options


# Bug 6: the [*] section was pasted unchecked, so a global option could take the gateway's or a fleet
# field's place, or end its line early with an INI comment character.
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 9999}, "option 'port': is managed by the gateway (llmrig_gateway_port)"),
        ({"api-key": "x"}, "option 'api-key': is managed by the gateway (vault_llmrig_api_key)"),
        ({"ctx-size": 8192}, "option 'ctx-size': is managed by the fleet field 'context'; set it in each entry"),
        ({"cache-type-k": "q4_0"}, "option 'cache-type-k': is managed by the fleet field 'cache_type_k'"),
        ({"draft-max": 4}, "option 'draft-max': was renamed"),
        ({"chat-template": "a;b"}, "option 'chat-template': must be a non-empty single line without ';' or '#'"),
        ({"alias": "x#y"}, "option 'alias': is managed by the fleet field 'aliases'"),
        ({"--threads": 2}, "option '--threads': option names are llama-server long options"),
        ({"threads": [1, 2]}, "option 'threads': must be a string, number or boolean"),
    ],
)
def test_global_options_are_checked_like_extra_args(options, message):
    with pytest.raises(GlobalOptionError) as info:
        check_global_options(options)
    assert str(info.value) == f"llmrig_gateway_global_options: {message}" or message in str(info.value)
    assert str(info.value).startswith("llmrig_gateway_global_options: option ")


def test_keep_cached_marks_every_file_of_the_entry_and_is_a_boolean():
    projector = {"url": "https://x/p.gguf", "sha256": "b" * 64}
    kept = entry(name="kept", keep_cached=True, mmproj=projector)
    other = entry(name="other", source={"url": "https://x/b.gguf", "sha256": "c" * 64})
    files = {f["file"]: f["keep_cached"] for f in fleet_files(validate_fleet([kept, other]))}
    assert files == {"model-a.Q4_K_M.gguf": True, "p.gguf": True, "b.gguf": False}
    # a file that two entries share is kept when either keeps it
    shared = entry(name="shared")
    assert [f["keep_cached"] for f in fleet_files(validate_fleet([shared, entry(name="k", keep_cached=True)]))] == [
        True
    ]
    fails([entry(keep_cached="yes")], "'model-a' (#1)", "keep_cached", "true or false")


def test_a_hosts_overrides_are_merged_into_its_entries_and_validated_with_them():
    from ansible_collections.llmrig.serving.plugins.module_utils._fleet import apply_overrides

    fleet = [entry(sampling={"temperature": 0.2, "top_k": 40}), entry(name="model-b")]
    merged = apply_overrides(fleet, {"model-a": {"threads": 3, "sampling": {"temperature": 0.0}}})
    assert merged[0]["threads"] == 3
    assert merged[0]["sampling"] == {"temperature": 0.0, "top_k": 40}  # a mapping merges one level deep
    assert merged[1] == fleet[1] and "threads" not in fleet[0]  # the fleet itself is left as it was
    assert validate_fleet(merged)[0]["threads"] == 3
    assert apply_overrides(fleet, {}) is fleet
    with pytest.raises(FleetError) as info:
        apply_overrides(fleet, {"model-x": {"threads": 2}})
    assert str(info.value) == (
        "fleet entry 'model-x': field 'llmrig_fleet_overrides': 'model-x' is not an entry of the fleet"
    )
    # a bad value is caught by the entry's own validation, naming the entry and the field
    fails(apply_overrides(fleet, {"model-a": {"threads": 0}}), "'model-a' (#1)", "threads")


def test_a_candidate_names_another_entry_that_is_not_itself_a_candidate():
    incumbent = entry(aliases=["coder"], published_scores=[{"benchmark": "X", "score": 61.2, "source": "vendor card"}])
    candidate = entry(name="model-b", candidate_for="model-a")
    entries = validate_fleet([incumbent, candidate])
    assert entries[1]["candidate_for"] == "model-a"
    assert entries[0]["published_scores"] == [{"benchmark": "X", "score": 61.2, "source": "vendor card"}]
    fails([incumbent, entry(name="model-b", candidate_for="model-z")], "'model-b' (#2)", "candidate_for", "not another")
    fails([entry(candidate_for="model-a")], "'model-a' (#1)", "candidate_for", "not another entry")
    chain = [incumbent, candidate, entry(name="model-c", candidate_for="model-b")]
    fails(chain, "'model-c' (#3)", "candidate_for", "'model-b' is itself a candidate")
    fails(
        [entry(published_scores=[{"benchmark": "X", "score": "high", "source": "s"}])],
        "'model-a' (#1)",
        "published_scores[0].score",
        "must be a number",
    )
    fails(
        [entry(published_scores=[{"benchmark": "X", "score": 1}])],
        "'model-a' (#1)",
        "published_scores[0].source",
        "is required",
    )


def test_a_promotion_hands_the_incumbents_name_and_aliases_to_the_candidate():
    from ansible_collections.llmrig.serving.plugins.module_utils._fleet import apply_promotions

    fleet = [entry(aliases=["coder"], load_on_startup=True), entry(name="model-b", candidate_for="model-a")]
    promoted = validate_fleet(apply_promotions(fleet, {"model-a": "model-b"}))
    assert [(e["name"], e["aliases"]) for e in promoted] == [
        ("model-a--previous", []),
        ("model-b", ["model-a", "coder"]),
    ]
    assert "candidate_for" not in promoted[1] and "load_on_startup" not in promoted[0]
    assert apply_promotions(fleet, {}) is fleet and fleet[1]["candidate_for"] == "model-a"
    with pytest.raises(FleetError) as info:
        apply_promotions(fleet, {"model-b": "model-a"})
    assert str(info.value) == (
        "fleet entry 'model-a': field 'llmrig_fleet_promoted': 'model-a' is not an entry with candidate_for: 'model-b'"
    )
