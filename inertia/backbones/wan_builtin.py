"""The built-in tiny Wan 2.1 and Wan 2.2 A14B models (text- and image-to-video): real diffusers classes, random weights.

Sizes are the smallest that run every code path on the CPU in a fraction of a second; the VAE keeps Wan's compression
(8x spatial, 4x temporal) and the transformer Wan's 1x2x2 patch, so frame/size rules match the
real checkpoints.
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
#: Wan 2.2 A14B's expert boundaries as published (model_index.json `boundary_ratio`), kept by the tiny
#: A14B models: `transformer` (high noise) runs timesteps >= ratio * 1000, `transformer_2` (low noise) the rest.
A14B_BOUNDARY = {"t2v": 0.875, "i2v": 0.9}


def tiny_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.1's scheduler as its 480p checkpoints configure it (flow UniPC, shift 3)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )


def tiny_transformer(in_channels: int, image_tokens: bool) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=16 if image_tokens else None,
        added_kv_proj_dim=24 if image_tokens else None,
    )


def tiny_components(mode: str, a14b: bool = False) -> dict:
    """Tiny Wan components for `mode` ("t2v" or "i2v"), weights from the caller's RNG state.

    With `a14b`, Wan 2.2 A14B's layout: a second expert `transformer_2` and the published
    `boundary_ratio`; its image-to-video model takes the image through the latent condition only
    (no CLIP image encoder, no image cross-attention).
    """
    i2v = mode == "i2v"
    image_tokens = i2v and not a14b
    transformer = tiny_transformer(36 if i2v else 16, image_tokens)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
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
    return components


def tiny_pipeline(mode: str, a14b: bool = False):
    pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
    return pipeline_cls(**tiny_components(mode, a14b))


def build(mode: str, directory: Path, a14b: bool = False) -> None:
    tiny_pipeline(mode, a14b).save_pretrained(directory, safe_serialization=True)
