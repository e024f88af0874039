"""Sweep throughput with the Ray executor on the GPUs of one host, against the local executor.

Runs the same part of a sweep (default: every 16th batch of the test-bed ablation, 1,152 runs in
batches of 64) once per executor setting, each into a fresh directory: `local` (this process, one
GPU), `ray:1` (one actor, one GPU), `ray:2` (one actor per GPU on a 2-GPU host), `ray:N` (N actors
sharing the GPUs). For each: wall time of the whole sweep (Ray's start-up and model loads
included) and the steady throughput between the first and the last finished batch (runs/s); then
the throughput ratios against `ray:1` and `local`, and whether each results table equals the local
one value for value (the stable columns of `ResultStore.results`, as the CPU tests compare them).

    PYTHONPATH=. python benchmarks/ray_sweep.py --out benchmarks/results/ray_sweep_h200x2.json

scripts/ray_gpu_sweep.sh installs Ray from the parts of .whl/ray (scripts/repack_ray.sh) and runs this.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from inertia.core.io import write_json
from inertia.sweep.driver import Shard, run_sweep
from inertia.sweep.store import DB_NAME, ResultStore


class Clock:
    """A stream for the sweep's progress lines: the time each finished run was reported."""

    def __init__(self):
        self.times: list[float] = []

    def write(self, text: str) -> int:
        if text.startswith("["):  # "[ 37/540] ..." : one finished run
            self.times.append(time.perf_counter())
        return len(text)

    def flush(self) -> None:
        pass


def measure(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    executor, _, workers = setting.partition(":")
    out = Path(args.work) / setting.replace(":", "-")
    shutil.rmtree(out, ignore_errors=True)
    clock = Clock()
    started = time.perf_counter()
    result = run_sweep(Path(args.sweep), out=out, executor=executor, workers=int(workers) if workers else None,
                       batch_size=args.batch_size, shard=Shard.parse(args.shard), stream=clock, retries=1)
    wall = time.perf_counter() - started
    times = clock.times
    first_batch = sum(1 for t in times if t - times[0] < 1e-3) if times else 0  # runs reported with the first batch
    span = times[-1] - times[0] if len(times) > 1 else math.nan
    return {
        "setting": setting, "out": str(out), "runs": len(times), "failed": len(result.failed),
        "model_loads": result.model_loads, "wall_s": round(wall, 3),
        "throughput_runs_per_s": round(len(times) / wall, 3),
        "steady_runs_per_s": round((len(times) - first_batch) / span, 3) if span and span > 0 else None,
    }


def table(out: str) -> list[dict[str, Any]]:
    store = ResultStore(Path(out) / DB_NAME)
    try:
        return store.results(stable=True)
    finally:
        store.close()


def compare(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows equal, and the largest difference of a numeric value where rows differ only in `value`."""
    differ = [(a, b) for a, b in zip(reference, other) if a != b]
    values = [abs(a["value"] - b["value"]) for a, b in differ
              if {k: v for k, v in a.items() if k != "value"} == {k: v for k, v in b.items() if k != "value"}
              and a["value"] is not None and b["value"] is not None]
    return {"rows": len(reference), "rows_other": len(other), "identical": len(reference) == len(other) and not differ,
            "rows_differing": len(differ) + abs(len(reference) - len(other)),
            "max_abs_value_difference": max(values, default=0.0), "differing_beyond_value": len(differ) - len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="examples/testbed_ablation.yaml")
    parser.add_argument("--shard", default="0/16", help="the part of the sweep to run (K/N: every N-th batch)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--settings", default="local,ray:1,ray:2,ray:6",
                        help="comma-separated: local, ray:N (N actors; one per GPU when N = GPUs)")
    parser.add_argument("--work", default="outputs/ray_sweep_benchmark", help="sweep directories (replaced)")
    parser.add_argument("--out", default="benchmarks/results/ray_sweep.json")
    args = parser.parse_args()

    import torch

    runs = [measure(setting, args) for setting in args.settings.split(",")]
    by = {run["setting"]: run for run in runs}
    for run in runs:
        for base in ("ray:1", "local"):
            if base in by and run["setting"] != base:
                for key in ("steady_runs_per_s", "throughput_runs_per_s"):
                    if run[key] and by[base][key]:
                        run[f"{key.split('_')[0]}_vs_{base.replace(':', '')}"] = round(run[key] / by[base][key], 3)
        if "local" in by and run["setting"] != "local":
            run["table_vs_local"] = compare(table(by["local"]["out"]), table(run["out"]))
    payload = {
        "benchmark": "ray_sweep", "sweep": args.sweep, "shard": args.shard, "batch_size": args.batch_size,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch": torch.__version__, "results": runs,
    }
    write_json(Path(args.out), payload)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
