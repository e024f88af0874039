"""CogVideoX 1.0 and 1.5 (text- and image-to-video) behind the denoise-step interface.

The diffusers pipeline object is the container of the real components and provides prompt
encoding, latent/image-latent preparation, rotary embeddings and decoding, so conditions and
noise are exactly the pipeline's; the denoising loop is inertia's (`core.sampling`).

What CogVideoX does differently from Wan, and where this module follows the pipeline:

* latents are (B, F, C, H, W), and the pipeline runs conditional and unconditional branches as
  one batched forward `[uncond, cond]`; `predict` does the same (bit parity), then casts the
  output to float32 as the pipeline does;
* the schedulers are DDIM-style (v-prediction, zero terminal SNR), so a step's noise level is
  sigma = sqrt(1 - alphabar_t); `CogVideoXDPMScheduler.step` draws noise from the run's
  generator and needs the previous step's x0 prediction and timestep (kept in `Section.state`);
* CogVideoX 1.5 (temporal patch 2) pads the latent frames to a multiple of the temporal patch
  by prepending frames that are denoised and then dropped before decoding; image-to-video 1.5
  also feeds the transformer an `ofs` value of 2.0;
* self-attention is joint over `[text | video]` (no cross-attention), through the legacy
  `Attention` module whose stock processor calls PyTorch SDPA directly. While a run is sampled,
  `HookedCogVideoXAttention` replaces it: the same computation, with inertia's q/k/v hook after
  the rotary embedding and `dispatch_attention_fn` (the run's diffusers backend) instead of SDPA.

History interface (`core.history`): an image-to-video run hands over its conditioning image as the
block "image" (role "condition") at every prediction: the latent frames of `image_latents` that hold
the image (frame 0; in 1.5 also the copy of it the pipeline prepends as padding), transposed to
(B, C, F, H, W) and back; the zero frames after them stand for frames still to be generated and
are kept back. The transformed latents are batched for `[uncond, cond]` as the pipeline batches its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checkpoint_files import weights_options
from ..core.attention import AttentionHooks, TokenLayout, VideoBlock, processors_installed
from ..core.backbone import PipelineBackbone, Section, whole_video_section
from ..core.builtin_models import checkpoint_path
from ..core.checkpoints import (
    BUILTIN_PREFIX,
    CheckpointContents,
    attention_layer_count,
    checkpoint_mode,
    is_builtin,
    read_checkpoint_json,
)
from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.history import IMAGE_BLOCK, IMAGE_BLOCKS
from ..core.validation import (
    check_frames,
    check_image_file,
    check_model_mode,
    check_multiple,
    reject_embedded_guidance,
)
from . import cogvideox_builtin

FAMILY = "cogvideox"
PIPELINES = {"t2v": "CogVideoXPipeline", "i2v": "CogVideoXImageToVideoPipeline"}
#: The `ofs` value CogVideoXImageToVideoPipeline feeds 1.5 transformers that have an ofs embedding.
OFS_VALUE = 2.0
REAL_DEFAULTS = {
    "1.0": dict(height=480, width=720, num_frames=49, steps=50, guidance_scale=6.0, fps=8),
    "1.5": dict(height=768, width=1360, num_frames=81, steps=50, guidance_scale=6.0, fps=16),
}
BUILTIN_DEFAULTS = dict(height=32, width=48, num_frames=9, steps=8, guidance_scale=6.0, fps=8)
CONTENTS = CheckpointContents(frozenset({"scheduler", "text_encoder", "tokenizer", "transformer", "vae"}))


# ----- what a checkpoint can take, known before loading -----------------------------------------
@dataclass(frozen=True)
class Layout:
    """The facts of a checkpoint that decide which sizes and frame counts it can take."""

    mode: str
    generation: str  # "1.0" or "1.5" (temporal patch)
    temporal: int  # VAE temporal compression
    spatial: int  # VAE spatial compression
    patch: int
    patch_t: int | None
    sample: tuple[int, int, int]  # transformer sample (height px, width px, frames)
    learned_positions: bool  # a learned position table: only the sample size is valid
    bounded_rope: bool  # 1.5 RoPE is sliced from a table of the sample size: it is the maximum

    @classmethod
    def from_configs(cls, mode: str, transformer: Mapping[str, Any], vae: Mapping[str, Any]) -> "Layout":
        spatial = 2 ** (len(vae.get("block_out_channels", (128, 256, 256, 512))) - 1)
        patch_t = transformer.get("patch_size_t")
        sample = (transformer.get("sample_height", 60) * spatial, transformer.get("sample_width", 90) * spatial,
                  transformer.get("sample_frames", 49))
        return cls(
            mode=mode,
            generation="1.0" if patch_t is None else "1.5",
            temporal=int(vae.get("temporal_compression_ratio", 4)),
            spatial=spatial,
            patch=transformer.get("patch_size", 2),
            patch_t=patch_t,
            sample=sample,
            learned_positions=bool(transformer.get("use_learned_positional_embeddings", False)),
            bounded_rope=patch_t is not None and bool(transformer.get("use_rotary_positional_embeddings", False)),
        )


def published_transformer_config(model: str, mode: str) -> dict[str, Any]:
    """The transformer config fields validation needs, as THUDM publishes them (for an uncached hub id)."""
    if "1.5" in model:  # CogVideoX1.5-5B, CogVideoX1.5-5B-I2V
        return dict(patch_size=2, patch_size_t=2, sample_height=300, sample_width=300, sample_frames=81,
                    use_rotary_positional_embeddings=True)
    # CogVideoX-2b, CogVideoX-5b; CogVideoX-5b-I2V adds a learned position table for 480x720x49.
    return dict(patch_size=2, patch_size_t=None, sample_height=60, sample_width=90, sample_frames=49,
                use_learned_positional_embeddings=mode == "i2v")


def read_layout(model: str) -> Layout:
    """The layout of `model` (built-in, local directory or hub id) without loading weights."""
    if is_builtin(model):
        mode = "i2v" if f"{FAMILY}-i2v-" in model else "t2v"
        return Layout.from_configs(mode, cogvideox_builtin.builtin_transformer_config(mode), cogvideox_builtin.VAE_CONFIG)
    mode = checkpoint_mode(FAMILY, model, PIPELINES)
    transformer = read_checkpoint_json(model, "transformer/config.json") or published_transformer_config(model, mode)
    vae = read_checkpoint_json(model, "vae/config.json") or {}
    return Layout.from_configs(mode, transformer, vae)


def padding_frames(num_frames: int, temporal: int, patch_t: int | None) -> int:
    """Latent frames CogVideoX 1.5 prepends so that their count is a multiple of the temporal patch.

    As in the pipelines: F = (num_frames - 1) // temporal + 1 latent frames, plus
    `patch_t - F % patch_t` when that is not 0; the padding is denoised, then dropped before decoding.
    """
    latent_frames = (num_frames - 1) // temporal + 1
    return (patch_t - latent_frames % patch_t) % patch_t if patch_t else 0


def run_defaults(model: str, layout: Layout) -> dict[str, Any]:
    """Small fast values for built-ins; THUDM's recommended ones for real checkpoints, except that a
    learned position table (CogVideoX-5b-I2V) fixes size and frame count to its own."""
    if is_builtin(model):
        return BUILTIN_DEFAULTS
    defaults = dict(REAL_DEFAULTS[layout.generation])
    if layout.learned_positions:
        defaults.update(zip(("height", "width", "num_frames"), layout.sample))
    return defaults


def check_layout(config: RunConfig, layout: Layout) -> None:
    """Sizes and frame counts the checkpoint can take; errors name the nearest valid values."""
    grid = layout.spatial * layout.patch
    why = f"VAE {layout.spatial}x spatial compression x patch {layout.patch}"
    check_multiple("height", config.height, grid, why)
    check_multiple("width", config.width, grid, why)
    _check_frames(config.num_frames, layout)
    if layout.learned_positions:
        _check_learned_positions(config, layout)
    elif layout.bounded_rope:
        _check_rope_table(config, layout)


def _check_frames(num_frames: int, layout: Layout) -> None:
    """CogVideoX's VAE decodes F latent frames to 4(F-1)+1 frames when F is odd but to 4F when F is
    even, so only counts whose latent count (n-1)/4+1 is odd come back with n frames: n = 8k+1."""
    why = f"VAE {layout.temporal}x temporal compression; the latent frame count (n-1)/{layout.temporal}+1 must be odd"
    if layout.patch_t:
        why += f"; CogVideoX 1.5 then pads it to a multiple of patch_size_t={layout.patch_t} with leading frames it drops"
    check_frames("num_frames", num_frames, 2 * layout.temporal, why)


def _check_learned_positions(config: RunConfig, layout: Layout) -> None:
    """A learned position table (CogVideoX-5b-I2V) fits one size; the model refuses other sizes
    and would silently swap in a sin-cos table for other frame counts."""
    height, width, frames = layout.sample
    why = f"this checkpoint's learned position table covers only {height}x{width}, {frames} frames"
    for field, value, allowed in (("height", config.height, height), ("width", config.width, width),
                                  ("num_frames", config.num_frames, frames)):
        if value != allowed:
            raise ConfigError(field, f"{value} is not allowed ({why}); allowed: {allowed}")


def _check_rope_table(config: RunConfig, layout: Layout) -> None:
    """CogVideoX 1.5 slices its RoPE frequencies from a table of the sample size: larger frames fail."""
    for field, value, limit in (("height", config.height, layout.sample[0]), ("width", config.width, layout.sample[1])):
        if value > limit:
            raise ConfigError(
                field, f"{value} exceeds {limit}, the size this checkpoint's RoPE table covers; largest valid: {limit}"
            )


def check_steps(steps: int, train_timesteps: int = 1000) -> None:
    """The CogVideoX schedulers refuse more inference steps than training timesteps."""
    if steps > train_timesteps:
        raise ConfigError(
            "steps", f"{steps} exceeds the scheduler's {train_timesteps} training timesteps; largest valid: {train_timesteps}"
        )


# ----- the attention interface ---------------------------------------------------------------------
class HookedCogVideoXAttention:
    """Self-attention (`attn1`) of one CogVideoX block, with the inertia hook between the rotary
    embedding and the attention backend.

    Computes what diffusers' `CogVideoXAttnProcessor2_0` computes, operation for operation and in
    its (batch, heads, sequence, head_dim) layout, up to the attention itself: the joint sequence
    `[text | video]`, projections, per-head q/k norms and RoPE on the video part of q and k. Then,
    as (batch, sequence, heads, head_dim) views, q, k and v pass through `AttentionHooks.apply` and
    go to `dispatch_attention_fn`, so the active diffusers backend (the run's `--attention`) does
    the work where the stock processor always called SDPA. With no transform, and the native
    backend, SDPA receives the very tensors (shape and strides) the stock processor gives it, so
    the output is bit-identical.

    Position embeddings and the hook: RoPE (CogVideoX-5b, 1.5) is applied *before* the hook, so
    transforms see post-RoPE queries and keys; CogVideoX-2b and learned-position checkpoints add
    their position embeddings to the tokens at patch embedding, also before it. Values carry none.

    `__call__` declares the exact parameters of the stock processor: the legacy `Attention.forward`
    drops keyword arguments the processor's signature does not name (e.g. `image_rotary_emb`).
    """

    #: As for diffusers' dispatching processors: None = the active backend (`attention_backend`).
    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, hooks: AttentionHooks):
        self.layer, self.hooks, self.hook = layer, hooks, hooks.point(layer)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb

        text_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:  # RoPE on the video tokens only, as the stock processor does
            query[:, :, text_length:] = apply_rotary_emb(query[:, :, text_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_length:] = apply_rotary_emb(key[:, :, text_length:], image_rotary_emb)

        # Position embeddings are applied above: transforms see post-RoPE queries and keys.
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, S, heads, head_dim) views
        query, key, value = self.hook(query, key, value)
        out = self.hook.attend(query, key, value, attention_mask, lambda q, k, v, mask: dispatch_attention_fn(
            q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        ))
        out = out.flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_hidden_states, hidden_states = out.split([text_length, out.size(1) - text_length], dim=1)
        return hidden_states, encoder_hidden_states


# ----- the backbone ----------------------------------------------------------------------------
@dataclass
class CogVideoXJob:
    prompt_embeds: torch.Tensor  # conditional, batch 1
    cfg_embeds: torch.Tensor  # [uncond, cond], the pipeline's batched order
    latents: torch.Tensor  # (B, F, C, H, W); F includes the 1.5 padding frames
    image_latents: torch.Tensor | None  # I2V: image latent + zero frames, concatenated on channels
    rotary_emb: tuple[torch.Tensor, torch.Tensor] | None
    ofs: torch.Tensor | None
    padding: int  # leading latent frames to drop before decoding (1.5)
    timesteps: torch.Tensor
    step_kwargs: dict[str, Any]  # eta and the run's generator, as the pipeline passes them


def noise_levels(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> list[float]:
    """sigma_t = sqrt(1 - alphabar_t) per timestep: in [0, 1], 1 = pure noise."""
    return [float((1.0 - alphas_cumprod[int(t)]).clamp(0.0, 1.0).sqrt()) for t in timesteps]


def _batch(tensor: torch.Tensor, uncond: bool) -> torch.Tensor:
    """The batch-2 input of the pipeline's single [uncond, cond] forward, or the batch-1 input."""
    return torch.cat([tensor, tensor]) if uncond else tensor


class CogVideoXBackbone(PipelineBackbone):
    name = FAMILY
    builtin_models = tuple(f"{BUILTIN_PREFIX}{FAMILY}-{mode}-tiny-{cogvideox_builtin.VERSION}" for mode in ("t2v", "i2v"))
    description = (
        "CogVideoX 1.0 / 1.5 (diffusers CogVideoXTransformer3DModel, DDIM/DPM v-prediction), "
        "text- and image-to-video, true CFG."
    )
    modes = ("t2v", "i2v")
    default_models: ClassVar[Mapping[str, str]] = {"t2v": "THUDM/CogVideoX-2b", "i2v": "THUDM/CogVideoX-5b-I2V"}
    guidance_targets = ("cfg",)
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]] = {"t2v": CONTENTS, "i2v": CONTENTS}

    @classmethod
    def builtin_model(cls, mode: str) -> str:
        return f"{BUILTIN_PREFIX}{FAMILY}-{mode}-tiny-{cogvideox_builtin.VERSION}"

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        mode = config.mode
        model = config.model or cls.builtin_model(mode)
        layout = read_layout(model)
        check_model_mode(FAMILY, model, layout.mode, mode)
        cls.refuse_unhandled_contents(model, mode)
        if config.image is not None:
            check_image_file("image", config.image)
        resolved = config.with_defaults(run_defaults(model, layout)).model_copy(update={"model": model})
        reject_embedded_guidance(FAMILY, resolved)
        check_layout(resolved, layout)
        check_steps(resolved.steps)
        return resolved

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        if is_builtin(config.model):
            return cogvideox_builtin.builtin_transformer_config(config.mode)["num_layers"]
        return attention_layer_count(config.model, ["transformer/config.json"])

    # Image-to-video puts the image latent in extra channels of latent frame 0: the first token
    # frame is the conditioned one (the base class's token_roles). See `token_layout`.
    supports_attention_hooks = True
    supports_history_hooks = True

    # ----- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: RunConfig) -> "CogVideoXBackbone":
        """All components in the run's dtype, as the official CogVideoX examples load them."""
        from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

        mode = config.mode
        path = checkpoint_path(config.model, lambda directory: cogvideox_builtin.build(mode, directory))
        pipeline_cls = CogVideoXImageToVideoPipeline if mode == "i2v" else CogVideoXPipeline
        pipeline = pipeline_cls.from_pretrained(path, dtype=getattr(torch, config.dtype), **weights_options(config.allow_pickled_weights))
        return cls.on_device(pipeline, config, smoke_test=is_builtin(config.model))

    # ----- denoise-step interface ------------------------------------------------------------------
    def prepare(self, config: RunConfig, generator: torch.Generator) -> CogVideoXJob:
        pipe = self.pipe
        # T5 tokens: as many as the transformer was built for (the 2b layout's sin-cos table covers exactly that
        # many); the pipelines' `max_sequence_length` defaults to 226, what every published checkpoint has.
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=config.prompt, negative_prompt=config.negative_prompt, do_classifier_free_guidance=True,
            max_sequence_length=self.transformer.config.max_text_seq_length, device=self.device,
        )
        pipe.scheduler.set_timesteps(config.steps, device=self.device)
        patch_t = self.transformer.config.patch_size_t
        padding = padding_frames(config.num_frames, pipe.vae_scale_factor_temporal, patch_t)
        num_frames = config.num_frames + padding * pipe.vae_scale_factor_temporal
        latents, image_latents = self._initial_latents(config, num_frames, prompt_embeds.dtype, generator)
        return CogVideoXJob(
            prompt_embeds=prompt_embeds,
            cfg_embeds=torch.cat([negative_embeds, prompt_embeds], dim=0),
            latents=latents,
            image_latents=image_latents,
            rotary_emb=self._rotary_emb(config, latents.size(1)),
            ofs=latents.new_full((1,), fill_value=OFS_VALUE) if self.transformer.config.ofs_embed_dim else None,
            padding=padding,
            timesteps=pipe.scheduler.timesteps,
            step_kwargs=pipe.prepare_extra_step_kwargs(generator, 0.0),
        )

    def _initial_latents(
        self, config: RunConfig, num_frames: int, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noise (and, for I2V, the image latents) drawn through the pipeline's own helper, in its order."""
        pipe, channels = self.pipe, self.transformer.config.in_channels
        if config.image is None:
            latents = pipe.prepare_latents(
                1, channels, num_frames, config.height, config.width, dtype, self.device, generator
            )
            return latents, None
        from diffusers.utils import load_image

        pixels = pipe.video_processor.preprocess(load_image(str(config.image)), height=config.height, width=config.width)
        return pipe.prepare_latents(
            pixels.to(self.device, dtype=dtype), 1, channels // 2, num_frames, config.height, config.width,
            dtype, self.device, generator,
        )

    def _rotary_emb(self, config: RunConfig, latent_frames: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.transformer.config.use_rotary_positional_embeddings:
            return None  # CogVideoX-2b: sin-cos positions are added inside the patch embedding
        return self.pipe._prepare_rotary_positional_embeddings(config.height, config.width, latent_frames, self.device)

    def sections(self, job: CogVideoXJob) -> Iterator[Section]:
        return whole_video_section(job, job.timesteps, noise_levels(self.pipe.scheduler.alphas_cumprod, job.timesteps))

    def predict(
        self, job: CogVideoXJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One batched `[uncond, cond]` forward when `uncond` (the pipeline's order), else batch 1."""
        timestep = section.timesteps[step]
        model_input = self.pipe.scheduler.scale_model_input(_batch(section.latents, uncond), timestep)
        if job.image_latents is not None:
            model_input = torch.cat([model_input, _batch(self._image_latents(job), uncond)], dim=2)
        with self.transformer.cache_context("cond_uncond" if uncond else "cond"):
            output = self.transformer(
                hidden_states=model_input,
                encoder_hidden_states=job.cfg_embeds if uncond else job.prompt_embeds,
                timestep=timestep.expand(model_input.shape[0]),
                ofs=job.ofs,
                image_rotary_emb=job.rotary_emb,
                return_dict=False,
            )[0]
        output = output.float()
        if not uncond:
            return output, None
        uncond_output, cond_output = output.chunk(2)
        return cond_output, uncond_output

    def _image_latents(self, job: CogVideoXJob) -> torch.Tensor:
        """The image latents of this prediction: the job's, with the run's history transforms applied to
        the frames that hold the image (frame 0, and the 1.5 padding frame that copies it)."""
        frames = 1 + job.padding
        changed = self.hand_over({IMAGE_BLOCK: job.image_latents[:, :frames].transpose(1, 2)}, IMAGE_BLOCKS)
        if changed is None:
            return job.image_latents
        latents = job.image_latents.clone()
        latents[:, :frames] = changed[IMAGE_BLOCK].transpose(1, 2)
        return latents

    def scheduler_step(self, job: CogVideoXJob, section: Section, step: int, prediction: torch.Tensor) -> torch.Tensor:
        from diffusers import CogVideoXDPMScheduler

        scheduler, timestep = self.pipe.scheduler, section.timesteps[step]
        if isinstance(scheduler, CogVideoXDPMScheduler):
            previous = section.timesteps[step - 1] if step > 0 else None
            latents, section.state["old_pred_original_sample"] = scheduler.step(
                prediction, section.state.get("old_pred_original_sample"), timestep, previous, section.latents,
                **job.step_kwargs, return_dict=False,
            )
        else:
            latents = scheduler.step(prediction, timestep, section.latents, **job.step_kwargs, return_dict=False)[0]
        return latents.to(job.prompt_embeds.dtype)

    # ----- attention interface -----------------------------------------------------------------------
    def token_layout(self, job: CogVideoXJob, section: Section) -> TokenLayout:
        """The joint self-attention sequence `[text | video]`.

        Text is the T5 prompt embedding as fed (the transformer's `max_text_seq_length` tokens, 226 in every
        published checkpoint, the pipelines' default `max_sequence_length`).
        Video tokens follow frame-major, token (f, h, w) at text + f * H' * W' + h * W' + w, for
        H' x W' = latent size / patch_size and f over latent frames / patch_size_t: in 1.5 one token
        frame covers two latent frames, the first pair including the padding frame the backbone
        prepends. Image-to-video's image latent sits in the extra channels of latent frame 0, so
        token frame 0 is the "condition" block (latent frames 0-1 in 1.5), the rest "noisy".
        """
        text = job.prompt_embeds.shape[1]
        _, frames, _, height, width = section.latents.shape
        config = self.transformer.config
        patch, patch_t = config.patch_size, config.patch_size_t or 1
        grid = (height // patch, width // patch)
        token_frames, per_frame = frames // patch_t, grid[0] * grid[1]
        context = 1 if job.image_latents is not None else 0
        blocks = [VideoBlock(text, context, *grid, "condition")] if context else []
        blocks.append(VideoBlock(text + context * per_frame, token_frames - context, *grid, "noisy"))
        return TokenLayout(text + token_frames * per_frame, tuple(blocks), {"text": (0, text)})

    @property
    def num_attention_layers(self) -> int:
        return len(self.transformer.transformer_blocks)

    def hooked_attention(self, hooks: AttentionHooks):
        modules = [block.attn1 for block in self.transformer.transformer_blocks]
        return processors_installed(modules, (HookedCogVideoXAttention(i, hooks) for i in range(len(modules))))

    def decode(self, job: CogVideoXJob) -> np.ndarray:
        video = self.pipe.decode_latents(job.latents[:, job.padding :])
        return self.pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
