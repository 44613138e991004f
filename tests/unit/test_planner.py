"""The planner end to end on real GGUF files: read locally and over HTTP range requests, cached, planned for
a fleet, and the fleet_plan module run as Ansible runs it."""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import re
import sys
import threading
from pathlib import Path

import llmrig_testlib
import pytest
from ansible_collections.llmrig.serving.plugins.module_utils import _gguf as gguf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/gpu"))
import make_synthetic_gguf  # noqa: E402

MIB = 1024 * 1024
SHAPE = {"layers": 4, "width": 256, "ffn": 1024, "heads": 4, "kv_heads": 2, "vocab": 5000, "ctx": 8192}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    make_synthetic_gguf.write(path, **SHAPE)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Ranges(http.server.BaseHTTPRequestHandler):
    path_on_disk: Path
    honour_ranges = True
    served: list[tuple[int, int]] = []  # noqa: RUF012 - shared log, reset per test

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(self.path_on_disk.stat().st_size))
        self.end_headers()

    def do_GET(self) -> None:
        data = self.path_on_disk.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if match and self.honour_ranges:
            start, end = int(match.group(1)), int(match.group(2))
            Ranges.served.append((start, end))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(model):
    Ranges.path_on_disk, Ranges.served, Ranges.honour_ranges = model, [], True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ranges)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/tiny.gguf"
    httpd.shutdown()


def test_local_file_metadata_and_tensor_bytes(model):
    meta = gguf.read_gguf(str(model))
    assert (meta.arch, meta.n_layer, meta.n_embd, meta.n_head, meta.n_head_kv) == ("llama", 4, 256, 4, [2] * 4)
    assert (meta.head_k, meta.head_v, meta.context_train) == (64, 64, 8192)
    # f16 matrices, f32 norms: per layer q, o 256x256; k, v 128x256; gate, up, down 1024x256; 2 norms
    per_layer = (2 * 256 * 256 + 2 * 128 * 256 + 3 * 1024 * 256) * 2 + 2 * 256 * 4
    expected = 4 * per_layer + 2 * 5000 * 256 * 2 + 256 * 4  # + token_embd and output, output_norm
    assert meta.weight_bytes == expected


def test_remote_metadata_by_range_requests_matches_the_local_read(model, server):
    remote = gguf.read_gguf_url(server, first=16 * 1024)
    assert gguf.meta_to_json(remote) == gguf.meta_to_json(gguf.read_gguf(str(model)))
    # the header was enough: a fraction of the file was fetched, growing from 16 KiB
    assert Ranges.served[0] == (0, 16 * 1024 - 1)
    assert max(end for _, end in Ranges.served) < model.stat().st_size / 4


def test_server_without_range_support_is_refused(server):
    Ranges.honour_ranges = False
    with pytest.raises(ValueError, match="ignores range requests"):
        gguf.read_gguf_url(server, first=16 * 1024)


def entry(name: str, path: Path, context: int = 4096, **fields) -> dict:
    return {"name": name, "source": {"path": str(path), "sha256": sha256(path)}, "context": context, **fields}


def test_metadata_is_cached_by_sha256(model, tmp_path):
    from ansible_collections.llmrig.serving.plugins.module_utils._fleet import validate_fleet

    copy = tmp_path / "copy.gguf"
    copy.write_bytes(model.read_bytes())
    entries = validate_fleet([entry("tiny", copy)])
    first = gguf.load_metas(entries, str(tmp_path / "cache"))
    copy.unlink()  # the second plan must not need the file
    second = gguf.load_metas(entries, str(tmp_path / "cache"))
    assert gguf.meta_to_json(first["copy.gguf"]) == gguf.meta_to_json(second["copy.gguf"])
    # an entry written by an older planner is not trusted: it names another cache version
    [cached] = (tmp_path / "cache").iterdir()
    assert cached.name == f"{entries[0]['source']['sha256']}.v{gguf.META_CACHE_VERSION}.json"


def run_module(tmp_path: Path, **args) -> dict:
    return llmrig_testlib.run_module("fleet_plan", tmp_path, **{"models_dir": "/var/lib/llmrig/models", **args})


