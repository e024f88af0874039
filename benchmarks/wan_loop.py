"""Seconds per denoising step of Wan 2.1 T2V 1.3B (random bf16 weights), stock loop versus inertia's.

Full-size transformer configuration, 480x832 with 81 frames (latents 16x21x60x104, 32,760 tokens),
text 512 x 4096, true CFG (two forwards per step), UniPC flow scheduler. "stock" is the per-step
body of diffusers' WanPipeline (cond forward, uncond forward, combine, scheduler.step); "inertia"
runs the same transformer through `inertia.core.sampling.sample` and the Wan backbone. The text
encoder and VAE are not part of the step and are not built. "inertia_stg" adds STG's third forward
(the conditional pass with layer 8's self-attention skipped) at every step: its cost over "inertia"
should be about one forward (+50% of a two-forward step), a little less since the skipped layer runs
no attention. "inertia_damping" adds reference_damping at every step (frame 0's tokens as the
reference): a 32,760 x 32,760 logit bias (2 GiB in bf16, built once) and the backend's masked kernel.

    PYTHONPATH=. python benchmarks/wan_loop.py --out benchmarks/results/wan_loop.json
    PYTHONPATH=. python benchmarks/wan_loop.py --variants inertia,inertia_stg,inertia_damping \
        --steps 4 --warmup 1 --out benchmarks/results/wan_loop_stg.json

Reports the median of the timed steps, peak GPU memory, and model FLOP utilisation against the
GPU's dense bf16 peak (989 TFLOP/s for an H100 SXM, by the FLOP count in `step_flops`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
LATENT_SHAPE = (1, 16, 21, 60, 104)
TEXT_TOKENS = 512
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def step_flops(layers=30, dim=1536, ffn=8960, tokens=21 * 30 * 52, text=TEXT_TOKENS) -> float:
    """Matrix-multiply FLOPs of one CFG step (two forwards): projections, FFN and attention."""
    linear = 2 * tokens * (6 * dim * dim + 2 * dim * ffn) + 2 * text * 2 * dim * dim
    attention = 4 * tokens * tokens * dim + 4 * tokens * text * dim
    return 2 * layers * (linear + attention)


def build(device: torch.device):
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**WAN_1_3B).to(device, torch.bfloat16).eval()
    # As from_pretrained(dtype=bfloat16) does: the model's precision-sensitive modules stay float32.
    for name, module in transformer.named_modules():
        if any(part in transformer._keep_in_fp32_modules for part in name.split(".")):
            module.float()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
    return pipe


def timed(fn, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def stock_steps(pipe, latents, cond, uncond, guidance: float, steps: int) -> list[float]:
    """WanPipeline's denoising-loop body, step for step."""
    scheduler, transformer = pipe.scheduler, pipe.transformer
    scheduler.set_timesteps(steps, device=latents.device)
    scheduler.set_begin_index(0)
    state = {"latents": latents.clone(), "i": 0}

    def one_step():
        t = scheduler.timesteps[state["i"]]
        x = state["latents"].to(torch.bfloat16)
        timestep = t.expand(x.shape[0])
        noise_pred = transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=cond, return_dict=False)[0]
        noise_uncond = transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=uncond, return_dict=False)[0]
        noise_pred = noise_uncond + guidance * (noise_pred - noise_uncond)
        state["latents"] = scheduler.step(noise_pred, t, state["latents"], return_dict=False)[0]
        state["i"] += 1

    return timed(one_step, steps)


