"""Verify the serving path on the Molecule container: real llama.cpp, real model, real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
import threading
from pathlib import Path

import pytest
import vision_projector
import yaml
from llmrig_testlib import (
    API_KEY,
    GATEWAY_URL,
    TEST_HOST,
    complete,
    llama_processes,
    model_children,
    model_states,
    request,
    run_playbook,
    sdk_clients,
    wait_for,
)

REPO = Path(__file__).resolve().parents[3]
FLEET = ("gemma-a", "gemma-b")
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# as written in group_vars (its templates are rendered when the playbook runs)
GROUP_VARS_FLEET = yaml.safe_load((REPO / "group_vars/llmrig_test.yml").read_text())["llmrig_fleet"]


def journal(host) -> str:
    return host.run("journalctl -u llmrig-gateway --no-pager -n 80").stdout


def test_service_enabled_and_running(host):
    service = host.service("llmrig-gateway")
    try:
        assert service.is_enabled
        assert service.is_running
    except AssertionError:
        print(journal(host))
        raise


def test_service_runs_unprivileged_and_sandboxed(host):
    props = host.service("llmrig-gateway").systemd_properties
    assert props["User"] == "llmrig"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["ProtectClock"] == "yes"  # Debian 12 has systemd 252, where it blocks no GPU device
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in props["Environment"]
    assert props["Restart"] == "on-failure"
    command = props["ExecStart"]
    assert "LLAMA_ARG_API_KEY_FILE=/etc/llmrig/api-key" in props["Environment"]
    assert "llmrig-test-key-not-secret" not in command  # the key never appears on a command line
    assert "--models-max 1" in command


def test_service_account(host):
    user = host.user("llmrig")
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == "llmrig"


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/llmrig", "root", "llmrig", 0o750),
        ("/etc/llmrig/presets.ini", "root", "llmrig", 0o640),
        ("/etc/llmrig/api-key", "root", "llmrig", 0o640),
        # the host is a GPU host too: the tuning role's file in the directory llmrig_base owns (bug 1)
        ("/etc/llmrig/gpu-tuning.json", "root", "root", 0o644),
        ("/var/lib/llmrig/models", "root", "llmrig", 0o750),
        ("/var/lib/llmrig/models/gemma-3-270m-q4_k_m.gguf", "root", "llmrig", 0o640),
        ("/etc/systemd/system/llmrig-gateway.service", "root", "root", 0o644),
    ],
)
def test_files_owners_and_modes(host, path, owner, group, mode):
    item = host.file(path)
    assert item.exists, path
    assert item.user == owner
    assert item.group == group
    assert item.mode == mode


def test_system_directories_unchanged(host):
    for path in ("/etc", "/usr", "/var", "/opt"):
        assert host.file(path).user == "root"
        assert host.file(path).group == "root"


def test_no_partial_files_in_models_dir(host):
    listing = host.run("ls -A /var/lib/llmrig/models").stdout.split()
    assert sorted(listing) == sorted(["gemma-3-270m-q4_k_m.gguf", "gemma-disk.gguf", "gemma-kept.gguf"])
    assert host.run("ls -A /var/lib/llmrig/staging").stdout.split() == []


def test_model_file_checksum(host):
    digest = host.run("sha256sum /var/lib/llmrig/models/gemma-3-270m-q4_k_m.gguf").stdout.split()[0]
    assert digest == MODEL_SHA256


def test_llama_cpp_versioned_install(host):
    current = host.file("/opt/llmrig/llama.cpp/current")
    assert current.is_symlink
    build_id = current.linked_to.rsplit("/", 1)[-1]
    manifest = json.loads(host.file(f"/opt/llmrig/llama.cpp/{build_id}/BUILD-INFO.json").content_string)
    assert manifest["build_id"] == build_id
    assert manifest["backend"] == "cpu"
    assert manifest["source"].startswith("archive:")
    assert manifest["build_seconds"] > 0  # the compile's wall time, recorded by the role
    assert host.file("/opt/llmrig/llama.cpp/current/bin/llama-server").mode == 0o755


def test_presets_rendered_from_group_vars_fleet(host):
    presets = host.file("/etc/llmrig/presets.ini").content_string
    # the fleet comes from the top-level group_vars/llmrig_test.yml: proves group_vars reached the host
    for name in FLEET:
        assert f"[{name}]" in presets
    assert "alias = gemma-small" in presets
    assert "cache-type-k = q8_0" in presets
    assert "split-mode = layer\ntensor-split = 1,1\nmain-gpu = 0" in presets
    assert "[gemma-ngram]" in presets and "spec-type = ngram-simple" in presets


def test_listening_socket(host):
    assert host.socket("tcp://0.0.0.0:8080").is_listening


def test_health_is_public(host):
    status, body = request("GET", "/health", key=None)
    assert status == 200
    assert body["status"] == "ok"


def test_requests_without_the_key_are_refused(host):
    assert request("GET", "/v1/models", key=None)[0] == 401
    assert request("GET", "/v1/models", key="wrong-key-0123456789")[0] == 401
    status, _ = request("POST", "/v1/completions", {"model": "gemma-a", "prompt": "x"}, key=None)
    assert status == 401


def test_models_listed(host):
    status, body = request("GET", "/v1/models")
    assert status == 200
    ids = {item["id"] for item in body["data"]}
    assert set(FLEET) <= ids


@pytest.mark.parametrize("sequence", [("gemma-a", "gemma-b", "gemma-a")])
def test_swap_between_models(host, sequence):
    pids = []
    for model in sequence:
        body = complete(model)
        assert body["model"] == model
        assert body["usage"]["completion_tokens"] > 0
        assert body["usage"]["prompt_tokens"] > 0
        assert body["timings"]["predicted_per_second"] > 0
        states = model_states()
        assert states[model] == "loaded"
        other = next(name for name in FLEET if name != model)
        assert states[other] == "unloaded", states
        children = wait_for(lambda: len(model_children(host)) == 1 and model_children(host))
        assert children, f"expected exactly one model process, got {model_children(host)}"
        pids.append(children[0]["pid"])
    # every request in the sequence swapped: a new model process each time
    assert len(set(pids)) == len(sequence)
    uid = int(host.run("id -u llmrig").stdout)
    assert all(proc["uid"] == uid for proc in llama_processes(host))


def test_alias_routes_to_its_model(host):
    body = complete("gemma-small", max_tokens=4)
    assert body["model"] == "gemma-a"
    assert body["usage"]["completion_tokens"] > 0


def test_metrics_of_the_loaded_model(host):
    complete("gemma-a", max_tokens=4)
    status, text = request("GET", "/metrics?model=gemma-a&autoload=false")
    assert status == 200
    assert "llamacpp:tokens_predicted_total" in text
    # a scrape of the unloaded model is refused and loads nothing
    status, _ = request("GET", "/metrics?model=gemma-b&autoload=false")
    assert status == 400
    assert model_states()["gemma-b"] == "unloaded"


def test_killed_model_process_recovers(host):
    complete("gemma-a", max_tokens=4)
    victim = model_children(host)
    assert len(victim) == 1
    host.run("kill -9 %s", str(victim[0]["pid"]))
    assert wait_for(lambda: model_states()["gemma-a"] != "loaded", timeout=15)
    body = complete("gemma-a", max_tokens=4)
    assert body["usage"]["completion_tokens"] > 0
    survivors = model_children(host)
    assert len(survivors) == 1
    assert survivors[0]["pid"] != victim[0]["pid"]
    assert host.service("llmrig-gateway").is_running


def _gemma_entry(name: str, file: str = MODEL_FILE, sha256: str = MODEL_SHA256, **fields) -> dict:
    """A fleet entry serving the test model from the controller (optionally under another file name)."""
    source = {"path": str(REPO / ".cache/models" / MODEL_FILE), "sha256": sha256, "file": file}
    return {"name": name, "source": source, "context": 2048, **fields}


def _playbook_with_fleet(fleet: list | None, *args: str) -> tuple[int, str]:
    """Run playbooks/site.yml against the live container with another fleet (extra vars win; None: the
    group_vars fleet)."""
    extra = None if fleet is None else {"llmrig_fleet": fleet}
    return run_playbook(TEST_HOST, ["llm_servers", "llmrig_test"], "site.yml", extra, *args)


def test_bad_fleet_stops_in_preflight_and_service_keeps_serving(host):
    presets_before = host.file("/etc/llmrig/presets.ini").sha256sum
    pid_before = host.service("llmrig-gateway").systemd_properties["MainPID"]
    bad = _gemma_entry("gemma-broken", context="32k")
    returncode, output = _playbook_with_fleet([_gemma_entry("gemma-a"), bad])
    assert returncode != 0, output
    assert "fleet entry 'gemma-broken' (#2): field 'context': must be an integer" in output, output
    # the play stopped in preflight: no serving task ran
    assert "Deploy llama.cpp, the model files and the gateway" not in output
    assert host.file("/etc/llmrig/presets.ini").sha256sum == presets_before
    assert host.service("llmrig-gateway").systemd_properties["MainPID"] == pid_before
    body = complete("gemma-b", max_tokens=4)
    assert body["usage"]["completion_tokens"] > 0


def test_fleet_that_does_not_fit_stops_in_preflight_and_says_what_would(host):
    """A rig planned from the inventory (a 1.5 GB GPU): gemma-b at 131072 tokens needs more than it has."""
    presets_before = host.file("/etc/llmrig/presets.ini").sha256sum
    pid_before = host.service("llmrig-gateway").systemd_properties["MainPID"]
    fleet = [_gemma_entry("gemma-a"), _gemma_entry("gemma-b", context=131072, cache_type_k="f16", cache_type_v="f16")]
    rig = {"llmrig_planner_gpus": [{"name": "small GPU", "memory_mib": 1536}], "llmrig_planner_gpus_override": True}
    returncode, output = run_playbook(
        TEST_HOST, ["llm_servers", "llmrig_test"], "site.yml", {"llmrig_fleet": fleet, **rig}
    )
    assert returncode != 0, output
    # several hosts plan one fleet: the message names the host the entry does not fit
    said = " ".join(output.split())  # a long message may be folded over lines
    message = re.search(rf"fleet entry 'gemma-b' \(#2\): field 'context': on host {TEST_HOST}: needs .*", said)
    assert message, output[-3000:]
    assert "on GPU 0 (small GPU, 1536 MiB, margin 512 MiB)" in message.group(0)
    assert re.search(r"\d+ MiB short .*; context \d+ fits", message.group(0)), message.group(0)
    assert "Deploy llama.cpp, the model files and the gateway" not in output
    assert host.file("/etc/llmrig/presets.ini").sha256sum == presets_before
    assert host.service("llmrig-gateway").systemd_properties["MainPID"] == pid_before
    assert complete("gemma-a", max_tokens=4)["usage"]["completion_tokens"] > 0


def test_files_kept_in_the_page_cache_that_the_ram_cannot_hold_stop_in_preflight(host):
    """gemma-kept keeps its file in the page cache; with a RAM reserve larger than the host's RAM the planner
    refuses the fleet, naming the entry and the field, before anything changes."""
    unit_before = host.file("/etc/systemd/system/llmrig-page-cache.service").sha256sum
    pid_before = host.service("llmrig-gateway").systemd_properties["MainPID"]
    returncode, output = run_playbook(
        TEST_HOST, ["llm_servers", "llmrig_test"], "site.yml", {"llmrig_planner_ram_reserve_mib": 1 << 30}
    )
    assert returncode != 0, output
    message = re.search(r"fleet entry 'gemma-kept' \(#\d+\): field 'keep_cached': .*", output)
    assert message, output[-3000:]
    assert "the files kept in the page cache need 236 MiB (gemma-kept.gguf 236 MiB)" in message.group(0)
    assert "less the 1073741824 MiB reserve" in message.group(0)
    assert "Deploy llama.cpp, the model files and the gateway" not in output
    assert host.file("/etc/systemd/system/llmrig-page-cache.service").sha256sum == unit_before
    assert host.service("llmrig-page-cache").is_running
    assert host.service("llmrig-gateway").systemd_properties["MainPID"] == pid_before
    assert complete("gemma-a", max_tokens=4)["usage"]["completion_tokens"] > 0


def test_planned_fleet_renders_fit_off(host):
    # the test host's fleet is planned against its RAM (CPU build), so load-time fitting is off
    presets = host.file("/etc/llmrig/presets.ini").content_string
    shared = presets.split("[*]", 1)[1].split("\n[", 1)[0]
    assert "fit = off" in shared, presets
    args = {item["id"]: item["status"]["args"] for item in request("GET", "/models")[1]["data"]}
    fit = {model: a[a.index("--fit") + 1] if "--fit" in a else None for model, a in args.items()}
    # every model fits off, but gemma-a-fit, whose extra_args turn it on again (the benchmark of the saving)
    assert fit.pop("gemma-a-fit") == "on"
    assert set(fit.values()) == {"off"}, args


def test_option_unknown_to_llama_server_is_refused_before_the_presets_change(host):
    """An extra_args option this llama.cpp does not know is caught by llama-server itself (template validate)."""
    presets_before = host.file("/etc/llmrig/presets.ini").sha256sum
    # the group_vars fleet and one more entry: the models role runs before the presets are checked, and must
    # find nothing to prune
    fleet = [*GROUP_VARS_FLEET, _gemma_entry("gemma-x", extra_args={"bogus-opt": 1})]
    returncode, output = _playbook_with_fleet(fleet)
    assert returncode != 0, output
    assert "option 'bogus-opt' not recognized in preset 'gemma-x'" in output, output
    assert host.file("/etc/llmrig/presets.ini").sha256sum == presets_before
    assert complete("gemma-a", max_tokens=4)["usage"]["completion_tokens"] > 0


def test_disk_space_preflight_stops_before_any_change(host):
    presets_before = host.file("/etc/llmrig/presets.ini").sha256sum
    extra = _gemma_entry("gemma-big", file="gemma-big.gguf")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as reserve:
        json.dump({"llmrig_models_reserve_bytes": 2**60}, reserve)
        reserve.flush()
        returncode, output = _playbook_with_fleet([_gemma_entry("gemma-a"), extra], "-e", f"@{reserve.name}")
    assert returncode != 0, output
    assert "more on the models filesystem" in output, output
    assert "Deploy llama.cpp, the model files and the gateway" not in output
    assert host.file("/etc/llmrig/presets.ini").sha256sum == presets_before
    assert not host.file("/var/lib/llmrig/models/gemma-big.gguf").exists


def test_one_converge_prunes_keeps_a_running_build_and_plans_once(host):
    """One site.yml run (each of these costs a converge, so they share it) after setting up what it must
    clean up:
    - files that left the fleet, their records and abandoned partials go (and the run says so); the model in
      place whose record was lost is hashed and adopted, not copied again;
    - with no builds kept for rollback, an idle old build goes but one a process runs from stays (the router
      starts model processes from the binary it started with, until it is restarted);
    - site.yml validates and plans the fleet once per host (in preflight)."""
    builds = "/opt/llmrig/llama.cpp"
    host.run(
        "set -e; cd /var/lib/llmrig; head -c 3000000 /dev/zero > models/dropped.gguf;"
        " echo {} > verified/dropped.gguf.json;"
        f" head -c 2000000 /dev/zero > staging/{'e' * 64}.part; rm verified/{MODEL_FILE}.json"
    )
    host.run(
        f"set -e; for b in oldidle oldrunning; do mkdir -p {builds}/$b/bin; cp /bin/sleep {builds}/$b/bin/llama-server;"
        f" touch -d '2020-01-01' {builds}/$b; done;"
        f" systemd-run --unit=llmrig-test-oldbuild {builds}/oldrunning/bin/llama-server 900"
    )
    try:
        returncode, output = _playbook_with_fleet(None, "-e", "llmrig_llamacpp_keep_builds=0")
        assert returncode == 0, output[-3000:]
        # the callback colours each line and wraps long messages
        report = re.sub(r"\s+", "", re.sub(r"\x1b\[[0-9;]*m", "", output))
        assert "removed/var/lib/llmrig/models/dropped.gguf,/var/lib/llmrig/verified/dropped.gguf.json," in report
        assert f"/var/lib/llmrig/staging/{'e' * 64}.part(4.77MB)" in report, output
        staging = output.split("TASK [llmrig_models : Stage controller-side model files on the host]")[1]
        assert "changed:" not in staging.split("TASK [")[0], staging
        assert sorted(host.run("ls -A /var/lib/llmrig/models").stdout.split()) == sorted(
            [MODEL_FILE, "gemma-disk.gguf", "gemma-kept.gguf"]
        )
        assert host.run("ls -A /var/lib/llmrig/staging").stdout.split() == []
        assert host.file(f"/var/lib/llmrig/verified/{MODEL_FILE}.json").exists
        assert not host.file(f"{builds}/oldidle").exists
        assert host.file(f"{builds}/oldrunning/bin/llama-server").exists
        assert host.file(f"{builds}/current/bin/llama-server").exists
        assert _task_runs(output, "llmrig_planner : Validate and plan the fleet") == 1, output
    finally:
        host.run(f"systemctl stop llmrig-test-oldbuild; rm -rf {builds}/oldidle {builds}/oldrunning")
    assert complete("gemma-a", max_tokens=4)["usage"]["completion_tokens"] > 0


@pytest.fixture
def restore_fleet(host):
    """Put the group_vars fleet back after a test that deployed another one, so no test depends on order."""
    yield
    returncode, output = _playbook_with_fleet(None)
    assert returncode == 0, output[-3000:]
    assert host.service("llmrig-page-cache").is_running  # gemma-kept's file is held again


def _task_runs(output: str, task: str) -> int:
    return len(re.findall(rf"^TASK \[{re.escape(task)}\]", output, re.M))


def test_serving_alone_plans_too_and_renders_the_same_presets(host):
    """serving.yml run on its own plans the fleet (the first role that needs the plan resolves it) and renders
    the presets site.yml rendered."""
    presets = host.file("/etc/llmrig/presets.ini").content_string
    returncode, output = run_playbook(TEST_HOST, ["llm_servers", "llmrig_test"], "serving.yml")
    assert returncode == 0, output[-3000:]
    assert _task_runs(output, "llmrig_planner : Validate and plan the fleet") == 1, output
    assert "fit = off" in host.file("/etc/llmrig/presets.ini").content_string
    assert host.file("/etc/llmrig/presets.ini").content_string == presets
    assert "--models-max 1" in host.service("llmrig-gateway").systemd_properties["ExecStart"]


def test_fleet_change_reloads_presets_without_rebuild_or_restart(host, restore_fleet, tmp_path):
    """Adding a model with new files (a vision model: weights and a projector) re-reads the presets in the
    running router: no rebuild, no restart, and requests to the model that is serving meanwhile all succeed.
    The new model then answers a chat request with an image (a projector with random weights,
    tests/vision_projector.py: it proves the path, not the quality)."""
    pid_before = host.service("llmrig-gateway").systemd_properties["MainPID"]
    build_before = host.file("/opt/llmrig/llama.cpp/current").linked_to
    built_at = host.file(f"{build_before}/BUILD-INFO.json").mtime
    projector = tmp_path / "mmproj-llmrig-test.gguf"
    vision_projector.write_gemma3_projector(projector, vision_projector.text_width(REPO / ".cache/models" / MODEL_FILE))
    mmproj = {"path": str(projector), "sha256": hashlib.sha256(projector.read_bytes()).hexdigest()}
    # the group_vars fleet (a model whose preset changes is reloaded, which cuts its requests in flight), but
    # gemma-kept no longer keeps its file in the page cache (it stays in the fleet: its preset and the
    # exporter's counts for it stay as they are), plus a new model with files of its own
    assert [entry["name"] for entry in GROUP_VARS_FLEET if entry.get("keep_cached")] == ["gemma-kept"]
    fleet = [dict(entry, keep_cached=False) if entry.get("keep_cached") else entry for entry in GROUP_VARS_FLEET]
    fleet.append(_gemma_entry("gemma-c", file="gemma-c.gguf", context=1024, mmproj=mmproj))
    complete("gemma-a", max_tokens=1)
    stop, statuses = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            body = {"model": "gemma-a", "prompt": "Hi", "max_tokens": 8}
            statuses.append(request("POST", "/v1/completions", body, timeout=60)[0])

    client = threading.Thread(target=load)
    client.start()
    try:
        returncode, output = _playbook_with_fleet(fleet)
    finally:
        stop.set()
        client.join()
    assert returncode == 0, output
    failed = [status for status in statuses if status != 200]
    print(f"\nfleet change (new model, new file) under load: {len(statuses)} requests, {len(failed)} failed")
    assert statuses and not failed, failed
    assert "TASK [llmrig_llamacpp : Configure the build]" not in output  # no rebuild
    assert "Reload llmrig gateway presets" in output
    assert "Unload models whose file was replaced" in output
    assert "RUNNING HANDLER [llmrig_gateway : Restart llmrig gateway]" not in output
    assert host.service("llmrig-gateway").systemd_properties["MainPID"] == pid_before
    assert host.file("/opt/llmrig/llama.cpp/current").linked_to == build_before
    assert host.file(f"{build_before}/BUILD-INFO.json").mtime == built_at
    assert "gemma-c" in model_states()
    # no entry keeps a file in the page cache any more: the unit that held gemma-kept's is gone
    assert not host.file("/etc/systemd/system/llmrig-page-cache.service").exists
    assert host.run("systemctl is-active llmrig-page-cache").stdout.strip() in ("inactive", "unknown")
    body = complete("gemma-c", max_tokens=4)
    assert body["usage"]["completion_tokens"] > 0
    args = {item["id"]: item["status"]["args"] for item in request("GET", "/models")[1]["data"]}
    assert "--mmproj" in args["gemma-c"], args["gemma-c"]
    client = sdk_clients(GATEWAY_URL, API_KEY)[0]
    image = "data:image/png;base64," + base64.b64encode(vision_projector.png()).decode()
    question = [{"type": "text", "text": "What is in this image?"}]
    with_image = client.chat.completions.create(
        model="gemma-c",
        messages=[{"role": "user", "content": [*question, {"type": "image_url", "image_url": {"url": image}}]}],
        max_tokens=4,
    )
    text_only = client.chat.completions.create(
        model="gemma-c", messages=[{"role": "user", "content": question}], max_tokens=4
    )
    assert with_image.usage.completion_tokens > 0
    # the image became tokens of the prompt: 4 embeddings from the projector, between the image markers
    extra = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    print(f"\nvision: the image added {extra} prompt tokens")
    assert extra >= 4, (with_image.usage, text_only.usage)
