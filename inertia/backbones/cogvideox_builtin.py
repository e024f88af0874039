"""The built-in tiny CogVideoX models and the tiny layouts the tests use: real diffusers classes,
random weights.

Sizes are the smallest that run every code path on the CPU in a fraction of a second. The VAE keeps CogVideoX's
compression (8x spatial, 4x temporal) and the transformer its 2x2 patch (and, for the 1.5
layout, the temporal patch of 2), so frame/size rules match the real checkpoints.

Layouts, after the published checkpoints:

* "1.0" t2v + DDIM: CogVideoX-2b (sin-cos positions added at the patch embedding, no RoPE).
* "1.0" t2v + DPM: CogVideoX-5b (RoPE).
* "1.0" i2v: CogVideoX-5b-I2V (RoPE; `learned_positions=True` also gives it the learned
  position table that pins the real checkpoint to one size and frame count).
* "1.5" t2v / i2v: CogVideoX1.5-5B(-I2V): temporal patch 2, RoPE over a bounded table, and for
  I2V the `ofs` embedding and inverted latent scaling.

The built-ins are the "1.0" t2v + DDIM layout and the "1.0" i2v + DPM layout without learned
positions (so a smoke test may pick any valid size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
)
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

#: v2: the VAE's sample size sets tiles whose tiled decode and encode keep the frame size (v1's did not).
VERSION = "v2"
Generation = Literal["1.0", "1.5"]
SchedulerKind = Literal["ddim", "dpm"]

LATENT_CHANNELS = 4
TEXT_DIM = 32
#: Transformer sample size: (latent height, latent width, video frames).
SAMPLE = {"1.0": (4, 6, 9), "1.5": (8, 8, 9)}

VAE_CONFIG: dict[str, Any] = dict(
    block_out_channels=(8, 8, 8, 8),
    latent_channels=LATENT_CHANNELS,
    layers_per_block=1,
    norm_num_groups=2,
    temporal_compression_ratio=4,
    # Only the VAE's tiles come from these (half of each): diffusers' tiled decode keeps the frame size only when the
    # tile stride in latents times 8 equals the rows a tile keeps after blending, with its fixed overlaps (1/6 of a
    # tile's height, 1/5 of its width). 48 x 40 pixel tiles are the smallest that meet it (the real checkpoint's
    # 240 x 360 do); v1's 16 x 24 (half of 32 x 48) decoded a 32 x 48 video to 50 x 56. Tiles act on the default
    # 32 x 48 frames (two across), as the real VAE's act on its default 480 x 720.
    sample_height=96,
    sample_width=80,
)


def transformer_config(
    mode: str, generation: Generation = "1.0", rope: bool = True, learned_positions: bool = False,
    text_length: int = 226,
) -> dict[str, Any]:
    """Tiny `CogVideoXTransformer3DModel` kwargs for a mode and layout (see the module docstring)."""
    i2v, v15 = mode == "i2v", generation == "1.5"
    height, width, frames = SAMPLE[generation]
    return dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=2 * LATENT_CHANNELS if i2v else LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        time_embed_dim=8,
        ofs_embed_dim=8 if (i2v and v15) else None,  # must equal time_embed_dim (they are summed)
        text_embed_dim=TEXT_DIM,
        num_layers=2,
        sample_height=height,
        sample_width=width,
        sample_frames=frames,
        patch_size=2,
        patch_size_t=2 if v15 else None,
        patch_bias=not v15,
        max_text_seq_length=text_length,  # the published checkpoints' (and the pipelines' default) 226
        use_rotary_positional_embeddings=rope or v15,
        use_learned_positional_embeddings=learned_positions,
    )


def vae_config(mode: str, generation: Generation = "1.0") -> dict[str, Any]:
    # CogVideoX1.5-5B-I2V was trained without multiplying its image latents by the scaling factor.
    return {**VAE_CONFIG, "invert_scale_latents": mode == "i2v" and generation == "1.5"}


def tiny_scheduler(kind: SchedulerKind) -> CogVideoXDDIMScheduler | CogVideoXDPMScheduler:
    """The schedulers as the real checkpoints configure them (v-prediction, trailing, zero SNR)."""
    common = dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        timestep_spacing="trailing", num_train_timesteps=1000,
    )
    if kind == "ddim":
        return CogVideoXDDIMScheduler(snr_shift_scale=3.0, **common)  # CogVideoX-2b
    return CogVideoXDPMScheduler(snr_shift_scale=1.0, **common)  # CogVideoX-5b family


def tiny_components(
    mode: str,
    generation: Generation = "1.0",
    scheduler: SchedulerKind | None = None,
    rope: bool | None = None,
    learned_positions: bool = False,
    text_length: int = 226,
) -> dict[str, Any]:
    """Tiny components for `mode`, weights from the caller's RNG state.

    Defaults follow the published checkpoints: DDIM without RoPE for 1.0 text-to-video (2b),
    DPM with RoPE otherwise (5b family).
    """
    like_2b = mode == "t2v" and generation == "1.0" and scheduler != "dpm"
    scheduler = scheduler or ("ddim" if like_2b else "dpm")
    rope = (not like_2b) if rope is None else rope
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=384, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8)
    )
    return dict(
        transformer=CogVideoXTransformer3DModel(
            **transformer_config(mode, generation, rope, learned_positions, text_length)),
        vae=AutoencoderKLCogVideoX(**vae_config(mode, generation)),
        text_encoder=text_encoder,
        tokenizer=ByT5Tokenizer(),
        scheduler=tiny_scheduler(scheduler),
    )


def tiny_pipeline(mode: str, **layout: Any) -> CogVideoXPipeline | CogVideoXImageToVideoPipeline:
    pipeline_cls = CogVideoXImageToVideoPipeline if mode == "i2v" else CogVideoXPipeline
    return pipeline_cls(**tiny_components(mode, **layout))


def build(mode: str, directory: Path) -> None:
    """Write the built-in model for `mode` (called by `builtin_model_dir` under a fixed seed)."""
    tiny_pipeline(mode).save_pretrained(directory, safe_serialization=True)


def builtin_transformer_config(mode: str) -> dict[str, Any]:
    """The built-in's transformer config, for validation before it is built or loaded."""
    return transformer_config(mode, "1.0", rope=mode == "i2v")
