"""The test-bed video model: a small image-to-video flow-matching model on pixels, built from real
diffusers/transformers classes and trained on the simulator's clips (`inertia.testbed.train`).

Components (all load with `from_pretrained` from one directory with a `model_index.json`):

* ``transformer``: `diffusers.WanTransformer3DModel` on 32x32 RGB pixels in [-1, 1], 17 frames,
  patch (1, 4, 4) -> 8 x 8 tokens a frame, 1088 video tokens. Input channels, Wan I2V style
  (channel concat): 3 noisy pixels | 1 mask (1 on frame 0) | 3 first-frame condition (frame 0,
  zeros after) = 7; output 3 (the flow velocity ``noise - x0``). Self-attention is video only
  (index ``f * 64 + h * 8 + w``, RoPE inside the processor as in Wan); the text enters through
  cross-attention, exactly as in Wan 2.1.
* ``text_encoder``: a tiny `transformers.UMT5EncoderModel` (vocab 384), trained jointly with the
  transformer (a random encoder knows no words; the grammar is small, so learning it costs
  nothing and keeps "the prompt was not understood" from posing as static death).
* ``tokenizer``: `transformers.ByT5Tokenizer()` (bytes, needs no files or downloads).
* ``scheduler``: `diffusers.UniPCMultistepScheduler` with flow sigmas (Wan 2.1's sampler) and
  shift ``flow_shift``; training draws sigma from the same shifted distribution.

`TestbedPipeline` holds them, stores the model's geometry and default sampling settings in its
``model_index.json``, and has a reference `__call__` (the backbone must reproduce it bit for bit).

History mode: a model trained on continuations (`data.Mixture.history_prob`) declares
``history_frames`` k in its model_index.json (0, or absent in older checkpoints: no history mode).
It takes the same 7 input channels: the mask is 1 on the k history frames and the condition
channels hold them, as Wan I2V holds its one image frame; its architecture is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, UniPCMultistepScheduler, WanTransformer3DModel
from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

from ..core.checkpoint_files import weights_options

HEIGHT = 32
WIDTH = 32
NUM_FRAMES = 17
#: Text tokens (bytes + EOS) the model takes; the longest two-ball prompt of the grammar is 88.
MAX_SEQUENCE_LENGTH = 128
#: Noisy (3) + mask (1) + first-frame condition (3), in that order (Wan I2V's order).
IN_CHANNELS = 7
OUT_CHANNELS = 3
#: Default sampling settings written into a trained model's model_index.json (the backbone's
#: defaults come from there, so a retrained model can carry retuned values).
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE_SCALE = 3.0
DEFAULT_FPS = 8
PIPELINE_CLASS = "TestbedPipeline"


@dataclass(frozen=True)
class ModelSize:
    """Architecture of the test-bed model (defaults: ~1.2 M parameters, ~4.8 MB as float32)."""

    num_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32
    ffn_dim: int = 384
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ffn: int = 128
    flow_shift: float = 2.0
    patch: int = 4  # spatial patch (the temporal patch is 1)

    def __post_init__(self) -> None:
        if HEIGHT % self.patch or WIDTH % self.patch:
            raise ValueError(f"model patch {self.patch} must divide the {HEIGHT}x{WIDTH} frame")
        if self.head_dim < 6 or self.text_dim % self.text_heads:
            raise ValueError(f"model head_dim must be >= 6 (3D RoPE) and text_dim a multiple of text_heads, got "
                             f"head_dim {self.head_dim}, text_dim {self.text_dim}, text_heads {self.text_heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: A very small size for tests and CPU smoke runs.
TINY_SIZE = ModelSize(num_layers=1, num_heads=2, head_dim=12, ffn_dim=32, text_dim=16, text_layers=1,
                      text_heads=2, text_ffn=32)


def build_transformer(size: ModelSize) -> WanTransformer3DModel:
    transformer = WanTransformer3DModel(
        patch_size=(1, size.patch, size.patch),
        num_attention_heads=size.num_heads,
        attention_head_dim=size.head_dim,
        in_channels=IN_CHANNELS,
        out_channels=OUT_CHANNELS,
        text_dim=size.text_dim,
        freq_dim=256,
        ffn_dim=size.ffn_dim,
        num_layers=size.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )
    # DiT practice: a zero output layer, so training starts from "predict no velocity".
    torch.nn.init.zeros_(transformer.proj_out.weight)
    torch.nn.init.zeros_(transformer.proj_out.bias)
    return transformer


def build_text_encoder(size: ModelSize) -> UMT5EncoderModel:
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=384,
            d_model=size.text_dim,
            d_kv=size.text_dim // size.text_heads,
            d_ff=size.text_ffn,
            num_layers=size.text_layers,
            num_heads=size.text_heads,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=MAX_SEQUENCE_LENGTH,
            dropout_rate=0.0,
        )
    )


def build_scheduler(flow_shift: float) -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, num_train_timesteps=1000
    )


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The scheduler's shift applied to u in [0, 1]: sigma = shift u / (1 + (shift - 1) u).

    Inference steps are u = linspace(1, 1/1000) shifted this way, so training with u ~ U(0, 1)
    and this shift puts the training noise levels where the sampler spends its steps.
    """
    return shift * u / (1 + (shift - 1) * u)


