#!/usr/bin/env python3
"""llmrig GPU tuning: persistence mode, power limit and clock offsets per GPU, through NVML.

    llmrig-gpu-tuning status   configured vs current values of every GPU
    llmrig-gpu-tuning apply    set what the config asks for, then read every value back
    llmrig-gpu-tuning reset    power limit to the default, clock offsets to 0, on every GPU

With --textfile PATH, every command then writes the values read back (power limit, clock offsets) and
whether the run succeeded in the Prometheus text format, for the node exporter's textfile collector (the
llmrig GPU dashboard shows them). The file is rewritten after every run, a failed one included.

The config (JSON, rendered by the llmrig_gpu_tuning role) names each GPU by its UUID (or PCI bus id), with
the NVML index it had when the config was written; a GPU named that way gets its settings wherever it is
now, and a GPU that is not there gets nothing (no other card inherits its settings). An entry with an index
only is matched by index. A value that is null or absent is left alone, except one that apply set on an
earlier run (recorded in --state): that one is restored to the default (power limit) or 0 (offsets).
nvidia-smi cannot set clock offsets on Linux, hence NVML (nvidia-ml-py). An operation the GPU or driver
does not support is refused with a message; any other NVML error fails that one setting, and the others are
still applied. On a host without an NVIDIA driver every command says so and exits 0, so the boot-time
oneshot never fails a boot.
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
DEFAULT_STATE = "/var/lib/llmrig/gpu-tuning-state.json"
SETTINGS = ("persistence_mode", "power_limit_w", "memory_clock_offset_mhz", "graphics_clock_offset_mhz")
CLOCKS = {"memory_clock_offset_mhz": "memory", "graphics_clock_offset_mhz": "graphics"}
# what apply restores when a setting leaves the config (persistence is nvidia-persistenced's)
RESTORED = ("power_limit_w", *CLOCKS)


class Unsupported(Exception):
    """The GPU or driver does not support the operation."""


class Failure(Exception):
    """Any other NVML error (no permission, GPU lost, unknown error): that operation failed."""


class NoDriver(Exception):
    """No NVIDIA driver or library on this host."""


class Backend(Protocol):
    """What the tuning logic needs from NVML; PynvmlBackend is the real one, tests use a stand-in."""

    def count(self) -> int: ...
    def name(self, index: int) -> str: ...
    def uuid(self, index: int) -> str: ...
    def pci_bus_id(self, index: int) -> str: ...
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
    gpu: int | str  # NVML index, or the configured name of a GPU that is not there
    setting: str
    status: str  # applied | unchanged | restored | refused | failed
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
    except Failure as exc:
        return Result(index, setting, "failed", wanted, None, f"NVML error: {exc}")
    if current != wanted:
        return Result(index, setting, "failed", wanted, current, "the GPU did not keep the value")
    return Result(index, setting, "applied", wanted, current)


def present_gpus(backend: Backend) -> list[dict[str, Any]]:
    """Index, UUID and PCI bus id of every GPU NVML sees now."""
    gpus = []
    for index in range(backend.count()):
        gpus.append({"index": index, "uuid": backend.uuid(index), "pci_bus_id": backend.pci_bus_id(index).lower()})
    return gpus


def gpu_key(gpu: dict[str, Any]) -> str:
    """How a configured GPU is named: its UUID, else its PCI bus id, else its index."""
    if gpu.get("uuid"):
        return str(gpu["uuid"])
    if gpu.get("pci_bus_id"):
        return str(gpu["pci_bus_id"]).lower()
    return f"index:{gpu['index']}"


def locate(present: list[dict[str, Any]], gpu: dict[str, Any]) -> tuple[int | None, str]:
    """The NVML index of a configured GPU now, or None and why it gets nothing."""
    for name in ("uuid", "pci_bus_id"):
        if gpu.get(name):
            wanted = str(gpu[name]).lower()
            for card in present:
                if card[name].lower() == wanted:
                    return card["index"], ""
            return None, f"GPU {gpu[name]} is not present (removed or replaced?): nothing applied to it"
    index = gpu.get("index")
    if not isinstance(index, int) or not 0 <= index < len(present):
        return None, f"only {len(present)} GPU(s) present"
    return index, ""


def configured(gpu: dict[str, Any]) -> dict[str, Any]:
    return {setting: gpu[setting] for setting in SETTINGS if gpu.get(setting) is not None}


def restore_value(backend: Backend, index: int, setting: str) -> Any:
    return round(backend.default_power_limit_w(index)) if setting == "power_limit_w" else 0


def apply(backend: Backend, config: dict[str, Any], state: dict[str, Any] | None = None) -> Report:
    """Apply the config, and restore what `state` (the record of earlier applies) set that the config no
    longer sets. Afterwards `state["gpus"]` maps each GPU name to {"pstate", "set": {setting: value}}."""
    report = Report()
    state = state if state is not None else {}
    previous: dict[str, dict[str, Any]] = state.get("gpus", {})
    present = present_gpus(backend)
    now: dict[str, dict[str, Any]] = {}
    for gpu in config.get("gpus", []):
        key, settings, pstate = gpu_key(gpu), configured(gpu), gpu.get("pstate", 0)
        index, problem = locate(present, gpu)
        if index is None:
            report.results.append(Result(gpu.get("uuid") or gpu.get("index", "?"), "gpu", "failed", message=problem))
            if key in previous:
                now[key] = previous[key]  # still to be restored once the card is back
            continue
        now[key] = {"pstate": pstate, "set": {name: settings[name] for name in RESTORED if name in settings}}
        for setting, wanted in settings.items():
            report.results.append(apply_setting(backend, index, setting, wanted, pstate))
    for key, entry in previous.items():
        gone = [name for name in entry.get("set", {}) if name not in now.get(key, {}).get("set", {})]
        if not gone:
            continue
        index, _problem = locate(present, _name_of(key))
        if index is None:  # the card is away: the duty to restore stays until it is back
            kept = now.setdefault(key, {"pstate": entry.get("pstate", 0), "set": {}})
            kept["set"].update({name: entry["set"][name] for name in gone})
            continue
        for setting in gone:
            report.results.append(_restore(backend, index, setting, entry.get("pstate", 0)))
    state["gpus"] = {key: entry for key, entry in now.items() if entry["set"]}
    return report


def _name_of(key: str) -> dict[str, Any]:
    if key.startswith("index:"):
        return {"index": int(key.split(":", 1)[1])}
    return {"uuid": key} if key.upper().startswith("GPU-") else {"pci_bus_id": key}


def _restore(backend: Backend, index: int, setting: str, pstate: int) -> Result:
    try:
        default = restore_value(backend, index, setting)
    except (Unsupported, Failure) as exc:
        return Result(index, setting, "failed", message=f"no longer configured, but its default is unknown: {exc}")
    result = apply_setting(backend, index, setting, default, pstate)
    if result.status in ("applied", "unchanged"):
        result.status = "restored"
        result.message = "no longer configured: back to the default"
    return result


def reset(backend: Backend, config: dict[str, Any]) -> Report:
    """Default power limit and zero offsets on every GPU present (persistence is left to its daemon)."""
    report = Report()
    pstates = {index: gpu.get("pstate", 0) for index, gpu in by_index(backend, config).items()}
    for index in range(backend.count()):
        for setting in RESTORED:
            report.results.append(_restore(backend, index, setting, pstates.get(index, 0)))
    return report


def by_index(backend: Backend, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The config entry of each GPU present, found by UUID, PCI bus id or index."""
    present = present_gpus(backend)
    found = {}
    for gpu in config.get("gpus", []):
        index, _problem = locate(present, gpu)
        if index is not None:
            found[index] = gpu
    return found


