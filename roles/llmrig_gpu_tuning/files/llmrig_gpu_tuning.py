#!/usr/bin/env python3
"""llmrig GPU tuning: persistence mode, power limit and clock offsets per GPU, through NVML.

    llmrig-gpu-tuning status   configured vs current values of every GPU
    llmrig-gpu-tuning apply    set what the config asks for, then read every value back
    llmrig-gpu-tuning reset    power limit to the default, clock offsets to 0

With --textfile PATH, every command then writes the values read back (power limit, clock offsets) in the
Prometheus text format, for the node exporter's textfile collector (the llmrig GPU dashboard shows them).

The config (JSON, rendered by the llmrig_gpu_tuning role) lists GPUs by index; a value that is null or
absent is left alone, so an empty config changes nothing. nvidia-smi cannot set clock offsets on Linux,
hence NVML (nvidia-ml-py). An operation the GPU or driver does not support is refused with a message and
the others are still applied. On a host without an NVIDIA driver every command says so and exits 0, so
the boot-time oneshot never fails a boot.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_CONFIG = "/etc/llmrig/gpu-tuning.json"
SETTINGS = ("persistence_mode", "power_limit_w", "memory_clock_offset_mhz", "graphics_clock_offset_mhz")
CLOCKS = {"memory_clock_offset_mhz": "memory", "graphics_clock_offset_mhz": "graphics"}


class Unsupported(Exception):
    """The GPU or driver does not support the operation."""


class NoDriver(Exception):
    """No NVIDIA driver or library on this host."""


class Backend(Protocol):
    """What the tuning logic needs from NVML; PynvmlBackend is the real one, tests use a stand-in."""

    def count(self) -> int: ...
    def name(self, index: int) -> str: ...
    def get_persistence(self, index: int) -> bool: ...
    def set_persistence(self, index: int, enabled: bool) -> None: ...
    def get_power_limit_w(self, index: int) -> float: ...
    def power_limit_range_w(self, index: int) -> tuple[float, float]: ...
    def default_power_limit_w(self, index: int) -> float: ...
    def set_power_limit_w(self, index: int, watts: float) -> None: ...
    def get_clock_offset(self, index: int, clock: str, pstate: int) -> tuple[int, int, int]: ...
    def set_clock_offset(self, index: int, clock: str, pstate: int, mhz: int) -> None: ...


@dataclass
class Result:
    gpu: int
    setting: str
    status: str  # applied | unchanged | refused | failed
    wanted: Any = None
    current: Any = None
    message: str = ""

    def line(self) -> str:
        text = f"gpu{self.gpu} {self.setting}: {self.status}"
        if self.wanted is not None:
            text += f" (wanted {self.wanted}, read back {self.current})"
        return text + (f": {self.message}" if self.message else "")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.status != "failed" for result in self.results)


def _read(backend: Backend, index: int, setting: str, pstate: int) -> Any:
    if setting == "persistence_mode":
        return backend.get_persistence(index)
    if setting == "power_limit_w":
        return round(backend.get_power_limit_w(index))
    return backend.get_clock_offset(index, CLOCKS[setting], pstate)[0]


def _check_range(backend: Backend, index: int, setting: str, wanted: Any, pstate: int) -> str:
    """An error message when `wanted` is outside what the GPU accepts, else ''."""
    if setting == "power_limit_w":
        low, high = backend.power_limit_range_w(index)
        if not low <= wanted <= high:
            return f"{wanted} W is outside the GPU's range {low:.0f}-{high:.0f} W"
    elif setting in CLOCKS:
        _, low, high = backend.get_clock_offset(index, CLOCKS[setting], pstate)
        if not low <= wanted <= high:
            return f"{wanted} MHz is outside the driver's range {low} to {high} MHz"
    return ""


def _write(backend: Backend, index: int, setting: str, wanted: Any, pstate: int) -> None:
    if setting == "persistence_mode":
        backend.set_persistence(index, bool(wanted))
    elif setting == "power_limit_w":
        backend.set_power_limit_w(index, float(wanted))
    else:
        backend.set_clock_offset(index, CLOCKS[setting], pstate, int(wanted))


def apply_setting(backend: Backend, index: int, setting: str, wanted: Any, pstate: int) -> Result:
    """Set one value if it differs, then read it back."""
    try:
        current = _read(backend, index, setting, pstate)
        if current == wanted:
            return Result(index, setting, "unchanged", wanted, current)
        problem = _check_range(backend, index, setting, wanted, pstate)
        if problem:
            return Result(index, setting, "failed", wanted, current, problem)
        _write(backend, index, setting, wanted, pstate)
        current = _read(backend, index, setting, pstate)
    except Unsupported as exc:
        return Result(index, setting, "refused", wanted, None, f"not supported by this GPU or driver ({exc})")
    if current != wanted:
        return Result(index, setting, "failed", wanted, current, "the GPU did not keep the value")
    return Result(index, setting, "applied", wanted, current)


def apply(backend: Backend, config: dict[str, Any]) -> Report:
    report = Report()
    count = backend.count()
    for gpu in config.get("gpus", []):
        index = gpu["index"]
        if index >= count:
            report.results.append(Result(index, "gpu", "failed", message=f"only {count} GPU(s) present"))
            continue
        pstate = gpu.get("pstate", 0)
        for setting in SETTINGS:
            if gpu.get(setting) is not None:
                report.results.append(apply_setting(backend, index, setting, gpu[setting], pstate))
    return report


def reset(backend: Backend, config: dict[str, Any]) -> Report:
    """Default power limit and zero offsets on every configured GPU (persistence is left to its daemon)."""
    report = Report()
    for gpu in config.get("gpus", []):
        index, pstate = gpu["index"], gpu.get("pstate", 0)
        if index >= backend.count():
            continue
        try:
            default = round(backend.default_power_limit_w(index))
        except Unsupported as exc:
            report.results.append(Result(index, "power_limit_w", "refused", message=str(exc)))
        else:
            report.results.append(apply_setting(backend, index, "power_limit_w", default, pstate))
        for setting in CLOCKS:
            report.results.append(apply_setting(backend, index, setting, 0, pstate))
    return report


def status(backend: Backend, config: dict[str, Any]) -> list[str]:
    configured = {gpu["index"]: gpu for gpu in config.get("gpus", [])}
    lines = []
    for index in range(backend.count()):
        gpu = configured.get(index, {})
        pstate = gpu.get("pstate", 0)
        lines.append(f"gpu{index} {backend.name(index)}")
        for setting in SETTINGS:
            try:
                current: Any = _read(backend, index, setting, pstate)
            except Unsupported:
                current = "unsupported"
            wanted = gpu.get(setting)
            lines.append(f"  {setting:<28} current {current!s:<12} configured {'-' if wanted is None else wanted}")
    return lines


def textfile(backend: Backend, config: dict[str, Any]) -> str:
    """The current power limit and clock offsets of every GPU, as Prometheus text exposition."""
    pstates = {gpu["index"]: gpu.get("pstate", 0) for gpu in config.get("gpus", [])}
    power, offsets = [], []
    for index in range(backend.count()):
        pstate = pstates.get(index, 0)
        try:
            power.append(f'llmrig_gpu_power_limit_watts{{gpu="{index}"}} {backend.get_power_limit_w(index):g}')
        except Unsupported:
            pass
        for setting, clock in CLOCKS.items():
            try:
                current = _read(backend, index, setting, pstate)
            except Unsupported:
                continue
            offsets.append(f'llmrig_gpu_clock_offset_mhz{{gpu="{index}",clock="{clock}",pstate="{pstate}"}} {current}')
    return "".join(
        [
            "# HELP llmrig_gpu_power_limit_watts Power limit read back through NVML by llmrig-gpu-tuning.\n",
            "# TYPE llmrig_gpu_power_limit_watts gauge\n",
            *(line + "\n" for line in power),
            "# HELP llmrig_gpu_clock_offset_mhz Clock offset read back through NVML by llmrig-gpu-tuning.\n",
            "# TYPE llmrig_gpu_clock_offset_mhz gauge\n",
            *(line + "\n" for line in offsets),
        ]
    )


def write_textfile(path: str, text: str) -> None:
    """Replace the file in one step, so the collector never reads half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        print(f"llmrig-gpu-tuning: {directory} does not exist; no textfile written", flush=True)
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


