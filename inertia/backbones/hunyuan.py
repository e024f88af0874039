"""HunyuanVideo (text-to-video) behind the denoise-step interface.

The diffusers `HunyuanVideoPipeline` is the container of the real components and does the
prompt encoding and noise drawing, so conditions and noise are exactly the pipeline's; the
denoising loop is inertia's (`core.sampling`).

Guidance. HunyuanVideo is guidance-distilled: its main guidance is an *embedded* scale fed to
the transformer as `guidance * 1000` (the pipeline's `guidance_scale`, our
`embedded_guidance_scale`). True classifier-free guidance (the pipeline's `true_cfg_scale`, our
`guidance_scale`) runs a second, negative-prompt forward only when the scale is > 1 and a
negative prompt is given; a run always gives one (blank by default, encoded as the pipeline encodes
`negative_prompt=""`), so true CFG runs exactly when its scale is > 1. A schedule drives "embedded"
by default.

Attention: every joint self-attention of the transformer (dual- and single-stream blocks) goes
through inertia's hook while a run samples (`hunyuan_attention`); the sequence is
`[video | text]`, the text padded to 256 tokens and masked, so mask-refusing backends are refused.
Under performance options the padding is dropped from the attention call after the hook instead
(`UnpaddedHunyuanVideoAttention`): no mask reaches the backend, so SDPA's flash kernels apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checkpoint_files import weights_options
from ..core.attention import AttentionHooks, TokenLayout
from ..core.backbone import PipelineBackbone, Section, single_section
from ..core.builtin_models import checkpoint_path
from ..core.checkpoints import (
    BUILTIN_PREFIX,
    CheckpointContents,
    attention_layer_count,
    is_builtin,
    pipeline_class_name,
    read_checkpoint_json,
)
from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.validation import check_frames, check_multiple
from . import hunyuan_attention, hunyuan_builtin
from .hunyuan_text import (
    PIPELINE_COMPONENTS,
    TextConditions,
    embedded_guidance,
    prompt_template,
    true_cfg_on,
)

PIPELINE = "HunyuanVideoPipeline"
BUILTIN_MODEL = f"{BUILTIN_PREFIX}hunyuan-t2v-tiny-{hunyuan_builtin.VERSION}"
#: `HunyuanVideoPipeline.__call__`'s defaults; fps 24 is the rate HunyuanVideo generates at (Tencent's
#: sample_video.py writes fps=24; the diffusers docstring's fps=15 is for a short 61-frame demo).
REAL_DEFAULTS = dict(height=720, width=1280, num_frames=129, steps=50, guidance_scale=1.0,
                     embedded_guidance_scale=6.0, fps=24)
BUILTIN_DEFAULTS = dict(height=64, width=64, num_frames=17, steps=10, guidance_scale=1.0,
                        embedded_guidance_scale=6.0, fps=24)


@dataclass(frozen=True)
class CheckpointFacts:
    """What validation needs from a checkpoint before its weights load."""

    temporal: int  # VAE temporal compression
    spatial: int  # VAE spatial compression
    patch: int  # transformer spatial patch size
    guidance_embeds: bool  # whether the transformer takes the embedded guidance scale


#: The published HunyuanVideo values; the built-in keeps them too (see hunyuan_builtin).
PUBLISHED = CheckpointFacts(temporal=4, spatial=8, patch=2, guidance_embeds=True)


def checkpoint_facts(model: str) -> CheckpointFacts:
    """From the checkpoint's config files when readable, else the published values."""
    if is_builtin(model):
        return PUBLISHED
    vae = read_checkpoint_json(model, "vae/config.json") or {}
    transformer = read_checkpoint_json(model, "transformer/config.json") or {}
    return CheckpointFacts(
        temporal=vae.get("temporal_compression_ratio", PUBLISHED.temporal),
        spatial=vae.get("spatial_compression_ratio", PUBLISHED.spatial),
        patch=transformer.get("patch_size", PUBLISHED.patch),
        guidance_embeds=transformer.get("guidance_embeds", PUBLISHED.guidance_embeds),
    )


# ----- validation helpers (before any model loads) --------------------------------------------------
def _check_pipeline(model: str) -> None:
    class_name = None if is_builtin(model) else pipeline_class_name(model)
    if class_name not in (None, PIPELINE):
        raise ConfigError("model", f"hunyuan runs {PIPELINE} checkpoints (text-to-video); {model} is a {class_name}")


def _check_guidance(config: RunConfig, model: str, facts: CheckpointFacts) -> None:
    """Reject guidance the model cannot take, before defaults hide what the user asked for."""
    if not facts.guidance_embeds and config.embedded_guidance_scale is not None:
        raise ConfigError(
            "embedded_guidance_scale",
            f"{model} has no guidance embedding (transformer guidance_embeds=false); leave it unset and use "
            "guidance_scale > 1 (true CFG)",
        )


