#!/usr/bin/env python3
"""GPU proof step: the VRAM planner's figure for each proof model against what nvidia-smi showed while the
model was loaded (measure.py's gpu_memory_mib_loaded minus idle_gpu_memory_mib, summed over the GPUs).

Target (issue 5): within 3 % or 256 MiB, whichever is larger. Prints a table and writes JSON; exits 1 when a
model misses the target, 0 otherwise (also when there is no GPU: nothing to compare).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(REPO / "tests/gpu"))

from ansible_collections.llmrig.serving.plugins.module_utils import _fleet, _gguf, _plan  # noqa: E402
from measure import nvidia_smi  # noqa: E402


def gpus() -> list[dict]:
    return [{"name": name, "memory_mib": int(total)} for name, total in nvidia_smi("name,memory.total")]


def within_target(planned: float, used: float) -> bool:
    return abs(planned - used) <= max(0.03 * used, 256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vars", type=Path, required=True, help="the proof's vars.json (fleet)")
    parser.add_argument("--proof", type=Path, required=True, help="measure.py's JSON")
    parser.add_argument("--overhead-mib", type=int, default=600)
    parser.add_argument("--json", type=Path, required=True)
    opts = parser.parse_args(argv)
    devices = gpus()
    if not devices:
        print("no GPU: nothing to compare")
        return 0
    for device in devices:
        device["overhead_mib"] = opts.overhead_mib
    entries = _fleet.validate_fleet(json.loads(opts.vars.read_text())["llmrig_planner_fleet"])
    metas = _gguf.load_metas(entries, None)
    planned = _plan.Devices([_plan.Gpu.from_dict(device) for device in devices], margin_mib=0)
    proof = json.loads(opts.proof.read_text())
    idle = sum(proof["idle_gpu_memory_mib"])
    rows = []
    for index, entry in enumerate(entries):
        plan = _plan.plan_entry(index, entry, metas, planned).to_dict()
        loaded = proof["gpu_memory_mib_loaded"].get(entry["name"])
        used = sum(loaded) - idle if loaded else None
        rows.append(
            {
                "model": entry["name"],
                "context": entry["context"],
                "planned_mib": plan["total_mib"],
                "used_mib": used,
                "error_mib": None if used is None else round(plan["total_mib"] - used, 1),
                "error_pct": None if used is None else round(100 * (plan["total_mib"] - used) / used, 2),
                "within_target": used is not None and within_target(plan["total_mib"], used),
                "devices": plan["devices"],
            }
        )
    for row in rows:
        print(
            f"{row['model']:<14} ctx {row['context']:>7}  planned {row['planned_mib']:>9.0f} MiB  "
            f"nvidia-smi {row['used_mib']!s:>7} MiB  error {row['error_mib']!s:>7} MiB ({row['error_pct']} %)  "
            + ("within target" if row["within_target"] else "MISSES the target")
        )
    opts.json.write_text(json.dumps({"gpus": devices, "idle_mib": idle, "models": rows}, indent=1) + "\n")
    return 0 if all(row["within_target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
