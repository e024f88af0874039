"""Seconds per denoising step, peak memory and MFU of every backbone at full size, stock against inertia.

One entry point over the full-size configurations (`benchmarks/configs`, random bf16 weights; the text
encoder and VAE are not part of a step and are not built): Wan 2.1 and 2.2 (A14B, TI2V-5B), CogVideoX,
HunyuanVideo, HunyuanVideo 1.5 and FramePack. A FramePack entry times one section, a video's first: the
steps of one latent window (the shape's frames: 33 = one window of 9 latent frames) conditioned on the start
image (latents and SigLIP tokens) and on the zero 1x/2x/4x history that section sees, with the distilled
guidance (one forward per step), as HunyuanVideoFramepackPipeline's denoising loop runs it; its sampling
type (inverted anti-drifting or F1) is the checkpoint's. Variants, always run in this order on one model
per configuration:

    stock        the per-step body of the model's diffusers pipeline (forwards, combine, scheduler.step)
    default      inertia's loop (`core.sampling.sample` through the real backbone), no intervention
    relax_decay  relax 0.75 + decay 0.7 (the CFG scale changes every step)
    unlearn      unlearn sigma_blur 0.6 on all video tokens in every layer
    all          relax + decay + unlearn: the reference of the fast and fa4 variants
    all_fa4      `all` with FlashAttention-4 as the attention kernel (`attention_kernel: fa4`, core/fa4.py)
    offload_model   `default` with `--offload model` (diffusers' enable_model_cpu_offload over the transformers:
                    one whole expert on the GPU at a time); slowdown and final latents against `default`
    offload_group   `default` with `--offload group` (diffusers' group offloading, one block per group, prefetched
                    on a CUDA stream); slowdown and final latents against `default`
    vae_decode      the backbone's VAE at full size (random weights in the dtype inertia loads it in: float32,
                    CogVideoX's bf16) decoding the shape's latents with tiling off, then on, beside the resident
                    transformer(s): seconds, peak memory (what a run without offloading holds at its decode) and
                    the decode's own share
    fast         `all` with `--performance fast` (compiled repeated blocks, hooks inside; HunyuanVideo 1.5:
                 its context padding dropped from attention instead of a dense mask, stated as `attention_mask`)
    fast_fa4     `fast` with FlashAttention-4 as the attention kernel
    fast_float8  `all` with `--performance float8` (fast + torchao float8 linears; CUDA)
    fast_float8_fa4  `fast_float8` with FlashAttention-4 as the attention kernel
    all_cudnnfp8, fast_cudnnfp8, fast_float8_cudnnfp8
                 `all`, `fast`, `fast_float8` with cuDNN's FP8 attention as the kernel (`attention_kernel:
                 cudnn_fp8`, core/cudnn_fp8.py; SM90)

A kernel's variants are skipped, with the reason, where it cannot run (not installed, another GPU); they
state `fa4_calls` or `cudnn_fp8_calls`, the attention calls the kernel ran (the others, e.g. masked ones,
went to the backend).

Per variant: seconds per step (median, min, max of the timed steps after warm-up, CUDA events), peak
memory, MFU against the GPU's dense bf16 peak (FLOPs counted by `torch.utils.flop_counter` on one
forward); for fast variants the compile seconds, the slowest compile phases torch timed (where a slow
first step went), graphs compiled after the first step (a relax schedule and unlearn's strength change
every step: must be 0) and, for fast and fa4 variants against `all`, the
relative L2 of the combined prediction at each step and of the final latents; with `--decode-final`, also
the final video's difference (both final latents decoded by the family's VAE at full size, random weights,
through the backbone's own decode, tiled where a run tiles by default: max and mean absolute uint8 difference,
PSNR).

    PYTHONPATH=. python benchmarks/suite.py --only wan2.1-t2v-1.3b --json benchmarks/results/suite.json
    PYTHONPATH=. python benchmarks/suite.py --tiny --only wan2.1-t2v-1.3b --compile-backend eager --json /tmp/s.json

`--only NAME[:VARIANT+VARIANT][@STEPS],...` picks configurations (and per configuration its variants,
else `--variants`, and its timed steps, else `--steps`; an entry with @STEPS is stored as NAME@STEPS, so
`wan2.1-t2v-1.3b:fast@49` shows recompilation across a 50-step relax run); `--budget` seconds bounds the whole selection: a variant that would not finish inside it is
skipped and recorded as such. The JSON is rewritten after every variant, so a killed run leaves its results.
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import full_size  # noqa: E402
from inertia.core import performance  # noqa: E402
from inertia.core.io import frames_to_uint8, write_json  # noqa: E402
from inertia.core.offload import apply_offload  # noqa: E402
from inertia.core.devices import cuda_capability  # noqa: E402
from inertia.core.runtime import KERNELS, attention_backend, quiet_libraries  # noqa: E402

VARIANTS = ("stock", "default", "relax_decay", "unlearn", "all", "all_fa4", "all_cudnnfp8", "offload_model",
            "offload_group", "vae_decode", "fast", "fast_fa4", "fast_cudnnfp8", "fast_float8", "fast_float8_fa4",
            "fast_float8_cudnnfp8")
#: Seconds a budget keeps for a fast variant's first step beyond a step, for compiling the blocks: measured
#: 5-23 s on an H200 at either level (float8 took 2-4 minutes more while torchao switched on inductor's
#: coordinate-descent tuning, which `core.performance.float8_linears` now declines).
COMPILE_ALLOWANCE_S = 60.0
#: The attention kernel of a variant by the end of its name (a name of `inertia.core.runtime.KERNELS`).
KERNEL_SUFFIXES = {"_fa4": "fa4", "_cudnnfp8": "cudnn_fp8"}
#: Variants run by default: the memory ones on request (`--only NAME:offload_model+offload_group+vae_decode`).
DEFAULT_VARIANTS = ("stock", "default", "relax_decay", "unlearn", "all", "all_fa4", "fast", "fast_fa4", "fast_float8",
                    "fast_float8_fa4")
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "H20": 148.0, "A100": 312.0, "B200": 2250.0,
                    "L40S": 362.1}
TINY_SHAPE = dict(height=32, width=32, frames=17, text_tokens=8, text_2_tokens=4, image_tokens=4)


def interventions(variant: str) -> list:
    from inertia.interventions.guidance import Decay, DecayParams, Relax, RelaxParams
    from inertia.interventions.unlearn import Unlearn, UnlearnParams

    relax_decay = [Relax(RelaxParams(beta=0.75)), Decay(DecayParams(p=0.7))]
    unlearn = [Unlearn(UnlearnParams(sigma_blur=0.6, tokens="video"))]
    return {"default": [], "relax_decay": relax_decay, "unlearn": unlearn}.get(variant, relax_decay + unlearn)


# ----- families: how each model is fed, stepped by its pipeline, and wrapped as an inertia backbone ---------
@dataclass
class Bench:
    """One configuration built at its benchmark shape."""

    name: str
    models: dict[str, torch.nn.Module]
    scheduler: Any
    latents: torch.Tensor
    inputs: dict[str, Any]
    guidance: float
    forwards_per_step: int
    extra: dict[str, Any] = field(default_factory=dict)


class Family:
    def build(self, config: dict, shape: dict, models: dict, device: torch.device) -> Bench: ...

    def stock_step(self, bench: Bench, state: dict) -> None: ...

    def backbone(self, bench: Bench, device: torch.device) -> tuple[Any, Any, Any]:
        """(backbone, job, RunSetup) for inertia's loop over the same latents and conditions."""

    def set_timesteps(self, bench: Bench, steps: int, device: torch.device) -> None:
        bench.scheduler.set_timesteps(steps, device=device)

    def one_forward(self, bench: Bench) -> None:
        """One conditional forward, as the stock step makes it (for the FLOP count)."""

    def final_latents(self, job: Any) -> torch.Tensor:
        """The latents inertia's loop ended on, to set beside the stock step's (the job's, for one-section models)."""
        return job.latents


