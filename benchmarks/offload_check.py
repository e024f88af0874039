"""GPU check of `--offload model|group` through inertia's own run path (what the CPU tests cannot reach: weights
really moving between the CPU and the GPU, CUDA-stream prefetching, the decode and text encoding on the run's
device while their components sit on the CPU): every backbone's built-in model, plain and with each mode, with
an attention intervention (unlearn) on; the frames' max abs difference against the plain run, the record's
`memory` entry, peak GPU memory and wall seconds.

    PYTHONPATH=. python benchmarks/offload_check.py --json benchmarks/results/offload_check.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from inertia.core.config import PluginSpec, RunConfig  # noqa: E402
from inertia.core.io import write_json  # noqa: E402
from inertia.core.runtime import quiet_libraries  # noqa: E402
from inertia.run import ModelCache, generate, plan_run  # noqa: E402

RUNS = {"wan": {}, "wan-a14b": dict(model="builtin:wan22-a14b-t2v-tiny-v1", height=32, width=48, num_frames=9, steps=4),
        "cogvideox": {}, "hunyuan": {}, "hunyuan15": {}, "framepack": {}}
UNLEARN = PluginSpec.parse("unlearn:sigma_blur=0.6,tokens=video")


def check(name: str, fields: dict, device: str) -> dict:
    backbone = name.split("-")[0]
    # vae_tiling off: the built-in CogVideoX VAE's tiles are too small to tile correctly (offloading's auto turns it on)
    config = RunConfig(backbone=backbone, device=device, interventions=[UNLEARN], vae_tiling="off",
                       **{"steps": 3, **fields})
    out: dict = {}
    plain = None
    for mode in (None, "model", "group"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = generate(plan_run(config.model_copy(update={"offload": mode})), ModelCache(), progress=False)
        torch.cuda.synchronize()
        row = {"seconds": round(time.perf_counter() - started, 2),
               "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1), "memory": result.memory}
        if plain is None:
            plain = result.frames
        else:
            row["max_abs_diff_vs_plain"] = float(np.abs(result.frames - plain).max())
        out[mode or "plain"] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    quiet_libraries()
    report: dict = {"gpu": torch.cuda.get_device_name(torch.device(args.device)), "torch": torch.__version__, "runs": {}}
    for name, fields in RUNS.items():
        try:
            report["runs"][name] = check(name, fields, args.device)
        except Exception as error:  # a harness: record what broke and go on
            report["runs"][name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
        print(name, report["runs"][name], flush=True)
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
