"""How a step's predictions become the one the scheduler steps with.

Composition at every step, in this order: the guidance schedules (relax, boost, ...) set each
guidance scale from its base; the run's one combination rule then decides whether the
unconditional prediction is needed at that scale and combines the predictions with it. The
default rule is classifier-free guidance; an intervention that combines predictions otherwise
(CFG-Zero*, APG, ...) replaces it, and the trace records which rule combined each step.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .context import StepContext

#: What the trace records for a step that used the conditional prediction alone.
CONDITIONAL_ONLY = "cond"
#: The CFG scale at which guidance is the conditional prediction alone (one forward): the scale in force
#: in a run that turns true CFG off, which a schedule of it then starts from (boost at guidance 1 raises it).
NEUTRAL_SCALE = 1.0


class CombinationRule(Protocol):
    name: str

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        """Whether this step needs the unconditional prediction; `scale` is the step's true-CFG
        scale after the schedules, None when true CFG is off in the run."""

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | None,
                ctx: StepContext) -> torch.Tensor:
        """The guided prediction (`uncond` is None exactly when `needs_uncond` said no)."""


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, in the operand order the diffusers pipelines use (bit parity)."""
    return uncond + scale * (cond - uncond)


class ClassifierFreeGuidance:
    """The default rule: uncond + s (cond - uncond); a scale of exactly 1 equals the conditional
    prediction, so that step runs one forward."""

    name = "cfg"

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        return scale is not None and scale != NEUTRAL_SCALE

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | None,
                ctx: StepContext) -> torch.Tensor:
        return cond if uncond is None else combine_cfg(cond, uncond, scale)


CFG = ClassifierFreeGuidance()
