"""The CUDA build check: what the role built with NVIDIA's toolkit wheels (converge.yml), on a container without
a GPU whose driver library is Debian 12's libcuda (prepare.yml). The build holds kernels for exactly the
requested architectures, finds its CUDA libraries in the toolkit's directory, says that there is no CUDA device
and serves nothing on the GPU; a rebuild with a warm ccache compiles no CUDA file again. Every test prints its
figures (docs/gpu-proof.md, "The CUDA build without a GPU")."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime

import pytest
from ccache_times import parse, summary
from llmrig_testlib import REPO, TEST_HOST, run_playbook

ARCHITECTURES = os.environ.get("LLMRIG_CUDA_ARCHITECTURES", "89")
ARCHS = sorted(ARCHITECTURES.split(";"))
BUILDS = "/opt/llmrig/llama.cpp"
SERVER = f"{BUILDS}/current/bin/llama-server"
REQUIREMENTS = REPO / "roles/llmrig_llamacpp/files/cuda-pypi-requirements.txt"
CHECKSUM = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
TOOLKIT = f"/opt/llmrig/cuda/{CHECKSUM[:12]}/cuda"
CCACHE_LOG = REPO / ".cache/ccache-cuda/ccache.log"
# the flash-attention vector kernels llama.cpp compiles without GGML_CUDA_FA_QUANTS=all (its CMake default)
FA_DEFAULT = {"f16-f16", "q4_0-q4_0", "q8_0-q8_0", "bf16-bf16"}
# the container's CPU time in nanoseconds (prepare.yml notes it before the build)
CPU_NS = (REPO / "molecule/cuda_build/cpu-ns.sh").read_text()


def cpu_seconds(host) -> float:
    return int(host.check_output(CPU_NS)) / 1e9


def manifest(host, build: str = "current") -> dict:
    return json.loads(host.file(f"{BUILDS}/{build}/BUILD-INFO.json").content_string)


def test_the_build_holds_kernels_for_exactly_the_requested_architectures(host):
    info = manifest(host)
    assert info["backend"] == "cuda" and info["toolkit"] == f"pypi:{CHECKSUM}", info
    assert f"-DCMAKE_CUDA_ARCHITECTURES={ARCHITECTURES}" in info["cmake_flags"]
    assert "-DGGML_CUDA_FA_QUANTS=all" in info["cmake_flags"]
    elf = host.run(f"{TOOLKIT}/bin/cuobjdump --list-elf {SERVER}")
    ptx = host.run(f"{TOOLKIT}/bin/cuobjdump --list-ptx {SERVER}")
    assert elf.rc == 0 and ptx.rc == 0, elf.stderr + ptx.stderr
    elf_archs = re.findall(r"\.sm_(\d+)[af]?\.cubin$", elf.stdout, re.M)
    ptx_archs = re.findall(r"\.sm_(\d+)[af]?\.ptx$", ptx.stdout, re.M)
    size = host.file(SERVER).size
    converge_cpu = cpu_seconds(host) - int(host.file("/root/cpu-ns-before-build").content_string) / 1e9
    print(
        f"\nllama-server {size / 2**20:.0f} MiB; {len(elf_archs)} cubins for {sorted(set(elf_archs))}, "
        f"{len(ptx_archs)} PTX for {sorted(set(ptx_archs))}; build {info['build_seconds']} s, the converge "
        f"(toolkit install and build) used {converge_cpu / 60:.1f} core-minutes"
    )
    # an architecture without -real or -virtual is compiled to both: machine code and PTX for the newer GPUs
    assert sorted(set(elf_archs)) == ARCHS and sorted(set(ptx_archs)) == ARCHS
    assert len(elf_archs) > 100  # every CUDA source file's kernels, not one stray object


def test_the_cuda_libraries_come_from_the_toolkit_and_the_driver_from_the_host(host):
    runpath = host.run(f"readelf -d {SERVER}").stdout
    assert f"{TOOLKIT}/lib" in runpath, runpath
    ldd = host.run(f"ldd {SERVER}").stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    print("\n" + ldd)
    assert "not found" not in ldd
    for name in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        assert resolved[name].startswith(f"{TOOLKIT}/lib/"), (name, resolved.get(name))
    # the driver's library, by its soname from the system's directory (not the toolkit's link for the build)
    assert resolved["libcuda.so.1"].startswith(("/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/"))


def test_without_a_gpu_it_says_why_and_refuses_a_cuda_device_instead_of_crashing(host):
    """This host's driver library is Debian 12's 535, too old for CUDA 13's runtime, and there is no GPU: the
    CUDA backend says so and lists no device; asking for one is an argument error. (On a host with driver 580
    and no GPU the same line reads "no CUDA-capable device is detected".)"""
    version = host.run(f"{SERVER} --version")
    devices = host.run(f"{SERVER} --list-devices")
    refused = host.run(f"timeout 60 {SERVER} --device CUDA0 -m /nonexistent.gguf --port 18999")
    print(f"\n{version.stderr}{devices.stderr}{devices.stdout}")
    assert version.rc == 0 and (version.stdout + version.stderr).startswith("version: ")
    init = "ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version"
    assert devices.rc == 0 and init in devices.stderr + devices.stdout
    assert "Available devices:\n  (none)" in devices.stdout
    said = refused.stdout + refused.stderr
    assert refused.rc == 1 and init in said
    assert 'error while handling argument "--device": invalid device: CUDA0' in said


def test_what_the_flash_attention_kernels_for_every_cache_type_cost(host):
    """The build's compiles from ccache's log, from prepare.yml's end to the build's manifest: the vector
    flash-attention kernels beyond llama.cpp's default four K/V combinations, against all CUDA and all C/C++
    compiles (each compile's duration, summed: a share of the build that holds however busy the machine was).
    Only a cold build has these figures; with a warm ccache every compile is a hit."""
    began = datetime.fromtimestamp(host.file("/root/cpu-ns-before-build").mtime.timestamp())
    built = datetime.fromtimestamp(host.file(f"{BUILDS}/current/BUILD-INFO.json").mtime.timestamp())
    log = CCACHE_LOG.read_text(errors="replace").splitlines()
    compiles = [c for c in parse(log, began) if c.start and c.start <= built]
    misses = [c for c in compiles if not c.hit]
    if not misses:
        pytest.skip(
            f"a warm build: all {len(compiles)} compiles were ccache hits (rm -rf .cache/ccache-cuda for a cold one)"
        )
    fa = re.compile(r"fattn-vec-instance-(.+)\.cu$")
    extra = [c for c in misses if (m := fa.search(c.source)) and m[1] not in FA_DEFAULT]
    cuda = [c for c in misses if c.cuda]
    total = sum(c.seconds for c in misses)
    print(
        f"\ncold build: {len(misses)} compiles, {total / 60:.1f} compile-minutes; CUDA {len(cuda)} compiles, "
        f"{sum(c.seconds for c in cuda) / 60:.1f} compile-minutes; the {len(extra)} extra flash-attention kernels "
        f"of GGML_CUDA_FA_QUANTS=all {sum(c.seconds for c in extra) / 60:.1f} compile-minutes "
        f"({100 * sum(c.seconds for c in extra) / total:.0f} % of the build's)"
    )
    assert len(extra) == 45  # 7 K types x 7 V types, less the default 4


def test_a_second_build_with_the_warm_ccache_compiles_no_cuda_file_again(host):
    """Another build id (llama-server alone) from the same sources and flags: ccache answers every CUDA compile."""
    cold = manifest(host)
    since = datetime.now()  # the container's clock is this machine's; ccache logs local time without a zone
    cpu_before = cpu_seconds(host)
    returncode, output = run_playbook(
        TEST_HOST,
        ["llmrig_cuda_build"],
        "../molecule/cuda_build/converge.yml",
        {"llmrig_llamacpp_targets": ["llama-server"]},
        timeout=3600,
    )
    assert returncode == 0, output[-3000:]
    warm = manifest(host)
    assert warm["build_id"] != cold["build_id"] and warm["targets"] == ["llama-server"]
    compiles = parse(CCACHE_LOG.read_text(errors="replace").splitlines(), since)
    table = summary(compiles)
    print(
        f"\nwarm rebuild: {warm['build_seconds']} s, {(cpu_seconds(host) - cpu_before) / 60:.1f} core-minutes "
        f"(cold: {cold['build_seconds']} s)"
    )
    for kind, row in sorted(table.items()):
        print(f"  {kind:12} {int(row['count']):4d} compiles {row['seconds']:8.1f} s")
    # every build id is built in the same tree path (CMake's unity sources of libllama include the sources by
    # their absolute path) and ccache knows nvcc by its content, so every compile is a hit
    misses = [c.source for c in compiles if not c.hit]
    assert table.get("cuda hit", {}).get("count", 0) > 100 and not misses, misses
