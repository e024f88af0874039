"""FlashAttention-4 (inertia's `fa4` kernel) against PyTorch's SDPA on the GPU, and attention-table rows from
a suite run.

    PYTHONPATH=. python benchmarks/fa4_check.py --json fa4_check.json
    PYTHONPATH=. python benchmarks/fa4_check.py --rows suite_h200_fa4.json --json rows.json

The check calls the kernel as a run does (`core.fa4.FlashAttention4`, the `inertia::fa4_attention` op) on
random bf16 q/k/v of full-size self-attention calls, and reports per shape: whether the kernel takes the
call, the max abs difference to SDPA's output, each one's relative L2 to a float32 SDPA reference, and
milliseconds and TFLOP/s of each (CUDA events, median of 5 after 2 warm-ups); then that
`torch.compile(fullgraph=True)` keeps the op as one node (1 graph, output equal to the eager op's).
Where FA4 cannot run it writes the reason and nothing else.

`--rows` turns a `benchmarks/suite.py` JSON into rows for `inertia/core/attention_table.json`: the eager
`all` variant (the suite's attention backend) and `all_fa4` of each configuration, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import full_size  # noqa: E402
from inertia.core import fa4  # noqa: E402
from inertia.core.devices import cuda_capability  # noqa: E402
from inertia.core.io import write_json  # noqa: E402

#: (batch, sequence, heads, head_dim) of one self-attention call at the benchmark shapes.
SHAPES = {
    "wan2.1-t2v-1.3b 480x832x81": (1, 32760, 12, 128),
    "cogvideox-5b 480x720x49 (226 text + 17,550 video tokens)": (1, 17776, 48, 64),
}


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (query, key, value))).transpose(1, 2)


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _milliseconds(call, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def check(device: str) -> dict:
    """FA4 against SDPA at each of `SHAPES`, and inside a compiled graph; the reason where it cannot run."""
    refused = fa4.gpu_refusal(device, cuda_capability(device))
    if refused:
        return {"skipped": f"fa4 {refused}"}
    kernel = fa4.FlashAttention4(cuda_capability(device)[0])
    generator = torch.Generator(device).manual_seed(0)
    report: dict = {"gpu": torch.cuda.get_device_name(device), "capability": list(cuda_capability(device)), "shapes": {}}
    for name, shape in SHAPES.items():
        query, key, value = (torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16) for _ in range(3))
        out, sdpa = kernel(query, key, value), _sdpa(query, key, value)
        reference = _sdpa(query.float(), key.float(), value.float())
        flop = 4 * shape[0] * shape[2] * shape[1] ** 2 * shape[3]
        ms_fa4 = _milliseconds(lambda: kernel(query, key, value))
        ms_sdpa = _milliseconds(lambda: _sdpa(query, key, value))
        report["shapes"][name] = {
            "shape": list(shape), "refusal": kernel.refusal(query, key, value, None),
            "max_abs_diff_vs_sdpa": float((out.float() - sdpa.float()).abs().max()),
            "relative_l2_vs_float32": {"fa4": round(_relative_l2(out, reference), 6),
                                       "sdpa": round(_relative_l2(sdpa, reference), 6)},
            "ms": {"fa4": round(ms_fa4, 3), "sdpa": round(ms_sdpa, 3)},
            "tflops": {"fa4": round(flop / ms_fa4 / 1e9, 1), "sdpa": round(flop / ms_sdpa / 1e9, 1)},
        }
        print(name, report["shapes"][name], flush=True)
    report["compiled"] = _compiled(kernel, device)
    print("compiled", report["compiled"], flush=True)
    return report


def _compiled(kernel: fa4.FlashAttention4, device: str) -> dict:
    from torch._dynamo.utils import counters

    query, key, value = (torch.randn(1, 4096, 12, 128, device=device, dtype=torch.bfloat16) for _ in range(3))
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    compiled = torch.compile(lambda q, k, v: kernel(q, k, v) * 2, fullgraph=True)
    out = compiled(query, key, value)
    return {"graphs": counters["stats"]["unique_graphs"] - graphs,
            "equal_to_eager": bool(torch.equal(out, kernel(query, key, value) * 2))}


def table_rows(suite: dict) -> list[dict]:
    """attention_table.json rows from a suite JSON: its eager `all` (the suite's backend) and `all_fa4`."""
    gpu = (suite.get("gpu") or "").removeprefix("NVIDIA ").split(" ")[0]
    rows = []
    for key, entry in suite["configs"].items():
        name = key.split("@")[0]
        shape = entry.get("model", {}).get("shape", {})
        for variant, backend in (("all", suite["attention"]), ("all_fa4", "fa4")):
            seconds = entry.get("variants", {}).get(variant, {}).get("s_per_step_median")
            if seconds is None:
                continue
            source = (f"{name} {shape.get('height')}x{shape.get('width')}x{shape.get('frames')}, relax+decay+unlearn, "
                      f"eager, inertia's loop (benchmarks/suite.py {variant}), torch {suite['torch']}, diffusers "
                      f"{suite['diffusers']}, flash-attn-4 {suite.get('flash_attn_4')}, {suite['started'][:10]}")
            rows.append({"gpu": gpu, "backbone": full_size.load(name)["backbone"], "backend": backend,
                         "s_per_step": seconds, "source": source})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="results file")
    parser.add_argument("--rows", type=Path, help="a benchmarks/suite.py JSON: write attention_table.json rows from it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.rows:
        rows = table_rows(json.loads(args.rows.read_text(encoding="utf-8")))
        write_json(args.json, {"measurements": rows})
        print(json.dumps(rows, indent=1))
        return 0
    return write_report(args.json, check(args.device))


def write_report(path: Path, report: dict) -> int:
    """Write a kernel check's report; print why it was skipped, where it was."""
    write_json(path, report)
    if "skipped" in report:
        print(report["skipped"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
