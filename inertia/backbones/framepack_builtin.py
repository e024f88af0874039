"""The built-in tiny FramePack model (image-to-video): real diffusers/transformers classes, random weights.

The VAE, text encoders, scheduler and transformer core are the built-in HunyuanVideo's. The VAE keeps HunyuanVideo's
compression (8x spatial, 4x temporal) and the transformer its 1x2x2 patch, so the frame and size
rules are the real checkpoints' rules. Tokenizers are `ByT5Tokenizer()` (needs no files); the
Llama prompt template is therefore the plain `"{}"` one (see `hunyuan_text.prompt_template`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffusers import HunyuanVideoFramepackPipeline, HunyuanVideoFramepackTransformer3DModel
from PIL import Image
from transformers import ByT5Tokenizer, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from . import hunyuan_builtin

VERSION = "v2"
#: Latent frames per section for the built-in model (the real checkpoints use 9): 9 video frames
#: per pipeline window, 12 new frames per section, so smoke tests stay fast.
LATENT_WINDOW_SIZE = 3


def tiny_transformer() -> HunyuanVideoFramepackTransformer3DModel:
    """The tiny HunyuanVideo transformer with FramePack's image projection and clean-latent embedders."""
    return HunyuanVideoFramepackTransformer3DModel(
        **hunyuan_builtin.TINY_TRANSFORMER, has_image_proj=True, image_proj_dim=32, has_clean_x_embedder=True
    )


def tiny_image_encoder() -> dict:
    """SigLIP vision tower whose width equals the transformer's `image_proj_dim` (32)."""
    encoder = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
        )
    )
    return dict(image_encoder=encoder, feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}))


def tiny_pipeline() -> HunyuanVideoFramepackPipeline:
    """Tiny FramePack components, weights from the caller's RNG state."""
    llama, clip = hunyuan_builtin.tiny_text_encoders()
    return HunyuanVideoFramepackPipeline(
        transformer=tiny_transformer(),
        vae=hunyuan_builtin.tiny_vae(),
        scheduler=hunyuan_builtin.tiny_scheduler(),
        text_encoder=llama,
        tokenizer=ByT5Tokenizer(),
        text_encoder_2=clip,
        tokenizer_2=ByT5Tokenizer(),
        **tiny_image_encoder(),
    )


def build(directory: Path) -> None:
    tiny_pipeline().save_pretrained(directory, safe_serialization=True)


def smoke_test_image(height: int, width: int) -> Image.Image:
    """The start frame used when the built-in model is run without --image.

    FramePack cannot run without a start frame; a smoke test should not need a file. This is a
    fixed diagonal colour gradient with a bright square left of centre, so that any motion or
    drift is visible in the output.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / max(height + width - 2, 1)], axis=-1)
    top, left, side = height // 3, width // 4, max(height, width) // 4
    pixels[top : top + side, left : left + side] = 1.0
    return Image.fromarray((pixels * 255).round().astype(np.uint8))
