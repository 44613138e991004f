"""NVIDIA driver role, Debian non-free path, in a container (no kernel module can load here)."""

from __future__ import annotations

import re

import pytest
from llmrig_testlib import TEST_HOST, run_playbook

PACKAGES = ["nvidia-open-kernel-dkms", "nvidia-smi", "nvidia-persistenced", "libcuda1", "firmware-misc-nonfree"]


@pytest.mark.parametrize("name", PACKAGES)
def test_driver_packages_installed(host, name):
    package = host.package(name)
    assert package.is_installed
    if name != "firmware-misc-nonfree":
        assert package.version.startswith("535.")


def test_driver_packages_held(host):
    held = set(host.run("apt-mark showhold").stdout.split())
    assert set(PACKAGES) <= held
    assert "libnvidia-ml1" in held  # dependencies are held too, not only what was asked for


def test_nonfree_components_configured(host):
    sources = host.file("/etc/apt/sources.list.d/llmrig-debian-nonfree.sources").content_string
    assert "Components: contrib non-free non-free-firmware" in sources


def test_nouveau_blacklisted(host):
    content = host.file("/etc/modprobe.d/llmrig-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in content
    assert "options nouveau modeset=0" in content


def test_persistenced_enabled_through_a_drop_in(host):
    dropin = host.file("/etc/systemd/system/nvidia-persistenced.service.d/llmrig.conf")
    assert dropin.user == "root"
    assert dropin.mode == 0o644
    unit = host.run("systemctl cat nvidia-persistenced.service").stdout
    assert "ExecStart=/usr/bin/nvidia-persistenced --user nvpd --persistence-mode --verbose" in unit
    # the vendor unit is untouched
    assert "--persistence-mode" not in host.file("/usr/lib/systemd/system/nvidia-persistenced.service").content_string
    assert host.service("nvidia-persistenced").is_enabled


def test_nvidia_smi_installed_but_no_driver_here(host):
    result = host.run("nvidia-smi")
    assert result.rc != 0
    assert "couldn't communicate with the NVIDIA driver" in (result.stdout + result.stderr)


# the driver role alone (the GPU tuning role in gpu.yml has nothing to do with the branch)
DRIVER_ONLY = ("--tags", "llmrig_nvidia_driver_install,llmrig_nvidia_driver_configure")


def test_a_branch_change_releases_the_holds_and_installs_the_requested_branch(host):
    """Debian carries one branch, so the earlier branch is the record's: a host that ran 530 before. The
    role must see the change, release its own holds, install the requested branch, record and hold it."""
    host.run("echo 530 > /var/lib/llmrig-nvidia-driver-branch")
    returncode, output = run_playbook(TEST_HOST, ["nvidia_gpus", "llmrig_test"], "gpu.yml", None, *DRIVER_ONLY)
    assert returncode == 0, output[-3000:]
    flat = re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m", "", output))  # colours and line wrapping
    assert "NVIDIA driver branch 530 -> 535 installed" in flat, output
    released = output.split("TASK [llmrig_nvidia_driver : Release the holds for the branch change]")[1].split("TASK [")[
        0
    ]
    assert "changed: [" in released and "nvidia-smi" in released, released
    assert host.file("/var/lib/llmrig-nvidia-driver-branch").content_string == "535\n"
    assert set(PACKAGES) <= set(host.run("apt-mark showhold").stdout.split())
    returncode, output = run_playbook(TEST_HOST, ["nvidia_gpus", "llmrig_test"], "gpu.yml", None, *DRIVER_ONLY)
    assert returncode == 0, output[-3000:]
    assert "-> 535 installed" not in re.sub(r"\s+", " ", output)


def test_a_gpu_settings_change_is_applied_inside_the_gateway_s_hold_and_undone(host):
    """A live GPU settings change (power limit, clock offsets) must never land under a request in flight:
    the role's apply runs inside llmrig-gateway-drain --hold while the gateway serves. Without a driver the
    tool itself changes nothing here and says so; the hold around it is what is checked."""
    config = "/etc/llmrig/gpu-tuning.json"
    before = host.file(config).content_string
    tuned = {"llmrig_gpu_tuning_gpus": [{"index": 0, "power_limit_w": 250}]}
    args = ("--tags", "llmrig_gpu_tuning_configure", "-v")
    try:
        returncode, output = run_playbook(TEST_HOST, ["nvidia_gpus", "llmrig_test"], "gpu.yml", tuned, *args)
        assert returncode == 0, output[-3000:]
        applied = output.split("RUNNING HANDLER [llmrig_gpu_tuning : Apply llmrig GPU tuning]")[1]
        assert "/usr/local/sbin/llmrig-gateway-drain" in applied and "--hold" in applied, applied[:2000]
        assert "held the router" in applied and "systemctl exited 0" in applied, applied[:2000]
        assert '"power_limit_w": 250' in host.file(config).content_string
        journal = host.run("journalctl -u llmrig-gpu-tuning --no-pager -n 20 -o cat").stdout
        assert "nothing to apply" in journal, journal
    finally:
        returncode, output = run_playbook(TEST_HOST, ["nvidia_gpus", "llmrig_test"], "gpu.yml", None, *args)
    assert returncode == 0, output[-3000:]
    assert host.file(config).content_string == before
