"""Text conditioning and guidance rules shared by the HunyuanVideo family (hunyuan, framepack).

Both pipelines encode a prompt with Llama (token states + padding mask) and CLIP (pooled vector),
feed the distilled guidance to the transformer as `scale * 1000`, and run true CFG only when its
scale is above 1 and a negative prompt is given. A run's negative prompt is always given (blank by
default), so true CFG runs exactly when its scale is above 1: what both pipelines do with
`negative_prompt=""`, encoding the blank (or whitespace) text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.config import RunConfig

#: The components of a saved HunyuanVideo pipeline (FramePack's adds its image encoder and processor).
PIPELINE_COMPONENTS = frozenset({"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                 "transformer", "vae"})
#: Llama tokens per prompt after the template's system part is cropped (the pipelines' default).
MAX_SEQUENCE_LENGTH = 256
#: The prompt template for tokenizers without Llama 3's chat tokens: the prompt alone, nothing cropped.
BARE_TEMPLATE = {"template": "{}", "crop_start": 0}
#: The Llama 3 chat tokens the pipelines' default prompt template is written in.
CHAT_TOKENS = frozenset({"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"})


def prompt_template(tokenizer: Any) -> dict[str, Any]:
    """The Llama prompt template for a checkpoint's tokenizer.

    The default template wraps the prompt in Llama 3 chat turns and crops the system part by a
    token count (`crop_start` 95) that only holds for Llama 3's tokenizer; a tokenizer without
    those chat tokens (the built-ins' ByT5) would have the prompt cropped away, so it gets the
    bare prompt. Decided from the tokenizer diffusers loads, so real checkpoints get the default.
    """
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE if CHAT_TOKENS.issubset(tokenizer.get_vocab()) else BARE_TEMPLATE


@dataclass(frozen=True)
class TextConditions:
    """One prompt's encoding: Llama token states with their padding mask, and CLIP's pooled vector."""

    embeds: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    @classmethod
    def encode(cls, pipe: Any, prompt: str, template: dict[str, Any], dtype: torch.dtype,
               device: torch.device) -> "TextConditions":
        """Encoded on `device`, the run's (not a component's: an offloaded one sits on the CPU until it runs)."""
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=prompt, prompt_template=template, device=device, max_sequence_length=MAX_SEQUENCE_LENGTH
        )
        return cls(embeds.to(dtype), mask.to(dtype), pooled.to(dtype))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": self.embeds, "encoder_attention_mask": self.mask, "pooled_projections": self.pooled}


def embedded_guidance(scale: float, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The distilled scale as the pipelines build it: cast to the transformer dtype, then x1000."""
    return torch.tensor([scale] * batch, dtype=dtype, device=device) * 1000.0


def true_cfg_on(config: RunConfig) -> bool:
    """The pipelines' rule, true CFG when its scale is > 1 and a negative prompt is given, for a run, whose
    negative prompt is always given: a blank one is encoded as the pipelines encode `negative_prompt=""`
    (their `None`, which turns true CFG off whatever its scale, has no counterpart: set guidance_scale 1)."""
    return config.guidance_scale > 1.0
