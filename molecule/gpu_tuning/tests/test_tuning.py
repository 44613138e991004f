"""GPU tuning role on a container without a GPU: installed, configured, and harmless at boot."""

from __future__ import annotations

import json
import subprocess
import time

CONTAINER = "llmrig-gpu_tuning"


def test_config_rendered(host):
    config = json.loads(host.file("/etc/llmrig/gpu-tuning.json").content_string)
    assert config == {"gpus": [{"index": 0, "memory_clock_offset_mhz": 1000, "power_limit_w": 250, "pstate": 0}]}
    assert host.file("/etc/llmrig/gpu-tuning.json").mode == 0o644


def test_nvml_binding_installed_in_venv(host):
    result = host.run("/opt/llmrig/gpu-tuning/venv/bin/python -c 'import pynvml; print(pynvml.__file__)'")
    assert result.rc == 0, result.stderr


def test_unit_enabled_and_ordered_after_the_driver(host):
    service = host.service("llmrig-gpu-tuning")
    assert service.is_enabled
    props = service.systemd_properties
    assert "nvidia-persistenced.service" in props["After"]
    assert props["Type"] == "oneshot"


def test_cli_says_there_is_no_driver(host):
    for command in ("status", "apply", "reset"):
        result = host.run(f"/usr/local/sbin/llmrig-gpu-tuning {command}")
        assert result.rc == 0, result.stderr
        assert "no NVIDIA driver or GPU on this host" in result.stdout
        assert f"nothing to {command}" in result.stdout


def test_boot_without_gpu_is_clean(host):
    """Reboot the container: the oneshot runs at boot, exits 0 with its message, and the system is not degraded."""
    subprocess.run(["podman", "restart", "--time", "5", CONTAINER], check=True, capture_output=True)
    state = ""
    for _ in range(60):
        state = host.run("systemctl is-system-running").stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    failed = host.run("systemctl --failed --no-legend").stdout
    assert state == "running", failed
    props = host.service("llmrig-gpu-tuning").systemd_properties
    assert props["ActiveState"] == "active"
    assert props["Result"] == "success"
    log = host.run("journalctl -b -u llmrig-gpu-tuning --no-pager").stdout
    assert "no NVIDIA driver or GPU on this host; nothing to apply" in log