def _randn(generator: torch.Generator, *shape: int, dtype=torch.bfloat16) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(dtype)


class WanFamily(Family):
    """Wan 2.1, Wan 2.2 A14B (two experts) and TI2V-5B (per-token timesteps), as WanPipeline steps them."""

    def build(self, config, shape, models, device):
        from diffusers import UniPCMultistepScheduler

        pipeline = config.get("pipeline", {})
        spatial, channels = shape.get("vae_spatial", 8), shape.get("latent_channels", 16)
        generator = torch.Generator(device).manual_seed(0)
        latents = _randn(generator, 1, channels, (shape["frames"] - 1) // 4 + 1, shape["height"] // spatial,
                         shape["width"] // spatial, dtype=torch.float32)
        text_dim = models["transformer"].config.text_dim
        inputs = {"cond": _randn(generator, 1, shape["text_tokens"], text_dim),
                  "uncond": _randn(generator, 1, shape["text_tokens"], text_dim)}
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=pipeline.get("flow_shift", 3.0), num_train_timesteps=1000)
        guidance = shape.get("guidance_scale", 5.0)
        extra = {"boundary_ratio": pipeline.get("boundary_ratio"), "expand": pipeline.get("expand_timesteps", False),
                 "guidance_2": shape.get("guidance_scale_2", guidance)}
        return Bench(config["name"], models, scheduler, latents, inputs, guidance, 2, extra)

    def _model_and_scale(self, bench, t):
        ratio = bench.extra["boundary_ratio"]
        if ratio is not None and t < ratio * 1000:
            return bench.models["transformer_2"], bench.extra["guidance_2"]
        return bench.models["transformer"], bench.guidance

    def _timestep(self, bench, t, latents):
        if not bench.extra["expand"]:
            return t.expand(latents.shape[0])
        _, patch_h, patch_w = bench.models["transformer"].config.patch_size
        mask = torch.ones_like(latents)
        return (mask[0][0][:, ::patch_h, ::patch_w] * t).flatten().unsqueeze(0).expand(latents.shape[0], -1)

    def stock_step(self, bench, state):
        t = bench.scheduler.timesteps[state["i"]]
        model, scale = self._model_and_scale(bench, t)
        x = state["latents"].to(torch.bfloat16)
        timestep = self._timestep(bench, t, state["latents"])
        cond = model(hidden_states=x, timestep=timestep, encoder_hidden_states=bench.inputs["cond"], return_dict=False)[0]
        uncond = model(hidden_states=x, timestep=timestep, encoder_hidden_states=bench.inputs["uncond"],
                       return_dict=False)[0]
        prediction = uncond + scale * (cond - uncond)
        state["latents"] = bench.scheduler.step(prediction, t, state["latents"], return_dict=False)[0]

    def one_forward(self, bench):
        t = bench.scheduler.timesteps[0]
        bench.models["transformer"](hidden_states=bench.latents.to(torch.bfloat16), timestep=self._timestep(bench, t, bench.latents),
                                    encoder_hidden_states=bench.inputs["cond"], return_dict=False)

    def backbone(self, bench, device):
        from diffusers import WanPipeline

        from inertia.backbones.wan import HIGH_NOISE, LOW_NOISE, WanBackbone, WanJob

        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=bench.scheduler,
                           transformer=bench.models["transformer"], transformer_2=bench.models.get("transformer_2"),
                           boundary_ratio=bench.extra["boundary_ratio"], expand_timesteps=bench.extra["expand"])
        backbone = WanBackbone(pipe, device, smoke_test=False)
        mask = torch.ones_like(bench.latents) if bench.extra["expand"] else None
        job = WanJob(bench.inputs["cond"], bench.inputs["uncond"], bench.latents.clone(), None, None, 0, mask)
        experts = {}
        if bench.extra["boundary_ratio"] is not None:
            experts = {HIGH_NOISE: {"cfg": bench.guidance}, LOW_NOISE: {"cfg": bench.extra["guidance_2"]}}
        return backbone, job, _setup("wan", bench.guidance, experts)


class Hunyuan15Family(Family):
    """HunyuanVideo 1.5 text-to-video as HunyuanVideo15Pipeline steps it: input [latents | zero condition |
    zero mask], Qwen 2.5-VL tokens (prompt mask partly valid), glyph tokens (masked out), zero SigLIP tokens,
    true CFG."""

    def build(self, config, shape, models, device):
        from diffusers import FlowMatchEulerDiscreteScheduler

        model = models["transformer"]
        channels, spatial = model.config.out_channels, shape.get("vae_spatial", 16)
        generator = torch.Generator(device).manual_seed(0)
        frames, height, width = (shape["frames"] - 1) // 4 + 1, shape["height"] // spatial, shape["width"] // spatial
        latents = _randn(generator, 1, channels, frames, height, width)

        def text(valid: int):
            length, length_2 = shape["text_tokens"], shape["text_2_tokens"]
            mask = torch.zeros(1, length, dtype=torch.int64, device=device)
            mask[:, :valid] = 1
            return SimpleNamespace(embeds=_randn(generator, 1, length, model.config.text_embed_dim), mask=mask,
                                   embeds_2=_randn(generator, 1, length_2, model.config.text_embed_2_dim),
                                   mask_2=torch.zeros(1, length_2, dtype=torch.int64, device=device))

        inputs = {"cond": text(min(120, shape["text_tokens"])), "uncond": text(min(8, shape["text_tokens"])),
                  "condition": torch.zeros_like(latents), "mask": torch.zeros(1, 1, frames, height, width, device=device,
                                                                              dtype=latents.dtype),
                  "image_embeds": torch.zeros(1, shape["image_tokens"], model.config.image_embed_dim, device=device,
                                              dtype=torch.bfloat16)}
        scheduler = FlowMatchEulerDiscreteScheduler(shift=config.get("pipeline", {}).get("shift", 5.0))
        return Bench(config["name"], models, scheduler, latents, inputs, shape.get("guidance_scale", 6.0), 2)

    def set_timesteps(self, bench, steps, device):
        import numpy as np

        bench.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=device)

    def _forward(self, bench, latents, t, text):
        model_input = torch.cat([latents, bench.inputs["condition"], bench.inputs["mask"]], dim=1)
        return bench.models["transformer"](
            hidden_states=model_input, image_embeds=bench.inputs["image_embeds"],
            timestep=t.expand(model_input.shape[0]).to(model_input.dtype), encoder_hidden_states=text.embeds,
            encoder_attention_mask=text.mask, encoder_hidden_states_2=text.embeds_2,
            encoder_attention_mask_2=text.mask_2, return_dict=False)[0]

    def stock_step(self, bench, state):
        t = bench.scheduler.timesteps[state["i"]]
        cond = self._forward(bench, state["latents"], t, bench.inputs["cond"])
        uncond = self._forward(bench, state["latents"], t, bench.inputs["uncond"])
        prediction = uncond + bench.guidance * (cond - uncond)
        state["latents"] = bench.scheduler.step(prediction, t, state["latents"], return_dict=False)[0]

    def one_forward(self, bench):
        self._forward(bench, bench.latents, bench.scheduler.timesteps[0], bench.inputs["cond"])

    def backbone(self, bench, device):
        from inertia.backbones.hunyuan15 import Hunyuan15Job, Hunyuan15Text, HunyuanVideo15Backbone

        backbone = HunyuanVideo15Backbone(SimpleNamespace(transformer=bench.models["transformer"],
                                                          scheduler=bench.scheduler), device, smoke_test=False)
        texts = [Hunyuan15Text(t.embeds, t.mask, t.embeds_2, t.mask_2) for t in (bench.inputs["cond"], bench.inputs["uncond"])]
        job = Hunyuan15Job(*texts, bench.latents.clone(), bench.inputs["condition"], bench.inputs["mask"],
                           bench.inputs["image_embeds"], False)
        return backbone, job, _setup("hunyuan15", bench.guidance)