def new_pipeline(size: ModelSize = ModelSize(), seed: int | None = 0, **settings: Any) -> "TestbedPipeline":
    """A freshly initialised (untrained) test-bed pipeline; weights from `seed` (None: global RNG)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        transformer = build_transformer(size)
        text_encoder = build_text_encoder(size)
    return TestbedPipeline(
        tokenizer=ByT5Tokenizer(), text_encoder=text_encoder, transformer=transformer,
        scheduler=build_scheduler(size.flow_shift), **settings,
    )


# --------------------------------------------------------------------------- pixel conversions


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (..., T, H, W, 3) or one frame (H, W, 3) -> float32 channels-first in [-1, 1]:
    (..., 3, T, H, W), or (3, H, W) for a single frame."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32) / 127.5 - 1.0
    if x.ndim == 3:
        return x.permute(2, 0, 1)
    return x.movedim(-1, -4)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> float32 frames (B, T, H, W, 3) in [0, 1]."""
    x = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 4, 1)
    return x.cpu().numpy()


def context_condition(context: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, 3, k, H, W) clean context frames -> (B, 4, T, H, W): mask (1 on frames 0..k-1) | those
    frames (zeros after). k = 1 is image-to-video (the first frame), k > 1 the history mode."""
    b, _, k, h, w = context.shape
    condition = context.new_zeros(b, 4, num_frames, h, w)
    condition[:, 0, :k] = 1.0
    condition[:, 1:, :k] = context
    return condition


def first_frame_condition(first: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, 3, H, W) first frames -> (B, 4, T, H, W): mask (1 on frame 0) | first frame (zeros after)."""
    return context_condition(first[:, :, None], num_frames)


