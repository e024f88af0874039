"""FramePack (HunyuanVideo-based image-to-video, section by section) behind the denoise-step interface.

The diffusers `HunyuanVideoFramepackPipeline` object is the container of the real components and
supplies prompt/image encoding, latent preparation and the overlap blend of decoded sections, so
conditions and noise are exactly the pipeline's; the denoising loop is inertia's (`core.sampling`).

How a FramePack video is generated (and how this module mirrors the pipeline):

* The start image is encoded twice: SigLIP tokens (`image_embeds`, prepended to the text stream)
  and VAE latents (the "prefix" clean latent every section sees).
* The video is made of sections of `latent_window_size` (L) latent frames. Each section is
  denoised from fresh noise with the full sigma schedule, conditioned on history latents at three
  compressions (4x / 2x / 1x = 16 / 2 / 1 latent frames) plus the prefix. `sections()` yields one
  `Section` per window and, when the loop resumes it, extends the history exactly as the pipeline does.
* Sampling types: "vanilla" (forward-only, FramePack-F1: history is the past, newest last) and
  "inverted_anti_drifting" (original FramePack: sections are generated from the end of the video
  back to the start, history is the future, the start image joins the last section).

RunConfig has no field for the sampling type (a property of the checkpoint), and its `num_frames`
says nothing about sections; so they are chosen here (the arithmetic is in `framepack_sections`):

* Sampling type: read from the model string. One containing "inverted" or "FramePackI2V_HY"
  (case-insensitive; e.g. `lllyasviel/FramePackI2V_HY`, `builtin:framepack-inverted-tiny-v2`, a local
  directory `.../framepack-inverted/`) selects inverted anti-drifting; every other one, including the
  default `lllyasviel/FramePack_F1_I2V_HY_20250503` and the default built-in, selects vanilla (F1,
  the seed's setting).
* Latent window size: the run's `latent_window_size` (`--window`; the pipeline's `latent_window_size`),
  by default 9 (the released checkpoints' and the pipeline's default), 3 for the built-in.
* Frame counts: `num_frames` is the length of the video produced: 4 * L * k + 1 frames for k
  sections (37, 73, 109, 145, ... for L = 9). The diffusers pipeline's own `num_frames` argument
  N gives k = ceil(N / (4L - 3)) sections and the same 4Lk + 1 frames; `pipeline_num_frames` maps back.

Guidance: "embedded" is the distilled scale (`embedded_guidance_scale`, default 10), passed to
the transformer every step as `scale * 1000` (the pipeline's `guidance_scale`); "cfg" is true CFG
(`guidance_scale`, the pipeline's `true_cfg_scale`), on only when > 1 and a negative prompt is given:
a run always gives one (blank by default, encoded as the pipeline encodes `negative_prompt=""`).

Attention (the interface in `core.attention`, processors shared with hunyuan in `hunyuan_attention`):

* The joint self-attention sequence of every dual- and single-stream block is
  `[4x history | 2x history | clean (start image, 1x history) | noisy window | SigLIP image | text]`,
  each latent block frame-major on its own token grid (`token_layout` has the exact geometry).
  Roles: the start image is "condition", the 1x/2x/4x history is "history", the window "noisy".
* The model runs at batch size 1 (true CFG runs the negative prompt as a second forward); at batch
  size 1 the transformer drops the text padding and passes no attention mask, so every backend can
  run. The text stream's length is therefore the prompt's own (it differs between the prompt and
  the negative prompt): `predict` hands the hooks the layout of the branch it runs.
* Latent-level transforms (`core.history`: `Intervention.transform_history`, e.g. `unlearn:target=history`) get the
  clean context latents of the section at every step, before they are patch-embedded
  (`FramePackBackbone.history_context`): the history blocks "4x", "2x", "1x" (role "history") and the
  start image, "image" (role "condition": the first frame of `latents_clean`, the prefix every section sees).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.checkpoint_files import weights_options
from ..core.attention import AttentionHooks, Role, TokenLayout
from ..core.backbone import PipelineBackbone, Section
from ..core.builtin_models import builtin_model_dir
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
from ..core.history import IMAGE_BLOCK
from ..core.validation import check_image_file, check_multiple
from . import framepack_builtin, hunyuan_attention, hunyuan_builtin
from .framepack_sections import (
    HISTORY_BLOCKS,
    INVERTED,
    REAL_LATENT_WINDOW_SIZE,
    VANILLA,
    FramePackSettings,
    SectionContext,
    SectionHistory,
)
from .hunyuan_text import PIPELINE_COMPONENTS, TextConditions, embedded_guidance, prompt_template, true_cfg_on

F1_MODEL = "lllyasviel/FramePack_F1_I2V_HY_20250503"
INVERTED_MODEL = "lllyasviel/FramePackI2V_HY"
#: What every section hands to the history hooks (`core.history`): its history blocks, then the start image.
CONTEXT_BLOCKS: Mapping[str, Role] = {**dict.fromkeys(HISTORY_BLOCKS, "history"), IMAGE_BLOCK: "condition"}
#: Where a transformer-only checkpoint gets the rest of its pipeline (as diffusers' FramePack docs assemble it).
BASE_MODEL = "hunyuanvideo-community/HunyuanVideo"
IMAGE_ENCODER_MODEL = "lllyasviel/flux_redux_bfl"
PIPELINE_CLASS = "HunyuanVideoFramepackPipeline"
TRANSFORMER_CLASS = "HunyuanVideoFramepackTransformer3DModel"

BUILTIN_F1 = f"{BUILTIN_PREFIX}framepack-tiny-{framepack_builtin.VERSION}"
BUILTIN_INVERTED = f"{BUILTIN_PREFIX}framepack-inverted-tiny-{framepack_builtin.VERSION}"
BUILTIN_MODELS = (BUILTIN_F1, BUILTIN_INVERTED)

#: Defaults; the section counts give num_frames: 4 sections ~ FramePack's 5 s default at 30 fps.
REAL_DEFAULTS = dict(steps=25, guidance_scale=1.0, embedded_guidance_scale=10.0, fps=30)
BUILTIN_DEFAULTS = dict(height=64, width=64, steps=8, guidance_scale=1.0, embedded_guidance_scale=10.0, fps=30)
REAL_SECTIONS, BUILTIN_SECTIONS = 4, 2
#: FramePack's 640-resolution (height, width) buckets; a real run without sizes takes the one
#: nearest the start image's aspect ratio, as FramePack's demo does.
BUCKETS_640 = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)


def sampling_type_for(model: str) -> str:
    """The sampling type a checkpoint was trained for, read from its name (see the module docstring).

    The whole string is searched, so a hub cache snapshot (`.../models--lllyasviel--FramePackI2V_HY/
    snapshots/<hash>`) or a transformer folder inside a named directory is recognised too.
    """
    name = model.lower()
    return INVERTED if "inverted" in name or "framepacki2v_hy" in name else VANILLA


def settings_for(model: str, window: int | None = None) -> FramePackSettings:
    """How a run of `model` is cut into sections: its sampling type, the run's latent window size (`window`;
    None = the checkpoint's: the pipeline's default 9, the built-in's 3) and the VAE's temporal compression."""
    temporal, _, _ = _compression(model)
    if window is None:
        window = framepack_builtin.LATENT_WINDOW_SIZE if is_builtin(model) else REAL_LATENT_WINDOW_SIZE
    return FramePackSettings(sampling_type_for(model), window, temporal)


# ----- reading checkpoints before loading ---------------------------------------------------------
def _layout(model: str) -> str:
    """"builtin", "pipeline" (a saved FramePack pipeline) or "transformer" (assembled around BASE_MODEL)."""
    if is_builtin(model):
        if model not in BUILTIN_MODELS:
            raise ConfigError("model", f"unknown built-in FramePack model {model!r}; allowed: {', '.join(BUILTIN_MODELS)}")
        return "builtin"
    class_name = pipeline_class_name(model)
    if class_name is not None:
        if class_name != PIPELINE_CLASS:
            need = f"{PIPELINE_CLASS} or a {TRANSFORMER_CLASS}"
            raise ConfigError("model", f"{model} holds a {class_name}; framepack needs a {need}")
        return "pipeline"
    transformer = read_checkpoint_json(model, "config.json")
    if transformer is None and Path(model).expanduser().is_dir():
        raise ConfigError("model", f"{model} holds neither a saved pipeline (model_index.json) nor a transformer (config.json)")
    if transformer is not None and transformer.get("_class_name") != TRANSFORMER_CLASS:
        found = transformer.get("_class_name")
        raise ConfigError("model", f"{model} holds a {found}; framepack needs a {TRANSFORMER_CLASS}")
    return "transformer"  # a transformer directory, or a hub id not in the local cache


def _compression(model: str) -> tuple[int, int, int]:
    """(temporal, spatial, patch): from the checkpoint's configs when readable, else HunyuanVideo's."""
    if is_builtin(model):
        return 4, 8, 2
    if _layout(model) == "pipeline":
        vae = read_checkpoint_json(model, "vae/config.json")
        transformer = read_checkpoint_json(model, "transformer/config.json")
    else:
        vae, transformer = read_checkpoint_json(BASE_MODEL, "vae/config.json"), read_checkpoint_json(model, "config.json")
    vae, transformer = vae or {}, transformer or {}
    temporal, spatial = vae.get("temporal_compression_ratio", 4), vae.get("spatial_compression_ratio", 8)
    return temporal, spatial, transformer.get("patch_size", 2)


def nearest_bucket(image_height: int, image_width: int) -> tuple[int, int]:
    """The 640 bucket whose aspect ratio is nearest the image's (ties go to the later bucket, as FramePack's)."""
    def mismatch(bucket: tuple[int, int]) -> int:
        return abs(image_height * bucket[1] - image_width * bucket[0])

    best = BUCKETS_640[0]
    for bucket in BUCKETS_640:
        best = bucket if mismatch(bucket) <= mismatch(best) else best
    return best


def _default_size(config: RunConfig, builtin: bool) -> dict[str, int]:
    """Height/width the config leaves open: fixed for the built-in, from the image's aspect otherwise."""
    if config.height is not None and config.width is not None:
        return {}
    if builtin or config.image is None:
        return {k: v for k, v in BUILTIN_DEFAULTS.items() if k in ("height", "width") and getattr(config, k) is None}
    from PIL import Image

    with Image.open(config.image) as image:
        image_width, image_height = image.size
    if config.height is None and config.width is None:
        height, width = nearest_bucket(image_height, image_width)
        return {"height": height, "width": width}
    if config.height is None:
        return {"height": max(16, round(config.width * image_height / image_width / 16) * 16)}
    return {"width": max(16, round(config.height * image_width / image_height / 16) * 16)}


