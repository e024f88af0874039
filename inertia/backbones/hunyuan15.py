"""HunyuanVideo 1.5 (text- and image-to-video) behind the denoise-step interface.

The diffusers pipelines (`HunyuanVideo15Pipeline`, `HunyuanVideo15ImageToVideoPipeline`) are the
containers of the real components and do the prompt and image encoding, the noise drawing and the
condition latents, so conditions and noise are exactly the pipelines'; the denoising loop is inertia's
(`core.sampling`).

Guidance. The pipelines take no guidance argument: they run the checkpoint's guider component, a
diffusers `ClassifierFreeGuidance` (published scale 6.0; 1.0 on the CFG-distilled checkpoints), as
true CFG with two separate forwards per step, the prompt's then the negative prompt's (encoded only
when CFG is on), combined as `uncond + scale * (cond - uncond)`: exactly the loop's default rule. The
1.5 transformer has no embedded (distilled) guidance input. Here `guidance_scale` is the guider's scale
(its default the checkpoint's) and CFG is on exactly when the guider's rule says so: enabled and scale
not close to 1 (`math.isclose`). Guider settings the loop's rule would not reproduce (`guidance_rescale`
> 0, `use_original_formulation`, a `start`/`stop` window, another guider class) are refused before
loading, naming the setting (a window is what the `interval` schedule does).

Image-to-video: the image's VAE latent and a mask of ones fill the condition channels of latent frame 0,
its SigLIP tokens enter the context stream; text-to-video passes zeros there. The pipelines pick the
size from the transformer's `target_size` (image-to-video: the bucket nearest the image's aspect ratio,
the image resized and cropped to it); that is the default here, and other sizes (multiples of 16) are
taken as given, the image cropped to them the pipeline's way. Step-distilled image-to-video checkpoints
(`use_meanflow`) get the next timestep as `timestep_r`, as the image-to-video pipeline passes it (the
text-to-video pipeline passes none, and neither does this backbone there).

Attention: every joint self-attention of the transformer goes through inertia's hook while a run
samples (`hunyuan_attention.HookedHunyuanVideo15Attention`); the sequence is `[video | context]` and always
masked, so mask-refusing backends are refused before loading. Under performance options the context
padding is dropped from the attention call instead (`UnpaddedHunyuanVideo15Attention`: no mask, flash
kernels), and any backend may run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checkpoint_files import weights_options
from ..core.attention import AttentionHooks, TokenLayout, VideoBlock
from ..core.backbone import PipelineBackbone, Section, single_section
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
from ..core.validation import check_frames, check_image_file, check_model_mode, check_multiple, reject_embedded_guidance
from . import hunyuan15_builtin
from .hunyuan_attention import (
    HookedHunyuanVideo15Attention,
    UnpaddedHunyuanVideo15Attention,
    attention_mask_note,
    install_processors,
    joint_layout,
    num_attention_layers,
    refuse_mask_refusing_backend,
)

PIPELINES = {"t2v": "HunyuanVideo15Pipeline", "i2v": "HunyuanVideo15ImageToVideoPipeline"}
BUILTIN_MODELS = {mode: f"{BUILTIN_PREFIX}hunyuan15-{mode}-tiny-{hunyuan15_builtin.VERSION}" for mode in PIPELINES}
T2V_COMPONENTS = frozenset({"guider", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                            "transformer", "vae"})
GUIDER_CLASS = ["diffusers", "ClassifierFreeGuidance"]
GUIDER_CONFIG = "guider/guider_config.json"
#: The guider settings the loop's CFG rule reproduces, with the values it handles (None: any value).
GUIDER_SETTINGS: dict[str, tuple[Any, ...] | None] = {
    "guidance_scale": None, "enabled": None, "guidance_rescale": (0.0,), "use_original_formulation": (False,),
    "start": (0.0,), "stop": (1.0,),
}
#: The pipelines' frame count and steps; 24 fps is the rate HunyuanVideo 1.5 generates at (121 frames = 5 s).
REAL_DEFAULTS = dict(num_frames=121, steps=50, fps=24)
BUILTIN_DEFAULTS = dict(num_frames=17, steps=10, fps=24)


@dataclass(frozen=True)
class Hunyuan15Checkpoint:
    """What validation needs from a checkpoint before its weights load."""

    mode: str  # the mode its pipeline class runs
    temporal: int  # VAE temporal compression
    spatial: int  # VAE spatial compression
    patch: int  # transformer spatial patch size
    target_size: int  # the transformer's target_size: the pipelines' default size bucket (pixels)
    guidance_scale: float  # the guider's scale; 1.0 when its guider is disabled (CFG off, as the pipeline runs)

    @classmethod
    def published(cls, model: str, mode: str) -> "Hunyuan15Checkpoint":
        """HunyuanVideo 1.5 as published: 480p (target 640) and 720p (target 960) checkpoints, guider scale
        6.0 except the distilled ones (1.0); the built-ins keep the tiny values."""
        if is_builtin(model):
            return cls(mode, 4, 16, 1, hunyuan15_builtin.TARGET_SIZE, hunyuan15_builtin.GUIDANCE_SCALE)
        name = model.lower()
        return cls(mode, 4, 16, 1, 960 if "720p" in name else 640, 1.0 if "distilled" in name else 6.0)


def read_checkpoint(model: str) -> Hunyuan15Checkpoint:
    """From a built-in's name or the checkpoint's config files; a hub id not in the local cache by its name
    ("720p", "distilled") with the published values."""
    if is_builtin(model):
        modes = [mode for mode, name in BUILTIN_MODELS.items() if name == model]
        if not modes:
            raise ConfigError("model", f"unknown built-in HunyuanVideo 1.5 model {model!r}; allowed: "
                                       f"{', '.join(BUILTIN_MODELS.values())}")
        return Hunyuan15Checkpoint.published(model, modes[0])
    mode = checkpoint_mode("hunyuan15", model, PIPELINES)
    published = Hunyuan15Checkpoint.published(model, mode)
    vae = read_checkpoint_json(model, "vae/config.json") or {}
    transformer = read_checkpoint_json(model, "transformer/config.json") or {}
    guider = read_checkpoint_json(model, GUIDER_CONFIG)
    scale = published.guidance_scale
    if guider is not None:  # ClassifierFreeGuidance's own defaults for what its config leaves out
        scale = guider.get("guidance_scale", 7.5) if guider.get("enabled", True) else 1.0
    return Hunyuan15Checkpoint(
        mode=mode,
        temporal=vae.get("temporal_compression_ratio", published.temporal),
        spatial=vae.get("spatial_compression_ratio", published.spatial),
        patch=transformer.get("patch_size", published.patch),
        target_size=transformer.get("target_size", published.target_size),
        guidance_scale=float(scale),
    )


def check_guider(model: str) -> None:
    """The guider component is the plain CFG guider the loop's rule reproduces, and its settings are ones
    the rule reproduces (a checkpoint that is not readable yet has nothing to check)."""
    index = read_checkpoint_json(model, "model_index.json") or {}
    guider = index.get("guider")
    if guider not in (None, [None, None], GUIDER_CLASS):
        raise ConfigError("model", f"{model} has guider {guider[-1] if isinstance(guider, list) else guider}, which "
                                   "the hunyuan15 backbone does not reproduce (handled: ClassifierFreeGuidance; "
                                   "a guider-backed combiner runs others)")
    settings = read_checkpoint_json(model, GUIDER_CONFIG)
    if settings is not None:
        check_guider_settings(model, settings)


def check_guider_settings(model: str, settings: Mapping[str, Any]) -> None:
    """ConfigError naming the first guider setting whose value the loop's CFG rule would not reproduce."""
    for key, value in settings.items():
        if key.startswith("_"):
            continue
        handled = GUIDER_SETTINGS.get(key, ())
        if handled is not None and value not in handled:
            allowed = "not handled" if key not in GUIDER_SETTINGS else f"handled: {handled[0]!r}"
            hint = "; the interval schedule sets CFG over a range of noise levels" if key in ("start", "stop") else ""
            raise ConfigError("model", f"{model} has guider setting {key}: {value!r}, which the hunyuan15 backbone "
                                       f"does not reproduce ({allowed}){hint}")


