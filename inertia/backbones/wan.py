"""Wan 2.1 (text- and image-to-video) behind the denoise-step interface.

The diffusers pipeline object is used as the container of the real components and for its
prompt/image encoding and latent preparation, so conditions and noise are exactly the
pipeline's; the denoising loop is inertia's (`core.sampling`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.attention import AttentionHooks, TokenLayout, VideoBlock, processors_installed
from ..core.backbone import PipelineBackbone, Section, single_section
from ..core.builtin_models import checkpoint_path
from ..core.checkpoints import BUILTIN_PREFIX, CheckpointContents, checkpoint_mode, is_builtin, read_checkpoint_json
from ..core.config import RunConfig
from ..core.validation import check_frames, check_image_file, check_model_mode, check_multiple, reject_embedded_guidance
from . import wan_builtin

PIPELINES = {"t2v": "WanPipeline", "i2v": "WanImageToVideoPipeline"}
REAL_DEFAULTS = dict(height=480, width=832, num_frames=81, steps=50, guidance_scale=5.0, fps=16)
BUILTIN_DEFAULTS = dict(height=64, width=64, num_frames=17, steps=10, guidance_scale=5.0, fps=16)
T2V_COMPONENTS = frozenset({"scheduler", "text_encoder", "tokenizer", "transformer", "vae"})
#: Wan 2.2 TI2V's `expand_timesteps` (per-token timesteps, its own VAE) is not handled yet.
PIPELINE_KEYS = {"expand_timesteps": (False,)}


@dataclass
class WanJob:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    latents: torch.Tensor
    condition: torch.Tensor | None  # I2V: mask (4) + image latents (16), concatenated to the input
    image_embeds: torch.Tensor | None  # I2V: CLIP image tokens for the image cross-attention
    steps: int


def _model_mode(model: str) -> str:
    """The mode a checkpoint implements (built-ins carry it in their name)."""
    if is_builtin(model):
        return "i2v" if "-i2v-" in model else "t2v"
    return checkpoint_mode("wan", model, PIPELINES)


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
    description = "Wan 2.1 (diffusers WanTransformer3DModel, flow-matching UniPC), text- and image-to-video, true CFG."
    modes = ("t2v", "i2v")
    default_models: ClassVar[Mapping[str, str]] = {
        "t2v": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "i2v": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    }
    guidance_targets = ("cfg",)
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]] = {
        "t2v": CheckpointContents(T2V_COMPONENTS, PIPELINE_KEYS),
        "i2v": CheckpointContents(T2V_COMPONENTS | {"image_encoder", "image_processor"}, PIPELINE_KEYS),
    }

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        mode = config.mode
        model = config.model or f"{BUILTIN_PREFIX}wan-{mode}-tiny-{wan_builtin.VERSION}"
        check_model_mode(cls.name, model, _model_mode(model), mode)
        cls.refuse_unhandled_contents(model, mode)
        if config.image is not None:
            check_image_file("image", config.image)
        resolved = config.with_defaults(BUILTIN_DEFAULTS if is_builtin(model) else REAL_DEFAULTS)
        resolved = resolved.model_copy(update={"model": model})
        reject_embedded_guidance(cls.name, resolved)
        temporal, spatial, patch = _compression(model)
        why = f"VAE {spatial}x spatial compression x patch {patch}"
        check_multiple("height", resolved.height, spatial * patch, why)
        check_multiple("width", resolved.width, spatial * patch, why)
        check_frames("num_frames", resolved.num_frames, temporal, f"VAE {temporal}x temporal compression")
        return resolved

    supports_attention_hooks = True

    # ----- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, config: RunConfig) -> "WanBackbone":
        from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline

        mode = config.mode
        builtin = is_builtin(config.model)
        path = checkpoint_path(config.model, lambda directory: wan_builtin.build(mode, directory))
        pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
        dtype = getattr(torch, config.dtype)
        # The VAE (and CLIP image encoder) stay float32, as Wan's reference inference keeps them.
        extra: dict[str, Any] = {"vae": AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32)}
        if mode == "i2v":
            from transformers import CLIPVisionModel

            extra["image_encoder"] = CLIPVisionModel.from_pretrained(path, subfolder="image_encoder", dtype=torch.float32)
        pipeline = pipeline_cls.from_pretrained(path, dtype=dtype, **extra)
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
            image_embeds = pipe.encode_image(image, self.device).to(dtype)
            pixels = pipe.video_processor.preprocess(image, height=config.height, width=config.width)
            latents, condition = pipe.prepare_latents(
                pixels.to(self.device, dtype=torch.float32), 1, pipe.vae.config.z_dim, config.height, config.width,
                config.num_frames, torch.float32, self.device, generator,
            )
        return WanJob(prompt_embeds.to(dtype), negative_embeds.to(dtype), latents, condition, image_embeds, config.steps)

    def sections(self, job: WanJob) -> Iterator[Section]:
        return single_section(job, self.pipe.scheduler)

    def predict(
        self, job: WanJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        latents = section.latents
        model_input = latents if job.condition is None else torch.cat([latents, job.condition], dim=1)
        model_input = model_input.to(self.transformer.dtype)
        timestep = section.timesteps[step].expand(latents.shape[0])

        def forward(embeds: torch.Tensor, branch: str) -> torch.Tensor:
            with self.transformer.cache_context(branch):
                return self.transformer(
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

    def hooked_attention(self, hooks: AttentionHooks):
        return hook_wan_self_attention(self.transformer, hooks)

    def decode(self, job: WanJob) -> np.ndarray:
        vae = self.pipe.vae
        latents = job.latents.to(vae.device, vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="np")[0]
