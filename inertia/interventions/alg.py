"""alg: adaptive low-pass guidance, a low-passed conditioning image in the early steps.

ALG (Choi et al. 2025, "Enhancing Motion Dynamics of Image-to-Video Models via Adaptive Low-Pass
Guidance", arXiv 2506.08456) traces the static videos of image-to-video models to the image's high
frequencies reaching the model in the first denoising steps, which pins the sample to the image's
appearance; it low-pass filters the conditioning image early in sampling and returns to the original
image later. The paper filters the image before it is encoded; here the filter acts on the image
latents each backbone hands over (`core.history`, block "image"), so it needs no second VAE pass and
works the same on every image-to-video backbone (Wan, CogVideoX, FramePack; the test bed's pixels).

Each selected block x, (B, C, F, H, W), frame by frame:

    low(x) = up(down(x)),  down: bilinear with antialiasing to (max(1, floor(H / factor)), max(1, floor(W / factor))),
                           up: bilinear (align_corners=False) back to (H, W)
    x' = x + a (low(x) - x),   a = clamp((end_step - step) / (blend_steps + 1), 0, 1) * e

with e = e(sigma) from the run's `decay` envelope when there is one, else 1. So the model sees low(x)
up to step end_step - blend_steps - 1, then a linear blend back over blend_steps steps, and x itself
from end_step on (steps per section). Bilinear downsampling with antialiasing is a triangle filter
over `factor` pixels each side of an output pixel (at factor 2 the weights 1/8, 3/8, 3/8, 1/8);
the backbone's own latents stay as they are, so the decoded video keeps the clean image.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.config import MAX_SIZE, MAX_STEPS
from ..core.context import StepContext
from ..core.history import HistoryBlocks
from .context import ContextIntervention, ContextParams, ContextRole


def low_pass(latents: torch.Tensor, factor: float) -> torch.Tensor:
    """`low(x)` of the module docstring for (B, C, F, H, W) latents, computed in float32, returned in their dtype."""
    batch, channels, frames, height, width = latents.shape
    size = (max(1, math.floor(height / factor)), max(1, math.floor(width / factor)))
    planes = latents.float().transpose(1, 2).reshape(batch * frames, channels, height, width)
    down = F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False)
    return up.reshape(batch, frames, channels, height, width).transpose(1, 2).to(latents.dtype)


def blend_weight(step: int, end_step: int, blend_steps: int) -> float:
    """a before the envelope: 1 until the blend starts, then linearly down, 0 from end_step on."""
    return min(1.0, max(0.0, (end_step - step) / (blend_steps + 1)))


class AlgParams(ContextParams):
    role: ContextRole = Field("condition", description="blocks to low-pass by role: condition (the conditioning "
                                                       "image, default), history (framepack), context = both")
    factor: float = Field(2.0, ge=1.0, le=MAX_SIZE, description="downsampling factor of the low-pass (1 = no filter)")
    end_step: int = Field(ge=1, le=MAX_STEPS, description="step (per section) from which the model sees the original image again")
    blend_steps: int = Field(0, ge=0, le=MAX_STEPS, description="steps before end_step over which the image blends back linearly")


class Alg(ContextIntervention):
    name = "alg"
    description = (
        "Adaptive low-pass guidance (Choi et al. 2025): the conditioning image latents down- and up-sampled "
        "(bilinear, by factor) in the early steps, back to full resolution by end_step."
    )
    Params: ClassVar[type[AlgParams]] = AlgParams

    def unchangeable(self) -> str | None:
        return "factor 1 resizes the latents to their own size" if self.params.factor == 1 else None

    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext):
        params = self.params
        a = blend_weight(ctx.step, params.end_step, params.blend_steps) * ctx.envelope_or(1.0)
        names = self.selected(latents_by_block)
        if a == 0.0 or not names:
            return latents_by_block
        out = dict(latents_by_block)
        for name in names:
            latents = latents_by_block[name]
            low = low_pass(latents, params.factor)
            out[name] = low if a == 1.0 else torch.lerp(latents.float(), low.float(), a).to(latents.dtype)
        return out

