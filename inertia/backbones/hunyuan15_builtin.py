"""The built-in tiny HunyuanVideo 1.5 models (text- and image-to-video): real diffusers classes, random weights.

Sizes are the smallest that run every code path on the CPU in a fraction of a second. The VAE keeps
HunyuanVideo 1.5's compression (16x spatial, 4x temporal) and the transformer its 1x1x1 patch, so
size/frame rules match the real checkpoints; the guider is the published `ClassifierFreeGuidance` at
6.0 and the scheduler flow-matching Euler with the 480p checkpoints' shift 5.

Tokenizers are byte-level `ByT5Tokenizer`s (no files needed). The pipelines format the prompt with the
tokenizer's chat template and crop its first 108 tokens (Qwen 2.5-VL's system turn); the tiny Qwen
tokenizer's template writes 108 filler bytes before the user's turn, so the tiny model reads the prompt
alone. The glyph encoder (ByT5 + T5) reads quoted text in the prompt, as the real one does.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLHunyuanVideo15,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
)
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

VERSION = "v1"
VOCAB = 384  # ByT5's id space: 256 bytes + 3 specials + 125 extra ids
PAD_ID, EOS_ID = 0, 1
#: What the pipelines crop from the formatted prompt (`prompt_template_encode_start_idx`).
CROP_START = 108
#: The tiny Qwen tokenizer's chat template: CROP_START filler bytes, then the user's turn alone.
CHAT_TEMPLATE = ("{{ '.' * %d }}{%% for message in messages if message['role'] == 'user' %%}"
                 "{{ message['content'] }}{%% endfor %%}" % CROP_START)
#: The transformer's `target_size` (pixels), from which the pipelines pick their default size.
TARGET_SIZE = 64
GUIDANCE_SCALE = 6.0
LATENT_CHANNELS = 4
IMAGE_EMBED_DIM = 12
NUM_LAYERS = 2  # the tiny transformer's blocks (its attention layers)


def tiny_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The 480p checkpoints' scheduler (flow matching, static shift 5)."""
    return FlowMatchEulerDiscreteScheduler(shift=5.0)


def tiny_transformer(task: str, use_meanflow: bool = False) -> HunyuanVideo15Transformer3DModel:
    """Input: latents, the condition latents and the condition mask (2 x channels + 1)."""
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        num_layers=NUM_LAYERS, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
        image_embed_dim=IMAGE_EMBED_DIM, rope_axes_dim=(2, 2, 4), target_size=TARGET_SIZE, task_type=task,
        use_meanflow=use_meanflow,
    )


def tiny_vae() -> AutoencoderKLHunyuanVideo15:
    return AutoencoderKLHunyuanVideo15(
        latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
        spatial_compression_ratio=16, temporal_compression_ratio=4,
    )


def tiny_tokenizer() -> ByT5Tokenizer:
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_text_encoders():
    """Qwen 2.5-VL's text model (token states, width text_embed_dim; the pipelines read the hidden state two
    layers below the top, so 3 layers) and the glyph T5 encoder (width text_embed_2_dim)."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    qwen = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=PAD_ID, bos_token_id=None, eos_token_id=EOS_ID,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=VOCAB, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2, relative_attention_num_buckets=8,
        pad_token_id=PAD_ID, eos_token_id=EOS_ID,
    ))
    return qwen, t5


def tiny_components(mode: str, use_meanflow: bool = False) -> dict:
    """Tiny components for `mode` ("t2v" or "i2v"), weights from the caller's RNG state; image-to-video adds a
    tiny SigLIP image encoder (16 image tokens of width image_embed_dim) and its processor."""
    qwen, t5 = tiny_text_encoders()
    components = dict(
        text_encoder=qwen, tokenizer=tiny_tokenizer(), transformer=tiny_transformer(mode, use_meanflow),
        vae=tiny_vae(), scheduler=tiny_scheduler(), text_encoder_2=t5, tokenizer_2=ByT5Tokenizer(),
        guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE_SCALE),
    )
    if mode == "i2v":
        from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

        components["image_encoder"] = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=IMAGE_EMBED_DIM, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=8,
        ))
        components["feature_extractor"] = SiglipImageProcessor(size={"height": 32, "width": 32})
    return components


def tiny_pipeline(mode: str, use_meanflow: bool = False):
    pipeline_cls = HunyuanVideo15ImageToVideoPipeline if mode == "i2v" else HunyuanVideo15Pipeline
    return pipeline_cls(**tiny_components(mode, use_meanflow))


def build(mode: str, directory: Path) -> None:
    tiny_pipeline(mode).save_pretrained(directory, safe_serialization=True)
