"""Wan 2.1 and Wan 2.2 A14B (text- and image-to-video) behind the denoise-step interface.

The diffusers pipeline object is used as the container of the real components and for its
prompt/image encoding and latent preparation, so conditions and noise are exactly the
pipeline's; the denoising loop is inertia's (`core.sampling`).

Wan 2.2 A14B checkpoints are the same pipeline classes with two experts: `transformer` predicts
the timesteps t >= boundary_ratio * num_train_timesteps (high noise), `transformer_2` the rest
(low noise), with its own CFG scale `guidance_scale_2` (default: guidance_scale). As in
WanPipeline, guidance_scale alone turns CFG on (> 1) for both experts, inputs are cast to the
first transformer's dtype, and A14B image-to-video takes the image through the latent condition
only (no CLIP image encoder). The section names each step's expert (`Section.experts`), so the
trace records it and guidance schedules act on the scale in force at that step; the attention
hooks are installed on both experts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.attention import AttentionHooks, TokenLayout, VideoBlock, processors_installed
from ..core.backbone import PipelineBackbone, Section, single_section
from ..core.builtin_models import checkpoint_path
from ..core.checkpoints import (
    BUILTIN_PREFIX,
    CheckpointContents,
    checkpoint_mode,
    has_component,
    is_builtin,
    read_checkpoint_json,
)
from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.validation import check_frames, check_image_file, check_model_mode, check_multiple, reject_embedded_guidance
from . import wan_builtin

PIPELINES = {"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline"}
REAL_DEFAULTS = dict(height=480, width=832, num_frames=81, steps=50, guidance_scale=5.0, fps=16)
#: Wan 2.2 A14B with Wan-AI's published sample settings (720p, 40 steps, the high-noise expert's scale).
A14B_REAL_DEFAULTS = {
    "t2v": dict(height=720, width=1280, num_frames=81, steps=40, guidance_scale=4.0, fps=16),
    "i2v": dict(height=720, width=1280, num_frames=81, steps=40, guidance_scale=3.5, fps=16),
}
BUILTIN_DEFAULTS = dict(height=64, width=64, num_frames=17, steps=10, guidance_scale=5.0, fps=16)
HIGH_NOISE, LOW_NOISE = "high_noise", "low_noise"
T2V_COMPONENTS = frozenset({"scheduler", "text_encoder", "tokenizer", "transformer", "transformer_2", "vae"})
#: Wan 2.2 TI2V's `expand_timesteps` (per-token timesteps, its own VAE) is not handled yet.
PIPELINE_KEYS = {"boundary_ratio": None, "expand_timesteps": (False,)}
#: Transformer config fields the two experts must share: one token layout, one layer numbering for the hooks.
EXPERT_SHAPE = ("patch_size", "in_channels", "out_channels", "num_layers")
#: The built-in models: name -> (mode, Wan 2.2 A14B layout).
BUILTIN_MODELS = {
    f"{BUILTIN_PREFIX}{family}-{mode}-tiny-{wan_builtin.VERSION}": (mode, family == "wan22-a14b")
    for family in ("wan", "wan22-a14b") for mode in ("t2v", "i2v")
}


@dataclass
class WanJob:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    latents: torch.Tensor
    condition: torch.Tensor | None  # I2V: mask (4) + image latents (16), concatenated to the input
    image_embeds: torch.Tensor | None  # I2V: CLIP image tokens for the image cross-attention
    steps: int


@dataclass(frozen=True)
class WanCheckpoint:
    """What a Wan checkpoint is, known before loading."""

    mode: str
    boundary_ratio: float | None  # Wan 2.2 A14B: where `transformer_2` takes over; None: one transformer
    image_encoder: bool  # image-to-video with CLIP image tokens (Wan 2.1; Wan 2.2 A14B has none)

    @property
    def experts(self) -> bool:
        return self.boundary_ratio is not None


def read_checkpoint(model: str) -> WanCheckpoint:
    """From a built-in's name, the checkpoint's model_index.json, or for a hub id not in the local cache
    its name (Wan-AI's "-A14B-" repositories are the two-expert models; `load` checks what arrives)."""
    if is_builtin(model):
        if model not in BUILTIN_MODELS:
            raise ConfigError("model", f"unknown built-in Wan model {model!r}; allowed: {', '.join(BUILTIN_MODELS)}")
        mode, a14b = BUILTIN_MODELS[model]
        return WanCheckpoint(mode, wan_builtin.A14B_BOUNDARY[mode] if a14b else None, mode == "i2v" and not a14b)
    mode = checkpoint_mode("wan", model, PIPELINES)
    index = read_checkpoint_json(model, "model_index.json")
    if index is None:
        a14b = "A14B" in model.upper()
        return WanCheckpoint(mode, wan_builtin.A14B_BOUNDARY[mode] if a14b else None, mode == "i2v" and not a14b)
    ratio, second = index.get("boundary_ratio"), has_component(index, "transformer_2")
    if second != (ratio is not None):
        have, lack = ("component transformer_2", "boundary_ratio") if second else ("boundary_ratio", "transformer_2")
        raise ConfigError("model", f"{model} has {have} but no {lack}; a two-expert Wan 2.2 checkpoint needs both "
                                   "(transformer_2 runs the timesteps below boundary_ratio * num_train_timesteps)")
    return WanCheckpoint(mode, ratio, has_component(index, "image_encoder"))


def _check_transformers(model: str, checkpoint: WanCheckpoint) -> None:
    """The experts share their layout, and an image encoder is there exactly when the transformer takes
    its tokens (image_dim): either mismatch would leave part of the checkpoint unused or misread."""
    transformer = None if is_builtin(model) else read_checkpoint_json(model, "transformer/config.json")
    if transformer is None:
        return
    if checkpoint.experts:
        second = read_checkpoint_json(model, "transformer_2/config.json") or {}
        differ = [key for key in EXPERT_SHAPE if key in second and second[key] != transformer.get(key)]
        if differ:
            raise ConfigError("model", f"{model}: transformer and transformer_2 differ in {', '.join(differ)}; "
                                       "the two experts must share them")
    image_dim = transformer.get("image_dim")
    if checkpoint.mode == "i2v" and (image_dim is not None) != checkpoint.image_encoder:
        if checkpoint.image_encoder:
            problem = "has component image_encoder, but its transformer takes no image tokens (image_dim null)"
        else:
            problem = f"has no component image_encoder, but its transformer takes CLIP image tokens (image_dim {image_dim})"
        raise ConfigError("model", f"{model} {problem}")


def _compression(model: str) -> tuple[int, int, int]:
    """(temporal, spatial, patch) factors: from the checkpoint's configs when readable, else Wan 2.1's."""
    if is_builtin(model):
        return 4, 8, 2
    vae = read_checkpoint_json(model, "vae/config.json") or {}
    transformer = read_checkpoint_json(model, "transformer/config.json") or {}
    downsample = vae.get("temperal_downsample", [False, True, True])
    patch = transformer.get("patch_size", [1, 2, 2])
    return 2 ** sum(downsample), 2 ** len(downsample), patch[1]


def _rotate(hidden: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on interleaved pairs, in the stock processor's operation order."""
    x1, x2 = hidden.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(hidden)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden)


class HookedWanSelfAttention:
    """Self-attention (`attn1`) of one Wan block, with the inertia hook between RoPE and the backend.

    Computes exactly what diffusers' WanAttnProcessor computes for self-attention (bit-identical
    when no transform is registered); the attention backend comes from the active diffusers
    backend, as for the stock processor.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, hooks: AttentionHooks):
        self.layer, self.hooks = layer, hooks

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        # Position embeddings are applied above: transforms see post-RoPE queries and keys.
        query, key, value = self.hooks.apply(query, key, value, self.layer)
        out = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def wan_token_layout(transformer: Any, latent_shape: tuple[int, ...], conditioned: bool) -> TokenLayout:
    """Self-attention of a WanTransformer3DModel holds video tokens only (text enters through
    cross-attention), frame-major after the patchify; with a conditioning image latent frame 0
    is the conditioned frame."""
    _, _, frames, height, width = latent_shape
    _, patch_h, patch_w = transformer.config.patch_size
    grid = (height // patch_h, width // patch_w)
    context = 1 if conditioned else 0
    blocks = [VideoBlock(0, context, *grid, "condition")] if context else []
    blocks.append(VideoBlock(context * grid[0] * grid[1], frames - context, *grid, "noisy"))
    return TokenLayout(frames * grid[0] * grid[1], tuple(blocks))


def hook_wan_self_attention(transformer: Any, hooks: AttentionHooks):
    """Install the hooked processor on every block's self-attention (`attn1`) for the duration."""
    modules = [block.attn1 for block in transformer.blocks]
    return processors_installed(modules, (HookedWanSelfAttention(i, hooks) for i in range(len(modules))))


class WanBackbone(PipelineBackbone):
    name = "wan"
    modes = ("t2v", "i2v")
    default_models: ClassVar[Mapping[str, str]] = {
        "t2v": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "i2v": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    }
    guidance_targets = ("cfg",)
    description = (
        "Wan 2.1 and Wan 2.2 A14B (diffusers WanTransformer3DModel, flow-matching UniPC; A14B: high- and "
        "low-noise experts), text- and image-to-video, true CFG."
    )
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]] = {
        "t2v": CheckpointContents(T2V_COMPONENTS, PIPELINE_KEYS),
        "i2v": CheckpointContents(T2V_COMPONENTS | {"image_encoder", "image_processor"}, PIPELINE_KEYS),
    }

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        mode = config.mode
        model = config.model or f"{BUILTIN_PREFIX}wan-{mode}-tiny-{wan_builtin.VERSION}"
        checkpoint = read_checkpoint(model)
        check_model_mode(cls.name, model, checkpoint.mode, mode)
        cls.refuse_unhandled_contents(model, mode)
        _check_transformers(model, checkpoint)
        if config.image is not None:
            check_image_file("image", config.image)
        if is_builtin(model):
            defaults = BUILTIN_DEFAULTS
        else:
            defaults = A14B_REAL_DEFAULTS[mode] if checkpoint.experts else REAL_DEFAULTS
        resolved = config.with_defaults(defaults).model_copy(update={"model": model})
        reject_embedded_guidance(cls.name, resolved)
        resolved = _resolve_guidance_2(resolved, checkpoint)
        temporal, spatial, patch = _compression(model)
        why = f"VAE {spatial}x spatial compression x patch {patch}"
        check_multiple("height", resolved.height, spatial * patch, why)
        check_multiple("width", resolved.width, spatial * patch, why)
        check_frames("num_frames", resolved.num_frames, temporal, f"VAE {temporal}x temporal compression")
        return resolved

    @classmethod
    def expert_guidance(cls, config: RunConfig) -> dict[str, dict[str, float]]:
        """Wan 2.2 A14B (`resolve` sets guidance_scale_2 exactly for two-expert checkpoints): the
        high-noise expert takes guidance_scale, the low-noise one guidance_scale_2; as in WanPipeline,
        guidance_scale alone turns CFG on (> 1) for both."""
        if config.guidance_scale_2 is None:
            return {}
        if config.guidance_scale <= 1.0:
            return {HIGH_NOISE: {}, LOW_NOISE: {}}
        return {HIGH_NOISE: {"cfg": config.guidance_scale}, LOW_NOISE: {"cfg": config.guidance_scale_2}}

    supports_attention_hooks = True

    # ----- loading ---------------------------------------------------------------------------
    def __init__(self, pipeline: Any, device: torch.device, smoke_test: bool):
        super().__init__(pipeline, device, smoke_test)
        ratio = pipeline.config.boundary_ratio
        #: Wan 2.2 A14B: timesteps below this one are the low-noise expert's (None: one transformer).
        self.boundary = None if ratio is None else ratio * pipeline.scheduler.config.num_train_timesteps
        self.low_noise = None if ratio is None else pipeline.transformer_2

    @classmethod
    def load(cls, config: RunConfig) -> "WanBackbone":
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

        mode, model = config.mode, config.model
        builtin = is_builtin(model)
        checkpoint = read_checkpoint(model)
        path = checkpoint_path(model, lambda directory: wan_builtin.build(mode, directory, checkpoint.experts))
        pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
        dtype = getattr(torch, config.dtype)
        # The VAE (and CLIP image encoder) stay float32, as Wan's reference inference keeps them.
        extra: dict[str, Any] = {"vae": AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32)}
        if checkpoint.image_encoder:
            from transformers import CLIPVisionModel

            extra["image_encoder"] = CLIPVisionModel.from_pretrained(path, subfolder="image_encoder", dtype=torch.float32)
        pipeline = pipeline_cls.from_pretrained(path, dtype=dtype, **extra)
        # A hub id that was not in the local cache was resolved by its name: check what arrived.
        if not builtin:
            cls.refuse_unhandled_contents(model, mode)
        experts = pipeline.config.boundary_ratio is not None
        if experts != (config.guidance_scale_2 is not None):
            raise ConfigError("model", f"{model} has {'two experts' if experts else 'one transformer'}, unlike the "
                                       "config resolved before it was here; run again (its configs are cached now)")
        pipeline.set_progress_bar_config(disable=True)
        device = torch.device(config.device)
        pipeline.to(device)
        return cls(pipeline, device, smoke_test=builtin)

    # ----- denoise-step interface --------------------------------------------------------------
    def prepare(self, config: RunConfig, generator: torch.Generator) -> WanJob:
        pipe, dtype = self.pipe, self.transformer.dtype
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=config.prompt,
            negative_prompt=config.negative_prompt,
            do_classifier_free_guidance=True,
            max_sequence_length=512,
            device=self.device,
        )
        pipe.scheduler.set_timesteps(config.steps, device=self.device)
        condition = image_embeds = None
        if config.image is None:
            latents = pipe.prepare_latents(
                1, self.transformer.config.in_channels, config.height, config.width, config.num_frames,
                torch.float32, self.device, generator,
            )
        else:
            from diffusers.utils import load_image

            image = load_image(str(config.image))
            if self.transformer.config.image_dim is not None:  # CLIP image tokens: Wan 2.1, not Wan 2.2 A14B
                image_embeds = pipe.encode_image(image, self.device).to(dtype)
            pixels = pipe.video_processor.preprocess(image, height=config.height, width=config.width)
            latents, condition = pipe.prepare_latents(
                pixels.to(self.device, dtype=torch.float32), 1, pipe.vae.config.z_dim, config.height, config.width,
                config.num_frames, torch.float32, self.device, generator,
            )
        return WanJob(prompt_embeds.to(dtype), negative_embeds.to(dtype), latents, condition, image_embeds, config.steps)

    def sections(self, job: WanJob) -> Iterator[Section]:
        scheduler = self.pipe.scheduler
        experts = None
        if self.boundary is not None:  # the pipelines' rule: the high-noise expert for t >= boundary
            experts = [HIGH_NOISE if t >= self.boundary else LOW_NOISE for t in scheduler.timesteps]
        return single_section(job, scheduler, experts)

    def predict(
        self, job: WanJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        latents = section.latents
        model_input = latents if job.condition is None else torch.cat([latents, job.condition], dim=1)
        model_input = model_input.to(self.transformer.dtype)  # the first transformer's, as in the pipelines
        timestep = section.timesteps[step].expand(latents.shape[0])
        low_noise = section.experts is not None and section.experts[step] == LOW_NOISE
        transformer = self.low_noise if low_noise else self.transformer

        def forward(embeds: torch.Tensor, branch: str) -> torch.Tensor:
            with transformer.cache_context(branch):
                return transformer(
                    hidden_states=model_input,
                    timestep=timestep,
                    encoder_hidden_states=embeds,
                    encoder_hidden_states_image=job.image_embeds,
                    return_dict=False,
                )[0]

        cond = forward(job.prompt_embeds, "cond")
        return cond, forward(job.negative_prompt_embeds, "uncond") if uncond else None

    # ----- attention interface -----------------------------------------------------------------
    def token_layout(self, job: WanJob, section: Section) -> TokenLayout:
        return wan_token_layout(self.transformer, section.latents.shape, conditioned=job.condition is not None)

    @property
    def num_attention_layers(self) -> int:
        return len(self.transformer.blocks)

    @contextmanager
    def hooked_attention(self, hooks: AttentionHooks) -> Iterator[None]:
        """Both experts of a Wan 2.2 A14B checkpoint are hooked (they share the layer numbering)."""
        with ExitStack() as stack:
            for transformer in (self.transformer, self.low_noise):
                if transformer is not None:
                    stack.enter_context(hook_wan_self_attention(transformer, hooks))
            yield

    def decode(self, job: WanJob) -> np.ndarray:
        vae = self.pipe.vae
        latents = job.latents.to(vae.device, vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="np")[0]


def _resolve_guidance_2(config: RunConfig, checkpoint: WanCheckpoint) -> RunConfig:
    """guidance_scale_2 for a two-expert checkpoint (default, as in WanPipeline: guidance_scale); refused for one
    transformer, or where it could not act (CFG off: WanPipeline decides CFG from guidance_scale alone)."""
    scale, scale_2 = config.guidance_scale, config.guidance_scale_2
    if not checkpoint.experts:
        if scale_2 is not None:
            raise ConfigError("guidance_scale_2", f"{config.model} has one transformer; guidance_scale_2 is the "
                                                  "low-noise expert's scale of a two-expert model (Wan 2.2 A14B)")
        return config
    if scale <= 1.0 and scale_2 not in (None, scale):
        raise ConfigError("guidance_scale_2", f"{scale_2:g} cannot act: guidance_scale {scale:g} <= 1 turns CFG off "
                                              "for both experts (as in WanPipeline); raise guidance_scale or drop it")
    return config.model_copy(update={"guidance_scale_2": scale if scale_2 is None else scale_2})
