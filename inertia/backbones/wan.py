"""Wan 2.1 and Wan 2.2 (A14B, TI2V-5B; text- and image-to-video) behind the denoise-step interface.

The diffusers pipeline object is used as the container of the real components and for its
prompt/image encoding and latent preparation, so conditions and noise are exactly the
pipeline's; the denoising loop is inertia's (`core.sampling`).

Wan 2.2 A14B checkpoints are the same pipeline classes with two experts: `transformer` predicts
the timesteps t >= boundary_ratio * num_train_timesteps (high noise), `transformer_2` the rest
(low noise), with its own CFG scale `guidance_scale_2` (default: guidance_scale). As in
WanPipeline, guidance_scale > 1 turns CFG on for both experts (with guidance_scale <= 1, a
guidance_scale_2 > 1 still guides the low-noise expert, which WanPipeline ignores:
`WanBackbone.expert_guidance`), inputs are cast to the first transformer's dtype, and A14B image-to-video takes the image through the latent condition
only (no CLIP image encoder). The section names each step's expert (`Section.experts`), so the
trace records it and guidance schedules act on the scale in force at that step; the attention
hooks are installed on both experts.

Wan 2.2 TI2V-5B (`expand_timesteps`) runs text- and image-to-video from one checkpoint, with a
48-channel VAE of 16x spatial compression: the transformer takes one timestep per token, and for
image-to-video the image's latent frame is held fixed (its tokens' timestep 0), as
WanPipeline and WanImageToVideoPipeline do it.

History interface (`core.history`): an image-to-video run hands over its conditioning image as the
block "image" (role "condition") at every prediction: the image-latent channels of latent frame 0 of
`WanJob.condition` (Wan 2.1, 2.2 A14B: after the mask channels; the later frames' channels encode
the blank frames still to be generated and are kept back), or the image's latent frame itself
(TI2V-5B). A transformed image enters the model input only; TI2V decodes its clean image frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checkpoint_files import weights_options
from ..core.attention import AttentionHooks, Role, TokenLayout, VideoBlock, processors_installed
from ..core.backbone import PipelineBackbone, Section, single_section
from ..core.builtin_models import checkpoint_path
from ..core.checkpoints import (
    BUILTIN_PREFIX,
    CheckpointContents,
    attention_layer_count,
    checkpoint_mode,
    has_component,
    is_builtin,
    read_checkpoint_json,
)
from ..core.config import RunConfig
from ..core import context_parallel
from ..core.context_parallel import hooked_self_attention
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
#: Wan 2.2 TI2V-5B with Wan-AI's published sample settings (1280x704, 121 frames at 24 fps).
TI2V_REAL_DEFAULTS = dict(height=704, width=1280, num_frames=121, steps=50, guidance_scale=5.0, fps=24)
BUILTIN_DEFAULTS = dict(height=64, width=64, num_frames=17, steps=10, guidance_scale=5.0, fps=16)
HIGH_NOISE, LOW_NOISE = "high_noise", "low_noise"
T2V_COMPONENTS = frozenset({"scheduler", "text_encoder", "tokenizer", "transformer", "transformer_2", "vae"})
PIPELINE_KEYS = {"boundary_ratio": None, "expand_timesteps": None}
#: Transformer config fields the two experts must share: one token layout, one layer numbering for the hooks.
EXPERT_SHAPE = ("patch_size", "in_channels", "out_channels", "num_layers")
#: The built-in models: name -> (variant as in `wan_builtin.VARIANTS`, the mode it is saved as).
BUILTIN_MODELS = {
    **{f"{BUILTIN_PREFIX}{family}-{mode}-tiny-{wan_builtin.VERSION}": (variant, mode)
       for family, variant in (("wan", "wan2.1"), ("wan22-a14b", "wan2.2-a14b")) for mode in ("t2v", "i2v")},
    f"{BUILTIN_PREFIX}wan22-ti2v-tiny-{wan_builtin.VERSION}": ("wan2.2-ti2v", "t2v"),
}


@dataclass
class WanJob:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    latents: torch.Tensor
    # I2V: mask (4) + image latents (16), concatenated to the input; TI2V: the image's latent frame
    condition: torch.Tensor | None
    image_embeds: torch.Tensor | None  # I2V: CLIP image tokens for the image cross-attention
    steps: int
    # TI2V (expand_timesteps): 1 where the latents are denoised, 0 on the image's frame; per-token timesteps
    timestep_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class WanCheckpoint:
    """What a Wan checkpoint is, known before loading."""

    modes: tuple[str, ...]  # Wan 2.2 TI2V: text- and image-to-video from one checkpoint
    boundary_ratio: float | None = None  # Wan 2.2 A14B: where `transformer_2` takes over; None: one transformer
    image_encoder: bool = False  # image-to-video with CLIP image tokens (Wan 2.1)
    expand_timesteps: bool = False  # Wan 2.2 TI2V: per-token timesteps, 48-channel VAE with 16x spatial compression

    @property
    def experts(self) -> bool:
        return self.boundary_ratio is not None

    @classmethod
    def published(cls, variant: str, mode: str) -> "WanCheckpoint":
        """The layout Wan-AI publishes for `variant` (see `wan_builtin.VARIANTS`), which the built-ins keep."""
        if variant == "wan2.2-ti2v":
            return cls(("t2v", "i2v"), expand_timesteps=True)
        if variant == "wan2.2-a14b":
            return cls((mode,), wan_builtin.A14B_BOUNDARY[mode])
        return cls((mode,), image_encoder=mode == "i2v")


def read_checkpoint(model: str) -> WanCheckpoint:
    """From a built-in's name, the checkpoint's model_index.json, or for a hub id not in the local cache
    its name (Wan-AI's "-A14B-" and "-TI2V-" repositories; `load` checks what arrives)."""
    if is_builtin(model):
        if model not in BUILTIN_MODELS:
            raise ConfigError("model", f"unknown built-in Wan model {model!r}; allowed: {', '.join(BUILTIN_MODELS)}")
        return WanCheckpoint.published(*BUILTIN_MODELS[model])
    mode = checkpoint_mode("wan", model, PIPELINES)
    index = read_checkpoint_json(model, "model_index.json")
    if index is None:
        name = model.upper()
        variant = "wan2.2-ti2v" if "TI2V" in name else "wan2.2-a14b" if "A14B" in name else "wan2.1"
        return WanCheckpoint.published(variant, mode)
    ratio, second = index.get("boundary_ratio"), has_component(index, "transformer_2")
    if second != (ratio is not None):
        have, lack = ("component transformer_2", "boundary_ratio") if second else ("boundary_ratio", "transformer_2")
        raise ConfigError("model", f"{model} has {have} but no {lack}; a two-expert Wan 2.2 checkpoint needs both "
                                   "(transformer_2 runs the timesteps below boundary_ratio * num_train_timesteps)")
    expand = bool(index.get("expand_timesteps"))
    return WanCheckpoint(("t2v", "i2v") if expand else (mode,), ratio, has_component(index, "image_encoder"), expand)


def _check_transformers(model: str, checkpoint: WanCheckpoint, mode: str) -> None:
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
    if mode == "i2v" and (image_dim is not None) != checkpoint.image_encoder:
        if checkpoint.image_encoder:
            problem = "has component image_encoder, but its transformer takes no image tokens (image_dim null)"
        else:
            problem = f"has no component image_encoder, but its transformer takes CLIP image tokens (image_dim {image_dim})"
        raise ConfigError("model", f"{model} {problem}")


def _compression(model: str, checkpoint: WanCheckpoint) -> tuple[int, int, int]:
    """(temporal, spatial, patch) factors, as the pipelines read them from the VAE config, else the published
    ones (spatial: 8, TI2V's VAE 16)."""
    spatial = 16 if checkpoint.expand_timesteps else 8
    if is_builtin(model):
        return 4, spatial, 2
    vae = read_checkpoint_json(model, "vae/config.json") or {}
    transformer = read_checkpoint_json(model, "transformer/config.json") or {}
    patch = transformer.get("patch_size", [1, 2, 2])
    return vae.get("scale_factor_temporal", 4), vae.get("scale_factor_spatial", spatial), patch[1]


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
        self.layer, self.hooks, self.hook = layer, hooks, hooks.point(layer)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        if rotary_emb is not None:
            query, key = _rotate(query, *rotary_emb), _rotate(key, *rotary_emb)
        # Position embeddings are applied above: transforms see post-RoPE queries and keys (under context
        # parallelism, of the whole sequence: `hooked_self_attention`).
        out = hooked_self_attention(query, key, value, self.hook, attn_mask=attention_mask,
                                    backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def wan_token_layout(transformer: Any, latent_shape: tuple[int, ...], conditioned: bool, context_frames: int = 1,
                     role: Role = "condition") -> TokenLayout:
    """Self-attention of a WanTransformer3DModel holds video tokens only (text enters through
    cross-attention), frame-major after the patchify; with a conditioning image latent frame 0
    is the conditioned frame (`context_frames` conditioned frames of `role`, for the test bed's
    history mode)."""
    _, _, frames, height, width = latent_shape
    _, patch_h, patch_w = transformer.config.patch_size
    grid = (height // patch_h, width // patch_w)
    context = context_frames if conditioned else 0
    blocks = [VideoBlock(0, context, *grid, role)] if context else []
    blocks.append(VideoBlock(context * grid[0] * grid[1], frames - context, *grid, "noisy"))
    return TokenLayout(frames * grid[0] * grid[1], tuple(blocks))


def hook_wan_self_attention(transformer: Any, hooks: AttentionHooks):
    """Install the hooked processor on every block's self-attention (`attn1`) for the duration."""
    modules = [block.attn1 for block in transformer.blocks]
    return processors_installed(modules, (HookedWanSelfAttention(i, hooks) for i in range(len(modules))))


class WanBackbone(PipelineBackbone):
    name = "wan"
    builtin_models = tuple(BUILTIN_MODELS)
    modes = ("t2v", "i2v")
    default_models: ClassVar[Mapping[str, str]] = {
        "t2v": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "i2v": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    }
    guidance_targets = ("cfg",)
    description = (
        "Wan 2.1 and Wan 2.2 (diffusers WanTransformer3DModel, flow-matching UniPC; A14B: high- and low-noise "
        "experts; TI2V-5B: text- and image-to-video from one checkpoint), true CFG."
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
        check_model_mode(cls.name, model, mode if mode in checkpoint.modes else checkpoint.modes[0], mode)
        cls.refuse_unhandled_contents(model, mode)
        _check_transformers(model, checkpoint, mode)
        if config.image is not None:
            check_image_file("image", config.image)
        if is_builtin(model):
            defaults = BUILTIN_DEFAULTS
        elif checkpoint.expand_timesteps:
            defaults = TI2V_REAL_DEFAULTS
        else:
            defaults = A14B_REAL_DEFAULTS[mode] if checkpoint.experts else REAL_DEFAULTS
        resolved = config.with_defaults(defaults).model_copy(update={"model": model})
        reject_embedded_guidance(cls.name, resolved)
        resolved = _resolve_guidance_2(resolved, checkpoint)
        temporal, spatial, patch = _compression(model, checkpoint)
        why = f"VAE {spatial}x spatial compression x patch {patch}"
        check_multiple("height", resolved.height, spatial * patch, why)
        check_multiple("width", resolved.width, spatial * patch, why)
        check_frames("num_frames", resolved.num_frames, temporal, f"VAE {temporal}x temporal compression")
        if resolved.context_parallel > 1:
            _check_context_parallel(resolved, (resolved.num_frames - 1) // temporal + 1, spatial * patch)
        return resolved

    @classmethod
    def expert_guidance(cls, config: RunConfig) -> dict[str, dict[str, float]]:
        """Wan 2.2 A14B (`resolve` sets guidance_scale_2 exactly for two-expert checkpoints): the
        high-noise expert takes guidance_scale, the low-noise one guidance_scale_2. As in WanPipeline,
        guidance_scale > 1 turns CFG on for both, each with its scale. With guidance_scale <= 1 the
        high-noise expert runs without CFG (its scale in force is 1, `core.combination.NEUTRAL_SCALE`),
        and the low-noise expert is guided by a guidance_scale_2 > 1: the loop runs the unconditional
        forward only at the steps whose scale is not 1, as for a schedule of a CFG-off run (WanPipeline
        would ignore guidance_scale_2 there)."""
        scale, scale_2 = config.guidance_scale, config.guidance_scale_2
        if scale_2 is None:
            return {}
        cfg_on = scale > 1.0
        return {HIGH_NOISE: {"cfg": scale} if cfg_on else {},
                LOW_NOISE: {"cfg": scale_2} if cfg_on or scale_2 > 1.0 else {}}

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        """Blocks of the transformer, and of Wan 2.2 A14B's low-noise expert too (the hooks number both alike)."""
        if is_builtin(config.model):
            return wan_builtin.TINY_LAYERS
        experts = ("transformer", "transformer_2") if read_checkpoint(config.model).experts else ("transformer",)
        return attention_layer_count(config.model, [f"{name}/config.json" for name in experts])

    @classmethod
    def cfg_off_reason(cls, config: RunConfig) -> str:
        if config.guidance_scale_2 is not None and config.guidance_scale_2 > 1.0:
            return "guidance_scale <= 1 runs no unconditional pass for the high-noise expert"
        return super().cfg_off_reason(config)

    supports_attention_hooks = True
    supports_history_hooks = True
    context_parallel_refusal = None  # diffusers' WanTransformer3DModel has a `_cp_plan`

    # ----- loading ---------------------------------------------------------------------------
    def __init__(self, pipeline: Any, device: torch.device, smoke_test: bool):
        super().__init__(pipeline, device, smoke_test)
        ratio = pipeline.config.boundary_ratio
        #: Wan 2.2 A14B: timesteps below this one are the low-noise expert's (None: one transformer).
        self.boundary = None if ratio is None else ratio * pipeline.scheduler.config.num_train_timesteps
        self.low_noise = None if ratio is None else pipeline.transformer_2
        #: Wan 2.2 TI2V: one timestep per token (`WanJob.timestep_mask`).
        self.expand_timesteps = bool(pipeline.config.expand_timesteps)

    @classmethod
    def load(cls, config: RunConfig) -> "WanBackbone":
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

        mode, model = config.mode, config.model
        builtin = is_builtin(model)
        checkpoint = read_checkpoint(model)
        path = checkpoint_path(model, lambda directory: _build_builtin(model, directory))
        pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
        options = weights_options(config.allow_pickled_weights)
        dtype = getattr(torch, config.dtype)
        # The VAE (and CLIP image encoder) stay float32, as Wan's reference inference keeps them.
        extra: dict[str, Any] = {"vae": AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32, **options)}
        if checkpoint.image_encoder:
            from transformers import CLIPVisionModel

            extra["image_encoder"] = CLIPVisionModel.from_pretrained(path, subfolder="image_encoder", dtype=torch.float32,
                                                                     **options)
        if config.context_parallel > 1:
            context_parallel.join(config.device)
        pipeline = pipeline_cls.from_pretrained(path, dtype=dtype, **extra, **options)
        # A hub id that was not in the local cache was resolved by its name: check what arrived.
        if not builtin:
            cls.refuse_unhandled_contents(model, mode)
        experts, expand = pipeline.config.boundary_ratio is not None, bool(pipeline.config.expand_timesteps)
        if experts != (config.guidance_scale_2 is not None) or expand != checkpoint.expand_timesteps:
            raise ConfigError("model", f"{model} ({'two experts' if experts else 'one transformer'}, expand_timesteps "
                                       f"{str(expand).lower()}) is not the checkpoint resolved before it was here; "
                                       "run again (its configs are cached now)")
        backbone = cls.on_device(pipeline, config, smoke_test=builtin)
        if config.context_parallel > 1:
            experts = [t for t in (pipeline.transformer, getattr(pipeline, "transformer_2", None)) if t is not None]
            context_parallel.enable(experts, config.context_parallel, config.device)
        return backbone

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
        condition = image_embeds = mask = None
        if config.image is None:
            latents = pipe.prepare_latents(
                1, self.transformer.config.in_channels, config.height, config.width, config.num_frames,
                torch.float32, self.device, generator,
            )
            if self.expand_timesteps:
                mask = torch.ones(latents.shape, dtype=torch.float32, device=self.device)
        else:
            from diffusers.utils import load_image

            image = load_image(str(config.image))
            if self.transformer.config.image_dim is not None:  # CLIP image tokens: Wan 2.1, not Wan 2.2 A14B
                image_embeds = pipe.encode_image(image, self.device).to(dtype)
            pixels = pipe.video_processor.preprocess(image, height=config.height, width=config.width)
            latents, condition, *masks = pipe.prepare_latents(
                pixels.to(self.device, dtype=torch.float32), 1, pipe.vae.config.z_dim, config.height, config.width,
                config.num_frames, torch.float32, self.device, generator,
            )
            mask = masks[0] if masks else None  # TI2V (expand_timesteps): the first-frame mask
        return WanJob(prompt_embeds.to(dtype), negative_embeds.to(dtype), latents, condition, image_embeds, config.steps,
                      mask)

    def sections(self, job: WanJob) -> Iterator[Section]:
        scheduler = self.pipe.scheduler
        experts = None
        if self.boundary is not None:  # the pipelines' rule: the high-noise expert for t >= boundary
            experts = [HIGH_NOISE if t >= self.boundary else LOW_NOISE for t in scheduler.timesteps]
        return single_section(job, scheduler, experts)

    def predict(
        self, job: WanJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        latents, mask, t = section.latents, job.timestep_mask, section.timesteps[step]
        model_input = _with_condition(latents, job, self._condition(job))
        model_input = model_input.to(self.transformer.dtype)  # the first transformer's, as in the pipelines
        if mask is None:
            timestep = t.expand(latents.shape[0])
        else:  # one timestep per token (patch positions of each latent frame), 0 on the image's frame
            _, patch_h, patch_w = self.transformer.config.patch_size
            timestep = (mask[0][0][:, ::patch_h, ::patch_w] * t).flatten().unsqueeze(0).expand(latents.shape[0], -1)
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

    def _condition(self, job: WanJob) -> torch.Tensor | None:
        """The image condition of this prediction: the job's, with the run's history transforms applied
        to its image latents (the mask channels, if any, come first: `condition` minus the VAE's z_dim)."""
        if job.condition is None:
            return None
        mask_channels = job.condition.shape[1] - self.pipe.vae.config.z_dim
        return self.with_image_handed_over(job.condition, slice(mask_channels, None))

    # ----- attention interface -----------------------------------------------------------------
    def token_layout(self, job: WanJob, section: Section) -> TokenLayout:
        return wan_token_layout(self.transformer, section.latents.shape, conditioned=job.condition is not None)

    @property
    def num_attention_layers(self) -> int:
        return len(self.transformer.blocks)

    @property
    def denoisers(self) -> list[torch.nn.Module]:
        return [t for t in (self.transformer, self.low_noise) if t is not None]

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
        latents = job.latents
        if job.timestep_mask is not None and job.condition is not None:  # TI2V image-to-video: the image's frame
            latents = _with_condition(latents, job)
        latents = latents.to(self.device, vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="np")[0]


def _resolve_guidance_2(config: RunConfig, checkpoint: WanCheckpoint) -> RunConfig:
    """guidance_scale_2 for a two-expert checkpoint (default, as in WanPipeline: guidance_scale); refused for one
    transformer, or where it is truly inert: with guidance_scale <= 1, a guidance_scale_2 <= 1 leaves CFG off for
    the low-noise expert too (`WanBackbone.expert_guidance`), exactly as guidance_scale does."""
    scale, scale_2 = config.guidance_scale, config.guidance_scale_2
    if not checkpoint.experts:
        if scale_2 is not None:
            raise ConfigError("guidance_scale_2", f"{config.model} has one transformer; guidance_scale_2 is the "
                                                  "low-noise expert's scale of a two-expert model (Wan 2.2 A14B)")
        return config
    if scale <= 1.0 and scale_2 is not None and scale_2 != scale and scale_2 <= 1.0:
        raise ConfigError("guidance_scale_2", f"{scale_2:g} cannot act: with guidance_scale {scale:g} <= 1 CFG is off, "
                                              "and a low-noise scale <= 1 leaves it off for that expert too; allowed: "
                                              f"> 1, or {scale:g}")
    return config.model_copy(update={"guidance_scale_2": scale if scale_2 is None else scale_2})


def _check_context_parallel(config: RunConfig, latent_frames: int, pixels_per_token: int) -> None:
    """Ulysses splits the tokens into equal chunks and the heads into equal groups, one per rank."""
    degree = config.context_parallel
    tokens = latent_frames * (config.height // pixels_per_token) * (config.width // pixels_per_token)
    if tokens % degree:
        raise ConfigError("context_parallel", f"{degree} does not divide the {tokens} self-attention tokens of "
                                              f"{config.height}x{config.width}x{config.num_frames}; pick a size whose "
                                              "token count it divides")
    heads = wan_builtin.TINY_HEADS if is_builtin(config.model) else (
        read_checkpoint_json(config.model, "transformer/config.json") or {}).get("num_attention_heads")
    if heads is not None and heads % degree:
        raise ConfigError("context_parallel", f"{degree} does not divide the model's {heads} attention heads")


def _with_condition(latents: torch.Tensor, job: WanJob, condition: torch.Tensor | None = None) -> torch.Tensor:
    """The model input: the latents with the image condition (default: the job's), as the pipelines combine them
    (I2V: concatenated channels; TI2V image-to-video: the image's latent frame in place of the denoised one)."""
    condition = job.condition if condition is None else condition
    if condition is None:
        return latents
    if job.timestep_mask is None:
        return torch.cat([latents, condition], dim=1)
    return (1 - job.timestep_mask) * condition + job.timestep_mask * latents


def _build_builtin(model: str, directory: Path) -> None:
    variant, mode = BUILTIN_MODELS[model]
    wan_builtin.build(mode, directory, variant)
