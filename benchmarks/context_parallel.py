"""Seconds per denoising step of one Wan video on 1 and N GPUs (diffusers' Ulysses context parallelism),
with and without unlearn, and how far the N-GPU latents are from the 1-GPU ones.

Started by torchrun, once per GPU count; each start adds its entries to one JSON file:

    torchrun --standalone --nproc-per-node 1 benchmarks/context_parallel.py --json benchmarks/results/cp.json
    torchrun --standalone --nproc-per-node 2 benchmarks/context_parallel.py --json benchmarks/results/cp.json

Random bf16 weights of the Wan 2.1 1.3B (or 14B) transformer configuration, made from one seed on
every rank; latents and text embeddings from one seed; true CFG (two forwards per step) through
inertia's own loop and Wan backbone (`core.sampling.sample`), so the hooks and the context-parallel
path are the ones `inertia run --context-parallel N` takes. The text encoder and VAE are not part
of a step and are not built. Per variant: the median step time after `--warmup` steps, peak GPU
memory, and for N > 1 the max abs and relative L2 difference of the final latents against the
1-GPU run of the same variant (saved by rank 0 under `--tensors`). `--device cpu --model tiny`
runs the same code on CPU ranks (gloo): a check that it works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from wan_loop import TEXT_TOKENS, WAN_1_3B

MODELS = {
    "1.3b": WAN_1_3B,
    "14b": {**WAN_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
    "tiny": {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2,
             "text_dim": 32, "rope_max_seq_len": 32},
}


def build(model: str, device: str, dtype: torch.dtype):
    """The transformer from one seed (identical on every rank), inside a WanPipeline container."""
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    if device == "cuda":
        torch.cuda.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(**MODELS[model]).to(dtype).eval()
    for name, module in transformer.named_modules():  # as from_pretrained(dtype=...) keeps them
        if any(part in transformer._keep_in_fp32_modules for part in name.split(".")):
            module.float()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)


def run_variant(pipe, device: str, size: tuple[int, int, int], unlearn: bool, steps: int):
    """`steps` CFG steps through inertia's loop; per-step seconds and the final latents."""
    from inertia.backbones.wan import WanBackbone, WanJob
    from inertia.core.attention import AttentionHooks
    from inertia.core.config import RunConfig
    from inertia.core.intervention import InterventionStack
    from inertia.core.sampling import sample
    from inertia.core.setup import RunSetup
    from inertia.interventions.unlearn import Unlearn, UnlearnParams

    height, width, frames = size
    transformer = pipe.transformer
    text_dim = transformer.config.text_dim
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, generator=generator, device=device)
    cond, uncond = (torch.randn(1, TEXT_TOKENS, text_dim, generator=generator, device=device).to(transformer.dtype)
                    for _ in range(2))
    backbone = WanBackbone(pipe, torch.device(device), smoke_test=False)
    pipe.scheduler.set_timesteps(steps, device=device)
    job = WanJob(cond, uncond, latents, None, None, steps)
    setup = RunSetup(RunConfig(), "wan", {"cfg": 5.0}, "cfg", ("cfg",), frozenset({"noisy"}), True)
    interventions = [Unlearn(UnlearnParams(sigma_blur=0.6))] if unlearn else []
    stack = InterventionStack(interventions, setup)
    hooks = AttentionHooks(stack.attention_transforms, backbone.num_attention_layers)
    marks: list[float] = []
    original = backbone.scheduler_step

    def marked(*args):
        out = original(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return out

    backbone.scheduler_step = marked
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode(), backbone.hooked_attention(hooks):
        sample(backbone, job, stack, setup.guidance, progress=False, hooks=hooks)
    return [b - a for a, b in zip([start, *marks[:-1]], marks)], job.latents.float().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="1.3b")
    parser.add_argument("--size", default="480x832x81", help="HEIGHTxWIDTHxFRAMES")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/context_parallel.json"))
    parser.add_argument("--tensors", type=Path, default=Path("runs/context_parallel"), help="rank 0's final latents")
    args = parser.parse_args()

    from inertia.core import context_parallel
    from inertia.core.io import write_json

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    size = tuple(int(part) for part in args.size.split("x"))
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if world > 1:
        context_parallel.join(args.device)
    pipe = build(args.model, args.device, dtype)
    if world > 1:
        context_parallel.enable([pipe.transformer], world, args.device)
    entries = {}
    for unlearn in (False, True):
        name = f"{args.model}-{args.size}-{'unlearn' if unlearn else 'plain'}"
        times, latents = run_variant(pipe, args.device, size, unlearn, args.warmup + args.steps)
        entry = {"gpus": world, "model": args.model, "size": args.size, "unlearn": unlearn,
                 "s_per_step": round(statistics.median(times[args.warmup:]), 4), "step_times": [round(t, 4) for t in times],
                 "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None}
        if rank == 0:
            args.tensors.mkdir(parents=True, exist_ok=True)
            torch.save(latents, args.tensors / f"{name}-world{world}.pt")
            single = args.tensors / f"{name}-world1.pt"
            if world > 1 and single.is_file():
                reference = torch.load(single)
                entry["max_abs_diff_vs_1"] = (latents - reference).abs().max().item()
                entry["rel_l2_vs_1"] = ((latents - reference).norm() / reference.norm()).item()
        entries[f"{name}-world{world}"] = entry
    if rank == 0:
        results = json.loads(args.json.read_text()) if args.json.is_file() else {"benchmark": "context_parallel"}
        results.setdefault("device", torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu")
        results["torch"] = torch.__version__
        results.setdefault("results", {}).update(entries)
        for key, entry in results["results"].items():  # speed-up against the 1-GPU entry of the same variant
            single = results["results"].get(key.rsplit("-world", 1)[0] + "-world1")
            if single and entry["gpus"] > 1:
                entry["speedup_vs_1"] = round(single["s_per_step"] / entry["s_per_step"], 3)
        write_json(args.json, results)
        print(json.dumps(entries, indent=2))


if __name__ == "__main__":
    main()
