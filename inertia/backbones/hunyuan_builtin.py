"""The built-in tiny HunyuanVideo text-to-video model: real diffusers classes, random weights.

Sizes are the smallest that run every code path on the CPU in a fraction of a second. The VAE keeps HunyuanVideo's
compression (8x spatial, 4x temporal) and the transformer its 1x2x2 patch and guidance
embedding, so size/frame rules and the embedded-guidance input match the real checkpoint.
Both tokenizers are byte-level `ByT5Tokenizer`s (no files needed); they know none of Llama 3's
chat tokens, so the backbone feeds this model the bare prompt (see `hunyuan.prompt_template`).
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from transformers import ByT5Tokenizer, CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

VERSION = "v1"
VOCAB = 384  # ByT5's id space: 256 bytes + 3 specials + 125 extra ids
#: ByT5's ids (it has no BOS). CLIP pools at the EOS token, so its eos id must be the tokenizer's.
PAD_ID, EOS_ID = 0, 1


def tiny_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """HunyuanVideo's scheduler as its checkpoint configures it (flow matching, static shift 7)."""
    return FlowMatchEulerDiscreteScheduler(shift=7.0)


#: The tiny HunyuanVideo transformer; FramePack's built-in extends it.
TINY_TRANSFORMER = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    guidance_embeds=True,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(2, 4, 4),
)


#: Its attention layers (dual- plus single-stream blocks), as `hunyuan_attention.LAYER_FIELDS` counts them.
TINY_ATTENTION_LAYERS = TINY_TRANSFORMER["num_layers"] + TINY_TRANSFORMER["num_single_layers"]


def tiny_transformer() -> HunyuanVideoTransformer3DModel:
    return HunyuanVideoTransformer3DModel(**TINY_TRANSFORMER)


def tiny_vae() -> AutoencoderKLHunyuanVideo:
    return AutoencoderKLHunyuanVideo(
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
    )


def tiny_text_encoders() -> tuple[LlamaModel, CLIPTextModel]:
    """Llama (token states, width = text_embed_dim) and CLIP (pooled, width = pooled_projection_dim).

    Llama has 3 layers because the pipeline reads the hidden state 2 layers below the top.
    """
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=2, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
        )
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
            projection_dim=8, pad_token_id=PAD_ID, bos_token_id=None, eos_token_id=EOS_ID,
        )
    )
    return llama, clip


def tiny_pipeline() -> HunyuanVideoPipeline:
    """The tiny pipeline, weights from the caller's RNG state."""
    llama, clip = tiny_text_encoders()
    return HunyuanVideoPipeline(
        text_encoder=llama,
        tokenizer=ByT5Tokenizer(),
        transformer=tiny_transformer(),
        vae=tiny_vae(),
        scheduler=tiny_scheduler(),
        text_encoder_2=clip,
        tokenizer_2=ByT5Tokenizer(),
    )


def build(directory: Path) -> None:
    tiny_pipeline().save_pretrained(directory, safe_serialization=True)