class PynvmlBackend:
    """NVML through nvidia-ml-py. Clock offsets use nvmlDeviceSetClockOffsets (R555+, per P-state) with the
    return code checked here (some nvidia-ml-py releases drop it), falling back to the older VF-offset calls."""

    def __init__(self) -> None:
        try:
            import pynvml  # only on hosts with the venv
        except ImportError as exc:
            raise NoDriver(f"nvidia-ml-py is not installed: {exc}") from exc
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NoDriver(f"NVML could not start ({exc}): no NVIDIA driver or GPU on this host") from exc

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if exc.value in (self.nvml.NVML_ERROR_NOT_SUPPORTED, self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
                raise Unsupported(str(exc)) from exc
            raise

    def _handle(self, index: int) -> Any:
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def count(self) -> int:
        return int(self.nvml.nvmlDeviceGetCount())

    def name(self, index: int) -> str:
        name = self.nvml.nvmlDeviceGetName(self._handle(index))
        return name.decode() if isinstance(name, bytes) else str(name)

    def get_persistence(self, index: int) -> bool:
        return bool(self._call(self.nvml.nvmlDeviceGetPersistenceMode, self._handle(index)))

    def set_persistence(self, index: int, enabled: bool) -> None:
        mode = self.nvml.NVML_FEATURE_ENABLED if enabled else self.nvml.NVML_FEATURE_DISABLED
        self._call(self.nvml.nvmlDeviceSetPersistenceMode, self._handle(index), mode)

    def get_power_limit_w(self, index: int) -> float:
        return self._call(self.nvml.nvmlDeviceGetPowerManagementLimit, self._handle(index)) / 1000

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        low, high = self._call(self.nvml.nvmlDeviceGetPowerManagementLimitConstraints, self._handle(index))
        return low / 1000, high / 1000

    def default_power_limit_w(self, index: int) -> float:
        return self._call(self.nvml.nvmlDeviceGetPowerManagementDefaultLimit, self._handle(index)) / 1000

    def set_power_limit_w(self, index: int, watts: float) -> None:
        self._call(self.nvml.nvmlDeviceSetPowerManagementLimit, self._handle(index), int(watts * 1000))

    def _offsets(self, name: str, index: int, clock: str, pstate: int, mhz: int = 0) -> Any:
        info = self.nvml.c_nvmlClockOffset_t()
        info.version = self.nvml.nvmlClockOffset_v1
        info.type = self.nvml.NVML_CLOCK_MEM if clock == "memory" else self.nvml.NVML_CLOCK_GRAPHICS
        info.pstate = pstate
        info.clockOffsetMHz = mhz

        def call() -> None:
            fn = self.nvml._nvmlGetFunctionPointer(name)
            self.nvml._nvmlCheckReturn(fn(self._handle(index), ctypes.byref(info)))

        self._call(call)
        return info

    def get_clock_offset(self, index: int, clock: str, pstate: int) -> tuple[int, int, int]:
        try:
            info = self._offsets("nvmlDeviceGetClockOffsets", index, clock, pstate)
            return int(info.clockOffsetMHz), int(info.minClockOffsetMHz), int(info.maxClockOffsetMHz)
        except Unsupported:
            handle = self._handle(index)
            if clock == "memory":
                low, high = self._call(self.nvml.nvmlDeviceGetMemClkMinMaxVfOffset, handle)
                return int(self._call(self.nvml.nvmlDeviceGetMemClkVfOffset, handle)), int(low), int(high)
            low, high = self._call(self.nvml.nvmlDeviceGetGpcClkMinMaxVfOffset, handle)
            return int(self._call(self.nvml.nvmlDeviceGetGpcClkVfOffset, handle)), int(low), int(high)

    def set_clock_offset(self, index: int, clock: str, pstate: int, mhz: int) -> None:
        try:
            self._offsets("nvmlDeviceSetClockOffsets", index, clock, pstate, mhz)
        except Unsupported:
            setter = (
                self.nvml.nvmlDeviceSetMemClkVfOffset if clock == "memory" else self.nvml.nvmlDeviceSetGpcClkVfOffset
            )
            self._call(setter, self._handle(index), mhz)


def main(argv: list[str] | None = None, backend_factory: Any = PynvmlBackend) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["status", "apply", "reset"])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--textfile", help="afterwards, write the values read back here (Prometheus text format)")
    opts = parser.parse_args(argv)
    with open(opts.config, encoding="utf-8") as handle:
        config = json.load(handle)
    try:
        backend = backend_factory()
    except NoDriver as exc:
        print(f"llmrig-gpu-tuning: {exc}; nothing to {opts.command}", flush=True)
        return 0
    if opts.command == "status":
        print("\n".join(status(backend, config)), flush=True)
        if opts.textfile:
            write_textfile(opts.textfile, textfile(backend, config))
        return 0
    report = apply(backend, config) if opts.command == "apply" else reset(backend, config)
    if opts.textfile:
        write_textfile(opts.textfile, textfile(backend, config))
    if not report.results:
        print(f"llmrig-gpu-tuning: no settings configured; nothing to {opts.command}", flush=True)
    for result in report.results:
        print(result.line(), file=sys.stdout if result.status != "failed" else sys.stderr, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
