"""The denoise-step interface every backbone plugin implements.

The sampling loop in `core.sampling` owns the steps; a backbone only provides the pieces:
resolve and validate a config before loading (class methods), load the real diffusers
components, encode conditions and prepare latents (`prepare`), yield the sections to denoise
with their timesteps and sigmas (`sections`), predict conditional/unconditional outputs
(`predict`), advance the scheduler (`scheduler_step`) and decode (`decode`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .attention import AttentionHooks, Role, TokenLayout
from .checkpoints import CheckpointContents, is_builtin, refuse_unhandled
from .config import RunConfig
from .errors import ConfigError
from .history import IMAGE_BLOCKS, HistoryHooks
from .offload import OffloadState, apply_offload, release
from .performance import PerformanceState
from .setup import CFG_OFF_REASON, RunSetup


@dataclass
class Section:
    """One stretch of denoising over one latent window: the whole video for most backbones,
    one window of a section-by-section model such as FramePack.

    The loop replaces `latents` after every step; a backbone reads them back when the
    section's generator resumes (e.g. to extend FramePack's history).
    """

    index: int
    count: int
    latents: torch.Tensor
    timesteps: torch.Tensor
    sigmas: list[float]
    state: dict[str, Any] = field(default_factory=dict)
    #: The expert that predicts each step, for a checkpoint with several (`Backbone.expert_guidance`).
    experts: list[str] | None = None


class Backbone(ABC):
    """Base class for backbone plugins (registered through the `inertia_backbones` hook)."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Generation modes the family supports: "t2v", "i2v".
    modes: ClassVar[tuple[str, ...]]
    #: Default real checkpoint (hub id) per mode; the built-in smoke-test model is used when
    #: the config names no model.
    default_models: ClassVar[Mapping[str, str]]
    #: What the backbone handles in a checkpoint's model_index.json, by the mode it runs the
    #: checkpoint in: `resolve` refuses any other component or pipeline config key before loading
    #: (`refuse_unhandled_contents`), so that no checkpoint is silently half-used.
    checkpoint_contents: ClassVar[Mapping[str, CheckpointContents]]
    #: The `builtin:` model names this backbone builds (tiny random-weight smoke-test models); any other
    #: `builtin:` name is refused before anything is built (`refuse_unknown_builtin`).
    builtin_models: ClassVar[tuple[str, ...]] = ()
    #: Whether the family denoises section by section over latent windows whose size a run may set
    #: (`RunConfig.latent_window_size`, FramePack); any other backbone refuses that field before loading.
    latent_windows: ClassVar[bool] = False
    #: Guidance scales a schedule can drive on this family ("cfg", "embedded").
    guidance_targets: ClassVar[tuple[str, ...]] = ("cfg",)
    #: Write videos without chroma subsampling or quantisation (tiny videos whose metrics read colours).
    lossless_video: ClassVar[bool] = False
    #: The prompt of a run that gives none: the seed research's motion that large models refuse.
    default_prompt: ClassVar[str] = "a man performs a backflip"

    # ----- before any model loads -------------------------------------------------------
    @classmethod
    @abstractmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        """Fill the config's open fields with this model's defaults and validate sizes, frame
        counts and modes. Raises ConfigError naming the field and the nearest valid values."""

    @classmethod
    def refuse_unknown_builtin(cls, model: str | None) -> None:
        """ConfigError (field "model") for a `builtin:` name that is not one of `builtin_models`, naming
        those; `plan_run` calls it before `resolve`, and `refuse_unhandled_contents` again."""
        if model is not None and is_builtin(model) and model not in cls.builtin_models:
            known = f"allowed: {', '.join(cls.builtin_models)}" if cls.builtin_models else f"{cls.name} has none"
            raise ConfigError("model", f"unknown built-in {cls.name} model {model!r}; {known}")

    @classmethod
    def refuse_unhandled_contents(cls, model: str, mode: str) -> None:
        """ConfigError (field "model") naming the first component or pipeline config key of `model`'s
        model_index.json this backbone does not handle in `mode`; every backbone's `resolve` calls it.
        Built-in models are the backbone's own and are skipped (an unknown `builtin:` name is refused)."""
        cls.refuse_unknown_builtin(model)
        if not is_builtin(model):
            refuse_unhandled(cls.name, model, cls.checkpoint_contents[mode])

    @classmethod
    def guidance_in_force(cls, config: RunConfig) -> dict[str, float]:
        """Base scale of each guidance the resolved config turns on, keyed by target.

        The default is the true-CFG pipelines' rule: a scale <= 1 turns CFG off (no unconditional
        pass). Guidance-distilled families override this.
        """
        return {"cfg": config.guidance_scale} if config.guidance_scale > 1.0 else {}

    @classmethod
    def cfg_off_reason(cls, config: RunConfig) -> str:
        """Why true CFG runs no unconditional pass where `guidance_in_force` leaves it out, stated by this
        backbone's own rule (the refusals of interventions that need it quote it); the default's: a scale <= 1."""
        return CFG_OFF_REASON

    @classmethod
    def encodes_negative_prompt(cls, config: RunConfig) -> bool:
        """Whether `prepare` must encode the negative prompt, for backbones whose pipelines encode it only
        with true CFG on: when CFG is in force, or the run has interventions (a schedule may move the
        scale of a run that turns CFG off from 1 at some steps, which then need the unconditional pass)."""
        return "cfg" in cls.guidance_in_force(config) or bool(config.interventions)

    @classmethod
    def expert_guidance(cls, config: RunConfig) -> dict[str, dict[str, float]]:
        """Base scales per expert, keyed by expert name, when the resolved config's checkpoint hands
        denoising from one model to another during the run (Wan 2.2 A14B: "high_noise", then
        "low_noise"); each step then takes the scales of the expert its section names for it
        (`Section.experts`), so guidance schedules act on the scale in force at that step. Empty for
        a single model (the default), whose steps all take `guidance_in_force`."""
        return {}

    @classmethod
    def default_guidance_target(cls, config: RunConfig) -> str:
        """The guidance a schedule drives when it names none: the one actually in force."""
        return cls.guidance_targets[0]

    @classmethod
    def setup(cls, config: RunConfig) -> RunSetup:
        experts = cls.expert_guidance(config)
        if config.guidance_scale_2 is not None and not experts:
            raise ConfigError("guidance_scale_2", f"{cls.name} model {config.model} has one denoiser; guidance_scale_2 "
                                                  "is the low-noise expert's scale of a two-expert model (Wan 2.2 A14B)")
        if config.latent_window_size is not None and not cls.latent_windows:
            raise ConfigError("latent_window_size", f"{cls.name} denoises the whole video at once; latent_window_size "
                                                    "is the section size of a section-by-section model (framepack)")
        return RunSetup(
            config=config,
            backbone=cls.name,
            guidance=cls.guidance_in_force(config),
            default_guidance_target=cls.default_guidance_target(config),
            guidance_targets=cls.guidance_targets,
            token_roles=cls.token_roles(config),
            attention_hooks=cls.supports_attention_hooks,
            history_hooks=cls.supports_history_hooks,
            history_blocks=cls.history_blocks(config),
            expert_guidance=experts,
            attention_layers=cls.attention_layers(config) if cls.supports_attention_hooks else None,
            cfg_off_reason=cls.cfg_off_reason(config),
        )

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        """How many self-attention layers the hooks number (`num_attention_layers` once loaded) in the resolved
        config's checkpoint, read before loading from its transformer config (`core.checkpoints.
        attention_layer_count`), so intervention layer fields are checked then; None (the default) where it
        cannot be read without loading or the network: they are then checked at the first forward."""
        return None

    @classmethod
    def token_roles(cls, config: RunConfig) -> frozenset[Role]:
        """Roles of the video tokens in this run's self-attention, before loading. The default:
        image-to-video runs condition their first latent frame on the image ("condition")."""
        return frozenset({"noisy", "condition"}) if config.image is not None else frozenset({"noisy"})

    #: Whether the backbone routes self-attention through `AttentionHooks` (the attention interface).
    supports_attention_hooks: ClassVar[bool] = False
    #: Why one video of this backbone cannot be split across processes (`RunConfig.context_parallel`,
    #: `core.context_parallel`); None where it can.
    context_parallel_refusal: ClassVar[str | None] = (
        "its transformer has no context-parallel plan in diffusers 0.42.1 (`_cp_plan`: how to split its tokens)"
    )
    #: Whether the backbone hands the clean context latents it feeds its model (history, conditioning
    #: image) to `HistoryHooks` (`core.history`), through `hand_over`.
    supports_history_hooks: ClassVar[bool] = False

    @classmethod
    def history_blocks(cls, config: RunConfig) -> dict[str, Role]:
        """The blocks this run hands to `HistoryHooks`, by name and role, in hand-over order, before
        loading (`core.history`). The default: with the interface, an image-to-video run hands over its
        conditioning image ("image", role "condition"); a text-to-video run hands over nothing."""
        if not cls.supports_history_hooks or config.image is None:
            return {}
        return dict(IMAGE_BLOCKS)

    @classmethod
    def total_steps(cls, config: RunConfig) -> int:
        """Denoising steps over all sections (for progress); section-by-section models override."""
        return config.steps

    @classmethod
    def load_key(cls, config: RunConfig) -> tuple:
        """What determines the loaded weights; runs with equal keys share one loaded model."""
        return (cls.name, config.model, "i2v" if config.image else "t2v", config.dtype, config.device)

    # ----- with the model loaded ---------------------------------------------------------
    @classmethod
    @abstractmethod
    def load(cls, config: RunConfig) -> "Backbone":
        """Load the real components with `from_pretrained` (hub id or local directory)."""

    #: True for the built-in random-weight models: their videos are smoke tests, not results.
    smoke_test: bool = False
    #: The performance options applied to this loaded model (`core.performance`; None: eager).
    performance: PerformanceState | None = None
    #: Whether `RunConfig.offload` can act: the components live in a diffusers pipeline (`PipelineBackbone`).
    offloads: ClassVar[bool] = False
    #: How this loaded model's components are offloaded (`core.offload`; None: all on the run's device).
    offload: OffloadState | None = None
    #: Whether the VAE tiles when the run leaves `vae_tiling` on auto (None: no VAE with tiling).
    vae_tiling_default: ClassVar[bool | None] = None

    def set_vae_tiling(self, on: bool) -> None:
        """Decode (and encode) in spatial tiles or not, for the run about to be sampled; backbones with a VAE that
        tiles override this."""

    def finish(self) -> None:
        """After a run's decode: give back what the run held (offloaded components); nothing by default."""

    def performance_notes(self) -> dict[str, Any]:
        """What performance options change in this backbone beyond `performance` (its attention path, say),
        for the run record's `performance` entry; nothing by default."""
        return {}

    @property
    def denoisers(self) -> list[torch.nn.Module]:
        """The denoising networks, whose repeated blocks performance options compile and quantize."""
        return []

    @abstractmethod
    def prepare(self, config: RunConfig, generator: torch.Generator) -> Any:
        """Encode the conditions and draw initial noise; returns the backbone's job object."""

    @abstractmethod
    def sections(self, job: Any) -> Iterator[Section]:
        """Yield the sections to denoise, in order."""

    @abstractmethod
    def predict(
        self, job: Any, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's conditional output, and its unconditional output when `uncond`."""

    @abstractmethod
    def scheduler_step(self, job: Any, section: Section, step: int, prediction: torch.Tensor) -> torch.Tensor:
        """Advance the scheduler one step; returns the new latents."""

    @abstractmethod
    def decode(self, job: Any) -> np.ndarray:
        """Decode the final latents to frames: float32 in [0, 1], shape (T, H, W, 3)."""

    # ----- batched generation (optional) ------------------------------------------------------
    #: Whether several runs can be sampled as one batch (`prepare_batch`/`decode_batch`). Small
    #: models (the test bed) spend most of a single run waiting on per-call overhead; sweeps and
    #: evaluations batch their runs when this is set.
    supports_batching: ClassVar[bool] = False
    #: Config fields the videos of one batch may set differently; every other field is shared.
    PER_VIDEO_FIELDS: ClassVar[frozenset[str]] = frozenset({"prompt", "negative_prompt", "seed", "image", "metrics", "out_dir"})

    @classmethod
    def batch_key(cls, config: RunConfig) -> str | None:
        """Resolved configs with equal keys can share one batch; None when the backbone cannot batch."""
        if not cls.supports_batching:
            return None
        shared = {k: v for k, v in config.model_dump(mode="json").items() if k not in cls.PER_VIDEO_FIELDS}
        return json.dumps(shared, sort_keys=True)

    @classmethod
    def check_batch_configs(cls, configs: Sequence[RunConfig]) -> None:
        """ValueError naming the shared fields on which `configs` differ (for `prepare_batch`)."""
        first = configs[0]
        for config in configs[1:]:
            if cls.batch_key(config) != cls.batch_key(first):
                differ = [k for k in RunConfig.model_fields if k not in cls.PER_VIDEO_FIELDS
                          and getattr(config, k) != getattr(first, k)]
                raise ValueError(f"prepare_batch: configs differ in {', '.join(differ)}")

    def prepare_batch(self, configs: Sequence[RunConfig], generators: Sequence[torch.Generator]) -> Any:
        """One job for several videos with equal `batch_key`, each drawing its noise from its own
        generator exactly as `prepare` would."""
        raise NotImplementedError(f"backbone {self.name} does not batch runs (supports_batching is False)")

    def decode_batch(self, job: Any) -> np.ndarray:
        """Frames of every video of a batched job: float32 in [0, 1], shape (B, T, H, W, 3)."""
        raise NotImplementedError(f"backbone {self.name} does not batch runs (supports_batching is False)")

    # ----- attention interface ---------------------------------------------------------------
    def token_layout(self, job: Any, section: Section) -> TokenLayout | None:
        """The self-attention token layout while `section` is denoised (None without the interface)."""
        return None

    def hooked_attention(self, hooks: AttentionHooks) -> AbstractContextManager[None]:
        """Route every self-attention call through `hooks` for the duration, restoring stock
        processors afterwards; backbones with the attention interface override this."""
        return nullcontext()

    @property
    def num_attention_layers(self) -> int:
        return 0

    # ----- history interface ------------------------------------------------------------------
    #: The run's history hooks while it samples (`hooked_history`), on backbones with the interface.
    _history: HistoryHooks | None = None

    def hooked_history(self, hooks: HistoryHooks) -> AbstractContextManager[None]:
        """Hand the context latents of every model prediction to `hooks` for the duration: backbones
        with the interface (`supports_history_hooks`) pass them through `hand_over`."""
        return self._history_installed(hooks) if self.supports_history_hooks else nullcontext()

    @contextmanager
    def _history_installed(self, hooks: HistoryHooks) -> Iterator[None]:
        self._history = hooks
        try:
            yield
        finally:
            self._history = None

    def hand_over(self, latents: Mapping[str, torch.Tensor], roles: Mapping[str, Role]) -> dict[str, torch.Tensor] | None:
        """The context blocks `latents` (name -> (B, C, F, H, W), with `roles`, as `history_blocks` states
        them) after the run's history transforms and the running guidance branch's; None when nothing changed
        (no transform, or each left every block as it was), and the backbone then feeds its own tensors: bit-identical inputs."""
        hooks = self._history
        if hooks is None or not hooks.active:
            return None
        changed = hooks.apply(latents, roles)
        return None if all(changed[name] is latents[name] for name in latents) else dict(changed)

    def with_image_handed_over(self, condition: torch.Tensor, channels: slice) -> torch.Tensor:
        """`condition` (B, C, F, H, W) with the run's history transforms applied to the conditioning
        image it carries in `channels` of frame 0, handed over as block "image"; `condition` itself
        when nothing changed. The image-to-video backbones that concatenate their condition on the
        channel axis (Wan, HunyuanVideo 1.5, the test bed) share this."""
        return self.with_context_handed_over(condition, channels, 1, IMAGE_BLOCKS)

    def with_context_handed_over(self, condition: torch.Tensor, channels: slice, frames: int,
                                 block: Mapping[str, Role]) -> torch.Tensor:
        """`condition` (B, C, F, H, W) with the run's history transforms applied to the clean context
        it carries in `channels` of its first `frames` frames, handed over as the one block of `block`
        (name -> role); `condition` itself when nothing changed."""
        (name,) = block
        changed = self.hand_over({name: condition[:, channels, :frames]}, block)
        if changed is None:
            return condition
        condition = condition.clone()
        condition[:, channels, :frames] = changed[name]
        return condition


class PipelineBackbone(Backbone):
    """A backbone whose real components live in a diffusers pipeline object.

    The pipeline is only a container and a source of its encode/prepare helpers: the denoising
    loop stays inertia's. `scheduler_step` is the flow-matching schedulers' plain step.
    """

    def __init__(self, pipeline: Any, device: torch.device, smoke_test: bool):
        self.pipe = pipeline
        self.transformer = pipeline.transformer
        self.device = device
        self.smoke_test = smoke_test

    offloads = True
    vae_tiling_default = False  # as the Wan and CogVideoX pipelines; the HunyuanVideo family's examples tile

    @classmethod
    def on_device(cls, pipeline: Any, config: RunConfig, smoke_test: bool, **extra: Any) -> "PipelineBackbone":
        """The loaded pipeline without progress bars (the loop has its own), moved to the run's device, or
        offloaded for computing there (`config.offload`), and wrapped as this backbone (`extra`: the
        subclass's own constructor arguments)."""
        pipeline.set_progress_bar_config(disable=True)
        device = torch.device(config.device)
        state = None
        if config.offload:
            state = apply_offload(pipeline, config.offload, device)
        else:
            pipeline.to(device)
        backbone = cls(pipeline, device, smoke_test=smoke_test, **extra)
        backbone.offload = state
        return backbone

    def set_vae_tiling(self, on: bool) -> None:
        if on:
            self.pipe.vae.enable_tiling()
        else:
            self.pipe.vae.disable_tiling()

    def finish(self) -> None:
        if self.offload is not None:
            release(self.pipe, self.offload)

    @property
    def denoisers(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def scheduler_step(self, job: Any, section: Section, step: int, prediction: torch.Tensor) -> torch.Tensor:
        return self.pipe.scheduler.step(prediction, section.timesteps[step], section.latents, return_dict=False)[0]


def whole_video_section(
    job: Any, timesteps: torch.Tensor, sigmas: Sequence[float], experts: list[str] | None = None
) -> Iterator[Section]:
    """The one section of a whole-video backbone: denoises `job.latents` over `timesteps` (with each
    step's noise level in `sigmas`, and expert in `experts` for a checkpoint with several) and writes
    the denoised latents back to `job.latents`."""
    section = Section(index=0, count=1, latents=job.latents, timesteps=timesteps, sigmas=list(sigmas), experts=experts)
    yield section
    job.latents = section.latents


def single_section(job: Any, scheduler: Any, experts: list[str] | None = None) -> Iterator[Section]:
    """`whole_video_section` over a flow-matching scheduler's prepared timesteps: sets its begin
    index as the diffusers pipelines do and takes each step's sigma from the scheduler."""
    scheduler.set_begin_index(0)
    sigmas = [float(s) for s in scheduler.sigmas[: len(scheduler.timesteps)]]
    return whole_video_section(job, scheduler.timesteps, sigmas, experts)
