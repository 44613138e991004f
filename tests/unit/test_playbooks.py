"""The playbooks' and roles' wiring, run for real by Ansible on the controller (connection local): how a
host reaches its own endpoint, which hosts get the gateway exporter and the reboot report, and the presets
template rendered from a resolved fleet."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEY = "unit-test-key-0123456789"


def ansible(tmp_path: Path, command: list[str], groups: dict[str, list[str]], host_vars: dict | None = None):
    """Run an ansible command against a throw-away inventory with the repository's group_vars; every host
    is local. Returns (exit status, stdout + stderr)."""
    inventory = tmp_path / "inventory"
    inventory.mkdir(exist_ok=True)
    if not (inventory / "group_vars").exists():
        (inventory / "group_vars").symlink_to(REPO / "group_vars")
    hosts = {host for members in groups.values() for host in members}
    data = {
        "all": {
            "hosts": {
                host: {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "vault_llmrig_api_key": KEY,
                    **(host_vars or {}).get(host, {}),
                }
                for host in sorted(hosts)
            },
            "children": {group: {"hosts": {host: None for host in members}} for group, members in groups.items()},
        }
    }
    (inventory / "hosts.yml").write_text(json.dumps(data))
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json"
    )
    result = subprocess.run(
        [*command, "-i", str(inventory)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    return result.returncode, result.stdout + result.stderr


def host_var(tmp_path: Path, groups: dict, host: str, name: str, host_vars: dict | None = None):
    status, output = ansible(
        tmp_path, ["ansible", host, "-m", "ansible.builtin.debug", "-a", f"var={name}"], groups, host_vars
    )
    assert status == 0, output
    return json.loads(output.split("=>", 1)[1])[name]


def template_task(src: str, dest: Path) -> dict:
    """A task that renders one of the repository's templates (`src` relative to it) to `dest` on the controller."""
    return {
        "name": f"Render {Path(src).name}",
        "ansible.builtin.template": {"src": str(REPO / src), "dest": str(dest), "mode": "0644"},
    }


