"""llama.cpp upgrades on the live container, through site.yml as a user runs them: a new build is made in a
directory of its own while the old one serves, `current` moves, the gateway restarts drained and every fleet
model answers; a build that cannot start is refused before the switch; a build whose models fail is rolled
back automatically, and refused on the next run.

The new builds differ from the group_vars build by a linker flag (a real rebuild into a new build id, cheap
with ccache) or by a patched router (tools/faults.py broken_source: model processes get an option they do not
know). Two real llama.cpp versions (the 0.3.35 and 0.3.36 sdists) are measured by `make faults`, whose
build of a second version takes too long for `make test` (docs/faults.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faults
import pytest
from llmrig_testlib import TEST_HOST, Load, complete, request, router_pid, run_playbook, wait_for

BUILDS = "/opt/llmrig/llama.cpp"
REPO = Path(__file__).resolve().parents[3]
SDIST = REPO / ".cache/src/llama_cpp_python-0.3.36.tar.gz"
# the patches group_vars/llmrig_test.yml applies to every test build, in its order
PATCHES = [
    REPO / "roles/llmrig_llamacpp/files/patches/router-eviction-race.patch",
    REPO / "roles/llmrig_llamacpp/files/patches/router-graceful-stop.patch",
    REPO / "roles/llmrig_llamacpp/files/patches/router-reload-aliases.patch",
]
# a real rebuild into a new build id: the compile commands are unchanged (ccache hits), only the link differs
RELINKED = {"llmrig_llamacpp_cmake_flags": ["-DCMAKE_EXE_LINKER_FLAGS=-Wl,-O1"]}
# links against a program interpreter that does not exist: the kernel cannot start the binary
UNSTARTABLE = {"llmrig_llamacpp_cmake_flags": ["-DCMAKE_EXE_LINKER_FLAGS=-Wl,--dynamic-linker=/nonexistent/ld.so"]}


def site(extra: dict | None) -> tuple[int, str]:
    """serving.yml, the part of site.yml that builds and switches llama.cpp (the rest would only cost time)."""
    return run_playbook(TEST_HOST, ["llm_servers", "llmrig_test"], "serving.yml", extra)


def current(host) -> str:
    return host.file(f"{BUILDS}/current").linked_to.rsplit("/", 1)[-1]


def verified(host) -> str:
    """The last build that passed the gateway's check (the one a failed upgrade goes back to)."""
    return host.file(f"{BUILDS}/verified").linked_to.rsplit("/", 1)[-1]


def serving(host) -> str:
    """The build the router's model processes run from (their command line names the build directory; the
    router's own /proc/PID/exe is not readable without CAP_SYS_PTRACE, which the container lacks)."""
    complete("gemma-a", max_tokens=1)
    args = {item["id"]: item["status"]["args"] for item in request("GET", "/models")[1]["data"]}
    return args["gemma-a"][0].removeprefix(BUILDS + "/").split("/", 1)[0]


def builds(host) -> set[str]:
    listing = host.run("find %s -mindepth 1 -maxdepth 1 -type d -printf '%%f\\n'", BUILDS).stdout.split()
    return set(listing)


def ccache_misses(host) -> int:
    """Compiles ccache could not answer from its cache, so far (the role's cache directory)."""
    stats = host.run("CCACHE_DIR=/var/cache/llmrig/ccache ccache --print-stats")
    assert stats.rc == 0, stats.stderr
    return int(dict(line.split("\t") for line in stats.stdout.splitlines())["cache_miss"])


@pytest.fixture
def original(host):
    """The group_vars build serves before the test, and again after it (site.yml switches back to it: it is
    still installed, so nothing is built); builds the test made are removed."""
    build, before = current(host), builds(host)
    if build != verified(host):
        returncode, output = site(None)
        assert returncode == 0, output[-3000:]
        build = current(host)
    yield build
    returncode, output = site(None)
    assert returncode == 0, output[-3000:]
    assert current(host) == verified(host) == build
    for extra in builds(host) - before:
        host.run("rm -rf %s/%s", BUILDS, extra)