class HunyuanFamily(Family):
    """HunyuanVideo as HunyuanVideoPipeline steps it: embedded guidance (scale x 1000 as a model input), one
    forward per step, Llama tokens with a padding mask (prompt partly valid) and CLIP's pooled vector."""

    #: The distilled scale where the configuration states none: the pipeline's default `guidance_scale`.
    default_guidance = 6.0
    #: The dtype the pipeline hands `scheduler.step` the prediction in; None: as the transformer returns it (bf16).
    step_dtype: torch.dtype | None = None

    def build(self, config, shape, models, device):
        model = models["transformer"]
        generator = torch.Generator(device).manual_seed(0)
        latents = _randn(generator, 1, model.config.in_channels, (shape["frames"] - 1) // 4 + 1, shape["height"] // 8,
                         shape["width"] // 8, dtype=torch.float32)
        return Bench(config["name"], models, self._scheduler(config), latents, self._text(generator, model, shape),
                     shape.get("embedded_guidance_scale", self.default_guidance), 1)

    @staticmethod
    def _scheduler(config: dict):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(shift=config.get("pipeline", {}).get("shift", 7.0))

    @staticmethod
    def _text(generator: torch.Generator, model: torch.nn.Module, shape: dict) -> dict[str, torch.Tensor]:
        """A prompt as both pipelines encode it: Llama tokens with their padding mask (the first 60 valid), in the
        transformer's dtype, and CLIP's pooled vector."""
        mask = torch.zeros(1, shape["text_tokens"], dtype=torch.bfloat16, device=generator.device)
        mask[:, :min(60, shape["text_tokens"])] = 1
        return {"embeds": _randn(generator, 1, shape["text_tokens"], model.config.text_embed_dim), "mask": mask,
                "pooled": _randn(generator, 1, model.config.pooled_projection_dim)}

    @staticmethod
    def _text_conditions(bench: Bench):
        from inertia.backbones.hunyuan_text import TextConditions

        return TextConditions(bench.inputs["embeds"], bench.inputs["mask"], bench.inputs["pooled"])

    set_timesteps = Hunyuan15Family.set_timesteps

    @staticmethod
    def _inputs(bench: Bench, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """The transformer inputs both pipelines pass alike: the latents in the model's dtype, the prompt and the
        distilled scale (cast to the model's dtype, then x 1000)."""
        guidance = torch.tensor([bench.guidance] * latents.shape[0], dtype=torch.bfloat16, device=latents.device) * 1000.0
        return dict(hidden_states=latents.to(torch.bfloat16), encoder_hidden_states=bench.inputs["embeds"],
                    encoder_attention_mask=bench.inputs["mask"], pooled_projections=bench.inputs["pooled"],
                    guidance=guidance)

    def _forward(self, bench, latents, t):
        return bench.models["transformer"](**self._inputs(bench, latents),
                                           timestep=t.expand(latents.shape[0]).to(latents.dtype), return_dict=False)[0]

    def stock_step(self, bench, state):
        t = bench.scheduler.timesteps[state["i"]]
        prediction = self._forward(bench, state["latents"], t)
        if self.step_dtype is not None:
            prediction = prediction.to(self.step_dtype)
        state["latents"] = bench.scheduler.step(prediction, t, state["latents"], return_dict=False)[0]

    def one_forward(self, bench):
        self._forward(bench, bench.latents, bench.scheduler.timesteps[0])

    def backbone(self, bench, device):
        from inertia.backbones.hunyuan import HunyuanJob, HunyuanVideoBackbone

        pipe = SimpleNamespace(transformer=bench.models["transformer"], scheduler=bench.scheduler,
                               tokenizer=SimpleNamespace(get_vocab=dict))
        backbone = HunyuanVideoBackbone(pipe, device, smoke_test=False)
        job = HunyuanJob(self._text_conditions(bench), None, bench.latents.clone())
        return backbone, job, _setup("hunyuan", bench.guidance, target="embedded")


class FramePackFamily(HunyuanFamily):
    """FramePack, one section, as HunyuanVideoFramepackPipeline steps its first section: HunyuanVideo's prompt
    inputs and distilled guidance (one forward per step: true CFG is off at the pipeline's default
    `true_cfg_scale` 1, as at inertia's), plus the start image's SigLIP tokens, the window's RoPE frame indices
    and the clean context with theirs: the start image's latents and the 1x history, the 2x and the 4x history
    (zeros before a video's first section). The sampling type, inverted anti-drifting or F1's vanilla, is the
    checkpoint's, read from its name as inertia reads it; the window is the shape's latent frames."""

    #: FramePack's demo and inertia's default distilled scale (the diffusers pipeline's default is 6).
    default_guidance = 10.0
    #: The pipeline steps the scheduler with `noise_pred.float()`.
    step_dtype = torch.float32

    def build(self, config, shape, models, device):
        from diffusers import HunyuanVideoFramepackPipeline
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import calculate_shift
        from transformers import ByT5Tokenizer

        from inertia.backbones.framepack import sampling_type_for
        from inertia.backbones.framepack_sections import VANILLA

        model = models["transformer"]
        # The pipeline holds the transformer and scheduler for inertia's backbone (which draws the section's
        # noise with `prepare_latents`); a tokenizer gives the backbone its prompt template, never used here.
        pipe = HunyuanVideoFramepackPipeline(text_encoder=None, tokenizer=ByT5Tokenizer(), transformer=model, vae=None,
                                             scheduler=self._scheduler(config), text_encoder_2=None, tokenizer_2=None,
                                             image_encoder=None, feature_extractor=None)
        window = (shape["frames"] - 1) // pipe.vae_scale_factor_temporal + 1
        generator = torch.Generator(device).manual_seed(0)
        # The section's noise first, drawn as the pipeline draws it: inertia's job draws it again from a generator
        # seeded alike.
        latents = pipe.prepare_latents(1, model.config.in_channels, shape["height"], shape["width"],
                                       (window - 1) * pipe.vae_scale_factor_temporal + 1, torch.float32, device, generator)
        _, channels, _, height, width = latents.shape
        inputs = self._text(generator, model, shape)
        image_latents = _randn(generator, 1, channels, 1, height, width, dtype=torch.float32)
        inputs["image_embeds"] = _randn(generator, 1, shape["image_tokens"], model.config.image_proj_dim)
        sampling = sampling_type_for(config["hub_id"])
        history = torch.zeros(1, channels, 1 + 2 + 16, height, width, device=device)  # the pipeline's history_latents
        if sampling == VANILLA:
            history = torch.cat([history, image_latents], dim=2)
        inputs.update(image_latents=image_latents, section=self._section(sampling, window, image_latents, history))
        scheduler = pipe.scheduler.config  # `mu` only acts on a scheduler with dynamic shifting (HunyuanVideo's has none)
        mu = min(calculate_shift(window * height * width / model.config.patch_size ** 2,
                                 scheduler.get("base_image_seq_len", 256), scheduler.get("max_image_seq_len", 4096),
                                 scheduler.get("base_shift", 0.5), scheduler.get("max_shift", 1.15)), math.log(7.0))
        extra = {"pipe": pipe, "sampling": sampling, "mu": mu, "size": (shape["height"], shape["width"])}
        return Bench(config["name"], models, pipe.scheduler, latents, inputs,
                     shape.get("embedded_guidance_scale", self.default_guidance), 1, extra)

    @staticmethod
    def _section(sampling: str, window: int, image_latents: torch.Tensor, history: torch.Tensor) -> dict:
        """The context of a video's first section (section 0 of 1: no padding windows) as the pipeline's
        denoising loop lays it out: frame indices (RoPE positions) and the clean latents by compression."""
        from inertia.backbones.framepack_sections import INVERTED

        if sampling == INVERTED:  # history = the future, nearest first
            sizes = [1, 2, 16]
            prefix, _, indices, i1x, i2x, i4x = torch.arange(0, sum([1, 0, window, *sizes])).split([1, 0, window, *sizes])
            h1x, h2x, h4x = history[:, :, :sum(sizes)].split(sizes, dim=2)
        else:  # vanilla: history = the past, newest last
            sizes = [16, 2, 1]
            prefix, i4x, i2x, i1x, indices = torch.arange(0, sum([1, *sizes, window])).split([1, *sizes, window])
            h4x, h2x, h1x = history[:, :, -sum(sizes):].split(sizes, dim=2)
        return dict(indices_latents=indices, latents_clean=torch.cat([image_latents, h1x], dim=2),
                    indices_latents_clean=torch.cat([prefix, i1x]), latents_history_2x=h2x,
                    indices_latents_history_2x=i2x, latents_history_4x=h4x, indices_latents_history_4x=i4x)

    def set_timesteps(self, bench, steps, device):
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import retrieve_timesteps

        retrieve_timesteps(bench.scheduler, steps, device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1],
                           mu=bench.extra["mu"])

    def _forward(self, bench, latents, t):
        section, dtype = bench.inputs["section"], torch.bfloat16
        return bench.models["transformer"](
            **self._inputs(bench, latents), timestep=t.expand(latents.shape[0]), image_embeds=bench.inputs["image_embeds"],
            indices_latents=section["indices_latents"], latents_clean=section["latents_clean"].to(dtype),
            indices_latents_clean=section["indices_latents_clean"],
            latents_history_2x=section["latents_history_2x"].to(dtype),
            indices_latents_history_2x=section["indices_latents_history_2x"],
            latents_history_4x=section["latents_history_4x"].to(dtype),
            indices_latents_history_4x=section["indices_latents_history_4x"], return_dict=False)[0]

    def backbone(self, bench, device):
        from inertia.backbones.framepack import FramePackBackbone, FramePackJob
        from inertia.backbones.framepack_sections import FramePackSettings, SectionHistory

        pipe = bench.extra["pipe"]
        backbone = FramePackBackbone(pipe, device, smoke_test=False)
        _, channels, window, height, width = bench.latents.shape
        settings = FramePackSettings(bench.extra["sampling"], window, pipe.vae_scale_factor_temporal)
        history = SectionHistory.start(settings, 1, bench.inputs["image_latents"], channels)
        # One section; it sets the timesteps itself, as many as `set_timesteps` just set.
        job = FramePackJob(history, len(bench.scheduler.timesteps), self._text_conditions(bench), None,
                           bench.inputs["image_embeds"], *bench.extra["size"], channels,
                           backbone._shift(window * height * width), torch.Generator(device).manual_seed(0))
        return backbone, job, _setup("framepack", bench.guidance, target="embedded")

    def final_latents(self, job):
        """The section's denoised latents: the end of what the job decodes (after the start image, for the inverted
        scheme's last section)."""
        return job.history.pieces[-1][:, :, -job.history.settings.latent_window_size:]


class CogVideoXFamily(Family):
    """CogVideoX as CogVideoXPipeline steps it: one batched [uncond, cond] forward, latents (B, F, C, H, W) in
    the model's dtype, 3D RoPE from the pipeline's helper, the checkpoint's scheduler (DDIM for 2b, DPM
    for the 5b family, v-prediction, trailing, zero SNR); CogVideoX 1.5 prepends its padding latent frame."""

    def build(self, config, shape, models, device):
        from diffusers import CogVideoXPipeline

        from inertia.backbones.cogvideox import padding_frames
        from inertia.backbones.cogvideox_builtin import tiny_scheduler

        model = models["transformer"]
        pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model,
                                 scheduler=tiny_scheduler(config["pipeline"]["scheduler"]))
        padding = padding_frames(shape["frames"], 4, model.config.patch_size_t)
        frames = (shape["frames"] - 1) // 4 + 1 + padding
        generator = torch.Generator(device).manual_seed(0)
        latents = _randn(generator, 1, frames, model.config.in_channels, shape["height"] // 8, shape["width"] // 8)
        cond = _randn(generator, 1, shape["text_tokens"], model.config.text_embed_dim)
        uncond = _randn(generator, 1, shape["text_tokens"], model.config.text_embed_dim)
        rotary = None
        if model.config.use_rotary_positional_embeddings:
            rotary = pipe._prepare_rotary_positional_embeddings(shape["height"], shape["width"], frames, device)
        inputs = {"cond": cond, "cfg": torch.cat([uncond, cond]), "rotary": rotary, "padding": padding}
        return Bench(config["name"], models, pipe.scheduler, latents, inputs, shape.get("guidance_scale", 6.0), 2,
                     {"pipe": pipe})

    def stock_step(self, bench, state):
        from diffusers import CogVideoXDPMScheduler

        scheduler, i = bench.scheduler, state["i"]
        t = scheduler.timesteps[i]
        model_input = scheduler.scale_model_input(torch.cat([state["latents"]] * 2), t)
        output = bench.models["transformer"](hidden_states=model_input, encoder_hidden_states=bench.inputs["cfg"],
                                             timestep=t.expand(model_input.shape[0]),
                                             image_rotary_emb=bench.inputs["rotary"], return_dict=False)[0].float()
        uncond, cond = output.chunk(2)
        prediction = uncond + bench.guidance * (cond - uncond)
        kwargs = state.setdefault("step_kwargs", self._step_kwargs(bench))
        if isinstance(scheduler, CogVideoXDPMScheduler):
            latents, state["old"] = scheduler.step(prediction, state.get("old"), t, scheduler.timesteps[i - 1] if i else None,
                                                   state["latents"], **kwargs, return_dict=False)
        else:
            latents = scheduler.step(prediction, t, state["latents"], **kwargs, return_dict=False)[0]
        state["latents"] = latents.to(torch.bfloat16)

    @staticmethod
    def _step_kwargs(bench) -> dict:
        """eta 0 and a generator seeded alike for every run (the DPM step draws noise), as the pipeline passes them."""
        return bench.extra["pipe"].prepare_extra_step_kwargs(torch.Generator(bench.latents.device).manual_seed(0), 0.0)

    def one_forward(self, bench):
        bench.models["transformer"](hidden_states=bench.latents, encoder_hidden_states=bench.inputs["cond"],
                                    timestep=bench.scheduler.timesteps[0].expand(1),
                                    image_rotary_emb=bench.inputs["rotary"], return_dict=False)

    def backbone(self, bench, device):
        from inertia.backbones.cogvideox import CogVideoXBackbone, CogVideoXJob

        backbone = CogVideoXBackbone(bench.extra["pipe"], device, smoke_test=False)
        inputs = bench.inputs
        job = CogVideoXJob(inputs["cond"], inputs["cfg"], bench.latents.clone(), None, inputs["rotary"], None,
                           inputs["padding"], bench.scheduler.timesteps, self._step_kwargs(bench))
        return backbone, job, _setup("cogvideox", bench.guidance)


FAMILIES: dict[str, Family] = {"wan": WanFamily(), "hunyuan15": Hunyuan15Family(), "hunyuan": HunyuanFamily(),
                               "framepack": FramePackFamily(), "cogvideox": CogVideoXFamily()}


def _setup(backbone: str, guidance: float, experts: dict | None = None, target: str = "cfg"):
    from inertia.core.config import RunConfig
    from inertia.core.setup import RunSetup

    return RunSetup(RunConfig(), backbone, {target: guidance}, target, (target,), frozenset({"noisy"}), True,
                    expert_guidance=experts or {})


# ----- timing ---------------------------------------------------------------------------------------------
class Marks:
    """Step boundaries: CUDA events on a GPU (no synchronisation between steps), wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.points: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())

    def intervals(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.points, self.points[1:])]
        return [b - a for a, b in zip(self.points, self.points[1:])]


def run_stock(family: Family, bench: Bench, steps: int, device: torch.device) -> dict:
    family.set_timesteps(bench, steps, device)
    if hasattr(bench.scheduler, "set_begin_index"):  # the flow-matching pipelines do; CogVideoX's schedulers lack it
        bench.scheduler.set_begin_index(0)
    state, marks = {"latents": bench.latents.clone(), "i": 0}, Marks(device)
    marks.mark()
    for _ in range(steps):
        family.stock_step(bench, state)
        state["i"] += 1
        marks.mark()
    return {"times": marks.intervals(), "final": state["latents"]}


def run_inertia(family: Family, bench: Bench, steps: int, device: torch.device, variant: str,
                state: performance.PerformanceState | None = None, kernel: Any = None) -> dict:
    """inertia's loop; `state`: the performance options applied to the models (the backbone then takes its
    performance-mode paths, e.g. HunyuanVideo 1.5's attention without the dense mask); `kernel`: the
    attention kernel of the hooks (e.g. FlashAttention-4 for the calls it takes)."""
    from inertia.core.attention import AttentionHooks
    from inertia.core.intervention import InterventionStack
    from inertia.core.sampling import sample

    family.set_timesteps(bench, steps, device)  # before the job: CogVideoX's job holds the timesteps
    backbone, job, setup = family.backbone(bench, device)
    backbone.performance = state
    stack = InterventionStack(interventions(variant), setup)
    hooks = AttentionHooks(stack.attention_transforms, backbone.num_attention_layers, kernel=kernel, fused=state is not None)
    calls = kernel.calls() if kernel is not None else 0
    marks, predictions, graphs = Marks(device), [], []
    original = backbone.scheduler_step

    def marked(job_, section, step, prediction):
        predictions.append(prediction.detach().float().clone())
        out = original(job_, section, step, prediction)
        marks.mark()
        graphs.append(performance.graphs_compiled())
        return out

    backbone.scheduler_step = marked
    phases = performance.compile_phases()
    marks.mark()
    with backbone.hooked_attention(hooks):
        trace = sample(backbone, job, stack, setup.guidance, progress=False, hooks=hooks,
                       expert_guidance=setup.expert_guidance)
    result = {"times": marks.intervals(), "final": family.final_latents(job), "predictions": predictions,
              "decode": functools.partial(decode_video, backbone, job),
              "scales": [next(iter(s.guidance.values()), None) for s in trace], "experts": [s.expert for s in trace]}
    if kernel is not None:
        result[f"{kernel.name}_calls"] = kernel.calls() - calls
    if variant.startswith("fast"):
        result["performance_notes"] = backbone.performance_notes()
        after = performance.compile_phases()
        compiled = performance.DYNAMO_COMPILE
        result["compile_s"] = round(after.get(compiled, 0.0) - phases.get(compiled, 0.0), 2)
        result["compile_phases_s"] = slowest_phases(phases, after)
        result["graphs_compiled_after_first_step"] = graphs[-1] - graphs[0]
    return result


def slowest_phases(before: dict[str, float], after: dict[str, float], count: int = 8) -> dict[str, float]:
    """The `count` compile phases that took longest between two readings of `performance.compile_phases`
    (at least 0.01 s; they nest, so they do not add up): where a fast variant's first step went."""
    spent = {phase: after[phase] - before.get(phase, 0.0) for phase in after}
    slowest = sorted((item for item in spent.items() if item[1] >= 0.01), key=lambda item: -item[1])[:count]
    return {phase: round(seconds, 2) for phase, seconds in slowest}


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a.float() - b.float()).norm() / b.float().norm()), 5)