# ----- the job: one run's conditions and its section history --------------------------------------
@dataclass
class FramePackJob:
    """One run's conditions and the history carried from section to section (`framepack_sections`)."""

    history: SectionHistory  # sampling settings, section count, history latents, pieces to decode
    steps: int
    prompt: TextConditions
    negative: TextConditions | None
    image_embeds: torch.Tensor  # SigLIP tokens of the start image
    height: int  # pixels
    width: int
    channels: int  # latent channels
    mu: float  # resolution-dependent shift (used by schedulers with dynamic shifting)
    generator: torch.Generator


# ----- the backbone --------------------------------------------------------------------------------
class FramePackBackbone(PipelineBackbone):
    name = "framepack"
    builtin_models = BUILTIN_MODELS
    description = (
        "FramePack on HunyuanVideo (diffusers HunyuanVideoFramepackTransformer3DModel), image-to-video section by "
        f"section; F1 forward-only sampling ({F1_MODEL}) or inverted anti-drifting ({INVERTED_MODEL}); "
        "embedded guidance (default 10) and optional true CFG."
    )
    modes = ("i2v",)
    default_models: ClassVar[Mapping[str, str]] = {"i2v": F1_MODEL}
    guidance_targets = ("embedded", "cfg")
    latent_windows = True
    checkpoint_contents = {"i2v": CheckpointContents(PIPELINE_COMPONENTS | {"feature_extractor", "image_encoder"})}

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        model = config.model or BUILTIN_F1
        builtin = _layout(model) == "builtin"
        cls.refuse_unhandled_contents(model, "i2v")
        if config.image is None and not builtin:
            raise ConfigError("image", f"framepack is image-to-video: give --image (the start frame) for {model}")
        if config.image is not None:
            check_image_file("image", config.image)
        settings = settings_for(model, config.latent_window_size)
        defaults = {
            **(BUILTIN_DEFAULTS if builtin else REAL_DEFAULTS),
            "num_frames": settings.video_frames(BUILTIN_SECTIONS if builtin else REAL_SECTIONS),
        }
        resolved = config.with_defaults(defaults).model_copy(update={**_default_size(config, builtin), "model": model})
        _, spatial, patch = _compression(model)
        why = f"VAE {spatial}x spatial compression x patch {patch}"
        check_multiple("height", resolved.height, spatial * patch, why)
        check_multiple("width", resolved.width, spatial * patch, why)
        settings.check_num_frames("num_frames", resolved.num_frames)
        return resolved

    @classmethod
    def guidance_in_force(cls, config: RunConfig) -> dict[str, float]:
        # The distilled scale always enters the model; true CFG runs as in the pipeline.
        cfg = {"cfg": config.guidance_scale} if true_cfg_on(config) else {}
        return {"embedded": config.embedded_guidance_scale, **cfg}

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        """The built-in extends HunyuanVideo's tiny transformer; a saved pipeline's transformer is in its folder."""
        layout = _layout(config.model)
        if layout == "builtin":
            return hunyuan_builtin.TINY_ATTENTION_LAYERS
        folder = "transformer/" if layout == "pipeline" else ""
        return attention_layer_count(config.model, [f"{folder}config.json"], hunyuan_attention.LAYER_FIELDS)

    supports_attention_hooks = True
    supports_history_hooks = True

    @classmethod
    def history_blocks(cls, config: RunConfig) -> dict[str, Role]:
        """Every run hands over the history blocks and the start image (`CONTEXT_BLOCKS`)."""
        return dict(CONTEXT_BLOCKS)

    @classmethod
    def token_roles(cls, config: RunConfig) -> frozenset[Role]:
        # Every section sees the start image (condition) and the 1x/2x/4x history latents.
        return frozenset({"noisy", "condition", "history"})

    @classmethod
    def total_steps(cls, config: RunConfig) -> int:
        """Every section runs the full schedule: steps x sections."""
        return config.steps * settings_for(config.model, config.latent_window_size).sections(config.num_frames)

    @classmethod
    def load_key(cls, config: RunConfig) -> tuple:
        # I2V only: the built-in runs without an image, yet loads the same weights.
        return (cls.name, config.model, "i2v", config.dtype, config.device)

    #: Spatial VAE tiling, as diffusers' FramePack example enables it: it acts only above 256 px,
    #: so small videos decode exactly as without it (`RunConfig.vae_tiling`).
    vae_tiling_default = True

    # ----- loading -----------------------------------------------------------------------------
    def __init__(self, pipeline: Any, device: torch.device, smoke_test: bool):
        super().__init__(pipeline, device, smoke_test)
        self.template = prompt_template(pipeline.tokenizer)
        self._hooks: AttentionHooks | None = None  # while a run samples (`hooked_attention`)

    @classmethod
    def load(cls, config: RunConfig) -> "FramePackBackbone":
        model, dtype = config.model, getattr(torch, config.dtype)
        layout = _layout(model)
        if layout == "transformer":
            pipeline = assemble_pipeline(model, dtype, allow_pickled=config.allow_pickled_weights)
        else:
            pipeline = load_pipeline(builtin_weights() if layout == "builtin" else model, dtype,
                                     allow_pickled=config.allow_pickled_weights)
        return cls.on_device(pipeline, config, smoke_test=layout == "builtin")

    # ----- denoise-step interface ----------------------------------------------------------------
    def prepare(
        self, config: RunConfig, generator: torch.Generator, settings: FramePackSettings | None = None
    ) -> FramePackJob:
        """Encode text and start image and set up the history in sections of the run's latent window;
        `settings` overrides the sampling type the model's name gives (RunConfig has no field for it)."""
        settings = settings or settings_for(config.model, config.latent_window_size)
        settings.check_num_frames("num_frames", config.num_frames)
        pipe, dtype = self.pipe, self.transformer.dtype
        negative = self._encode_text(config.negative_prompt) if self.encodes_negative_prompt(config) else None
        pixels = pipe.video_processor.preprocess(self._start_image(config), config.height, config.width)
        image_embeds = pipe.encode_image(pixels, device=self.device).to(dtype)
        # The VAE sample draws from `generator` first, then each section's noise: the pipeline's order.
        image_latents = pipe.prepare_image_latents(pixels, dtype=torch.float32, device=self.device, generator=generator)
        channels = self.transformer.config.in_channels
        latent_height, latent_width = (size // pipe.vae_scale_factor_spatial for size in (config.height, config.width))
        return FramePackJob(
            history=SectionHistory.start(settings, settings.sections(config.num_frames), image_latents, channels),
            steps=config.steps,
            prompt=self._encode_text(config.prompt),
            negative=negative,
            image_embeds=image_embeds,
            height=config.height,
            width=config.width,
            channels=channels,
            mu=self._shift(settings.latent_window_size * latent_height * latent_width),
            generator=generator,
        )

    def sections(self, job: FramePackJob) -> Iterator[Section]:
        history = job.history
        for index in range(history.num_sections):
            context = history.context(index)
            noise = self.pipe.prepare_latents(
                1, job.channels, job.height, job.width, history.settings.pipeline_num_frames(1),
                dtype=torch.float32, device=self.device, generator=job.generator,
            )
            timesteps, sigmas = self._schedule(job)
            section = Section(index, history.num_sections, noise, timesteps, sigmas, state={"context": context})
            yield section
            history.extend(section.latents, index)

    def predict(
        self, job: FramePackJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = self.transformer.dtype
        hidden_states = section.latents.to(dtype)
        inputs = dict(
            hidden_states=hidden_states,
            timestep=section.timesteps[step].expand(hidden_states.shape[0]),
            image_embeds=job.image_embeds,
            # The distilled scale enters the model as guidance * 1000, in the transformer's dtype (as the pipeline does).
            guidance=embedded_guidance(scales["embedded"], hidden_states.shape[0], dtype, self.device),
            **self.history_context(section).model_inputs(dtype),
        )
        cond = self._forward(inputs, job.prompt, section, "cond")
        if not uncond:
            return cond, None
        if job.negative is None:
            raise RuntimeError("true CFG requested at a step, but the run encoded no negative prompt")
        return cond, self._forward(inputs, job.negative, section, "uncond")

    def _forward(self, inputs: dict[str, Any], text: TextConditions, section: Section, branch: str) -> torch.Tensor:
        """One transformer forward; with hooks installed, they get this branch's token layout first
        (the text stream's length is the prompt's own at batch size 1, see the module docstring)."""
        layouts = section.state.get("layouts")
        if self._hooks is not None and layouts is not None:
            self._hooks.layout = layouts[branch]
        return self.transformer(**inputs, **text.model_inputs(), return_dict=False)[0]

    def history_context(self, section: Section) -> SectionContext:
        """The section's context with the run's history transforms applied for this step.

        The run's history hooks (`core.history`) get the history blocks (`SectionContext.history_blocks`)
        and the start image ("image"); the noisy window is not offered. With no transform changing
        anything, the context is the section's own (bit-identical inputs).
        """
        context: SectionContext = section.state["context"]
        blocks = {**context.history_blocks(), IMAGE_BLOCK: context.start_image()}
        changed = self.hand_over(blocks, CONTEXT_BLOCKS)
        return context if changed is None else context.with_history(changed)

    # ----- attention interface -----------------------------------------------------------------
    def token_layout(self, job: FramePackJob, section: Section) -> TokenLayout:
        """The prompt branch's joint self-attention sequence while `section` is denoised.

        Latent stream, as the transformer packs it (each block frame-major on its own token grid,
        H x W the latent size): [4x history: ceil(16/4) x ceil(H/8) x ceil(W/8), replicate-padded |
        2x history: ceil(2/2) x ceil(H/4) x ceil(W/4), replicate-padded | clean: 1 start-image frame
        ("condition") then 1 1x-history frame, (H/2) x (W/2) | noisy window: L x (H/2) x (W/2)];
        the kernels are read from the transformer's clean-x embedders and patch size. Text stream:
        the SigLIP image tokens, then the prompt's tokens without padding. The negative prompt's
        layout (true CFG) differs only in the text length; both are kept in `section.state`.
        """
        layouts = section.state.get("layouts")
        if layouts is None:
            layouts = {"cond": self._layout(job, section, job.prompt)}
            if job.negative is not None:
                layouts["uncond"] = self._layout(job, section, job.negative)
            section.state["layouts"] = layouts
        return layouts["cond"]

    def _layout(self, job: FramePackJob, section: Section, text: TextConditions) -> TokenLayout:
        context: SectionContext = section.state["context"]
        embed, config = self.transformer.clean_x_embedder, self.transformer.config
        grid = hunyuan_attention.patch_grid
        history_4x = grid(context.latents_history_4x, embed.proj_4x.kernel_size, padded=True)
        history_2x = grid(context.latents_history_2x, embed.proj_2x.kernel_size, padded=True)
        clean_frames, clean_h, clean_w = grid(context.latents_clean, embed.proj.kernel_size, padded=False)
        history_1x = grid(context.history_blocks()["1x"], embed.proj.kernel_size, padded=False)[0]
        noisy = grid(section.latents, (config.patch_size_t, config.patch_size, config.patch_size), padded=False)
        blocks = hunyuan_attention.stacked_blocks([
            (*history_4x, "history"),
            (*history_2x, "history"),
            (clean_frames - history_1x, clean_h, clean_w, "condition"),
            (history_1x, clean_h, clean_w, "history"),
            (*noisy, "noisy"),
        ])
        if text.mask.shape[0] != 1:
            raise RuntimeError("framepack runs the transformer at batch size 1")
        # At batch size 1 the transformer keeps only the unmasked text tokens (no attention mask).
        text_tokens = int(text.mask.sum())
        return hunyuan_attention.joint_layout(blocks, [("image", job.image_embeds.shape[1]), ("text", text_tokens)])

    @property
    def num_attention_layers(self) -> int:
        return hunyuan_attention.num_attention_layers(self.transformer)

    @contextmanager
    def hooked_attention(self, hooks: AttentionHooks) -> Iterator[None]:
        with hunyuan_attention.install_processors(self.transformer, hooks):
            self._hooks = hooks
            try:
                yield
            finally:
                self._hooks = None

    def scheduler_step(self, job: FramePackJob, section: Section, step: int, prediction: torch.Tensor) -> torch.Tensor:
        return self.pipe.scheduler.step(prediction.float(), section.timesteps[step], section.latents, return_dict=False)[0]

    def decode(self, job: FramePackJob) -> np.ndarray:
        """Decode each section's latents and blend the overlaps, in the pipeline's order and arithmetic.

        The blend is the pipeline's own `_soft_append` (pixel space, a pipeline method); the sampling
        scheme only says which of the two videos comes first in time.
        """
        pipe, vae, history = self.pipe, self.pipe.vae, job.history
        temporal = pipe.vae_scale_factor_temporal
        overlap = (history.settings.latent_window_size - 1) * temporal + 1
        video = None
        for piece in history.pieces:
            current = vae.decode(piece.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
            video = current if video is None else pipe._soft_append(*history.scheme.in_time_order(video, current), overlap)
        frames = (video.size(2) - 1) // temporal * temporal + 1
        return pipe.video_processor.postprocess_video(video[:, :, :frames], output_type="np")[0]

    # ----- helpers -------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> TextConditions:
        return TextConditions.encode(self.pipe, text, self.template, self.transformer.dtype, self.device)

    def _start_image(self, config: RunConfig) -> Any:
        from diffusers.utils import load_image

        if config.image is not None:
            return load_image(str(config.image))
        if not self.smoke_test:
            raise ConfigError("image", "framepack is image-to-video: give --image (the start frame)")
        return framepack_builtin.smoke_test_image(config.height, config.width)

    def _shift(self, latent_tokens_unpatched: int) -> float:
        """The pipeline's resolution-dependent `mu` (capped at log 7); only dynamic-shift schedulers use it."""
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import calculate_shift

        config = self.pipe.scheduler.config
        mu = calculate_shift(
            latent_tokens_unpatched / self.transformer.config.patch_size**2,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return min(mu, math.log(7.0))

    def _schedule(self, job: FramePackJob) -> tuple[torch.Tensor, list[float]]:
        """Every section restarts the full schedule from pure noise, as the pipeline's per-section set_timesteps."""
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, job.steps + 1)[:-1], device=self.device, mu=job.mu)
        scheduler.set_begin_index(0)
        return scheduler.timesteps, [float(s) for s in scheduler.sigmas[: len(scheduler.timesteps)]]


# ----- loading -------------------------------------------------------------------------------------
def builtin_weights() -> Path:
    """Both built-in names (F1 and inverted) share one set of tiny weights, built on first use."""
    return builtin_model_dir(f"framepack-tiny-{framepack_builtin.VERSION}", framepack_builtin.build)


def load_pipeline(path: str | Path, dtype: torch.dtype, allow_pickled: bool = False) -> Any:
    """A saved FramePack pipeline; VAE and SigLIP stay float32 (small, and fp16 VAE decodes are fragile)."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackPipeline
    from transformers import SiglipVisionModel

    options = weights_options(allow_pickled)
    vae = AutoencoderKLHunyuanVideo.from_pretrained(path, subfolder="vae", dtype=torch.float32, **options)
    image_encoder = SiglipVisionModel.from_pretrained(path, subfolder="image_encoder", dtype=torch.float32, **options)
    return HunyuanVideoFramepackPipeline.from_pretrained(path, dtype=dtype, vae=vae, image_encoder=image_encoder,
                                                         **options)


def assemble_pipeline(
    transformer: str, dtype: torch.dtype, base: str | None = None, image_encoder: str | None = None,
    allow_pickled: bool = False,
) -> Any:
    """A FramePack transformer checkpoint completed as diffusers' FramePack docs do: VAE, text encoders
    and scheduler from HunyuanVideo, SigLIP image encoder and processor from FLUX Redux."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackPipeline, HunyuanVideoFramepackTransformer3DModel
    from transformers import SiglipImageProcessor, SiglipVisionModel

    base, image_repo = base or BASE_MODEL, image_encoder or IMAGE_ENCODER_MODEL
    options = weights_options(allow_pickled)
    return HunyuanVideoFramepackPipeline.from_pretrained(
        base,
        dtype=dtype,
        transformer=HunyuanVideoFramepackTransformer3DModel.from_pretrained(transformer, dtype=dtype, **options),
        vae=AutoencoderKLHunyuanVideo.from_pretrained(base, subfolder="vae", dtype=torch.float32, **options),
        feature_extractor=SiglipImageProcessor.from_pretrained(image_repo, subfolder="feature_extractor"),
        image_encoder=SiglipVisionModel.from_pretrained(image_repo, subfolder="image_encoder", dtype=torch.float32,
                                                        **options),
        **options,
    )
