"""The built-in tiny Wan models (2.1, 2.2 A14B, 2.2 TI2V; text- and image-to-video): real diffusers classes,
random weights.

Sizes are the smallest that run every code path on the CPU in a fraction of a second; the VAEs keep Wan's
compression (4x temporal; 8x spatial, 16x for TI2V's) and the transformer Wan's 1x2x2 patch, so frame/size
rules match the real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    ByT5Tokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    UMT5Config,
    UMT5EncoderModel,
)

VERSION = "v1"
TINY_HEADS = 2  # attention heads of every built-in transformer
TINY_LAYERS = 2  # blocks of every built-in transformer (each expert of the A14B one)
#: Wan 2.2 A14B's expert boundaries as published (model_index.json `boundary_ratio`), kept by the tiny
#: A14B models: `transformer` (high noise) runs timesteps >= ratio * 1000, `transformer_2` (low noise) the rest.
A14B_BOUNDARY = {"t2v": 0.875, "i2v": 0.9}
#: Wan 2.1; Wan 2.2 A14B (two experts); Wan 2.2 TI2V-5B (text- and image-to-video from one checkpoint).
VARIANTS = ("wan2.1", "wan2.2-a14b", "wan2.2-ti2v")


def tiny_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.1's scheduler as its 480p checkpoints configure it (flow UniPC, shift 3)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )


def tiny_transformer(in_channels: int, image_tokens: bool, out_channels: int = 16) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=TINY_HEADS,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=TINY_LAYERS,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=16 if image_tokens else None,
        added_kv_proj_dim=24 if image_tokens else None,
    )


def tiny_vae(ti2v: bool) -> AutoencoderKLWan:
    """Wan 2.1's VAE layout (16 channels, 8x spatial), or Wan 2.2 TI2V's: 48 channels, residual blocks, a 2x2
    patchify in front of the 8x convolutional downsampling (16x spatial), normalised per channel."""
    if not ti2v:
        return AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    return AutoencoderKLWan(
        base_dim=4, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
        scale_factor_temporal=4, latents_mean=[0.05 * (i % 7) - 0.15 for i in range(48)],
        latents_std=[1.0 + 0.1 * (i % 3) for i in range(48)],
    )


def tiny_components(mode: str, variant: str = "wan2.1") -> dict:
    """Tiny Wan components for `mode` ("t2v" or "i2v") and `variant`, weights from the caller's RNG state.

    "wan2.2-a14b": a second expert `transformer_2` and the published `boundary_ratio`; its
    image-to-video model takes the image through the latent condition only (no CLIP image
    encoder, no image cross-attention). "wan2.2-ti2v": one text-and-image-to-video checkpoint
    (saved as text-to-video, as Wan-AI publishes it) with `expand_timesteps` and the 48-channel VAE.
    """
    i2v, a14b, ti2v = mode == "i2v", variant == "wan2.2-a14b", variant == "wan2.2-ti2v"
    image_tokens = i2v and variant == "wan2.1"
    channels = 48 if ti2v else 16
    transformer = tiny_transformer(36 if i2v and not ti2v else channels, image_tokens, channels)
    vae = tiny_vae(ti2v)
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)
    )
    components = dict(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=ByT5Tokenizer(), scheduler=tiny_scheduler()
    )
    if image_tokens:
        components["image_encoder"] = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, image_size=32, patch_size=8,
            )
        )
        components["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
    if a14b:
        components["transformer_2"] = tiny_transformer(36 if i2v else 16, image_tokens=False)
        components["boundary_ratio"] = A14B_BOUNDARY[mode]
    if ti2v:
        components["expand_timesteps"] = True
    return components


def tiny_pipeline(mode: str, variant: str = "wan2.1"):
    pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
    return pipeline_cls(**tiny_components(mode, variant))


def build(mode: str, directory: Path, variant: str = "wan2.1") -> None:
    tiny_pipeline(mode, variant).save_pretrained(directory, safe_serialization=True)