def clip_condition(clips: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Training clips (B, 3, T, H, W) and each clip's clean context frames (B,) -> the condition of
    each (`context_condition` of its first context[i] frames), in one pass over the batch."""
    mask = torch.arange(clips.shape[2], device=clips.device)[None] < context[:, None]  # (B, T)
    mask = mask[:, None, :, None, None]
    ones = mask.to(clips.dtype).expand(-1, 1, -1, *clips.shape[3:])
    return torch.cat([ones, torch.where(mask, clips, clips.new_zeros(()))], dim=1)


class TestbedPipeline(DiffusionPipeline):
    """Container of the test-bed components, with the reference sampling loop in `__call__`."""

    __test__ = False  # not a pytest class
    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(
        self,
        tokenizer: ByT5Tokenizer,
        text_encoder: UMT5EncoderModel,
        transformer: WanTransformer3DModel,
        scheduler: UniPCMultistepScheduler,
        height: int = HEIGHT,
        width: int = WIDTH,
        num_frames: int = NUM_FRAMES,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        default_steps: int = DEFAULT_STEPS,
        default_guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        default_fps: int = DEFAULT_FPS,
        history_frames: int = 0,
    ):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, scheduler=scheduler)
        self.register_to_config(
            height=height, width=width, num_frames=num_frames, max_sequence_length=max_sequence_length,
            default_steps=default_steps, default_guidance_scale=default_guidance_scale, default_fps=default_fps,
            history_frames=history_frames,
        )

    # ----- conditions ---------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Byte ids and attention mask, padded to max_sequence_length (B, L)."""
        tokens = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.config.max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        return tokens.input_ids.to(device), tokens.attention_mask.to(device)

    def encode_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text features (B, L, text_dim), zero at padding positions (as Wan's T5 embeddings are)."""
        hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    def encode_prompt(self, prompts: Sequence[str], device: torch.device | str) -> torch.Tensor:
        ids, mask = self.tokenize(prompts, device)
        return self.encode_tokens(ids, mask).to(self.transformer.dtype)

    def velocity(self, latents: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor,
                 embeds: torch.Tensor) -> torch.Tensor:
        """The transformer's flow velocity for (B, 3, T, H, W) pixels, in float32."""
        model_input = torch.cat([latents, condition], dim=1).to(self.transformer.dtype)
        out = self.transformer(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeds,
                               return_dict=False)[0]
        return out.float()

    def guided_velocities(self, latents: torch.Tensor, condition: torch.Tensor, timestep: torch.Tensor,
                          embeds: torch.Tensor, negative_embeds: torch.Tensor | None):
        """Conditional and (when negative_embeds is given) unconditional velocities, in one batched
        forward: [cond; uncond] along the batch."""
        b = latents.shape[0]
        if negative_embeds is None:
            return self.velocity(latents, condition, timestep.expand(b), embeds), None
        both = self.velocity(torch.cat([latents, latents]), torch.cat([condition, condition]),
                             timestep.expand(2 * b), torch.cat([embeds, negative_embeds]))
        return both[:b], both[b:]

    def fresh_scheduler(self) -> UniPCMultistepScheduler:
        """A scheduler with no state from earlier videos (UniPC keeps a history of outputs)."""
        return type(self.scheduler).from_config(self.scheduler.config)

    def first_frame(self, prompt: str, seed: int) -> np.ndarray:
        """uint8 (H, W, 3): the simulator's first frame for the prompt's commands, laid out from
        (prompt, `seed`) (`data.commanded_spec`)."""
        from . import simulator as sim
        from .data import commanded_spec

        spec = commanded_spec(prompt, seed, num_frames=self.config.num_frames, height=self.config.height,
                              width=self.config.width)
        return sim.render(spec).frames[0]

    def initial_noise(self, generator: torch.Generator, batch: int = 1) -> torch.Tensor:
        c = self.config
        return torch.randn((batch, 3, c.num_frames, c.height, c.width), generator=generator, dtype=torch.float32)

    # ----- reference sampler ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        image: np.ndarray | None = None,
        seed: int = 0,
        negative_prompt: str = "",
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        history: np.ndarray | None = None,
    ) -> np.ndarray:
        """Generate one video: float32 frames (T, H, W, 3) in [0, 1].

        `image` is the first frame (uint8 H x W x 3); without it the simulator renders the first
        frame the prompt commands, laid out from (prompt, `seed`). `history` (uint8 k x H x W x 3)
        instead conditions on k history frames (the history mode). Noise comes from `generator`
        (default: a CPU generator seeded with `seed`). CFG runs when guidance_scale > 1.
        """
        c = self.config
        guidance_scale = c.default_guidance_scale if guidance_scale is None else guidance_scale
        steps = c.default_steps if num_inference_steps is None else num_inference_steps
        device = self._execution_device
        if history is not None:
            context = frames_to_tensor(np.asarray(history, np.uint8))[None]
            condition = context_condition(context, c.num_frames).to(device)
        else:
            first = self.first_frame(prompt, seed) if image is None else np.asarray(image, dtype=np.uint8)
            condition = first_frame_condition(frames_to_tensor(first)[None], c.num_frames).to(device)
        embeds = self.encode_prompt([prompt], device)
        negative = self.encode_prompt([negative_prompt], device) if guidance_scale > 1.0 else None
        latents = self.initial_noise(generator or torch.Generator("cpu").manual_seed(seed)).to(device)
        scheduler = self.fresh_scheduler()
        scheduler.set_timesteps(steps, device=device)
        scheduler.set_begin_index(0)
        for t in scheduler.timesteps:
            cond, uncond = self.guided_velocities(latents, condition, t, embeds, negative)
            prediction = cond if uncond is None else uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        return tensor_to_frames(latents)[0]


def parameter_count(pipe: TestbedPipeline) -> dict[str, int]:
    return {
        "transformer": sum(p.numel() for p in pipe.transformer.parameters()),
        "text_encoder": sum(p.numel() for p in pipe.text_encoder.parameters()),
    }


def load_pipeline(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  allow_pickled: bool = False) -> TestbedPipeline:
    pipe = TestbedPipeline.from_pretrained(str(path), dtype=dtype, **weights_options(allow_pickled))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