def run_play(
    tmp_path: Path, play: dict, groups: dict[str, list[str]], *args: str, host_vars: dict | None = None
) -> tuple[int, str]:
    """Run one play (written as a playbook into tmp_path) with `ansible`; extra ansible-playbook args after it."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([play]))
    return ansible(tmp_path, ["ansible-playbook", str(playbook), *args], groups, host_vars)


@pytest.mark.parametrize(
    ("groups", "host", "exporters", "prometheus"),
    [
        # one server that monitors itself: nothing listens beyond loopback
        ({"llm_servers": ["rig"], "monitoring": ["rig"]}, "rig", "127.0.0.1", "127.0.0.1:9090"),
        # Prometheus elsewhere: the inference host's exporters must be reachable, the monitor's Prometheus too
        ({"llm_servers": ["rig"], "monitoring": ["mon"]}, "rig", "0.0.0.0", "0.0.0.0:9090"),
        ({"llm_servers": ["rig"], "monitoring": ["mon"]}, "mon", "127.0.0.1", "0.0.0.0:9090"),
        # two inference hosts, one of them monitoring both
        ({"llm_servers": ["a", "b"], "monitoring": ["a"]}, "b", "0.0.0.0", "0.0.0.0:9090"),
        ({"llm_servers": ["a", "b"], "monitoring": ["a"]}, "a", "127.0.0.1", "127.0.0.1:9090"),
    ],
)
def test_monitoring_listens_on_loopback_when_it_serves_only_its_own_host(tmp_path, groups, host, exporters, prometheus):
    assert host_var(tmp_path, groups, host, "llmrig_monitoring_exporters_listen_address") == exporters
    assert host_var(tmp_path, groups, host, "llmrig_prometheus_listen_address") == prometheus


# Bug 4: an IPv6 bind address made the health check, the presets reload and the exporters call
# http://::1:8080, which is no URL.
@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("::1", "http://[::1]:8080"),
        ("::", "http://[::1]:8080"),
        ("fd00::5", "http://[fd00::5]:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("192.0.2.7", "http://192.0.2.7:8080"),
    ],
)
def test_the_host_reaches_its_own_endpoint_for_every_bind_address(tmp_path, bind, url):
    groups = {"llm_servers": ["server"]}
    exporter = host_var(
        tmp_path, groups, "server", "llmrig_monitoring_exporters_gateway_url", {"server": {"llmrig_gateway_host": bind}}
    )
    assert exporter == url
    play = {
        "name": "The gateway role's own URL",
        "hosts": "server",
        "gather_facts": False,
        "vars_files": [str(REPO / "roles/llmrig_gateway/vars/main.yml")],
        "tasks": [{"name": "Show", "ansible.builtin.debug": {"msg": "URL={{ _llmrig_gateway_local_url }}"}}],
    }
    status, output = run_play(tmp_path, play, groups, host_vars={"server": {"llmrig_gateway_host": bind}})
    assert status == 0, output
    assert f"URL={url}" in output


# Bug 5: monitoring.yml put the gateway exporter (which waits for a router) on GPU hosts that do not serve.
def test_only_inference_hosts_get_the_gateway_exporter(tmp_path):
    groups = {"llm_servers": ["server"], "nvidia_gpus": ["server", "gpu-only"], "monitoring": ["server"]}
    assert host_var(tmp_path, groups, "server", "llmrig_monitoring_exporters_gateway_exporter") is True
    assert host_var(tmp_path, groups, "gpu-only", "llmrig_monitoring_exporters_gateway_exporter") is False


# Bug 5: report.yml ran on llm_servers while the reboot fact is set on the nvidia_gpus hosts, so a GPU host
# that does not serve was never reported.
def test_the_reboot_report_covers_gpu_hosts_that_do_not_serve(tmp_path):
    groups = {"llm_servers": ["server"], "nvidia_gpus": ["gpu-only"]}
    status, output = ansible(
        tmp_path,
        ["ansible-playbook", str(REPO / "playbooks/report.yml")],
        groups,
        {"gpu-only": {"llmrig_nvidia_driver_reboot_required": True}},
    )
    assert status == 0, output
    assert "gpu-only needs a reboot to load the new NVIDIA driver" in output


def render_presets(tmp_path: Path, global_options: dict) -> tuple[int, str]:
    """Resolve a small fleet with the planner role (validation only: nothing to plan for) and render the
    gateway's presets template from it, as the role does."""
    fleet = [
        {"name": "a", "aliases": ["alpha"], "source": {"url": "https://models.example/a.gguf", "sha256": "1" * 64},
         "context": 4096, "cache_type_k": "q8_0", "sampling": {"temperature": 0.5}, "load_on_startup": True},
        {"name": "b", "source": {"url": "https://models.example/b.gguf", "sha256": "2" * 64}, "context": 8192},
    ]  # fmt: skip
    tasks = [
        {"name": "Resolve", "ansible.builtin.include_role": {"name": "llmrig_planner"}},
        {
            "name": "Render",
            "ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '" + str(REPO) + "/roles/llmrig_gateway/templates/"
                "etc/llmrig/presets.ini.j2', template_vars={'ansible_managed': 'managed'}) }}",
                "dest": str(tmp_path / "presets.ini"),
                "mode": "0644",
            },
        },
    ]
    play = {
        "name": "Presets from the resolved fleet",
        "hosts": "server",
        "gather_facts": False,
        "vars_files": [str(REPO / "roles/llmrig_gateway/vars/main.yml")],
        "vars": {
            "llmrig_fleet": fleet,
            "llmrig_planner_detect_gpus": False,
            "llmrig_gateway_global_options": global_options,
            "llmrig_gateway_stop_timeout": 10,
            "llmrig_gateway_models_max": None,
        },
        "tasks": tasks,
    }  # fmt: skip
    return run_play(tmp_path, play, {"llm_servers": ["server"]})


