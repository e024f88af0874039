"""Where a denoising step's GPU time goes: one suite variant under `torch.profiler`, summarised.

    PYTHONPATH=. python benchmarks/profile_step.py --only wan2.1-t2v-1.3b --variant fast --json profile.json

Builds the configuration as `benchmarks/suite.py` does (full size, random bf16 weights), runs the variant
(`suite.run_inertia`: warm-up steps, which compile a fast variant, then the profiled ones) and writes, per profiled run: the GPU kernel
time by kind (attention, GEMM, the rest: elementwise, norms, copies), the top kernels by total CUDA time
with their call counts, and the host-side synchronisations (cudaStreamSynchronize, cudaDeviceSynchronize,
blocking memcpys), whose count per step says whether the CPU ever waits for the GPU mid-step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import suite  # noqa: E402
from inertia.core import performance  # noqa: E402
from inertia.core.io import write_json  # noqa: E402
from inertia.core.runtime import attention_backend, quiet_libraries  # noqa: E402

#: Kernel kinds by substrings of CUDA kernel names (first match wins).
KINDS = (("attention", ("flash", "fmha", "attention", "sdpa", "cudnn_generated", "sm90_xmma_fprop", "fa4", "FlashAttention")),
         ("gemm", ("gemm", "cutlass", "xmma", "sm90_", "nvjet", "matmul", "_mm_", "scaled_mm")),
         ("copy", ("copy", "Memcpy", "memcpy", "fill"))
         )
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy ", "cudaMemcpyAsync")


def kind(name: str) -> str:
    lowered = name.lower()
    for label, needles in KINDS:
        if any(n.lower() in lowered for n in needles):
            return label
    return "other (elementwise, norms, reductions)"


def summarise(prof, steps: int) -> dict:
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in kernels)
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[kind(e.key)] = by_kind.get(kind(e.key), 0.0) + e.self_device_time_total
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:30]
    host = {e.key: e.count for e in events if any(e.key.startswith(s.strip()) for s in SYNCS)}
    return {
        "profiled_steps": steps,
        "gpu_ms_per_step": round(total / 1000 / steps, 2),
        "gpu_ms_per_step_by_kind": {k: round(v / 1000 / steps, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"name": e.key[:160], "kind": kind(e.key), "ms_per_step": round(e.self_device_time_total / 1000 / steps, 3),
                         "calls_per_step": round(e.count / steps, 1)} for e in top],
        "host_sync_calls": host,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", required=True, help="one configuration of benchmarks/configs")
    parser.add_argument("--variant", action="append", required=True, help="suite variant(s) to profile (repeat)")
    parser.add_argument("--warmup", type=int, default=2, help="steps run before profiling (the first compiles)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    quiet_libraries()
    device = torch.device(args.device)
    performance.COMPILE_BACKEND = args.compile_backend
    family, bench, described = suite.build_bench(args.only, args.tiny, None, device)
    report: dict = {"configuration": args.only, "model": described, "variants": {}}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for variant in args.variant:
        state = None
        kernel, refused = suite.variant_kernel(variant, device)
        if refused:
            report["variants"][variant] = {"skipped": refused}
            continue
        if variant.startswith("fast"):
            torch._dynamo.reset()
            state = performance.apply_performance(list(bench.models.values()),
                                                  "float8" if variant.startswith("fast_float8") else "fast")
        with torch.inference_mode(), attention_backend("native"):
            suite.run_inertia(family, bench, args.warmup, device, variant, state, kernel)  # compiles, warms caches
            with profile(activities=activities) as prof:
                timed = suite.run_inertia(family, bench, args.steps, device, variant, state, kernel)
        entry = summarise(prof, args.steps)
        entry["s_per_step"] = [round(t, 4) for t in timed["times"]]
        report["variants"][variant] = entry
        print(variant, {k: entry[k] for k in ("s_per_step", "gpu_ms_per_step", "gpu_ms_per_step_by_kind", "host_sync_calls")},
              flush=True)
        for row in entry["top_kernels"][:15]:
            print(f"   {row['ms_per_step']:8.2f} ms x{row['calls_per_step']:6.1f}  {row['kind'][:9]:9s} {row['name'][:110]}")
        write_json(args.json, report)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
