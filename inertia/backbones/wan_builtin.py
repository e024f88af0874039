"""The built-in tiny Wan 2.1 models (text- and image-to-video): real diffusers classes, random weights.

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


def tiny_scheduler() -> UniPCMultistepScheduler:
    """Wan 2.1's scheduler as its 480p checkpoints configure it (flow UniPC, shift 3)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )


def tiny_components(mode: str) -> dict:
    """Tiny Wan components for `mode` ("t2v" or "i2v"), weights from the caller's RNG state."""
    i2v = mode == "i2v"
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36 if i2v else 16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=16 if i2v else None,
        added_kv_proj_dim=24 if i2v else None,
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)
    )
    components = dict(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=ByT5Tokenizer(), scheduler=tiny_scheduler()
    )
    if i2v:
        components["image_encoder"] = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, image_size=32, patch_size=8,
            )
        )
        components["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
    return components


def tiny_pipeline(mode: str):
    pipeline_cls = WanImageToVideoPipeline if mode == "i2v" else WanPipeline
    return pipeline_cls(**tiny_components(mode))


def build(mode: str, directory: Path) -> None:
    tiny_pipeline(mode).save_pretrained(directory, safe_serialization=True)