def decode_video(backbone: Any, job: Any, vae: torch.nn.Module) -> np.ndarray:
    """`job`'s final latents as uint8 frames through the backbone's own decode (its latent de-normalisation and
    post-processing, as a run decodes), with `vae` in the place of the pipeline's, which the bench does not build."""
    from diffusers import DiffusionPipeline
    from diffusers.video_processor import VideoProcessor

    pipe = backbone.pipe
    if isinstance(pipe, DiffusionPipeline):
        pipe.register_modules(vae=vae)
    else:
        pipe.vae = vae
    if getattr(pipe, "video_processor", None) is None:
        pipe.video_processor = VideoProcessor()
    with torch.inference_mode():
        return frames_to_uint8(backbone.decode(job))


def video_difference(video: np.ndarray, reference: np.ndarray) -> dict:
    """How far a decoded video is from the reference's, in uint8 levels (PSNR None when they are equal)."""
    difference = np.abs(video.astype(np.int16) - reference.astype(np.int16))
    mse = float((difference.astype(np.float64) ** 2).mean())
    return {"max_abs": int(difference.max()), "mean_abs": round(float(difference.mean()), 4),
            "psnr_db": None if mse == 0 else round(10 * math.log10(255 ** 2 / mse), 2)}


# ----- memory: offloading and the VAE decode ------------------------------------------------------------------
#: The VAE each family decodes with, built at diffusers' default configuration (the published VAEs').
VAE_CLASSES = {"wan": "AutoencoderKLWan", "hunyuan": "AutoencoderKLHunyuanVideo", "cogvideox": "AutoencoderKLCogVideoX",
               "hunyuan15": "AutoencoderKLHunyuanVideo15", "framepack": "AutoencoderKLHunyuanVideo"}