def test_module_plans_a_fleet_that_fits(model, tmp_path):
    fleet = [entry("tiny-a", model, context=8192, cache_type_k="q8_0", cache_type_v="q8_0"), entry("tiny-b", model)]
    out = tmp_path / "plan.json"
    result = run_module(
        tmp_path, fleet=fleet, gpus=[{"name": "GPU A", "memory_mib": 1300}], json_path=str(out), margin_mib=256
    )
    assert not result.get("failed"), result
    [a, b] = result["plan"]["models"]
    assert a["fits"] and b["fits"]
    # KV: 8192 cells x 4 layers x 2 heads x 64 x (K + V) x 34/32 bytes
    assert a["devices"][0]["kv_mib"] == round(8192 * 4 * 128 * 2 * 34 / 32 / MIB, 2)
    assert a["devices"][0]["overhead_mib"] == 600
    assert result["models_max"] == 1  # each needs its own 600 MiB of overhead: two do not fit in 1300 - 256
    assert "tiny-a" in result["table"] and "models that fit together" in result["table"]
    assert json.loads(out.read_text()) == result["plan"]


def test_two_small_models_fit_together_on_a_bigger_gpu(model, tmp_path):
    fleet = [entry("tiny-a", model), entry("tiny-b", model)]
    result = run_module(tmp_path, fleet=fleet, gpus=[{"name": "GPU A", "memory_mib": 4096}])
    assert result["models_max"] == 2
    assert result["plan"]["pairs_that_fit"] == [["tiny-a", "tiny-b"]]


def test_module_refuses_an_entry_that_does_not_fit_and_says_what_would(model, tmp_path):
    fleet = [entry("tiny", model), entry("too-long", model, context=1_048_576)]
    result = run_module(tmp_path, fleet=fleet, gpus=[{"name": "GPU A", "memory_mib": 2048}])
    assert result["failed"]
    message = result["msg"]
    assert message.startswith("fleet entry 'too-long' (#2): field 'context': needs ")
    assert "on GPU 0 (GPU A, 2048 MiB, margin 512 MiB)" in message
    assert re.search(r": \d+ MiB short \(weights \d+, KV \d+, compute \d+, overhead 600\)", message)
    fitting = int(re.search(r"context (\d+) fits", message).group(1))
    assert 0 < fitting < 1_048_576
    # the suggestion is right: that context plans within the GPU, 1024 more does not
    ok = run_module(tmp_path, fleet=[entry("x", model, context=fitting)], gpus=[{"name": "A", "memory_mib": 2048}])
    assert not ok.get("failed"), ok
    over = run_module(
        tmp_path, fleet=[entry("x", model, context=fitting + 1024)], gpus=[{"name": "A", "memory_mib": 2048}]
    )
    assert over["failed"]


def test_cheaper_kv_type_is_suggested_when_it_fits(model, tmp_path):
    fleet = [entry("big-kv", model, context=262144, cache_type_k="f16", cache_type_v="f16")]
    # f16: 512 MiB of KV + compute + overhead is over 1400 MiB; q4_0 KV is 144 MiB
    result = run_module(tmp_path, fleet=fleet, gpus=[{"name": "A", "memory_mib": 1400}], margin_mib=0)
    assert result["failed"]
    assert "or cache_type_k/v q4_0 at context 262144" in result["msg"]


def test_module_rejects_bad_gpu_input(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("tiny", model)], gpus=[{"name": "A", "memory_mib": "16G"}])
    assert result["failed"] and "gpus[0]: memory_mib must be a positive integer" in result["msg"]


TWO_GPUS = [{"name": "GPU A", "memory_mib": 4096}, {"name": "GPU B", "memory_mib": 4096}]


# Bug 2: GPU fields that name GPUs the host does not have raised IndexError or ZeroDivisionError from the
# planner (a traceback); now each gives the entry and the field.
@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"tensor_split": [1, 1, 1]}, "tensor_split", "has 3 values but the host has 2 GPUs"),
        ({"split_mode": "none", "main_gpu": 2}, "main_gpu", "is 2 but the host has 2 GPUs (0 to 1)"),
        ({"split_mode": "row", "main_gpu": 5}, "main_gpu", "is 5 but the host has 2 GPUs (0 to 1)"),
    ],
)
def test_gpu_fields_are_checked_against_the_planned_gpus(model, tmp_path, fields, field, reason):
    result = run_module(tmp_path, fleet=[entry("tiny", model), entry("bad", model, **fields)], gpus=TWO_GPUS)
    assert result["failed"], result
    assert result["msg"] == f"fleet entry 'bad' (#2): field '{field}': {reason}", result["msg"]
    assert (result["entry"], result["field"]) == ("'bad' (#2)", field)
    assert "Traceback" not in json.dumps(result)