def default_size(image: Any, target_size: int, spatial: int) -> tuple[int, int]:
    """(height, width) as the pipelines pick it: the `target_size` bucket nearest 16:9 (text-to-video) or
    the image's aspect ratio (image-to-video, a PIL image)."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    height, width = (9, 16) if image is None else (image.size[1], image.size[0])
    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=spatial)
    return processor.calculate_default_height_width(height, width, target_size)


def _load_image(path: Any):
    from diffusers.utils import load_image

    return load_image(str(path))


# ----- the job -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hunyuan15Text:
    """One prompt's encoding: Qwen 2.5-VL token states and the glyph (ByT5) states, each with its mask."""

    embeds: torch.Tensor
    mask: torch.Tensor
    embeds_2: torch.Tensor
    mask_2: torch.Tensor

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": self.embeds, "encoder_attention_mask": self.mask,
                "encoder_hidden_states_2": self.embeds_2, "encoder_attention_mask_2": self.mask_2}

    @property
    def length(self) -> int:
        return self.embeds.shape[1] + self.embeds_2.shape[1]


@dataclass
class Hunyuan15Job:
    """One run's conditions and latents (the latents are replaced as the loop denoises)."""

    cond: Hunyuan15Text
    uncond: Hunyuan15Text | None  # when CFG is on (as the pipelines encode it) or may be (`encodes_negative_prompt`)
    latents: torch.Tensor
    condition: torch.Tensor  # the image latent on frame 0 (zeros for text-to-video)
    mask: torch.Tensor  # ones on the conditioned frame (zeros for text-to-video)
    image_embeds: torch.Tensor  # SigLIP tokens (zeros for text-to-video)
    image_conditioned: bool


