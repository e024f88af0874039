"""history_guidance: guidance away from the prediction with the context dropped.

History guidance (Song, Chen, Simon, Sitzmann and Tedrake 2025, "History-Guided Video Diffusion",
arXiv 2502.06764) treats the context frames as a condition of their own and guides with them the
way classifier-free guidance guides with the prompt: the model predicts once with its full history
and once with the history dropped, and the prediction moves away from the second:

    pred = dropped + w (full - dropped)

Here `full` is the step's prediction as the run combines it otherwise and `dropped` the conditional
forward with the selected context blocks dropped (a `core.combination.Branch` whose context
transform acts on the hand-over, `core.history`); with w = 1 + g this is `interventions.perturbed`'s

    pred = base + (w - 1) (cond - dropped),   base = uncond + s (cond - uncond), or cond with CFG off,

which is the paper's equation exactly when CFG is off at the step (FramePack's default, the
distilled guidance staying inside every forward), and with CFG in force adds the history term to
it, as STG adds its term.

Dropping (`mode`): "noise" feeds x' = (1 - t) x + t n with t = `level` (1 = pure noise, the
paper's fully-noised history; the noise is drawn per video, section and step from the run seed as
`history_noise` draws it), "zero" feeds zeros (FramePack's own empty history before a first
section). Blocks: by role or name as for `history_noise` (FramePack's "4x", "2x", "1x" history and
"image" start image; the conditioning image of an image-to-video run); the branch runs at the steps
before `end_step` (per section) and costs one forward there, none elsewhere.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..core.combination import Branch
from ..core.config import MAX_GUIDANCE, SEED_LIMIT
from ..core.context import StepContext
from ..core.history import HistoryBlocks
from ..core.setup import RunSetup
from .context import ContextIntervention, ContextParams
from .history_noise import draw_noise, noised
from .perturbed import PerturbedGuidance


class HistoryGuidanceParams(ContextParams):
    scale: float = Field(gt=1.0, le=MAX_GUIDANCE, description="w of dropped + w (full - dropped); 1 would change nothing")
    mode: Literal["noise", "zero"] = Field("noise", description="how the dropped branch drops the blocks: noise "
                                                                "(x' = (1 - t) x + t n, t = level) or zero")
    level: float = Field(1.0, gt=0.0, le=1.0, description="noise level t of mode=noise (1 = pure noise)")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="mixed with the run seed, section and step into the noise generator's seed")


class HistoryGuidance(ContextIntervention, PerturbedGuidance):
    name = "history_guidance"
    description = ("History guidance (Song et al. 2025): pred = dropped + w (full - dropped), dropped = the conditional "
                   "forward with the history/conditioning blocks noised or zeroed, before end_step.")
    Params: ClassVar[type[HistoryGuidanceParams]] = HistoryGuidanceParams
    branch_names = ("history_dropped",)
    # The blocks change only in the dropped branch's forward (its `Branch.context` is this plugin), at full strength.
    transforms_history = False
    uses_envelope = False

    def check(self, setup: RunSetup) -> None:
        ContextIntervention.check(self, setup)
        PerturbedGuidance.check(self, setup)

    def branch(self) -> Branch:
        return Branch(self.branch_names[0], context=self)

    def weight(self) -> float:
        return self.params.scale - 1.0

    def window(self) -> tuple[int, int | None]:
        return 0, self.params.end_step

    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext):
        names = self.selected(latents_by_block)
        out = dict(latents_by_block)
        if self.params.mode == "zero":
            for name in names:
                out[name] = torch.zeros_like(latents_by_block[name])
            return out
        noise = draw_noise([latents_by_block[name].shape for name in names], latents_by_block.seeds,
                           self.params.seed, ctx.section, ctx.step)
        for name, n in zip(names, noise):
            out[name] = noised(latents_by_block[name], self.params.level, n)
        return out