def test_mmproj_entry_with_an_out_of_range_main_gpu_names_the_field(model, tmp_path):
    vision = entry("vision", model, main_gpu=3, mmproj={"path": str(model), "sha256": sha256(model), "file": "mm.gguf"})
    result = run_module(tmp_path, fleet=[vision], gpus=TWO_GPUS)
    assert result["msg"] == "fleet entry 'vision' (#1): field 'main_gpu': is 3 but the host has 2 GPUs (0 to 1)"


def test_tensor_split_on_one_gpu_with_a_zero_share_is_refused(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("x", model, tensor_split=[0, 1])], gpus=TWO_GPUS[:1])
    assert result["msg"] == "fleet entry 'x' (#1): field 'tensor_split': has 2 values but the host has 1 GPU"


def test_a_shorter_tensor_split_is_planned(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("x", model, tensor_split=[1])], gpus=TWO_GPUS)
    assert not result.get("failed"), result
    [plan] = result["plan"]["models"]
    assert plan["devices"][0]["weights_mib"] > 0


# Bug 3: the shortfall message named `context` even when the weights alone do not fit.
def test_weights_that_do_not_fit_name_the_source_not_the_context(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("tiny", model)], gpus=[{"name": "A", "memory_mib": 600}], margin_mib=0)
    assert result["failed"], result
    assert result["msg"].startswith("fleet entry 'tiny' (#1): field 'source': needs "), result["msg"]
    assert (
        "the weights alone do not fit: fewer gpu_layers, another tensor_split or a smaller quantization"
        in (result["msg"])
    )
    assert result["field"] == "source"


def test_context_max_is_the_largest_context_that_fits(model, tmp_path):
    gpus = [{"name": "GPU A", "memory_mib": 2048}]
    result = run_module(tmp_path, fleet=[entry("tiny", model, context="max")], gpus=gpus)
    assert not result.get("failed"), result
    [plan] = result["plan"]["models"]
    best = plan["context"]
    assert plan["context_max"] is True
    # never above the model's trained context (8192 here), and what the plan table shows
    assert best == SHAPE["ctx"]
    assert f"{best} (max)" in result["table"]
    # the resolved number reaches the presets and the resolved fleet
    assert ["ctx-size", best] in result["presets"][0]["options"]
    assert result["fleet"][0]["context"] == best


def test_context_max_with_a_ceiling_on_a_small_gpu(model, tmp_path):
    gpus = [{"name": "GPU A", "memory_mib": 630}]
    result = run_module(tmp_path, fleet=[entry("tiny", model, context={"max": 1_000_000})], gpus=gpus, margin_mib=0)
    assert not result.get("failed"), result
    best = result["plan"]["models"][0]["context"]
    assert 0 < best < SHAPE["ctx"]
    # the resolved context fits, 1024 more does not
    fixed = run_module(tmp_path, fleet=[entry("tiny", model, context=best)], gpus=gpus, margin_mib=0)
    assert not fixed.get("failed"), fixed
    over = run_module(tmp_path, fleet=[entry("tiny", model, context=best + 1024)], gpus=gpus, margin_mib=0)
    assert over["failed"]
    capped = run_module(tmp_path, fleet=[entry("tiny", model, context={"max": 2048})], gpus=[{"memory_mib": 8192}])
    assert capped["plan"]["models"][0]["context"] == 2048


def test_context_max_without_a_plan_says_so(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("tiny", model, context="max")], gpus=[])
    assert result["failed"]
    assert (
        result["msg"] == "fleet entry 'tiny' (#1): field 'context': max needs a plan: give the planner GPUs or host RAM"
    )


def test_unplanned_fleet_is_validated_and_resolved(model, tmp_path):
    result = run_module(tmp_path, fleet=[entry("tiny", model, aliases=["t"])], gpus=[])
    assert not result.get("failed"), result
    assert (result["planned"], result["fit"], result["models_max"], result["plan"]) == (False, True, 1, None)
    assert result["names"] == ["tiny"]
    assert result["presets"][0]["options"][:2] == [["model", "/var/lib/llmrig/models/tiny.gguf"], ["alias", ["t"]]]
    bad = run_module(tmp_path, fleet=[entry("tiny", model, context="32k")], gpus=[])
    assert bad["msg"].startswith("fleet entry 'tiny' (#1): field 'context': must be an integer")


