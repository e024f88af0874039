"""Full-size architecture configurations of every backbone (`benchmarks/configs/*.json`) and building them.

Each file holds a checkpoint's transformer configuration as diffusers' config keys (`transformer`, and
`transformer_2` for a second expert), the pipeline settings that shape a step (`pipeline`: boundary_ratio,
expand_timesteps, scheduler shift), the benchmark shape (`benchmark`: height, width, frames, text tokens,
how guidance runs) and where the numbers come from (`source`). Models are built with random weights:
enough for speed and memory, never for videos.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CONFIG_DIR = Path(__file__).with_name("configs")
#: Keys that set a transformer's width and depth, and their values in a tiny (CPU) version of any config.
TINY_SIZES = {
    "num_attention_heads": 2, "num_layers": 2, "num_single_layers": 1, "num_refiner_layers": 1, "ffn_dim": 32,
    "text_dim": 32, "text_embed_dim": 32, "text_embed_2_dim": 16, "pooled_projection_dim": 8, "image_embed_dim": 16,
    "image_proj_dim": 16, "time_embed_dim": 16,
}
#: Head sizes of the tiny versions (rotary axes must add up to them).
TINY_HEAD_DIM = {"WanTransformer3DModel": 12, "CogVideoXTransformer3DModel": 16}
TINY_DEFAULT_HEAD_DIM, TINY_ROPE_AXES = 8, [2, 2, 4]


def names() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(names())}")
    return json.loads(path.read_text(encoding="utf-8"))


def tiny(transformer: dict[str, Any], cls: str) -> dict[str, Any]:
    """The same keys at a size that runs on a CPU in well under a second (widths, depths, head size)."""
    small = {key: TINY_SIZES.get(key, value) for key, value in transformer.items()}
    small["attention_head_dim"] = TINY_HEAD_DIM.get(cls, TINY_DEFAULT_HEAD_DIM)
    if "rope_axes_dim" in small:
        small["rope_axes_dim"] = TINY_ROPE_AXES
    if "rope_max_seq_len" in small:
        small["rope_max_seq_len"] = 32
    return small


def build(cls_name: str, transformer: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight model initialised on `device` (a 14B model initialises in seconds on a GPU), cast to
    `dtype` with its precision-sensitive modules kept float32, as `from_pretrained(dtype=...)` keeps them."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    with torch.device(device):
        model = cls(**transformer)
    model = model.to(dtype).eval().requires_grad_(False)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            module.float()
    return model


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