def status(backend: Backend, config: dict[str, Any]) -> list[str]:
    entries = by_index(backend, config)
    lines = []
    for index in range(backend.count()):
        gpu = entries.get(index, {})
        pstate = gpu.get("pstate", 0)
        lines.append(f"gpu{index} {backend.name(index)} {backend.uuid(index)}")
        for setting in SETTINGS:
            try:
                current: Any = _read(backend, index, setting, pstate)
            except Unsupported:
                current = "unsupported"
            except Failure as exc:
                current = f"error ({exc})"
            wanted = gpu.get(setting)
            lines.append(f"  {setting:<28} current {current!s:<12} configured {'-' if wanted is None else wanted}")
    return lines


def _success_lines(ok: bool) -> list[str]:
    return [
        "# HELP llmrig_gpu_tuning_success 1 when the last llmrig-gpu-tuning run set and read back every value.\n",
        "# TYPE llmrig_gpu_tuning_success gauge\n",
        f"llmrig_gpu_tuning_success {int(ok)}\n",
    ]


def textfile(backend: Backend | None, config: dict[str, Any], ok: bool = True) -> str:
    """The current power limit and clock offsets of every GPU and whether the run succeeded, as Prometheus
    text exposition. Without a backend (no driver, or NVML failed) only the success line: no old values."""
    if backend is None:
        return "".join(_success_lines(ok))
    pstates = {index: gpu.get("pstate", 0) for index, gpu in by_index(backend, config).items()}
    power, offsets = [], []
    for index in range(backend.count()):
        pstate = pstates.get(index, 0)
        try:
            power.append(f'llmrig_gpu_power_limit_watts{{gpu="{index}"}} {backend.get_power_limit_w(index):g}')
        except Unsupported:
            pass
        except Failure:
            ok = False
        for setting, clock in CLOCKS.items():
            try:
                current = _read(backend, index, setting, pstate)
            except Unsupported:
                continue
            except Failure:
                ok = False
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
            *_success_lines(ok),
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
            raise Failure(str(exc)) from exc

    def _handle(self, index: int) -> Any:
        return self._call(self.nvml.nvmlDeviceGetHandleByIndex, index)

    @staticmethod
    def _text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def count(self) -> int:
        return int(self._call(self.nvml.nvmlDeviceGetCount))

    def name(self, index: int) -> str:
        return self._text(self._call(self.nvml.nvmlDeviceGetName, self._handle(index)))

    def uuid(self, index: int) -> str:
        return self._text(self._call(self.nvml.nvmlDeviceGetUUID, self._handle(index)))

    def pci_bus_id(self, index: int) -> str:
        info = self._call(self.nvml.nvmlDeviceGetPciInfo, self._handle(index))
        return self._text(info.busId)

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


