"""cuDNN's FP8 attention (inertia's `cudnn_fp8` kernel) against bf16 SDPA and FlashAttention-4 on the GPU.

    PYTHONPATH=. python benchmarks/cudnn_fp8_check.py --json cudnn_fp8_check.json

Per full-size self-attention shape (those of benchmarks/fa4_check.py), on random bf16 q/k/v and on the same
with q scaled by 4 (sharper softmax rows, as trained models have): the relative L2 of each kernel's output
to a float32 SDPA reference, and milliseconds and TFLOP/s (CUDA events, median of 5 after 2 warm-ups) of
SDPA, FA4 where installed, the cuDNN FP8 call alone on quantised inputs, the kernel as a run calls it
(quantise, attend, dequantise) eagerly and inside `torch.compile(fullgraph=True)` (which fuses the
quantisation), with the graphs that compile makes. Where the kernel cannot run it writes the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.fa4_check import SHAPES, _milliseconds, _relative_l2, _sdpa, write_report  # noqa: E402
from inertia.core import cudnn_fp8, fa4  # noqa: E402
from inertia.core.devices import cuda_capability  # noqa: E402


def check(device: str) -> dict:
    refused = cudnn_fp8.gpu_refusal(device, cuda_capability(device))
    if refused:
        return {"skipped": f"cudnn_fp8 {refused}"}
    import cudnn

    kernel = cudnn_fp8.CudnnFp8Attention()
    others = {"sdpa": _sdpa}
    if fa4.gpu_refusal(device, cuda_capability(device)) is None:
        others["fa4"] = fa4.FlashAttention4(cuda_capability(device)[0])
    report: dict = {"gpu": torch.cuda.get_device_name(device), "capability": list(cuda_capability(device)),
                    "cudnn_backend_version": cudnn.backend_version(), "cudnn_frontend": getattr(cudnn, "__version__", None),
                    "torch": torch.__version__, "shapes": {}}
    generator = torch.Generator(device).manual_seed(0)
    for name, shape in SHAPES.items():
        query, key, value = (torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16) for _ in range(3))
        entry: dict = {"shape": list(shape), "refusal": kernel.refusal(query, key, value, None)}
        if entry["refusal"]:
            report["shapes"][name] = entry
            continue
        flop = 4 * shape[0] * shape[2] * shape[1] ** 2 * shape[3]
        accuracy = {}
        for label, q in (("randn", query), ("randn, q x4", query * 4)):
            reference = _sdpa(q.float(), key.float(), value.float())
            accuracy[label] = {"cudnn_fp8": round(_relative_l2(kernel(q, key, value), reference), 6),
                               **{n: round(_relative_l2(call(q, key, value), reference), 6) for n, call in others.items()}}
            del reference
        (q8, dq), (k8, dk), (v8, dv) = (cudnn_fp8.quantize(t) for t in (query, key, value))
        compiled = torch.compile(lambda q, k, v: kernel(q, k, v), fullgraph=True)
        timings = {n: _milliseconds(lambda call=call: call(query, key, value)) for n, call in others.items()}
        timings["cudnn_fp8_call_only"] = _milliseconds(lambda: torch.ops.inertia.cudnn_fp8_attention(q8, k8, v8, dq, dk, dv))
        timings["cudnn_fp8_eager"] = _milliseconds(lambda: kernel(query, key, value))
        timings["cudnn_fp8_compiled"] = _milliseconds(lambda: compiled(query, key, value))
        entry.update(relative_l2_vs_float32=accuracy, ms={k: round(v, 3) for k, v in timings.items()},
                     tflops={k: round(flop / v / 1e9, 1) for k, v in timings.items()},
                     compiled_equals_eager=bool(torch.equal(compiled(query, key, value), kernel(query, key, value))))
        report["shapes"][name] = entry
        print(name, entry, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="results file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    return write_report(args.json, check(args.device))


if __name__ == "__main__":
    sys.exit(main())