#: The VAE's dtype where inertia does not keep it in float32: CogVideoX's pipeline decodes in the run's dtype.
VAE_DTYPES = {"cogvideox": torch.bfloat16}
#: diffusers' group offloading hooks (registry names), removed after an offload variant.
GROUP_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def transformers_pipeline(models: dict[str, torch.nn.Module]) -> Any:
    """The bench's transformers in a diffusers pipeline, so that `core.offload.apply_offload` offloads them as it
    offloads a loaded backbone's (model offloading in `model_cpu_offload_seq` order: one expert at a time)."""
    from diffusers import DiffusionPipeline

    class Transformers(DiffusionPipeline):
        model_cpu_offload_seq = "transformer->transformer_2"
        _optional_components = ["transformer_2"]  # a component although its argument has a default (as in WanPipeline)

        def __init__(self, transformer: torch.nn.Module, transformer_2: torch.nn.Module | None = None):
            super().__init__()
            self.register_modules(transformer=transformer, transformer_2=transformer_2)

    return Transformers(**models)


@contextmanager
def offloaded(models: dict[str, torch.nn.Module], mode: str, device: torch.device) -> Iterator[Any]:
    """The models offloaded (from the CPU) for one variant, then back on `device` without hooks for the next."""
    from diffusers.hooks import HookRegistry

    pipeline = transformers_pipeline(models)
    for model in models.values():
        model.to("cpu")
    _free(device)
    try:
        yield apply_offload(pipeline, mode, device)
    finally:
        if mode == "model":
            pipeline.remove_all_hooks()
        else:
            for model in models.values():
                registry = HookRegistry.check_if_exists_or_initialize(model)
                for name in GROUP_HOOKS:
                    registry.remove_hook(name, recurse=True)
        for model in models.values():
            model.to(device)


