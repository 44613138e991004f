"""NVIDIA driver role, Debian non-free path, in a container (no kernel module can load here)."""

from __future__ import annotations

import pytest

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