def test_upgrade_switch_refusal_rollback_and_refusal_again(host, original, tmp_path):
    """One sequence, as the steps cost a build each: upgrade, a build that cannot start, a build whose models
    fail (rolled back), the same build again (refused in preflight); the fixture then goes back to the
    original build, which is itself a switch to an installed build."""
    # 1. upgrade under load: built while the old build serves, then a drained restart and every model checked
    pid = router_pid(host)
    misses = ccache_misses(host)
    # a steady stream, paced so that the build is not starved of the two CPUs
    with Load(pause=0.2) as load:
        returncode, output = site(RELINKED)
    assert returncode == 0, output[-3000:]
    upgraded = current(host)
    # every compile of the new build id came from ccache, the unity sources of llama.cpp's models too (they
    # include the sources by absolute path: the build tree's path is the same for every build)
    assert ccache_misses(host) == misses
    assert upgraded != original
    assert serving(host) == verified(host) == upgraded
    assert router_pid(host) != pid
    assert host.file(f"{BUILDS}/{original}/bin/llama-server").exists  # kept for rollback
    manifest = json.loads(host.file(f"{BUILDS}/{upgraded}/BUILD-INFO.json").content_string)
    print(f"\nrelinked build {upgraded}: {manifest['build_seconds']} s, no compile missed ccache")
    assert "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-O1" in manifest["cmake_flags"]
    assert manifest["patches"] == [f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in PATCHES]
    assert "TASK [llmrig_llamacpp : Check that the new llama-server starts]" in output
    assert "TASK [llmrig_gateway : Ask every fleet model for one token]" in output
    http, broken = load.report("upgrade under load")
    # the build ran while the old router served, and the restart drained (the ExecStop drain, then the old
    # router's own: new requests 503, those in flight finish): no answer was an error. Only a request that
    # arrives in the instant the old router's HTTP server stops can break off, at most one of the one client
    assert not http, [(o.status, o.error) for o in http]
    assert len(broken) <= 1, [(o.status, o.error) for o in broken]
    assert sum(1 for o in load.outcomes if o.status == 200) > 0

    # 2. a build that cannot start is refused before the switch
    pid = router_pid(host)
    returncode, output = site(UNSTARTABLE)
    assert returncode != 0, output[-3000:]
    message = " ".join(output.split())
    assert "does not start: `llama-server --version` exited 127" in message, output[-3000:]
    assert f"Nothing was switched: build {upgraded} keeps serving" in message, output[-3000:]
    assert "RUNNING HANDLER [llmrig_gateway : Restart llmrig gateway]" not in output
    assert current(host) == serving(host) == upgraded
    assert router_pid(host) == pid

    # 2b. a patch that does not apply to the source is refused before anything is built or switched
    stale = tmp_path / "stale.patch"
    stale.write_text(
        "--- a/tools/server/server-models.cpp\n+++ b/tools/server/server-models.cpp\n"
        "@@ -1,3 +1,3 @@\n line that is not there\n-another one\n+a change\n the end\n"
    )
    returncode, output = site({"llmrig_llamacpp_patches": [*map(str, PATCHES), str(stale)]})
    assert returncode != 0, output[-3000:]
    message = " ".join(output.split())
    assert f"llmrig_llamacpp_patches: {stale} does not apply to archive:" in message, output[-3000:]
    assert f"Nothing was built or switched: build {upgraded} keeps serving" in message, output[-3000:]
    assert "TASK [llmrig_llamacpp : Configure the build]" not in output
    assert current(host) == serving(host) == upgraded
    assert router_pid(host) == pid

    # 3. a build whose models cannot start: switched, checked, rolled back, and the run fails saying so
    broken = faults.broken_source(SDIST, tmp_path / "llama-cpp-broken.tar.gz")
    extra = {"llmrig_llamacpp_archive_path": str(broken)}
    watch = faults.Host(TEST_HOST)
    mark = watch.monitoring_mark()
    returncode, output = site(extra)
    assert returncode != 0, output[-3000:]
    failed = next(build for build in builds(host) if host.file(f"{BUILDS}/{build}/ROLLED-BACK.json").exists)
    message = " ".join(output.split())
    assert f"llama.cpp build {failed} failed its check after the upgrade" in message, output[-3000:]
    # the router's answer, or the model list the check watches meanwhile, whichever says it first
    assert (
        "model name=gemma-a failed to load" in message or "gemma-a: its model process exited with status 1" in message
    ), output[-3000:]
    assert f"Rolled back to build {upgraded}, which serves again" in message
    assert current(host) == serving(host) == verified(host) == upgraded
    record = json.loads(host.file(f"{BUILDS}/{failed}/ROLLED-BACK.json").content_string)
    assert record["rolled_back_to"] == upgraded and record["build"] == failed
    assert complete("gemma-b", max_tokens=4)["usage"]["completion_tokens"] > 0
    # monitoring stays true: the broken router lost gemma-a before the exporter's stream was back, and the
    # exporter still counted every load and failed exit the router's journal has
    journal, exporter = watch.monitoring_since(mark)
    assert journal["gemma-a"][1] > 0, journal
    assert wait_for(lambda: watch.monitoring_since(mark)[1] == journal, timeout=10), (journal, exporter)

    # 4. the next run refuses that build in preflight: nothing is built, switched or restarted
    pid = router_pid(host)
    returncode, output = site(extra)
    assert returncode != 0
    message = " ".join(output.split())
    assert f"llama.cpp build {failed} (archive:" in message, output[-3000:]
    assert f"failed its check after the upgrade on {record['when']} and build {upgraded} was put back" in message
    assert "TASK [llmrig_llamacpp : Configure the build]" not in output
    assert router_pid(host) == pid and current(host) == upgraded