def build_vae(backbone: str, latent_channels: int | None, tiny: bool, device: torch.device) -> torch.nn.Module | str:
    """The family's VAE in the dtype inertia loads it in (float32, CogVideoX's bf16): the built-in's tiny one, or
    diffusers' default configuration (the published VAE's); a string says why there is none."""
    import diffusers

    name = VAE_CLASSES.get(backbone)
    if name is None:
        return f"no VAE of {backbone} in the suite"
    if tiny:
        vae = _tiny_vae(backbone, latent_channels)
    else:
        with torch.device(device):
            vae = getattr(diffusers, name)()
        channels = vae.config.get("z_dim") or vae.config.latent_channels
        if latent_channels not in (None, channels):
            return f"the configuration's {latent_channels}-channel latents are not {name}'s default ({channels})"
    return vae.to(device, VAE_DTYPES.get(backbone, torch.float32)).eval().requires_grad_(False)


def _tiny_vae(backbone: str, latent_channels: int | None) -> torch.nn.Module:
    """The built-in model's tiny VAE with the latent channels of the suite's tiny transformers, which keep the real
    ones (16, or the configuration's), so that `--decode-final` decodes their latents."""
    from inertia.backbones import cogvideox_builtin, hunyuan15_builtin, hunyuan_builtin, wan_builtin

    if backbone == "wan":
        return wan_builtin.tiny_vae(ti2v=latent_channels == 48)
    if backbone == "cogvideox":
        from diffusers import AutoencoderKLCogVideoX

        vae_class, config = AutoencoderKLCogVideoX, cogvideox_builtin.VAE_CONFIG
    else:
        builtin = (hunyuan15_builtin if backbone == "hunyuan15" else hunyuan_builtin).tiny_vae()
        vae_class, config = type(builtin), dict(builtin.config)
    channels = latent_channels or 16
    # HunyuanVideo 1.5's decoder repeats the latents up to its first block's width: no block narrower than them
    widths = tuple(max(width, channels) for width in config["block_out_channels"])
    return vae_class.from_config({**config, "latent_channels": channels, "block_out_channels": widths})


