"""history_noise: Gaussian noise on the clean context latents the model conditions on.

At every step before `end_step`, each selected context block x (FramePack's history blocks, the
conditioning image of an image-to-video run; `interventions.context`) is fed to the model as

    x' = (1 - t) x + t n,    n ~ N(0, I),    t = level * e

with e = e(sigma) from the run's `decay` envelope when there is one, else 1: the flow-matching
forward process at noise level t, so `level` reads as the noise level the context is shown at
(0 = the clean context, 1 = pure noise; the same mix on CogVideoX, whose own forward process is
variance-preserving, and on the test bed's pixels). The backbone's own latents stay clean: the noise
reaches only what the model is fed at that step, and the decoded video keeps the clean image.

Sources: Astra (Zhu et al., arXiv 2512.08931) corrupts the history frames with noise during training
("noise as mask") so that the model cannot copy them and must follow the action signal; Diffusion
Forcing (Chen et al. 2024, arXiv 2407.01392) adds noise to the context, and History-Guided Video
Diffusion (Song et al. 2025, arXiv 2502.06764) conditions on context frames at a partial noise level. Here the same corruption is applied training-free, at
inference, to loosen the model's grip on the context it would otherwise freeze on.

The noise is reproducible and independent of the global RNG: for the video of run seed s, at section
k and step i, one generator `torch.Generator("cpu").manual_seed(noise_seed(s, seed, k, i))` (the
parameter `seed`, and the SeedSequence mix in `noise_seed`) draws n for the selected blocks in
hand-over order, one `torch.randn` of each block's (C, F, H, W) shape; a new n every step. Every
video of a batched sweep draws from its own run seed, so it equals its single run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from ..core.config import SEED_LIMIT
from ..core.context import StepContext
from ..core.history import HistoryBlocks
from .context import ContextIntervention, ContextParams

#: Mixed into every seed, so that context noise never repeats the run's initial noise.
SALT = 0x4E4F495345  # "NOISE"


def noise_seed(run_seed: int, seed: int, section: int, step: int) -> int:
    """The seed of the generator that draws a video's context noise at one step (64 bits, SeedSequence-mixed)."""
    return int(np.random.SeedSequence([SALT, run_seed, seed, section, step]).generate_state(1, np.uint64)[0])


def noised(latents: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
    """(1 - t) x + t n, computed in float32 and returned in the latents' dtype; the latents themselves at t = 0."""
    if t == 0.0:
        return latents
    mixed = (1.0 - t) * latents.float() + t * noise.to(latents.device, torch.float32)
    return mixed.to(latents.dtype)


def draw_noise(shapes: Sequence[torch.Size], seeds: Sequence[int], seed: int, section: int, step: int) -> list[torch.Tensor]:
    """Standard normal noise for blocks of `shapes` (B, C, F, H, W): row b from the generator of run seed
    `seeds[b]`, drawn block by block in the given order."""
    batch = {shape[0] for shape in shapes}
    if batch != {len(seeds)}:
        raise RuntimeError(f"history_noise: {len(seeds)} run seed(s) for context blocks of batch {sorted(batch)}")
    rows: list[list[torch.Tensor]] = []
    for run_seed in seeds:
        generator = torch.Generator("cpu").manual_seed(noise_seed(run_seed, seed, section, step))
        rows.append([torch.randn(tuple(shape[1:]), generator=generator) for shape in shapes])
    return [torch.stack([row[i] for row in rows]) for i in range(len(shapes))]


class HistoryNoiseParams(ContextParams):
    level: float = Field(0.5, ge=0.0, le=1.0, description="noise level t of x' = (1 - t) x + t n (0 = clean, 1 = pure noise)")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="mixed with the run seed, section and step into the noise generator's seed")


class HistoryNoise(ContextIntervention):
    name = "history_noise"
    description = (
        "Noise on the context latents (seeds: Astra's noise-as-mask, Diffusion Forcing's noisy context): "
        "x' = (1 - t) x + t n on history blocks and/or the conditioning image, t = level * e(sigma), before end_step."
    )
    Params: ClassVar[type[HistoryNoiseParams]] = HistoryNoiseParams

    def unchangeable(self) -> str | None:
        return "level 0 adds no noise" if self.params.level == 0 else None

    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext):
        t = self.params.level * self.strength(ctx)
        names = self.selected(latents_by_block)
        if t == 0.0 or not names:
            return latents_by_block
        noise = draw_noise([latents_by_block[name].shape for name in names], latents_by_block.seeds,
                           self.params.seed, ctx.section, ctx.step)
        out = dict(latents_by_block)
        for name, n in zip(names, noise):
            out[name] = noised(latents_by_block[name], t, n)
        return out