def inertia_steps(pipe, latents, cond, uncond, guidance: float, steps: int, interventions,
                  reference_frame: bool = False) -> list[float]:
    """The same steps through inertia's sampling loop; per-step times from a wrapped scheduler_step.
    `reference_frame`: the token layout marks latent frame 0 as the conditioning frame, as an
    image-to-video run's does (the model input stays text-to-video's: only attention biases see it)."""
    from inertia.backbones.wan import WanBackbone, WanJob, wan_token_layout
    from inertia.core.attention import AttentionHooks
    from inertia.core.config import RunConfig
    from inertia.core.intervention import InterventionStack
    from inertia.core.sampling import sample
    from inertia.core.setup import RunSetup

    backbone = WanBackbone(pipe, latents.device, smoke_test=False)
    pipe.scheduler.set_timesteps(steps, device=latents.device)
    job = WanJob(cond, uncond, latents.clone(), None, None, steps)
    roles = frozenset({"noisy", "condition"} if reference_frame else {"noisy"})
    setup = RunSetup(RunConfig(), "wan", {"cfg": guidance}, "cfg", ("cfg",), roles, True)
    stack = InterventionStack(interventions, setup)
    hooks = AttentionHooks(stack.attention_transforms, backbone.num_attention_layers, stack.attention_biases)
    if reference_frame:
        backbone.token_layout = lambda job, section: wan_token_layout(pipe.transformer, section.latents.shape, True)
    marks: list[float] = []
    original = backbone.scheduler_step

    def marked(*args):
        out = original(*args)
        torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return out

    backbone.scheduler_step = marked
    torch.cuda.synchronize()
    start = time.perf_counter()
    with backbone.hooked_attention(hooks):
        sample(backbone, job, stack, setup.guidance, progress=False, hooks=hooks)
    return [b - a for a, b in zip([start, *marks[:-1]], marks)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attention", default="native")
    parser.add_argument("--variants", default=None, help="comma-separated subset to time (default: all); stock "
                                                            "is always timed twice, first and last")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from diffusers.models.attention_dispatch import attention_backend

    from inertia.interventions.guidance import Decay, DecayParams, Relax, RelaxParams
    from inertia.interventions.reference_damping import ReferenceDamping, ReferenceDampingParams
    from inertia.interventions.stg import Stg, StgParams
    from inertia.interventions.unlearn import Unlearn, UnlearnParams

    device = torch.device("cuda")
    pipe = build(device)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(LATENT_SHAPE, generator=generator, device=device, dtype=torch.float32)
    cond = torch.randn(1, TEXT_TOKENS, 4096, generator=generator, device=device, dtype=torch.bfloat16)
    uncond = torch.randn(1, TEXT_TOKENS, 4096, generator=generator, device=device, dtype=torch.bfloat16)
    total = args.warmup + args.steps
    variants = {
        "stock": lambda: stock_steps(pipe, latents, cond, uncond, 5.0, total),
        "inertia": lambda: inertia_steps(pipe, latents, cond, uncond, 5.0, total, []),
        "inertia_relax_decay": lambda: inertia_steps(
            pipe, latents, cond, uncond, 5.0, total, [Relax(RelaxParams(beta=0.75)), Decay(DecayParams(p=0.7))]
        ),
        "inertia_unlearn": lambda: inertia_steps(
            pipe, latents, cond, uncond, 5.0, total, [Unlearn(UnlearnParams(sigma_blur=0.6, tokens="video"))]
        ),
        "inertia_stg": lambda: inertia_steps(pipe, latents, cond, uncond, 5.0, total, [Stg(StgParams(layers=[8]))]),
        "inertia_damping": lambda: inertia_steps(
            pipe, latents, cond, uncond, 5.0, total,
            [ReferenceDamping(ReferenceDampingParams(scale=0.5, end_step=total))], reference_frame=True,
        ),
    }
    chosen = ["stock", *[v for v in (args.variants.split(",") if args.variants else variants) if v != "stock"]]
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; allowed: {', '.join(variants)}")
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    results = {}
    with torch.inference_mode(), attention_backend(args.attention):
        for name in [*chosen, "stock"]:  # stock twice: its spread tells the noise level
            torch.cuda.reset_peak_memory_stats()
            times = variants[name]()[args.warmup:]
            median = statistics.median(times)
            key = name if name not in results else f"{name}_repeat"
            results[key] = {
                "s_per_step_median": round(median, 4),
                "s_per_step_all": [round(t, 4) for t in times],
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "mfu": round(step_flops() / median / 1e12 / peak, 3) if peak else None,
            }
            print(f"{key:22s} {median:.4f} s/step  peak {results[key]['peak_gib']} GiB  MFU {results[key]['mfu']}")
    import diffusers

    report = {
        "benchmark": "wan2.1-t2v-1.3b denoising step with CFG, 480x832x81, random bf16 weights",
        "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
        "attention": args.attention, "tflop_per_step": round(step_flops() / 1e12, 1), "peak_tflops": peak,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    base = results["stock"]["s_per_step_median"]
    for key, value in results.items():
        print(f"{key:22s} {100 * (value['s_per_step_median'] / base - 1):+.2f}% vs stock")
    if "inertia_stg" in results and "inertia" in results:
        ratio = results["inertia_stg"]["s_per_step_median"] / results["inertia"]["s_per_step_median"]
        print(f"STG step / inertia step: {ratio:.3f} (three forwards / two = 1.5)")


if __name__ == "__main__":
    main()