def run_vae_decode(backbone: str, config: dict, described: dict, device: torch.device, tiny: bool) -> dict:
    """Decode random latents of the benchmark shape with tiling off, then on, beside the resident transformers:
    seconds, peak memory (what a run without offloading holds at its decode) and the decode's own share."""
    vae = build_vae(backbone, config["benchmark"].get("latent_channels"), tiny, device)
    if isinstance(vae, str):
        return {"skipped": vae}
    cfg = vae.config
    spatial = cfg.get("spatial_compression_ratio") or cfg.get("scale_factor_spatial") or 2 ** (len(cfg.block_out_channels) - 1)
    shape = described["shape"]
    latents = torch.randn(1, cfg.get("z_dim") or cfg.latent_channels, (shape["frames"] - 1) // 4 + 1,
                          shape["height"] // spatial, shape["width"] // spatial, device=device, dtype=vae.dtype)
    result: dict[str, Any] = {"vae": type(vae).__name__, "vae_parameters": full_size.parameters(vae),
                              "latents": list(latents.shape)}
    for tiling in (False, True):
        vae.enable_tiling() if tiling else vae.disable_tiling()
        key = f"tiling_{'on' if tiling else 'off'}"
        try:
            result[key] = _timed_decode(vae, latents, device)
        except Exception as error:  # out of memory without tiling is a result
            result[key] = {"error": _failure(error)}
            _free(device)
    del vae
    _free(device)
    return result


def _timed_decode(vae: torch.nn.Module, latents: torch.Tensor, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if cuda else 0
    started = time.perf_counter()
    with torch.inference_mode():
        frames = vae.decode(latents, return_dict=False)[0]
    if cuda:
        torch.cuda.synchronize()
    out = {"seconds": round(time.perf_counter() - started, 3), "frames": list(frames.shape)}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_gib=round(peak / 2**30, 2), resident_gib=round(resident / 2**30, 2),
                   decode_gib=round((peak - resident) / 2**30, 2))
    return out


# ----- the suite --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One configuration of the selection: its variants and, for `NAME@STEPS`, its own timed steps."""

    key: str  # the results' key: NAME, or NAME@STEPS
    name: str
    variants: list[str]
    steps: int | None = None


def parse_only(text: str | None, variants: list[str]) -> list[Entry]:
    """`NAME[:VARIANT+VARIANT][@STEPS],...` -> entries, variants in the canonical order. `@STEPS` times that
    many steps for this entry (e.g. `wan2.1-t2v-1.3b:fast@49`: recompilation across a 50-step run)."""
    if not text:
        return [Entry(name, name, variants) for name in full_size.names() if full_size.load(name)["backbone"] in FAMILIES]
    plan = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, _, steps = item.partition("@")
        name, _, chosen = head.partition(":")
        picked = chosen.split("+") if chosen else variants
        unknown = [v for v in picked if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
        if steps and not (steps.isdigit() and int(steps) > 0):
            raise SystemExit(f"{item!r}: steps after @ must be a positive integer")
        full_size.load(name)
        plan.append(Entry(f"{name}@{steps}" if steps else name, name, [v for v in VARIANTS if v in picked],
                          int(steps) if steps else None))
    return plan


def build_bench(name: str, tiny: bool, shape_override: str | None, device: torch.device) -> tuple[Family, Bench, dict]:
    config = full_size.load(name)
    family = FAMILIES.get(config["backbone"])
    if family is None:
        raise NotImplementedError(f"the suite does not run {config['backbone']} configurations yet")
    shape = dict(config["benchmark"])
    if shape_override:
        shape["height"], shape["width"], shape["frames"] = (int(v) for v in shape_override.split("x"))
    if tiny:
        shape.update(TINY_SHAPE, height=TINY_SHAPE["height"] * shape.get("vae_spatial", 8) // 8,
                     width=TINY_SHAPE["width"] * shape.get("vae_spatial", 8) // 8)
    dtype = torch.bfloat16
    models = {}
    for key in ("transformer", "transformer_2"):
        if key in config:
            sizes = full_size.tiny(config[key], config["class"]) if tiny else config[key]
            if tiny and "sample_height" in sizes:  # CogVideoX-2b's sin-cos positions are sized for text + sample
                sizes.update(sample_height=shape["height"] // 8, sample_width=shape["width"] // 8,
                             sample_frames=shape["frames"], max_text_seq_length=shape["text_tokens"])
            models[key] = full_size.build(config["class"], sizes, device, dtype)
    bench = family.build(config, shape, models, device)
    described = {"class": config["class"], "hub_id": config["hub_id"], "shape": {k: shape[k] for k in ("height", "width", "frames")},
                 "parameters": sum(full_size.parameters(m) for m in models.values()), "tiny": tiny}
    return family, bench, described


def step_flops(family: Family, bench: Bench) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    family.set_timesteps(bench, 2, bench.latents.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:  # native SDPA: counted as dense
        family.one_forward(bench)
    return float(counter.get_total_flops()) * bench.forwards_per_step


def summary(times: list[float], warmup: int) -> dict:
    timed = times[warmup:]
    median = statistics.median(timed)
    return {"s_per_step_median": round(median, 4), "s_per_step_min": round(min(timed), 4),
            "s_per_step_max": round(max(timed), 4), "spread": round((max(timed) - min(timed)) / median, 4),
            "s_per_step_all": [round(t, 4) for t in times], "warmup_steps": warmup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="NAME[:VARIANT+VARIANT][@STEPS],... (default: every configuration the suite runs)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"default variants: {','.join(DEFAULT_VARIANTS)}; known: {','.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps (the first compiles fast variants)")
    parser.add_argument("--shape", help="HEIGHTxWIDTHxFRAMES instead of the configuration's benchmark shape")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole selection")
    parser.add_argument("--json", type=Path, required=True, help="results file (rewritten after every variant)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and shapes (CPU check of the suite itself)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the fast variants")
    parser.add_argument("--decode-final", action="store_true",
                        help="decode the final latents of `all` and of the variants compared with it (the family's "
                             "VAE, random weights) and report the videos' difference")
    parser.add_argument("--attention", default="native", help="attention backend of every variant (inertia's names; "
                                                              "rows for inertia/core/attention_table.json)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    quiet_libraries()
    device = torch.device(args.device)
    plan = parse_only(args.only, args.variants.split(","))
    backend, performance.COMPILE_BACKEND = performance.COMPILE_BACKEND, args.compile_backend
    try:
        _run_plan(plan, args, device, started)
    finally:
        performance.COMPILE_BACKEND = backend
    return 0


def _run_plan(plan: list[Entry], args, device: torch.device, started: float) -> None:
    report = _environment(device, args)
    report["configs"] = {}
    for item in plan:
        name = item.key
        entry = report["configs"][name] = {"variants": {}}
        elapsed = time.perf_counter() - started
        if elapsed >= args.budget:
            entry["skipped"] = f"time budget: {elapsed:.0f} s used of {args.budget:.0f}"
            print(f"{name}: skipped (time budget)", flush=True)
            write_json(args.json, report)
            continue
        try:
            family, bench, entry["model"] = build_bench(item.name, args.tiny, args.shape, device)
            entry["tflop_per_step"] = round(step_flops(family, bench) / 1e12, 3)
        except NotImplementedError as error:
            entry["skipped"] = str(error)
            print(f"{name}: skipped: {entry['skipped']}", flush=True)
            write_json(args.json, report)
            continue
        except Exception as error:  # a harness: record what broke (OOM, a missing package) and go on
            entry["error"] = _failure(error)
            print(f"{name}: failed: {entry['error']}", flush=True)
            write_json(args.json, report)
            _free(device)
            continue
        print(f"{name}: {entry['model']['parameters'] / 1e9:.2f} B parameters, {entry['tflop_per_step']} TFLOP/step "
              f"(at {time.perf_counter() - started:.0f} s)", flush=True)
        _run_variants(family, bench, item, entry, report, args, device, started)
        del family, bench
        _free(device)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, report)


def seconds_needed(variant: str, step_s: float, steps: int) -> float:
    """What a variant is expected to take, from the last measured step: group offloading about doubles a
    step; a fast variant adds a step and `COMPILE_ALLOWANCE_S`."""
    needed = step_s * steps * (2 if variant == "offload_group" else 1)
    return needed + step_s + COMPILE_ALLOWANCE_S if variant.startswith("fast") else needed


def _run_variants(family, bench, item: Entry, entry, report, args, device, started) -> None:
    timed = item.steps or args.steps
    steps = args.warmup + timed
    entry["timed_steps"] = timed
    references: dict[str, dict] = {}
    final_videos = FinalVideos(full_size.load(item.name), device, args.tiny) if args.decode_final else None
    peak = report["peak_bf16_tflops"]
    # Before the first measurement, a step at 40% of the GPU's peak (none on a CPU).
    estimate = entry["tflop_per_step"] / (0.4 * peak) if peak else None
    for variant in item.variants:
        elapsed = time.perf_counter() - started
        needed = seconds_needed(variant, estimate or 0.0, steps)
        if elapsed + needed > args.budget:
            entry["variants"][variant] = {"skipped": f"time budget: {elapsed:.0f} s used of {args.budget:.0f}"}
            print(f"  {variant:12s} skipped (time budget)", flush=True)
            write_json(args.json, report)
            continue
        if variant == "vae_decode":
            config = full_size.load(item.name)
            entry["variants"][variant] = result = run_vae_decode(config["backbone"], config, entry["model"], device, args.tiny)
            print(f"  {variant:12s} " + " ".join(f"{k}={result[k]}" for k in ("skipped", "tiling_off", "tiling_on")
                                                 if k in result), flush=True)
            write_json(args.json, report)
            continue
        try:
            result = _one_variant(family, bench, variant, steps, device, args)
        except Exception as error:  # e.g. out of memory: recorded (the traceback in the log), the next variant still runs
            traceback.print_exc()
            entry["variants"][variant] = {"error": _failure(error)}
            print(f"  {variant:12s} failed: {entry['variants'][variant]['error']}", flush=True)
            write_json(args.json, report)
            _free(device)
            continue
        if "skipped" not in result:
            estimate = result["s_per_step_median"]
            if variant in ("stock", "default", "all"):
                references[variant] = result.pop("_raw")
            if variant == "default" and "stock" in references:  # inertia's loop against the pipeline's
                result["relative_l2_final_latents_vs_stock"] = relative_l2(references["default"]["final"],
                                                                           references["stock"]["final"])
            elif variant.startswith("offload") and "default" in references:  # the same run, weights moved
                result["relative_l2_final_latents_vs_default"] = relative_l2(result["_raw"]["final"],
                                                                             references["default"]["final"])
                result["slowdown_vs_default"] = round(result["s_per_step_median"]
                                                      / entry["variants"]["default"]["s_per_step_median"], 3)
            elif variant.startswith(("fast", "all_")) and "all" in references:
                raw, ref = result.pop("_raw"), references["all"]
                result["relative_l2_prediction_per_step"] = [relative_l2(a, b) for a, b in zip(raw["predictions"], ref["predictions"])]
                result["relative_l2_final_latents"] = relative_l2(raw["final"], ref["final"])
                if final_videos is not None:
                    result["final_video_vs_all"] = final_videos.compare(raw, ref)
            result.pop("_raw", None)
            base = entry["variants"].get("stock", {}).get("s_per_step_median")
            if base:
                result["speedup_vs_stock"] = round(base / result["s_per_step_median"], 3)
            if peak:
                result["mfu"] = round(entry["tflop_per_step"] / result["s_per_step_median"] / peak, 4)
            print(f"  {variant:12s} {result['s_per_step_median']:.4f} s/step (spread {result['spread']:.3f}) "
                  f"peak {result.get('peak_gib')} GiB MFU {result.get('mfu')} "
                  + " ".join(f"{k}={result[k]}" for k in ("speedup_vs_stock", "compile_s", "graphs_compiled_after_first_step",
                                                            "fa4_calls", "cudnn_fp8_calls", "relative_l2_final_latents", "slowdown_vs_default",
                                                            "relative_l2_final_latents_vs_default") if k in result), flush=True)
        else:
            print(f"  {variant:12s} skipped: {result['skipped']}", flush=True)
        entry["variants"][variant] = result
        write_json(args.json, report)


def run_tiles_vae(backbone: str) -> bool:
    """Whether a run of this backbone decodes in tiles when `vae_tiling` is left on auto (the HunyuanVideo
    family): the final videos are compared as a run decodes them, and HunyuanVideo 1.5's untiled decode of a
    480p video does not fit beside the suite's tensors on a 140 GiB GPU."""
    from inertia.registry import default_registry

    return bool(default_registry().backbones.get(backbone).vae_tiling_default)


class FinalVideos:
    """The decoded final videos of one configuration: the VAE built once, at the first comparison, with the
    tiling a run uses by default (`run_tiles_vae`), and the reference's (`all`) video decoded once."""

    def __init__(self, config: dict, device: torch.device, tiny: bool):
        self.config, self.device, self.tiny = config, device, tiny
        self.vae: torch.nn.Module | str | None = None

    def compare(self, raw: dict, reference: dict) -> dict:
        if self.vae is None:
            self.vae = build_vae(self.config["backbone"], self.config["benchmark"].get("latent_channels"), self.tiny,
                                 self.device)
            if not isinstance(self.vae, str) and run_tiles_vae(self.config["backbone"]):
                self.vae.enable_tiling()
        if isinstance(self.vae, str):
            return {"skipped": self.vae}
        try:
            if "video" not in reference:
                reference["video"] = reference["decode"](self.vae)
            return video_difference(raw["decode"](self.vae), reference["video"])
        except Exception as error:  # e.g. out of memory at full size: recorded, the timings stand
            return {"error": _failure(error)}


def variant_kernel(variant: str, device: torch.device) -> tuple[Any, str | None]:
    """The attention kernel a variant names by its suffix (None: the backend), or why it cannot run here."""
    name = next((n for suffix, n in KERNEL_SUFFIXES.items() if variant.endswith(suffix)), None)
    if name is None:
        return None, None
    module = KERNELS[name]
    refused = module.gpu_refusal(str(device), cuda_capability(str(device)))
    return (None, f"{name} {refused}") if refused else (module.kernel(cuda_capability(str(device))), None)


def _one_variant(family, bench, variant, steps, device, args) -> dict:
    state = None
    kernel, refused = variant_kernel(variant, device)
    if refused:
        return {"skipped": refused}
    if variant.startswith("fast"):
        level = "float8" if variant.startswith("fast_float8") else "fast"
        try:
            performance.check_performance(level, device.type)
        except Exception as error:  # the one-line refusal inertia gives before loading
            return {"skipped": str(error)}
        torch._dynamo.reset()
        state = performance.apply_performance(list(bench.models.values()), level)
    with ExitStack() as stack:
        offload = None
        if variant.startswith("offload"):  # `default` with the transformers offloaded
            offload = stack.enter_context(offloaded(bench.models, variant.removeprefix("offload_"), device))
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode(), attention_backend(args.attention):
            if variant == "stock":
                raw = run_stock(family, bench, steps, device)
            else:
                raw = run_inertia(family, bench, steps, device, "default" if offload else variant, state, kernel)
        result = summary(raw["times"], args.warmup)
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
    if offload is not None:
        result["offload"] = asdict(offload)
    if kernel is not None:
        result[f"{kernel.name}_calls"] = raw[f"{kernel.name}_calls"]
    if variant.startswith("fast"):
        result.update(compiled_blocks=state.compiled_blocks, float8_linears=state.float8_linears,
                      compile_s=raw["compile_s"], compile_phases_s=raw["compile_phases_s"],
                      graphs_compiled_after_first_step=raw["graphs_compiled_after_first_step"],
                      **raw["performance_notes"])
    if "experts" in raw and any(raw["experts"]):
        result["experts"] = raw["experts"]
    if "scales" in raw:
        result["guidance_scales"] = [round(s, 4) if s is not None else None for s in raw["scales"]]
    result["_raw"] = raw
    return result


def _failure(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    message = (str(error).splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {message} ({Path(where.filename).name}:{where.lineno})"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def _environment(device: torch.device, args) -> dict:
    import diffusers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in gpu), None)
    return {"benchmark": "one denoising step per variant, full-size random bf16 weights (benchmarks/suite.py)",
            "gpu": gpu, "driver": _driver(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__, "torchao": _version("torchao"), "flash_attn_4": _version("flash-attn-4"),
            "nvidia_cutlass_dsl": _version("nvidia-cutlass-dsl"), "nvidia_cudnn_frontend": _version("nvidia-cudnn-frontend"),
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None, "peak_bf16_tflops": peak,
            "steps": args.steps, "warmup": args.warmup, "compile_backend": args.compile_backend,
            "attention": args.attention, "inductor_environment": performance.inductor_environment(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _driver() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