class HunyuanVideo15Backbone(PipelineBackbone):
    name = "hunyuan15"
    description = (
        "HunyuanVideo 1.5 (diffusers HunyuanVideo15Transformer3DModel, flow-matching Euler), text- and "
        "image-to-video; true CFG as the checkpoint's guider (6.0; distilled checkpoints 1.0)."
    )
    modes = ("t2v", "i2v")
    default_models: ClassVar[Mapping[str, str]] = {
        "t2v": "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
        "i2v": "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v",
    }
    guidance_targets = ("cfg",)
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]] = {
        "t2v": CheckpointContents(T2V_COMPONENTS),
        "i2v": CheckpointContents(T2V_COMPONENTS | {"image_encoder", "feature_extractor"}),
    }

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        mode = config.mode
        model = config.model or BUILTIN_MODELS[mode]
        checkpoint = read_checkpoint(model)
        check_model_mode(cls.name, model, checkpoint.mode, mode)
        cls.refuse_unhandled_contents(model, mode)
        if not is_builtin(model):
            check_guider(model)
        if config.image is not None:
            check_image_file("image", config.image)
        reject_embedded_guidance(cls.name, config)
        defaults = dict(BUILTIN_DEFAULTS if is_builtin(model) else REAL_DEFAULTS, guidance_scale=checkpoint.guidance_scale)
        resolved = config.with_defaults(defaults).model_copy(update={"model": model})
        if (resolved.height is None) != (resolved.width is None):
            given = "height" if resolved.width is None else "width"
            raise ConfigError(given, "give both height and width, or neither (the pipeline's size for "
                                     f"{'the image' if mode == 'i2v' else '16:9'} at target size {checkpoint.target_size})")
        why = f"VAE {checkpoint.spatial}x spatial compression x patch {checkpoint.patch}"
        if resolved.height is not None:  # checked before the default is computed: that opens the image
            check_multiple("height", resolved.height, checkpoint.spatial * checkpoint.patch, why)
            check_multiple("width", resolved.width, checkpoint.spatial * checkpoint.patch, why)
        check_frames("num_frames", resolved.num_frames, checkpoint.temporal,
                     f"VAE {checkpoint.temporal}x temporal compression")
        refuse_mask_refusing_backend(resolved, f"the attention mask {cls.name} passes")
        if resolved.height is None:
            image = None if config.image is None else _load_image(config.image)
            height, width = default_size(image, checkpoint.target_size, checkpoint.spatial)
            resolved = resolved.model_copy(update={"height": height, "width": width})
            check_multiple("height", height, checkpoint.spatial * checkpoint.patch, why)
            check_multiple("width", width, checkpoint.spatial * checkpoint.patch, why)
        return resolved

    @classmethod
    def guidance_in_force(cls, config: RunConfig) -> dict[str, float]:
        """The guider's rule: CFG runs unless the scale is close to 1 (`ClassifierFreeGuidance`)."""
        scale = config.guidance_scale
        return {} if math.isclose(scale, 1.0) else {"cfg": scale}

    @classmethod
    def cfg_off_reason(cls, config: RunConfig) -> str:
        return "guidance_scale 1 turns the guider off, so no unconditional pass runs; any other scale, below 1 too, runs CFG"

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        if is_builtin(config.model):
            return hunyuan15_builtin.NUM_LAYERS
        return attention_layer_count(config.model, ["transformer/config.json"])

    supports_attention_hooks = True
    supports_history_hooks = True
    builtin_models = tuple(BUILTIN_MODELS.values())

    #: Spatial VAE tiling, as the pipelines' docstring examples enable, bounds VAE memory at 720p; it only acts
    #: above 256 px, so smaller videos decode exactly as without it (`RunConfig.vae_tiling`).
    vae_tiling_default = True

    # ----- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, config: RunConfig) -> "HunyuanVideo15Backbone":
        from diffusers import (
            AutoencoderKLHunyuanVideo15,
            HunyuanVideo15ImageToVideoPipeline,
            HunyuanVideo15Pipeline,
        )

        model, mode = config.model, config.mode
        builtin = is_builtin(model)
        path = checkpoint_path(model, lambda directory: hunyuan15_builtin.build(mode, directory))
        options = weights_options(config.allow_pickled_weights)
        # The VAE stays float32, as HunyuanVideo's does: decoding is a small share of a run, and half precision
        # would round the decoded pixels (and the image latent); parity is in float32.
        vae = AutoencoderKLHunyuanVideo15.from_pretrained(path, subfolder="vae", dtype=torch.float32, **options)
        pipeline_cls = HunyuanVideo15ImageToVideoPipeline if mode == "i2v" else HunyuanVideo15Pipeline
        pipeline = pipeline_cls.from_pretrained(path, vae=vae, dtype=getattr(torch, config.dtype), **options)
        if not builtin:  # a hub id that was not in the local cache was resolved by its name: check what arrived
            cls.refuse_unhandled_contents(model, mode)
            check_guider(model)
        return cls.on_device(pipeline, config, smoke_test=builtin)

    # ----- denoise-step interface --------------------------------------------------------------
    def prepare(self, config: RunConfig, generator: torch.Generator) -> Hunyuan15Job:
        pipe, device = self.pipe, self.device
        dtype = self.transformer.dtype  # the pipelines draw and keep the latents in the transformer's dtype
        height, width = config.height, config.width
        image = None
        if config.image is not None:
            image = pipe.video_processor.resize(_load_image(config.image), height=height, width=width,
                                                resize_mode="crop")
            image_embeds = pipe.encode_image(image=image, batch_size=1, device=device, dtype=dtype)
        cond = self._encode(config.prompt)
        uncond = self._encode(config.negative_prompt) if self.encodes_negative_prompt(config) else None
        # The pipelines' schedule: linear sigmas 1 -> 1/steps, which the scheduler then shifts.
        sigmas = np.linspace(1.0, 0.0, config.steps + 1)[:-1]
        pipe.scheduler.set_timesteps(sigmas=sigmas, device=device)
        latents = pipe.prepare_latents(1, pipe.num_channels_latents, height, width, config.num_frames, dtype, device,
                                       generator)
        if image is None:
            condition, mask = pipe.prepare_cond_latents_and_mask(latents, dtype, device)
            image_embeds = torch.zeros(1, pipe.vision_num_semantic_tokens, pipe.vision_states_dim, dtype=dtype,
                                       device=device)
        else:
            condition, mask = pipe.prepare_cond_latents_and_mask(latents=latents, image=image, batch_size=1,
                                                                 height=height, width=width, dtype=dtype, device=device)
        return Hunyuan15Job(cond, uncond, latents, condition, mask, image_embeds, image is not None)

    def _encode(self, prompt: str) -> Hunyuan15Text:
        embeds, mask, embeds_2, mask_2 = self.pipe.encode_prompt(prompt=prompt, device=self.device,
                                                                 dtype=self.transformer.dtype)
        return Hunyuan15Text(embeds, mask, embeds_2, mask_2)

    def sections(self, job: Hunyuan15Job) -> Iterator[Section]:
        return single_section(job, self.pipe.scheduler)

    def predict(
        self, job: Hunyuan15Job, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        latents, timesteps = section.latents, section.timesteps
        # image-to-video: the image latent on frame 0 goes through the run's history transforms (`core.history`)
        condition = self.with_image_handed_over(job.condition, slice(None)) if job.image_conditioned else job.condition
        model_input = torch.cat([latents, condition, job.mask], dim=1)
        timestep = timesteps[step].expand(model_input.shape[0]).to(model_input.dtype)
        timestep_r = None
        if job.image_conditioned and self.transformer.config.use_meanflow:  # as the image-to-video pipeline only
            following = timesteps[step + 1] if step + 1 < len(timesteps) else torch.tensor([0.0], device=self.device)
            timestep_r = following.expand(latents.shape[0]).to(latents.dtype)

        def forward(text: Hunyuan15Text, branch: str) -> torch.Tensor:
            with self.transformer.cache_context(branch):
                return self.transformer(
                    hidden_states=model_input, image_embeds=job.image_embeds, timestep=timestep,
                    timestep_r=timestep_r, return_dict=False, **text.model_inputs(),
                )[0]

        # The guider's branch names ("pred_cond", "pred_uncond"), in its order.
        cond = forward(job.cond, "pred_cond")
        return cond, forward(job.uncond, "pred_uncond") if uncond else None

    # ----- attention interface -----------------------------------------------------------------
    def token_layout(self, job: Hunyuan15Job, section: Section) -> TokenLayout:
        """The joint sequence `[video | context]` of every block.

        Video tokens are frame-major after the patch embedding (1 x 1 x 1 in the published checkpoints):
        token (f, h, w) at f * H' * W' + h * W' + w over the latent grid divided by the patch sizes; with an
        image, latent frame 0 carries its latent in the condition channels ("condition"), the other frames
        are "noisy". The context follows, of one length for the prompt and the negative prompt: the image
        tokens (SigLIP; zeros for text-to-video), the glyph tokens (256) and the prompt tokens (1000), which
        the transformer reorders per prompt, valid tokens of each kind first and all padding after.
        """
        _, _, frames, height, width = section.latents.shape
        config = self.transformer.config
        frames, rows, columns = frames // config.patch_size_t, height // config.patch_size, width // config.patch_size
        context = 1 if job.image_conditioned else 0
        blocks = [VideoBlock(0, context, rows, columns, "condition")] if context else []
        blocks.append(VideoBlock(context * rows * columns, frames - context, rows, columns, "noisy"))
        lengths = {job.cond.length} | ({job.uncond.length} if job.uncond is not None else set())
        if len(lengths) != 1:
            raise RuntimeError(f"prompt and negative prompt were encoded to different lengths {sorted(lengths)}")
        return joint_layout(blocks, [("context", job.image_embeds.shape[1] + lengths.pop())])

    @property
    def num_attention_layers(self) -> int:
        return num_attention_layers(self.transformer)

    def hooked_attention(self, hooks: AttentionHooks):
        """Under performance options the padding is dropped instead of masked (`UnpaddedHunyuanVideo15Attention`)."""
        processor = HookedHunyuanVideo15Attention if self.performance is None else UnpaddedHunyuanVideo15Attention
        return install_processors(self.transformer, hooks, processor)

    def performance_notes(self) -> dict[str, Any]:
        """The attention mask the backend got: none (padding dropped), or the dense one under context parallelism."""
        if self.performance is None:
            return {}
        return attention_mask_note(self.transformer, UnpaddedHunyuanVideo15Attention.record)

    def decode(self, job: Hunyuan15Job) -> np.ndarray:
        vae = self.pipe.vae
        latents = job.latents.to(self.device, vae.dtype) / vae.config.scaling_factor
        video = vae.decode(latents, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type="np")[0]
