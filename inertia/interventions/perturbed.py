"""Guidance away from a perturbed conditional prediction: what STG and history guidance share.

Such a rule runs, at each step of its window, one extra forward: the conditional pass with one
modification active (a `core.combination.Branch`: self-attention of some layers skipped, or the
context latents dropped), and moves the prediction away from it:

    pred = base + g (cond - perturbed),    base = uncond + s (cond - uncond)  (CFG in force at the step)
                                            base = cond                        (CFG off at the step)

with s the step's true-CFG scale as the schedules set it (relax, boost, ... compose with the rule),
the CFG part in the pipelines' operand order. With CFG in force this is the STG paper's equation and
exactly what diffusers' `SkipLayerGuidance` computes (`tests/test_branch_guidance.py` pins it with
`torch.equal`); with CFG off diffusers' guider switches to perturbed + g (cond - perturbed), a jump
of one g at s = 1, while here the same equation holds at every scale.

Outside the window (`start_step` <= step < `end_step`, per section) the rule declares no branch and
combines as classifier-free guidance does: those steps cost exactly the forwards CFG needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from ..core.combination import NO_BRANCHES, Branch, combine_cfg
from ..core.context import StepContext
from ..core.errors import ConfigError
from ..core.intervention import PredictionCombiner
from ..core.setup import RunSetup


def guided_away(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | None, perturbed: torch.Tensor,
                weight: float) -> torch.Tensor:
    """base + weight (cond - perturbed), base as in the module docstring."""
    base = cond if uncond is None else combine_cfg(cond, uncond, scale)
    return base + weight * (cond - perturbed)


class PerturbedGuidance(PredictionCombiner):
    """A combination rule that guides away from one branch (`branch()`) inside a step window.

    Subclasses name the branch (`branch_names`, one name), build it (`branch()`, called once per run
    in `check`), say its weight g (`weight`) and the window (`window`, in steps per section, end None =
    to the last step), and refuse in `check` what their branch cannot do here.
    """

    branch_names: ClassVar[tuple[str, ...]]

    def branch(self) -> Branch:
        raise NotImplementedError

    def weight(self) -> float:
        raise NotImplementedError

    def window(self) -> tuple[int, int | None]:
        raise NotImplementedError

    def check(self, setup: RunSetup) -> None:
        start, end = self.window()
        steps = setup.config.steps
        if end is not None and end <= start:
            raise ConfigError(f"{self.name}.end_step", f"{end} <= start_step {start}: the window has no step")
        if steps is not None and start >= steps:
            raise ConfigError(f"{self.name}.start_step", f"{start} >= the run's {steps} steps: the rule never acts")
        self._branch = self.branch()

    def active(self, ctx: StepContext) -> bool:
        start, end = self.window()
        return start <= ctx.step and (end is None or ctx.step < end)

    def branches(self, scale: float | None, ctx: StepContext) -> tuple[Branch, ...]:
        return (self._branch,) if self.active(ctx) else ()

    def combine(self, cond, uncond, scale: float | None, ctx: StepContext,
                branches: Mapping[str, torch.Tensor] = NO_BRANCHES):
        perturbed = branches.get(self._branch.name)
        if perturbed is None:
            return cond if uncond is None else combine_cfg(cond, uncond, scale)
        return guided_away(cond, uncond, scale, perturbed, self.weight())