def test_presets_template_renders_the_resolved_fleet(tmp_path):
    status, output = render_presets(tmp_path, {"threads": 4})
    assert status == 0, output
    assert (tmp_path / "presets.ini").read_text() == (
        ";\n; managed\n;\n"
        "; Rendered from the resolved fleet (llmrig_planner_plan): the first section is for every model, then one per"
        " model.\n"
        "version = 1\n\n[*]\nstop-timeout = 10\nthreads = 4\n\n"
        "[a]\nmodel = /var/lib/llmrig/models/a.gguf\nalias = alpha\nctx-size = 4096\ncache-type-k = q8_0\n"
        "temp = 0.5\nload-on-startup = true\n\n"
        "[b]\nmodel = /var/lib/llmrig/models/b.gguf\nctx-size = 8192\n"
    )


# Bug 6: the [*] section took any option, even the gateway's own or one with an INI comment character.
def test_presets_template_refuses_a_reserved_global_option(tmp_path):
    status, output = render_presets(tmp_path, {"port": 9000})
    assert status != 0
    assert "llmrig_gateway_global_options: option 'port': is managed by the gateway (llmrig_gateway_port)" in output
    assert not (tmp_path / "presets.ini").exists()


def llamacpp_preflight(tmp_path: Path, smi: str | None, **role_vars) -> tuple[int, str]:
    """The llama.cpp role's preflight on the controller with a stand-in nvidia-smi (a shell script that
    prints what a real one prints in that state) or none on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    archive = tmp_path / "llama.cpp.tar.gz"
    archive.write_bytes(b"not read by the preflight")
    play = {
        "name": "llama.cpp preflight",
        "hosts": "server",
        "gather_facts": True,
        "environment": {"PATH": f"{bin_dir}:/usr/bin:/bin"},
        "vars": {"llmrig_llamacpp_source": "archive", "llmrig_llamacpp_archive_path": str(archive), **role_vars},
        "tasks": [
            {
                "name": "Preflight",
                "ansible.builtin.include_role": {"name": "llmrig_llamacpp", "tasks_from": "preflight"},
            },
            {
                "name": "Show",
                "ansible.builtin.debug": {
                    "msg": "BUILD={{ __llmrig_llamacpp_backend }}:{{ __llmrig_llamacpp_cuda_archs }}:END"
                    " ID={{ __llmrig_llamacpp_build_id }}:END"
                    " COMMIT={{ __llmrig_llamacpp_git_commit | default('') }}:END"
                    " HOME={{ __llmrig_llamacpp_cuda_home }}:END TOOLKIT={{ __llmrig_llamacpp_toolkit_id }}:END"
                },
            },
        ],
    }
    return run_play(tmp_path, play, {"llm_servers": ["server"]})


# Issue 10, defect 5: before the reboot (or with a broken driver) nvidia-smi's error text became the CUDA
# architecture list, and with backend auto a failing nvidia-smi silently gave a CPU build.
BROKEN_SMI = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9"


@pytest.mark.parametrize("backend", ["auto", "cuda"])
def test_failing_nvidia_smi_stops_the_build_with_a_clear_message(tmp_path, backend):
    status, output = llamacpp_preflight(tmp_path, BROKEN_SMI, llmrig_llamacpp_backend=backend)
    assert status != 0, output
    assert "nvidia-smi --query-gpu=compute_cap failed (exit status 9)" in output, output
    assert "could not communicate with the NVIDIA driver" in output
    assert "BUILD=" not in output


def test_nvidia_smi_text_that_is_no_compute_capability_is_refused(tmp_path):
    status, output = llamacpp_preflight(tmp_path, "echo 'No devices were found'")
    assert status != 0, output
    assert "printed no" in output and "No devices were found" in output


def test_compute_capabilities_become_the_architectures(tmp_path):
    smi = "case \"$*\" in *compute_cap*) printf '8.9\\n12.0\\n8.9\\n';; *driver_version*) echo 580.95.05;; esac"
    status, output = llamacpp_preflight(tmp_path, smi)
    assert status == 0, output
    assert "BUILD=cuda:120;89:END" in output


def test_no_nvidia_smi_means_a_cpu_build_and_explicit_architectures_need_no_probe(tmp_path):
    status, output = llamacpp_preflight(tmp_path, None)
    assert status == 0, output
    assert "BUILD=cpu::END" in output
    status, output = llamacpp_preflight(
        tmp_path, BROKEN_SMI, llmrig_llamacpp_backend="cuda", llmrig_llamacpp_cuda_architectures="86"
    )
    assert status == 0, output
    assert "BUILD=cuda:86:END" in output


def build_id(output: str) -> str:
    return output.split("ID=", 1)[1].split(":END", 1)[0]


# Issue 10, defect 8: the build id ignored the CUDA toolkit and a moving git ref.
def test_build_id_changes_with_the_cuda_toolkit_only_for_cuda_builds(tmp_path):
    ids = {}
    for backend in ("cuda", "cpu"):
        for package in ("cuda-toolkit-12-8", "cuda-toolkit-13-0"):
            status, output = llamacpp_preflight(
                tmp_path,
                None,
                llmrig_llamacpp_backend=backend,
                llmrig_llamacpp_cuda_architectures="89",
                llmrig_llamacpp_cuda_toolkit_package=package,
            )
            assert status == 0, output
            ids[backend, package] = build_id(output)
    assert ids["cuda", "cuda-toolkit-12-8"] != ids["cuda", "cuda-toolkit-13-0"]
    assert ids["cpu", "cuda-toolkit-12-8"] == ids["cpu", "cuda-toolkit-13-0"]


def test_build_id_follows_the_commit_a_tag_points_to(tmp_path):
    repo = tmp_path / "llama.cpp.git"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    ids = []
    for message in ("first", "second"):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
        subprocess.run([*git, "tag", "-f", "-a", "-m", message, "b1"], check=True, capture_output=True)
        status, output = llamacpp_preflight(
            tmp_path,
            None,
            llmrig_llamacpp_source="git",
            llmrig_llamacpp_git_repo=str(repo),
            llmrig_llamacpp_git_version="b1",
        )
        assert status == 0, output
        ids.append(build_id(output))
        head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
        assert f"COMMIT={head}:END" in output  # the commit a clone checks out, not the tag object
    assert ids[0] != ids[1]


# Issue 11: a build that failed its check after an upgrade was rolled back (by the gateway role); switching
# to it again would fail again, so the next run stops in preflight, before anything changes.
def test_a_build_that_was_rolled_back_is_refused_until_its_pin_changes(tmp_path):
    install = tmp_path / "builds"
    status, output = llamacpp_preflight(tmp_path, None, llmrig_llamacpp_install_dir=str(install))
    assert status == 0, output
    refused = build_id(output)
    record = {"build": refused, "rolled_back_to": "0123456789ab", "when": "2026-12-02T13:29:25Z",
              "reason": "Assert every fleet model answered: gemma-a HTTP 500"}  # fmt: skip
    (install / refused).mkdir(parents=True)
    (install / refused / "ROLLED-BACK.json").write_text(json.dumps(record))
    status, output = llamacpp_preflight(tmp_path, None, llmrig_llamacpp_install_dir=str(install))
    assert status != 0
    message = " ".join(output.split())
    assert f"llama.cpp build {refused} (archive:" in message, output
    assert "failed its check after the upgrade on 2026-12-02T13:29:25Z and build 0123456789ab was put back:" in message
    assert f"delete {install}/{refused}/ROLLED-BACK.json to try this build again" in message
    assert "BUILD=" not in output
    # another pin is another build id, and it is not refused
    status, output = llamacpp_preflight(
        tmp_path, None, llmrig_llamacpp_install_dir=str(install), llmrig_llamacpp_cmake_flags=["-DX=1"]
    )
    assert status == 0, output
    assert build_id(output) != refused


def gateway_unit(tmp_path: Path, systemd_version: int, cuda: bool) -> str:
    """The gateway's systemd unit rendered by Ansible from the role's template and its real inputs."""
    dest = tmp_path / f"unit-{systemd_version}-{cuda}.service"
    play = {
        "name": "Render the gateway unit",
        "hosts": "server",
        "gather_facts": False,
        "vars_files": [
            str(REPO / "roles/llmrig_gateway/defaults/main.yml"),
            str(REPO / "roles/llmrig_gateway/vars/main.yml"),
        ],
        "vars": {"llmrig_planner_plan": {"models_max": 1, "fit": True}, "_llmrig_gateway_cuda": cuda},
        "tasks": [
            {
                "name": "Render",
                "ansible.builtin.template": {
                    "src": str(REPO / "roles/llmrig_gateway/templates/etc/systemd/system/llmrig-gateway.service.j2"),
                    "dest": str(dest),
                    "mode": "0644",
                },
            }
        ],
    }
    status, output = run_play(
        tmp_path, play, {"llm_servers": ["server"]}, "-e", f"_llmrig_gateway_systemd_version={systemd_version}"
    )
    assert status == 0, output
    return dest.read_text()


def directives(unit: str) -> list[str]:
    return [line for line in unit.splitlines() if line and not line.startswith("#")]


# Issue 10, defect 1: ProtectClock before systemd 252 blocks /dev/nvidia* (systemd PR 25075); CUDA's device
# order differs from nvidia-smi's; nothing loaded nvidia_uvm.
@pytest.mark.parametrize(("version", "protect_clock"), [(249, False), (251, False), (252, True), (257, True)])
def test_protect_clock_only_where_systemd_does_not_block_devices_with_it(tmp_path, version, protect_clock):
    lines = directives(gateway_unit(tmp_path, version, cuda=True))
    assert ("ProtectClock=true" in lines) is protect_clock
    assert "ProtectKernelModules=true" in lines  # the rest of the sandbox stays


@pytest.mark.parametrize("cuda", [True, False])
def test_models_see_the_gpus_in_pci_order_and_cuda_builds_check_nvidia_uvm(tmp_path, cuda):
    lines = directives(gateway_unit(tmp_path, 252, cuda=cuda))
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID" in lines
    pre = [line for line in lines if line.startswith("ExecStartPre=")]
    if cuda:
        assert len(pre) == 1 and pre[0].startswith("ExecStartPre=+/bin/sh -c ")
        assert "nvidia-modprobe -u -c=0" in pre[0] and "test -c /dev/nvidia-uvm" in pre[0]
    else:
        assert pre == []


def test_the_nvidia_uvm_check_fails_with_its_message_when_the_device_is_missing(tmp_path):
    (pre,) = [line for line in directives(gateway_unit(tmp_path, 252, cuda=True)) if line.startswith("ExecStartPre=")]
    script = pre.split("ExecStartPre=+/bin/sh -c ", 1)[1].strip("'")
    if Path("/dev/nvidia-uvm").exists():
        pytest.skip("this host has /dev/nvidia-uvm")
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "/dev/nvidia-uvm is missing" in result.stderr


def smi_with_driver(version: str) -> str:
    return f'case "$*" in *compute_cap*) echo 8.9;; *driver_version*) echo {version};; *) exit 6;; esac'


# Issue 10, defect 4: the pinned CUDA 13 toolkit cannot work with Debian's 535 driver; say so before building.
def test_a_cuda_toolkit_too_new_for_the_driver_is_refused(tmp_path):
    status, output = llamacpp_preflight(
        tmp_path, smi_with_driver("535.247.01"), llmrig_llamacpp_cuda_toolkit_package="cuda-toolkit-13-0"
    )
    assert status != 0, output
    assert "cuda-toolkit-13-0 needs NVIDIA driver branch 580 or newer, but this host runs 535.247.01" in output
    for driver, package in (("580.95.05", "cuda-toolkit-13-0"), ("535.247.01", "cuda-toolkit-12-8")):
        status, output = llamacpp_preflight(
            tmp_path, smi_with_driver(driver), llmrig_llamacpp_cuda_toolkit_package=package
        )
        assert status == 0, output
        assert "BUILD=cuda:89:END" in output


# Issue 15: the CUDA toolkit from NVIDIA's wheels on PyPI. The preflight reads the pinned requirements on the
# controller (the CUDA release, every hash), finds the driver library to link against and checks the driver,
# all before anything on the host changes; the toolkit's directory and the build id follow the wheels' checksum.
PYPI_REQUIREMENTS = REPO / "roles/llmrig_llamacpp/files/cuda-pypi-requirements.txt"


def pypi_preflight(tmp_path: Path, smi: str | None, **role_vars) -> tuple[int, str]:
    driver = tmp_path / "libcuda.so.1"
    driver.write_bytes(b"\x7fELF")
    settings = {
        "llmrig_llamacpp_backend": "cuda",
        "llmrig_llamacpp_cuda_architectures": "89",
        "llmrig_llamacpp_cuda_toolkit_source": "pypi",
        "llmrig_llamacpp_cuda_driver_library": str(driver),
    }
    return llamacpp_preflight(tmp_path, smi, **{**settings, **role_vars})


def test_the_pypi_toolkit_has_a_directory_and_a_build_id_of_its_own_wheels(tmp_path):
    checksum = hashlib.sha256(PYPI_REQUIREMENTS.read_bytes()).hexdigest()
    status, output = pypi_preflight(tmp_path, smi_with_driver("580.95.05"))
    assert status == 0, output
    assert f"HOME=/opt/llmrig/cuda/{checksum[:12]}/cuda:END TOOLKIT=pypi:{checksum}:END" in output
    other = tmp_path / "requirements.txt"
    other.write_text(PYPI_REQUIREMENTS.read_text().replace("nvidia-cublas==13.10.0.20", "nvidia-cublas==13.10.0.21"))
    status, moved = pypi_preflight(tmp_path, None, llmrig_llamacpp_cuda_pypi_requirements=str(other))
    assert status == 0, moved
    assert build_id(moved) != build_id(output)
    status, apt = llamacpp_preflight(
        tmp_path, None, llmrig_llamacpp_backend="cuda", llmrig_llamacpp_cuda_architectures="89"
    )
    assert status == 0 and "HOME=/usr/local/cuda:END TOOLKIT=package:cuda-toolkit-13-0:END" in apt
    assert build_id(apt) != build_id(output)


def test_the_pypi_toolkit_is_refused_without_a_driver_library_a_hash_or_a_new_enough_driver(tmp_path):
    status, output = pypi_preflight(tmp_path, None, llmrig_llamacpp_cuda_driver_library=str(tmp_path / "none.so"))
    message = " ".join(output.split())
    assert (
        status != 0 and f"llmrig_llamacpp_cuda_driver_library={tmp_path}/none.so does not exist on the host" in message
    )
    assert "(PyPI has no stub of it)" in message and "Nothing was changed." in message
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text("nvidia-cuda-nvcc==13.5.37\n")
    status, output = pypi_preflight(tmp_path, None, llmrig_llamacpp_cuda_pypi_requirements=str(unhashed))
    assert status != 0 and "give every line a --hash=sha256:<64 hex digits>" in " ".join(output.split()), output
    status, output = pypi_preflight(tmp_path, smi_with_driver("535.247.01"))
    message = " ".join(output.split())
    assert status != 0 and "the CUDA 13 wheels of" in message, output
    assert "need NVIDIA driver branch 580 or newer, but this host runs 535.247.01" in message
    status, output = pypi_preflight(tmp_path, None, llmrig_llamacpp_cuda_pypi_wheelhouse=str(tmp_path / "nowhere"))
    assert status != 0 and f"llmrig_llamacpp_cuda_pypi_wheelhouse={tmp_path}/nowhere is not a directory" in output


# Issue 10, defect 4: a second run before the reboot forgot that a driver was installed and failed on the
# GPU count; the role now remembers it in /run (emptied by the reboot).
@pytest.mark.parametrize("pending", [True, False])
def test_a_pending_driver_reboot_is_remembered_until_the_host_reboots(tmp_path, pending):
    marker = tmp_path / "llmrig-nvidia-reboot-required"
    if pending:
        marker.write_text("installed branch 580; reboot to load it\n")
    play = {
        "name": "Driver preflight",
        "hosts": "server",
        "gather_facts": True,
        "environment": {"PATH": "/usr/bin:/bin"},  # no nvidia-smi: the driver does not run yet
        "vars": {"llmrig_nvidia_driver_branch": "580"},
        "tasks": [
            {
                "name": "Preflight",
                "ansible.builtin.include_role": {"name": "llmrig_nvidia_driver", "tasks_from": "preflight"},
            },
            {"name": "Show", "ansible.builtin.debug": {"msg": "REBOOT={{ llmrig_nvidia_driver_reboot_required }}:END"}},
        ],
    }
    # role vars outrank play vars; the marker's path is moved into tmp_path with an extra var
    extra = json.dumps({"_llmrig_nvidia_driver_reboot_marker": str(marker)})
    status, output = run_play(tmp_path, play, {"nvidia_gpus": ["server"]}, "-e", extra)
    assert status == 0, output
    assert f"REBOOT={pending}:END" in output, output


def webui_preflight(tmp_path: Path, host_vars: dict) -> tuple[int, str]:
    play = {
        "name": "The chat page's preflight",
        "hosts": "chat",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Check",
                "ansible.builtin.include_role": {"name": "llmrig_webui", "tasks_from": "preflight.yml"},
            }
        ],
    }
    return run_play(tmp_path, play, {"llm_servers": ["chat"], "webui": ["chat"]}, host_vars={"chat": host_vars})


@pytest.mark.parametrize(
    ("host_vars", "message"),
    [
        ({}, "llmrig_webui_admin_password (vault_llmrig_webui_admin_password, 8 characters or more)"),
        ({"vault_llmrig_webui_admin_password": "short"}, "8 characters or more"),
        (
            {"vault_llmrig_webui_admin_password": "long-enough", "llmrig_webui_api_url": "http://127.0.0.1:8080"},
            "llmrig_webui_api_url=http://127.0.0.1:8080: the chat page needs",
        ),
        (
            {"vault_llmrig_webui_admin_password": "long-enough", "llmrig_webui_api_url": "http://127.0.0.1:8090/v1"},
            "on another port than its own (8090)",
        ),
        (
            {"vault_llmrig_webui_admin_password": "long-enough", "llmrig_webui_data_dir": "/srv/webui"},
            "llmrig_webui_data_dir=/srv/webui must be a directory under /var/lib",
        ),
    ],
)
def test_the_chat_page_refuses_bad_inputs_with_a_message_that_names_them(tmp_path, host_vars, message):
    status, output = webui_preflight(tmp_path, host_vars)
    assert status != 0 and message in output, output
    assert KEY not in output and "long-enough" not in output  # the secrets are never printed


def test_the_chat_page_talks_to_its_own_router_and_the_firewall_opens_its_port(tmp_path):
    status, output = webui_preflight(tmp_path, {"vault_llmrig_webui_admin_password": "long-enough"})
    assert status == 0, output
    groups = {"llm_servers": ["chat", "plain"], "webui": ["chat"]}
    assert host_var(tmp_path, groups, "chat", "llmrig_webui_api_url") == "http://127.0.0.1:8080/v1"
    assert 8090 in host_var(tmp_path, groups, "chat", "llmrig_firewall_ports")
    assert 8090 not in host_var(tmp_path, groups, "plain", "llmrig_firewall_ports")