def load_state(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        print(f"llmrig-gpu-tuning: {path} is unreadable ({exc}); starting a new record", flush=True)
        return {}
    return state if isinstance(state, dict) else {}


def save_state(path: str, state: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


def run(command: str, backend: Backend, config: dict[str, Any], state_path: str) -> tuple[Report | None, list[str]]:
    """One command; the report (None for status) and the lines to print."""
    if command == "status":
        return None, status(backend, config)
    if command == "apply":
        state = load_state(state_path)
        report = apply(backend, config, state)
        save_state(state_path, state)
    else:
        report = reset(backend, config)
        save_state(state_path, {"gpus": {}})
    lines = [result.line() for result in report.results]
    return report, lines or [f"llmrig-gpu-tuning: no settings configured; nothing to {command}"]


def main(argv: list[str] | None = None, backend_factory: Any = PynvmlBackend) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["status", "apply", "reset"])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--state", default=DEFAULT_STATE, help="record of what apply set (restored when unset)")
    parser.add_argument("--textfile", help="afterwards, write the values read back here (Prometheus text format)")
    opts = parser.parse_args(argv)
    with open(opts.config, encoding="utf-8") as handle:
        config = json.load(handle)
    backend = None
    ok = False
    try:
        backend = backend_factory()
        report, lines = run(opts.command, backend, config, opts.state)
        ok = report is None or report.ok
        for result, line in zip(report.results if report else [], lines, strict=False):
            print(line, file=sys.stdout if result.status != "failed" else sys.stderr, flush=True)
        if report is None or not report.results:
            print("\n".join(lines), flush=True)
        return 0 if ok else 1
    except NoDriver as exc:
        print(f"llmrig-gpu-tuning: {exc}; nothing to {opts.command}", flush=True)
        ok = True
        return 0
    except Failure as exc:
        print(f"llmrig-gpu-tuning: NVML error: {exc}; {opts.command} stopped", file=sys.stderr, flush=True)
        backend = None
        return 1
    finally:
        if opts.textfile:
            try:
                text = textfile(backend, config, ok)
            except Failure as exc:
                print(f"llmrig-gpu-tuning: NVML error while reading back: {exc}", file=sys.stderr, flush=True)
                text = textfile(None, config, False)
            write_textfile(opts.textfile, text)


if __name__ == "__main__":
    sys.exit(main())
