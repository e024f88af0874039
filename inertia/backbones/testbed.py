"""The test-bed model (`inertia.testbed`) behind the denoise-step interface.

A small image-to-video flow-matching model trained on the simulator's ball clips, biased toward
static clips so that it shows static death; its physics is known exactly, so every video can be
scored against the truth (`inertia.testbed.physics`, `inertia testbed evaluate`).

The first frame comes from `--image` (a 32x32 RGB image) or, without one, from the simulator:
the prompt is parsed with the test bed's grammar and its balls and background are laid out from
the prompt and the run seed (`inertia.testbed.data.commanded_spec`), so `--prompt "the red ball
rolls left fast"` needs no image and the truth of the run is `commanded_spec(prompt, seed)`.

Denoising runs on pixels (no VAE): latents are (B, 3, 17, 32, 32) in [-1, 1]; the condition
(mask + first frame) is concatenated on the channel axis at every step, as Wan I2V does. True
CFG; the conditional and unconditional branches run as one batched forward, exactly as the
reference `TestbedPipeline.__call__` does (bit-identical on CPU).

Attention: the transformer is diffusers' `WanTransformer3DModel`, so its attention is routed like
Wan's: self-attention (`attn1`) is over video tokens only, laid out frame-major
(index f * 64 + h * 8 + w after the 1x4x4 patchify: `token_layout`), RoPE applied inside the
processor before attention; the text enters through cross-attention (`attn2`).

History interface (`core.history`): every run hands over its first frame as the block "image" (role
"condition") at every prediction: channels 1-3 of frame 0 of the condition, (B, 3, 1, 32, 32)
pixels in [-1, 1]; the mask channel and the zero frames after it are kept back.

History mode (`--history-frames K`, models trained for it: their model_index.json declares
`history_frames` K): the run continues a previous clip. The simulator lays out a continuation from
(prompt, seed) (`data.continuation_spec`: the last K frames of a previous straight-line motion,
then the commanded motion from where it ends); the model is given those K frames (mask 1 on frames
0..K-1, Wan I2V's channel concat) and generates the clip, whose frames K-1.. are scored against the
commanded part. The K frames are handed over as the block "history" (role "history"; channels 1-3
of frames 0..K-1, (B, 3, K, 32, 32)), and in the token layout frames 0..K-1 are "history" tokens,
so history_noise, alg, unlearn:target=history, history_guidance and reference_damping:keys=history
act on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..core.attention import AttentionHooks, Role, TokenLayout
from ..core.backbone import Backbone, Section, single_section
from ..core.checkpoints import CheckpointContents, attention_layer_count, read_checkpoint_json
from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.history import IMAGE_BLOCKS
from ..core.validation import check_image_file, reject_embedded_guidance
from ..testbed.checkpoint import DEFAULT_MODEL, default_model_with_digest, is_default_model, model_path
from .wan import hook_wan_self_attention, wan_token_layout

#: The prompt of a run that gives none (a commanded motion, in the test bed's grammar).
DEFAULT_PROMPT = "the red ball rolls right fast"
#: When a checkpoint's model_index.json names none of these (it always does when written by
#: `inertia testbed train`).
FALLBACK = dict(height=32, width=32, num_frames=17, max_sequence_length=128, default_steps=20,
                default_guidance_scale=3.0, default_fps=8, history_frames=0)
#: The history mode's hand-over: the history frames, as one block.
HISTORY_BLOCKS: dict[str, Role] = {"history": "history"}
CONTENTS = CheckpointContents(frozenset({"scheduler", "text_encoder", "tokenizer", "transformer"}),
                              dict.fromkeys(FALLBACK))
TRAIN_HINT = ("train them with `inertia testbed train --out runs/testbed` (about 10 minutes on one GPU) and "
              "copy runs/testbed/model to inertia/testbed/weights, or pass --model DIR with a trained checkpoint")


def _model_settings(model: str) -> dict[str, Any]:
    """model_index.json of a test-bed checkpoint; ConfigError if it is missing or not one."""
    path = model_path(model)
    if is_default_model(model) and not (path / "model_index.json").is_file():
        raise ConfigError("model", f"the test-bed weights are missing ({path} does not exist); {TRAIN_HINT}")
    if not path.is_dir():
        raise ConfigError("model", f"{model} is not a local directory; the test-bed backbone loads a trained checkpoint "
                                   f"directory (hub ids are not supported); {TRAIN_HINT}")
    index = read_checkpoint_json(str(path), "model_index.json")
    if index is None:
        raise ConfigError("model", f"{path} has no model_index.json; {TRAIN_HINT}")
    if index.get("_class_name") != "TestbedPipeline":
        raise ConfigError("model", f"{path} is a {index.get('_class_name')} checkpoint; the test-bed backbone needs a "
                                   f"TestbedPipeline checkpoint (written by `inertia testbed train`)")
    return {**FALLBACK, **{k: index[k] for k in FALLBACK if k in index}}


@dataclass
class TestbedJob:
    """A batch of videos sharing steps and guidance (batch 1 for an ordinary run)."""

    embeds: torch.Tensor  # (B, L, D)
    negative_embeds: torch.Tensor  # (B, L, D)
    condition: torch.Tensor  # (B, 4, T, H, W): mask | first frame
    latents: torch.Tensor  # (B, 3, T, H, W)
    scheduler: Any
    first_frames: np.ndarray  # uint8 (B, H, W, 3), or (B, K, H, W, 3): the history frames of the history mode
    specs: list  # the truth per video: a ClipSpec, a Continuation (history mode), None where an image was given
    context: int = 1  # clean frames of the condition: 1 (first frame) or the history mode's K


class TestbedBackbone(Backbone):
    __test__ = False  # not a pytest class
    name = "testbed"
    description = ("The test-bed model: a small pixel-space Wan transformer trained on the simulator's ball clips, "
                   "biased toward static clips (it shows static death); image-to-video (and continuing a clip's last "
                   "frames: the history mode, on models trained for it), true CFG, exact physics metrics.")
    modes = ("i2v", "history")
    default_models: ClassVar[Mapping[str, str]] = {"i2v": DEFAULT_MODEL, "history": DEFAULT_MODEL}
    guidance_targets = ("cfg",)
    supports_attention_hooks = True
    supports_history_hooks = True
    supports_batching = True
    default_prompt = DEFAULT_PROMPT
    lossless_video = True
    checkpoint_contents = {"i2v": CONTENTS, "history": CONTENTS}

    # ----- before any model loads ------------------------------------------------------------------
    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        requested = config.model or DEFAULT_MODEL
        settings = _model_settings(requested)
        cls.refuse_unhandled_contents(str(model_path(requested)), "history" if config.mode == "history" else "i2v")
        if config.history_frames is not None:
            _check_history(config, settings["history_frames"], requested)
        model = requested
        if is_default_model(requested):
            model = default_model_with_digest()
        filled = dict(
            height=config.height or settings["height"], width=config.width or settings["width"],
            num_frames=config.num_frames or settings["num_frames"], steps=config.steps or settings["default_steps"],
            guidance_scale=settings["default_guidance_scale"] if config.guidance_scale is None else config.guidance_scale,
            fps=config.fps or settings["default_fps"],
        )
        resolved = config.model_copy(update={**filled, "model": model})
        reject_embedded_guidance(cls.name, resolved)
        for field, key in (("height", "height"), ("width", "width"), ("num_frames", "num_frames")):
            value, trained = getattr(resolved, field), settings[key]
            if value != trained:
                raise ConfigError(field, f"{value} is not what the test-bed model generates (it was trained on "
                                         f"{settings['height']}x{settings['width']} frames, {settings['num_frames']} a clip); "
                                         f"allowed: {trained}")
        limit = settings["max_sequence_length"] - 1  # one token for EOS
        for field in ("prompt", "negative_prompt"):
            size = len(getattr(resolved, field).encode("utf-8"))
            if size > limit:
                raise ConfigError(field, f"{size} bytes is longer than the test-bed text encoder takes ({limit} bytes)")
        if resolved.image is not None:
            check_image_file("image", resolved.image)
            _check_image_size(resolved.image, resolved.height, resolved.width)
        else:
            _check_prompt_grammar(resolved.prompt)
        return resolved

    @classmethod
    def attention_layers(cls, config: RunConfig) -> int | None:
        return attention_layer_count(str(model_path(config.model)), ["transformer/config.json"])

    @classmethod
    def token_roles(cls, config: RunConfig) -> frozenset[Role]:
        # Image-to-video: frame 0 is the given first frame (mask channel 1 there); history mode: frames 0..K-1.
        return frozenset({"noisy", "history" if config.mode == "history" else "condition"})

    @classmethod
    def history_blocks(cls, config: RunConfig) -> dict[str, Role]:
        # Image-to-video: the first frame is handed over, from --image or rendered; history mode: the history.
        return dict(HISTORY_BLOCKS if config.mode == "history" else IMAGE_BLOCKS)

    @classmethod
    def load_key(cls, config: RunConfig) -> tuple:
        # The first frame (image or rendered) is an input, not part of the loaded model.
        return (cls.name, config.model, config.dtype, config.device)

    # ----- loading -------------------------------------------------------------------------------------
    def __init__(self, pipeline: Any, device: torch.device):
        self.pipe = pipeline
        self.transformer = pipeline.transformer
        self.device = device
        self.smoke_test = False

    @classmethod
    def load(cls, config: RunConfig) -> "TestbedBackbone":
        from ..testbed.model import load_pipeline

        device = torch.device(config.device)
        return cls(load_pipeline(model_path(config.model), dtype=getattr(torch, config.dtype), device=device,
                                 allow_pickled=config.allow_pickled_weights), device)

    # ----- denoise-step interface ------------------------------------------------------------------
    def prepare(self, config: RunConfig, generator: torch.Generator) -> TestbedJob:
        return self.prepare_batch([config], [generator])

    def prepare_batch(self, configs: Sequence[RunConfig], generators: Sequence[torch.Generator]) -> TestbedJob:
        """One job for several videos with equal `batch_key` (sweeps, evaluation)."""
        from ..testbed import simulator as sim
        from ..testbed.continuation import history_of
        from ..testbed.data import commanded_spec, continuation_spec
        from ..testbed.model import context_condition, frames_to_tensor

        self.check_batch_configs(configs)
        first = configs[0]
        pipe, device = self.pipe, self.device
        frames, specs = [], []
        for config in configs:
            if config.history_frames is not None:
                continuation = continuation_spec(config.prompt, config.seed, history_frames=config.history_frames,
                                                 num_frames=config.num_frames, height=config.height, width=config.width)
                frames.append(history_of(continuation))
                specs.append(continuation)
            elif config.image is not None:
                frames.append(_read_image(config.image))
                specs.append(None)
            else:
                spec = commanded_spec(config.prompt, config.seed, num_frames=config.num_frames,
                                      height=config.height, width=config.width)
                frames.append(sim.render(spec).frames[0])
                specs.append(spec)
        first_frames = np.stack(frames)
        context = first.history_frames or 1
        clean = first_frames if first.history_frames else first_frames[:, None]
        condition = context_condition(frames_to_tensor(clean), first.num_frames).to(device)
        embeds = pipe.encode_prompt([c.prompt for c in configs], device)
        negative = pipe.encode_prompt([c.negative_prompt for c in configs], device)
        latents = torch.cat([pipe.initial_noise(g) for g in generators]).to(device)
        scheduler = pipe.fresh_scheduler()
        scheduler.set_timesteps(first.steps, device=device)
        return TestbedJob(embeds, negative, condition, latents, scheduler, first_frames, specs, context)

    def sections(self, job: TestbedJob) -> Iterator[Section]:
        return single_section(job, job.scheduler)

    def predict(
        self, job: TestbedJob, section: Section, step: int, scales: Mapping[str, float], uncond: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.pipe.guided_velocities(
            section.latents, self._condition(job), section.timesteps[step], job.embeds,
            job.negative_embeds if uncond else None,
        )

    def _condition(self, job: TestbedJob) -> torch.Tensor:
        """The condition of this prediction: the job's, with the run's history transforms applied to the
        first frame (channels 1-3 of frame 0; channel 0 is the mask), or in the history mode to the
        history frames (channels 1-3 of frames 0..K-1)."""
        if job.context > 1:
            return self.with_context_handed_over(job.condition, slice(1, None), job.context, HISTORY_BLOCKS)
        return self.with_image_handed_over(job.condition, slice(1, None))

    def scheduler_step(self, job: TestbedJob, section: Section, step: int, prediction: torch.Tensor) -> torch.Tensor:
        return job.scheduler.step(prediction, section.timesteps[step], section.latents, return_dict=False)[0]

    # ----- attention interface ----------------------------------------------------------------------
    def token_layout(self, job: TestbedJob, section: Section) -> TokenLayout:
        """Video tokens only, frame-major; frame 0 is the conditioning frame (as in Wan I2V), or frames
        0..K-1 are history frames in the history mode."""
        if job.context > 1:
            return wan_token_layout(self.transformer, section.latents.shape, True, job.context, "history")
        return wan_token_layout(self.transformer, section.latents.shape, conditioned=True)

    @property
    def num_attention_layers(self) -> int:
        return len(self.transformer.blocks)

    @property
    def denoisers(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def hooked_attention(self, hooks: AttentionHooks):
        # The transformer is diffusers' WanTransformer3DModel: Wan's hooked self-attention applies as is.
        return hook_wan_self_attention(self.transformer, hooks)

    def decode(self, job: TestbedJob) -> np.ndarray:
        return self.decode_batch(job)[0]

    def decode_batch(self, job: TestbedJob) -> np.ndarray:
        """float32 frames (B, T, H, W, 3) in [0, 1]: the pixels themselves (no VAE)."""
        from ..testbed.model import tensor_to_frames

        return tensor_to_frames(job.latents)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _check_image_size(path: Path, height: int, width: int) -> None:
    from PIL import Image

    with Image.open(path) as image:
        w, h = image.size
    if (h, w) != (height, width):
        raise ConfigError("image", f"{path} is {w}x{h}; the test-bed model conditions on a {width}x{height} first frame "
                                   "(resize it, or leave out --image to have the simulator render one from the prompt)")


def _check_history(config: RunConfig, trained: int, model: str) -> None:
    """The history mode needs a model trained for it, with as many history frames, and no --image."""
    if not trained:
        raise ConfigError("history_frames", f"{model} was not trained for the history mode (its model_index.json "
                                            "declares no history_frames); train one with `inertia testbed train "
                                            "--history-prob 0.5` (scripts/testbed_gpu.sh train-history)")
    if config.history_frames != trained:
        raise ConfigError("history_frames", f"{config.history_frames} is not what {model} was trained on; "
                                            f"allowed: {trained}")
    if config.image is not None:
        raise ConfigError("image", "the history mode continues a clip the simulator lays out from the prompt and "
                                   "seed; leave out --image")


def _check_prompt_grammar(prompt: str) -> None:
    from ..testbed.simulator import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError as error:
        raise ConfigError("prompt", f"without --image the simulator renders the first frame from the prompt, which must "
                                    f"follow the test-bed grammar: {error}") from None
