"""Decision logic of the GPU tuning CLI, with a stand-in NVML backend (no GPU here: logic only, not evidence)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "roles/llmrig_gpu_tuning/files/llmrig_gpu_tuning.py"
spec = importlib.util.spec_from_file_location("llmrig_gpu_tuning", PATH)
assert spec and spec.loader
tuning = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = tuning  # dataclasses look their module up there
spec.loader.exec_module(tuning)


class FakeGpu:
    serial = 0

    def __init__(self, **kw):
        FakeGpu.serial += 1
        self.uuid = kw.get("uuid", f"GPU-0000000{FakeGpu.serial}-fake")
        self.bus = kw.get("bus", f"00000000:0{FakeGpu.serial}:00.0")
        self.failing = set(kw.get("failing", ()))  # operations that raise an NVML error other than unsupported
        self.persistence = kw.get("persistence", False)
        self.power = kw.get("power", 300.0)
        self.power_range = kw.get("power_range", (150.0, 360.0))
        self.default_power = kw.get("default_power", 320.0)
        self.offsets = {"memory": 0, "graphics": 0}
        self.offset_range = kw.get("offset_range", (-1000, 3000))
        self.unsupported = set(kw.get("unsupported", ()))
        self.sticky = set(kw.get("sticky", ()))  # settings the GPU silently ignores


class FakeBackend:
    def __init__(self, *gpus):
        self.gpus = list(gpus)
        self.writes = []

    def _gpu(self, index, op):
        if op in self.gpus[index].unsupported:
            raise tuning.Unsupported(op)
        if op in self.gpus[index].failing:
            raise tuning.Failure(f"Insufficient Permissions ({op})")
        return self.gpus[index]

    def uuid(self, index):
        return self.gpus[index].uuid

    def pci_bus_id(self, index):
        return self.gpus[index].bus

    def count(self):
        return len(self.gpus)

    def name(self, index):
        return f"Fake GPU {index}"

    def get_persistence(self, index):
        return self._gpu(index, "persistence").persistence

    def set_persistence(self, index, enabled):
        self.writes.append((index, "persistence", enabled))
        self._gpu(index, "persistence").persistence = enabled

    def get_power_limit_w(self, index):
        return self._gpu(index, "power").power

    def power_limit_range_w(self, index):
        return self._gpu(index, "power").power_range

    def default_power_limit_w(self, index):
        return self._gpu(index, "power").default_power

    def set_power_limit_w(self, index, watts):
        self.writes.append((index, "power", watts))
        gpu = self._gpu(index, "power")
        if "power" not in gpu.sticky:
            gpu.power = watts

    def get_clock_offset(self, index, clock, pstate):
        gpu = self._gpu(index, clock)
        return (gpu.offsets[clock], *gpu.offset_range)

    def set_clock_offset(self, index, clock, pstate, mhz):
        self.writes.append((index, clock, mhz))
        gpu = self._gpu(index, clock)
        if clock not in gpu.sticky:
            gpu.offsets[clock] = mhz


def statuses(report):
    return {(r.gpu, r.setting): r.status for r in report.results}


def test_empty_config_changes_nothing():
    backend = FakeBackend(FakeGpu())
    assert tuning.apply(backend, {"gpus": []}).results == []
    assert tuning.apply(backend, {"gpus": [{"index": 0}]}).results == []
    assert backend.writes == []


def test_apply_sets_and_reads_back_every_value():
    backend = FakeBackend(FakeGpu(), FakeGpu())
    config = {
        "gpus": [
            {"index": 0, "persistence_mode": True, "power_limit_w": 250, "memory_clock_offset_mhz": 1000},
            {"index": 1, "graphics_clock_offset_mhz": 100},
        ]
    }
    report = tuning.apply(backend, config)
    assert report.ok
    assert statuses(report) == {
        (0, "persistence_mode"): "applied",
        (0, "power_limit_w"): "applied",
        (0, "memory_clock_offset_mhz"): "applied",
        (1, "graphics_clock_offset_mhz"): "applied",
    }
    assert backend.gpus[0].power == 250
    assert backend.gpus[1].offsets == {"memory": 0, "graphics": 100}


def test_second_apply_is_unchanged():
    backend = FakeBackend(FakeGpu())
    config = {"gpus": [{"index": 0, "power_limit_w": 250, "memory_clock_offset_mhz": 500}]}
    tuning.apply(backend, config)
    backend.writes.clear()
    report = tuning.apply(backend, config)
    assert set(statuses(report).values()) == {"unchanged"}
    assert backend.writes == []


def test_unsupported_operation_is_refused_and_the_rest_applied():
    backend = FakeBackend(FakeGpu(unsupported={"memory"}))
    config = {"gpus": [{"index": 0, "power_limit_w": 200, "memory_clock_offset_mhz": 800}]}
    report = tuning.apply(backend, config)
    assert statuses(report) == {(0, "power_limit_w"): "applied", (0, "memory_clock_offset_mhz"): "refused"}
    assert report.ok  # a refusal is reported, it does not fail the boot
    assert "not supported" in report.results[1].line()
    assert backend.gpus[0].power == 200


def test_out_of_range_values_are_not_written():
    backend = FakeBackend(FakeGpu())
    report = tuning.apply(backend, {"gpus": [{"index": 0, "power_limit_w": 500, "memory_clock_offset_mhz": 5000}]})
    assert not report.ok
    assert statuses(report) == {(0, "power_limit_w"): "failed", (0, "memory_clock_offset_mhz"): "failed"}
    assert "outside the GPU's range 150-360 W" in report.results[0].message
    assert "outside the driver's range -1000 to 3000 MHz" in report.results[1].message
    assert backend.writes == []


def test_value_the_gpu_does_not_keep_is_a_failure():
    backend = FakeBackend(FakeGpu(sticky={"memory"}))
    report = tuning.apply(backend, {"gpus": [{"index": 0, "memory_clock_offset_mhz": 700}]})
    assert not report.ok
    assert report.results[0].message == "the GPU did not keep the value"
    assert report.results[0].current == 0


def test_missing_gpu_index_fails_clearly():
    report = tuning.apply(FakeBackend(FakeGpu()), {"gpus": [{"index": 1, "power_limit_w": 200}]})
    assert not report.ok
    assert report.results[0].message == "only 1 GPU(s) present"


def test_reset_restores_default_power_and_zero_offsets_on_every_gpu():
    backend = FakeBackend(FakeGpu(power=250.0), FakeGpu(power=200.0))
    backend.gpus[0].offsets = {"memory": 1000, "graphics": 50}
    backend.gpus[1].offsets = {"memory": 500, "graphics": 0}
    report = tuning.reset(backend, {"gpus": [{"index": 0, "memory_clock_offset_mhz": 1000}]})
    assert report.ok
    assert [gpu.power for gpu in backend.gpus] == [320, 320]
    assert [gpu.offsets for gpu in backend.gpus] == [{"memory": 0, "graphics": 0}] * 2


# Issue 10, defect 6: NVML errors other than "not supported" aborted the run half-applied, silently.
def test_an_nvml_error_fails_that_setting_and_the_rest_is_applied():
    backend = FakeBackend(FakeGpu(failing={"power"}), FakeGpu())
    config = {
        "gpus": [
            {"index": 0, "power_limit_w": 250, "memory_clock_offset_mhz": 800},
            {"index": 1, "graphics_clock_offset_mhz": 100},
        ]
    }
    report = tuning.apply(backend, config)
    assert not report.ok
    assert statuses(report) == {
        (0, "power_limit_w"): "failed",
        (0, "memory_clock_offset_mhz"): "applied",
        (1, "graphics_clock_offset_mhz"): "applied",
    }
    assert "NVML error: Insufficient Permissions" in report.results[0].line()


def test_cli_prints_every_result_and_fails_on_an_nvml_error(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gpus": [{"index": 0, "power_limit_w": 250, "memory_clock_offset_mhz": 800}]}))
    backend = FakeBackend(FakeGpu(failing={"power"}))
    argv = ["apply", "--config", str(config), "--state", str(tmp_path / "state.json")]
    assert tuning.main(argv, lambda: backend) == 1
    out = capsys.readouterr()
    assert "gpu0 power_limit_w: failed" in out.err and "gpu0 memory_clock_offset_mhz: applied" in out.out


# Issue 10, defect 6: settings followed the NVML index, so after a card was removed another one got them.
def test_settings_follow_the_uuid_and_a_missing_card_gives_its_settings_to_nobody():
    first, second = FakeGpu(uuid="GPU-aaaa"), FakeGpu(uuid="GPU-bbbb")
    config = {"gpus": [{"index": 0, "uuid": "GPU-aaaa", "memory_clock_offset_mhz": 1500}]}
    backend = FakeBackend(second)  # GPU-aaaa was removed; GPU-bbbb is index 0 now
    report = tuning.apply(backend, config)
    assert not report.ok
    assert "GPU GPU-aaaa is not present" in report.results[0].message
    assert second.offsets["memory"] == 0 and backend.writes == []
    backend = FakeBackend(second, first)  # moved to another slot: index 1 now
    assert tuning.apply(backend, config).ok
    assert first.offsets["memory"] == 1500 and second.offsets["memory"] == 0


def test_pci_bus_id_names_a_gpu_too():
    first, second = FakeGpu(bus="00000000:01:00.0"), FakeGpu(bus="00000000:41:00.0")
    config = {"gpus": [{"index": 0, "pci_bus_id": "00000000:41:00.0", "power_limit_w": 200}]}
    assert tuning.apply(FakeBackend(first, second), config).ok
    assert (first.power, second.power) == (300.0, 200)


# Issue 10, defect 6: a setting removed from the config stayed on the GPU until a reboot.
def test_a_setting_removed_from_the_config_is_restored_to_the_default():
    gpu = FakeGpu(uuid="GPU-aaaa")
    backend = FakeBackend(gpu)
    state: dict = {}
    tuned = {"uuid": "GPU-aaaa", "index": 0, "power_limit_w": 250, "memory_clock_offset_mhz": 1000}
    assert tuning.apply(backend, {"gpus": [tuned]}, state).ok
    assert state["gpus"]["GPU-aaaa"]["set"] == {"power_limit_w": 250, "memory_clock_offset_mhz": 1000}
    report = tuning.apply(backend, {"gpus": [{"uuid": "GPU-aaaa", "index": 0, "power_limit_w": 250}]}, state)
    assert statuses(report) == {(0, "power_limit_w"): "unchanged", (0, "memory_clock_offset_mhz"): "restored"}
    assert gpu.offsets["memory"] == 0
    report = tuning.apply(backend, {"gpus": []}, state)
    assert statuses(report) == {(0, "power_limit_w"): "restored"}
    assert gpu.power == 320 and state["gpus"] == {}
    backend.writes.clear()
    assert tuning.apply(backend, {"gpus": []}, state).results == [] and backend.writes == []


def test_the_duty_to_restore_waits_for_a_card_that_is_away():
    gpu = FakeGpu(uuid="GPU-aaaa")
    state: dict = {}
    tuning.apply(FakeBackend(gpu), {"gpus": [{"uuid": "GPU-aaaa", "index": 0, "power_limit_w": 250}]}, state)
    assert tuning.apply(FakeBackend(), {"gpus": []}, state).results == []
    assert state["gpus"]["GPU-aaaa"]["set"] == {"power_limit_w": 250}
    report = tuning.apply(FakeBackend(gpu), {"gpus": []}, state)
    assert statuses(report) == {(0, "power_limit_w"): "restored"} and gpu.power == 320


# Issue 10, defect 6: after a failed run the textfile kept the previous boot's values.
def test_textfile_is_rewritten_after_a_failure(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gpus": [{"index": 0, "power_limit_w": 999}]}))
    out = tmp_path / "llmrig_gpu_tuning.prom"
    out.write_text('llmrig_gpu_power_limit_watts{gpu="0"} 250\nllmrig_gpu_tuning_success 1\n')
    argv = ["apply", "--config", str(config), "--state", str(tmp_path / "s.json"), "--textfile", str(out)]
    assert tuning.main(argv, lambda: FakeBackend(FakeGpu())) == 1
    lines = out.read_text().splitlines()
    assert "llmrig_gpu_tuning_success 0" in lines and 'llmrig_gpu_power_limit_watts{gpu="0"} 300' in lines

    class Broken(FakeBackend):
        def count(self):
            raise tuning.Failure("GPU is lost")

    assert tuning.main(argv, lambda: Broken(FakeGpu())) == 1
    lines = out.read_text().splitlines()
    assert "llmrig_gpu_tuning_success 0" in lines
    assert not [line for line in lines if line.startswith("llmrig_gpu_power")]


def test_status_shows_current_and_configured():
    backend = FakeBackend(FakeGpu(unsupported={"graphics"}))
    lines = tuning.status(backend, {"gpus": [{"index": 0, "power_limit_w": 250}]})
    assert lines[0] == f"gpu0 Fake GPU 0 {backend.gpus[0].uuid}"
    assert any("power_limit_w" in line and "current 300" in line and "configured 250" in line for line in lines)
    assert any("graphics_clock_offset_mhz" in line and "unsupported" in line for line in lines)


def test_cli_without_driver_exits_cleanly(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gpus": [{"index": 0, "power_limit_w": 250}]}))

    def no_driver():
        raise tuning.NoDriver("NVML could not start: no NVIDIA driver or GPU on this host")

    assert tuning.main(["apply", "--config", str(config)], backend_factory=no_driver) == 0
    assert "no NVIDIA driver" in capsys.readouterr().out


@pytest.mark.parametrize(("command", "code"), [("apply", 1), ("status", 0)])
def test_cli_exit_codes(tmp_path, command, code):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gpus": [{"index": 0, "power_limit_w": 999}]}))
    argv = [command, "--config", str(config), "--state", str(tmp_path / "state.json")]
    assert tuning.main(argv, backend_factory=lambda: FakeBackend(FakeGpu())) == code


def test_textfile_reports_what_the_gpus_hold_after_apply(tmp_path):
    backend = FakeBackend(FakeGpu(), FakeGpu(unsupported={"memory", "graphics"}))
    config = {"gpus": [{"index": 0, "power_limit_w": 250, "memory_clock_offset_mhz": 1000, "pstate": 2}]}
    config_file = tmp_path / "gpu-tuning.json"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "llmrig_gpu_tuning.prom"
    argv = ["apply", "--config", str(config_file), "--state", str(tmp_path / "s.json"), "--textfile", str(out)]
    assert tuning.main(argv, lambda: backend) == 0
    lines = out.read_text().splitlines()
    assert 'llmrig_gpu_power_limit_watts{gpu="0"} 250' in lines
    assert 'llmrig_gpu_power_limit_watts{gpu="1"} 300' in lines
    assert 'llmrig_gpu_clock_offset_mhz{gpu="0",clock="memory",pstate="2"} 1000' in lines
    assert 'llmrig_gpu_clock_offset_mhz{gpu="0",clock="graphics",pstate="2"} 0' in lines
    # GPU 1 cannot report offsets: no line rather than a made-up zero
    assert not [line for line in lines if 'gpu="1",clock' in line]
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_textfile_is_skipped_when_its_directory_is_missing(tmp_path, capsys):
    config_file = tmp_path / "gpu-tuning.json"
    config_file.write_text('{"gpus": []}')
    missing = tmp_path / "no-such-dir" / "llmrig_gpu_tuning.prom"
    assert (
        tuning.main(
            ["status", "--config", str(config_file), "--textfile", str(missing)], lambda: FakeBackend(FakeGpu())
        )
        == 0
    )
    assert "does not exist; no textfile written" in capsys.readouterr().out
    assert not missing.exists()


def test_a_tuning_run_s_switches_leave_the_card_at_each_variant_s_value_and_a_refused_one_changes_nothing(
    tmp_path, capsys
):
    """playbooks/tune.yml's GPU steps through the CLI as the drained hold runs it: configs made by the
    collection's filter from the role's config (baseline without the setting, candidate with it), switched
    in the A/B order with the real state file. Going back to the baseline restores the card's default; a
    value outside the card's range exits 1 with the reason (the step is then not measured) and the card
    keeps what it had."""
    from ansible_collections.llmrig.serving.plugins.module_utils._tune import gpu_config_with

    gpu = FakeGpu(uuid="GPU-aaaa", offset_range=(-1000, 1500))
    role_config = {"gpus": [{"index": 0, "uuid": "GPU-aaaa", "power_limit_w": 250}]}
    state = tmp_path / "state.json"
    configs = {}
    for name, value in (("baseline", None), ("candidate", 1000), ("too-far", 2000)):
        configs[name] = tmp_path / f"{name}.json"
        configs[name].write_text(json.dumps(gpu_config_with(role_config, 0, "memory_clock_offset_mhz", value)))

    def switch(name: str) -> int:
        argv = ["apply", "--config", str(configs[name]), "--state", str(state)]
        return tuning.main(argv, backend_factory=lambda: FakeBackend(gpu))

    seen = []
    for name in ("baseline", "candidate", "baseline", "candidate", "baseline"):
        assert switch(name) == 0
        seen.append((gpu.power, gpu.offsets["memory"]))
    assert seen == [(250, 0), (250, 1000), (250, 0), (250, 1000), (250, 0)]
    capsys.readouterr()
    assert switch("too-far") == 1
    assert "2000 MHz is outside the driver's range -1000 to 1500 MHz" in capsys.readouterr().err
    assert (gpu.power, gpu.offsets["memory"]) == (250, 0)
    assert switch("baseline") == 0 and (gpu.power, gpu.offsets["memory"]) == (250, 0)