def test_context_max_counts_the_vision_projector(model, tmp_path):
    """The resolved context must fit with the projector's weights on the main GPU, not only the model. On
    630 MiB the tiny model alone gets 5120 tokens; with its copy as a projector (10 MiB more) 1024."""
    gpus = [{"name": "GPU A", "memory_mib": 630}]
    projector = {"path": str(model), "sha256": sha256(model), "file": "mmproj.gguf"}
    plain = run_module(tmp_path, fleet=[entry("v", model, context={"max": 1 << 20})], gpus=gpus, margin_mib=0)
    vision = run_module(
        tmp_path, fleet=[entry("v", model, context={"max": 1 << 20}, mmproj=projector)], gpus=gpus, margin_mib=0
    )
    assert not plain.get("failed") and not vision.get("failed"), (plain.get("msg"), vision.get("msg"))
    without, with_projector = plain["plan"]["models"][0], vision["plan"]["models"][0]
    assert (without["context"], with_projector["context"]) == (5120, 1024)
    assert with_projector["fits"] and with_projector["devices"][0]["total_mib"] <= 630


def test_files_kept_in_the_page_cache_are_checked_against_the_host_ram(model, tmp_path):
    weights_mib = -(-gguf.read_gguf(str(model)).weight_bytes // MIB)
    fleet = [entry("kept", model, keep_cached=True), entry("other", model)]
    gpus = [{"name": "GPU A", "memory_mib": 4096}]
    ok = run_module(tmp_path, fleet=fleet, gpus=gpus, host_ram_mib=8192)
    assert not ok.get("failed"), ok
    assert ok["page_cache"] == {"files": {"tiny.gguf": weights_mib}, "kept_mib": weights_mib, "available_mib": 4096}
    # not enough RAM left after the reserve: the entry and the field, with the figures
    short = run_module(tmp_path, fleet=fleet, gpus=gpus, host_ram_mib=4096 + weights_mib - 1)
    assert short["failed"]
    assert short["msg"] == (
        f"fleet entry 'kept' (#1): field 'keep_cached': the files kept in the page cache need {weights_mib} MiB"
        f" (tiny.gguf {weights_mib} MiB); the host's {4096 + weights_mib - 1} MiB of RAM, less the 4096 MiB"
        f" reserve, leave {weights_mib - 1} MiB"
    )
    # an unplanned fleet is checked too, and the RAM size must be known
    unknown = run_module(tmp_path, fleet=fleet)
    assert unknown["failed"] and "field 'keep_cached': the host's RAM size is unknown" in unknown["msg"]
    assert not run_module(tmp_path, fleet=fleet, host_ram_mib=8192).get("failed")
    # nothing kept: nothing to check, no RAM size needed
    assert run_module(tmp_path, fleet=[entry("other", model)])["page_cache"] == {"files": {}, "kept_mib": 0}


def test_on_a_cpu_build_the_resident_models_ram_comes_off_the_page_cache_budget(model, tmp_path):
    """On a CPU build the models themselves live in RAM: models_max times the largest comes off too."""
    fleet = [entry("kept", model, keep_cached=True), entry("other", model, context=8192)]
    ram = [{"name": "host RAM", "memory_mib": 65536, "overhead_mib": 0, "host_memory": True}]
    result = run_module(tmp_path, fleet=fleet, gpus=ram, host_ram_mib=65536)
    assert not result.get("failed"), result
    largest = max(sum(d["total_mib"] for d in m["devices"]) for m in result["plan"]["models"])
    resident = result["plan"]["models_max"] * math.ceil(largest)
    assert result["plan"]["models_max"] >= 2 and resident > 0
    assert result["page_cache"]["available_mib"] == 65536 - 4096 - resident
    # RAM that holds the kept file beside the reserve, but not beside the resident models too
    kept = result["page_cache"]["kept_mib"]
    short = run_module(tmp_path, fleet=fleet, gpus=ram, host_ram_mib=4096 + kept + resident - 1)
    assert short["failed"]
    assert (
        f"less the 4096 MiB reserve, less {resident} MiB for the resident models, leave {kept - 1} MiB" in short["msg"]
    )


def test_the_module_applies_a_hosts_overrides_before_it_validates(model, tmp_path):
    fleet = [entry("tiny", model), entry("other", model)]
    result = run_module(tmp_path, fleet=fleet, overrides={"tiny": {"threads": 3, "context": 2048}})
    assert not result.get("failed"), result
    assert result["fleet"][0]["threads"] == 3 and result["fleet"][0]["context"] == 2048
    assert ["threads", 3] in result["presets"][0]["options"]
    bad = run_module(tmp_path, fleet=fleet, overrides={"tiny": {"threads": "many"}})
    assert bad["failed"] and bad["msg"].startswith("fleet entry 'tiny' (#1): field 'threads': ")
    unknown = run_module(tmp_path, fleet=fleet, overrides={"gone": {"threads": 2}})
    assert unknown["failed"] and "'gone' is not an entry of the fleet" in unknown["msg"]


GROUPS = {"all": ["gpu-a", "gpu-b", "gw"], "llm_servers": ["gpu-a", "gpu-b"], "big": ["gpu-b"], "llm_gateways": ["gw"]}


def placed(tmp_path: Path, fleet: list[dict], host: str, **args) -> dict:
    return run_module(tmp_path, fleet=fleet, host=host, inventory=GROUPS, servers=GROUPS["llm_servers"], **args)


def test_entries_are_placed_on_the_hosts_and_groups_they_name(model, tmp_path):
    fleet = [entry("everywhere", model), entry("on-a", model, hosts=["gpu-a"]), entry("on-big", model, hosts=["big"])]
    for host, names in (("gpu-a", ["everywhere", "on-a"]), ("gpu-b", ["everywhere", "on-big"])):
        result = placed(tmp_path, fleet, host)
        assert not result.get("failed"), result
        assert result["names"] == names and [p["name"] for p in result["presets"]] == names
    # without the inventory (a caller that does not place), every entry is the host's
    assert run_module(tmp_path, fleet=fleet)["names"] == ["everywhere", "on-a", "on-big"]


@pytest.mark.parametrize(
    ("hosts", "reason"),
    [
        (["gpu-c"], "field 'hosts': 'gpu-c' is neither a host nor a group of the inventory"),
        (["llm_gateways"], "field 'hosts': llm_gateways has no inference host (inference hosts: gpu-a, gpu-b)"),
        ("gpu-a", "field 'hosts': must be a non-empty list of inventory host or group names, got 'gpu-a'"),
        ([], "field 'hosts': must be a non-empty list"),
    ],
)
def test_a_bad_placement_names_the_entry_and_the_field(model, tmp_path, hosts, reason):
    result = placed(tmp_path, [entry("a", model), entry("b", model, hosts=hosts)], "gpu-a")
    assert result["failed"] and result["msg"].startswith(f"fleet entry 'b' (#2): {reason}"), result["msg"]


def test_a_candidate_placed_without_its_incumbent_and_a_host_with_no_entry_are_refused(model, tmp_path):
    fleet = [entry("inc", model, hosts=["gpu-a"]), entry("cand", model, candidate_for="inc")]
    result = placed(tmp_path, fleet, "gpu-b")
    assert result["failed"] and result["msg"] == (
        "fleet entry 'cand' (#2): field 'hosts': placed on gpu-b, where its incumbent 'inc' is not"
    )
    result = placed(tmp_path, [entry("inc", model, hosts=["gpu-a"])], "gpu-b")
    assert result["failed"] and "no entry is placed on gpu-b" in result["msg"]


def test_a_placement_that_does_not_fit_names_the_entry_the_host_and_the_shortfall(model, tmp_path):
    fleet = [entry("small", model), entry("long", model, context=1_048_576, hosts=["big"])]
    gpus = [{"name": "GPU A", "memory_mib": 2048}]
    assert not placed(tmp_path, fleet, "gpu-a", gpus=gpus).get("failed")  # 'long' is not placed there
    result = placed(tmp_path, fleet, "gpu-b", gpus=gpus)
    assert result["failed"] and result["msg"].startswith(
        "fleet entry 'long' (#2): field 'context': on host gpu-b: needs "
    )
    assert re.search(r": \d+ MiB short \(weights \d+, KV \d+, compute \d+, overhead 600\)", result["msg"])