def _check_attention(config: RunConfig) -> None:
    """Fail now rather than at the first attention call, after minutes of loading: HunyuanVideo
    masks the text padding in every forward (performance options drop it instead and pass no mask)."""
    hunyuan_attention.refuse_mask_refusing_backend(config, "the text-padding mask hunyuan passes")


def _check_sizes(config: RunConfig, facts: CheckpointFacts) -> None:
    why = f"VAE {facts.spatial}x spatial compression x patch {facts.patch}"
    check_multiple("height", config.height, facts.spatial * facts.patch, why)
    check_multiple("width", config.width, facts.spatial * facts.patch, why)
    check_frames("num_frames", config.num_frames, facts.temporal, f"VAE {facts.temporal}x temporal compression")


# ----- the job -----------------------------------------------------------------------------------
@dataclass
class HunyuanJob:
    """One run's conditions and latents (the latents are replaced as the loop denoises)."""

    cond: TextConditions
    uncond: TextConditions | None  # when true CFG is on (as the pipeline encodes it) or may be (`encodes_negative_prompt`)
    latents: torch.Tensor


class HunyuanVideoBackbone(PipelineBackbone):
    name = "hunyuan"
    builtin_models = (BUILTIN_MODEL,)
    description = (
        "HunyuanVideo (diffusers HunyuanVideoTransformer3DModel, flow-matching Euler), text-to-video; "
        "embedded (distilled) guidance, optional true CFG (guidance_scale > 1)."
    )
    modes = ("t2v",)
    default_models: ClassVar[Mapping[str, str]] = {"t2v": "hunyuanvideo-community/HunyuanVideo"}
    guidance_targets = ("embedded", "cfg")
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]] = {"t2v": CheckpointContents(PIPELINE_COMPONENTS)}

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        if config.image is not None:
            raise ConfigError("image", "hunyuan is text-to-video and takes no conditioning image; drop --image")
        model = config.model or BUILTIN_MODEL
        _check_pipeline(model)
        cls.refuse_unhandled_contents(model, "t2v")
        facts = checkpoint_facts(model)
        _check_guidance(config, model, facts)
        defaults = dict(BUILTIN_DEFAULTS if is_builtin(model) else REAL_DEFAULTS)
        if not facts.guidance_embeds:
            del defaults["embedded_guidance_scale"]
        resolved = config.with_defaults(defaults).model_copy(update={"model": model})
        _check_attention(resolved)
        _check_sizes(resolved, facts)
        return resolved

    @classmethod
    def guidance_in_force(cls, config: RunConfig) -> dict[str, float]:
        # resolve() leaves embedded_guidance_scale None exactly when the model has no guidance embedding.
        guidance: dict[str, float] = {}
        if config.embedded_guidance_scale is not None:
            guidance["embedded"] = config.embedded_guidance_scale
        if true_cfg_on(config):
            guidance["cfg"] = config.guidance_scale
        return guidance

    @classmethod
    def default_guidance_target(cls, config: RunConfig) -> str:
        return "embedded" if config.embedded_guidance_scale is not None else "cfg"

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        if is_builtin(config.model):
            return hunyuan_builtin.TINY_ATTENTION_LAYERS
        return attention_layer_count(config.model, ["transformer/config.json"], hunyuan_attention.LAYER_FIELDS)

    #: Spatial VAE tiling, as the pipeline's docstring example enables, bounds decode memory at 720p;
    #: it only acts above 256 px, so smaller videos decode exactly as without it (`RunConfig.vae_tiling`).
    vae_tiling_default = True

    # ----- loading ---------------------------------------------------------------------------
    def __init__(self, pipeline: Any, device: torch.device, smoke_test: bool):
        super().__init__(pipeline, device, smoke_test)
        self.template = prompt_template(pipeline.tokenizer)

    @classmethod
    def load(cls, config: RunConfig) -> "HunyuanVideoBackbone":
        from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoPipeline

        builtin = is_builtin(config.model)
        path = checkpoint_path(config.model, hunyuan_builtin.build)
        options = weights_options(config.allow_pickled_weights)
        # The VAE stays float32, as Wan's does: decoding is a small share of a run, and half precision
        # would round the decoded pixels (the pipeline's docs load it in fp16; parity is in float32).
        vae = AutoencoderKLHunyuanVideo.from_pretrained(path, subfolder="vae", dtype=torch.float32, **options)
        pipeline = HunyuanVideoPipeline.from_pretrained(path, vae=vae, dtype=getattr(torch, config.dtype), **options)
        return cls.on_device(pipeline, config, smoke_test=builtin)

    # ----- denoise-step interface --------------------------------------------------------------
    def prepare(self, config: RunConfig, generator: torch.Generator) -> HunyuanJob:
        cond = self._encode(config.prompt)
        uncond = self._encode(config.negative_prompt) if self.encodes_negative_prompt(config) else None
        # The pipeline's schedule: linear sigmas 1 -> 1/steps, which the scheduler then shifts.
        sigmas = np.linspace(1.0, 0.0, config.steps + 1)[:-1]
        self.pipe.scheduler.set_timesteps(sigmas=sigmas, device=self.device)
        latents = self.pipe.prepare_latents(
            1, self.transformer.config.in_channels, config.height, config.width, config.num_frames,
            torch.float32, self.device, generator,
        )
        return HunyuanJob(cond, uncond, latents)

    def _encode(self, prompt: str) -> TextConditions:
        return TextConditions.encode(self.pipe, prompt, self.template, self.transformer.dtype, self.device)

    def sections(self, job: HunyuanJob) -> Iterator[Section]:
        return single_section(job, self.pipe.scheduler)

    def predict(
        self, job: HunyuanJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        latents = section.latents
        model_input = latents.to(self.transformer.dtype)
        # The pipeline passes the timestep in the latents' dtype: float32 at the first step, the model's
        # dtype after it (its scheduler returns the prediction's dtype). A compiled token refiner would
        # compile a second graph for that switch, at the second step; performance options pass the
        # model's dtype from the first step instead (its timestep, 1000, is exact in bf16 and fp16).
        timestep_dtype = latents.dtype if self.performance is None else model_input.dtype
        timestep = section.timesteps[step].expand(latents.shape[0]).to(timestep_dtype)
        scale = scales.get("embedded")
        guidance = None if scale is None else embedded_guidance(scale, latents.shape[0], model_input.dtype, self.device)

        def forward(text: TextConditions, branch: str) -> torch.Tensor:
            with self.transformer.cache_context(branch):
                return self.transformer(
                    hidden_states=model_input, timestep=timestep, guidance=guidance, **text.model_inputs(),
                    return_dict=False,
                )[0]

        cond = forward(job.cond, "cond")
        return cond, forward(job.uncond, "uncond") if uncond else None

    # ----- attention interface -----------------------------------------------------------------
    supports_attention_hooks = True

    def token_layout(self, job: HunyuanJob, section: Section) -> TokenLayout:
        """The joint sequence `[video | text]` of every dual- and single-stream block.

        Video tokens are frame-major after the 1 x 2 x 2 patch embedding: token (f, h, w) at
        f * H' * W' + h * W' + w, H' x W' = latent size / patch_size, f over latent frames /
        patch_size_t. Text follows: the Llama tokens as fed, padded to the prompt length (256) and
        masked, the same length for the prompt and the negative prompt.
        """
        _, _, frames, height, width = section.latents.shape
        config = self.transformer.config
        grid = (frames // config.patch_size_t, height // config.patch_size, width // config.patch_size)
        texts = {job.cond.embeds.shape[1]} | ({job.uncond.embeds.shape[1]} if job.uncond is not None else set())
        if len(texts) != 1:
            raise RuntimeError(f"prompt and negative prompt were encoded to different lengths {sorted(texts)}")
        blocks = hunyuan_attention.stacked_blocks([(*grid, "noisy")])
        return hunyuan_attention.joint_layout(blocks, [("text", texts.pop())])

    @property
    def num_attention_layers(self) -> int:
        return hunyuan_attention.num_attention_layers(self.transformer)

    def hooked_attention(self, hooks: AttentionHooks):
        """Under performance options the text padding is dropped instead of masked (`UnpaddedHunyuanVideoAttention`)."""
        processor = (hunyuan_attention.HookedHunyuanVideoAttention if self.performance is None
                     else hunyuan_attention.UnpaddedHunyuanVideoAttention)
        return hunyuan_attention.install_processors(self.transformer, hooks, processor)

    def performance_notes(self) -> dict[str, Any]:
        """The attention mask the backend got: none (padding dropped), or the model's under context parallelism."""
        if self.performance is None:
            return {}
        return hunyuan_attention.attention_mask_note(self.transformer, hunyuan_attention.UnpaddedHunyuanVideoAttention.record)

    def decode(self, job: HunyuanJob) -> np.ndarray:
        vae = self.pipe.vae
        latents = job.latents.to(self.device, vae.dtype) / vae.config.scaling_factor
        video = vae.decode(latents, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="np")[0]
