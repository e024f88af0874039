"""How a step's predictions become the one the scheduler steps with.

Composition at every step, in this order: the guidance schedules (relax, boost, ...) set each
guidance scale from its base; the run's one combination rule then decides whether the
unconditional prediction is needed at that scale and combines the predictions with it. The
default rule is classifier-free guidance; an intervention that combines predictions otherwise
(CFG-Zero*, APG, ...) replaces it, and the trace records which rule combined each step.

Branches: a rule may guide with more predictions than these two. At each step it declares the
extra forwards it needs (`branches`, none at a step where it is inactive, so such a step costs
nothing), each a `Branch`: the conditional forward run again with one modification active,
self-attention of some layers skipped (`skip_attention`, applied at the attention hook point,
`core.attention`) or the context latents handed over transformed (`context`, `core.history`).
The loop runs each declared branch through the backbone's ordinary `predict`, with the
modification switched on in the run's hooks for that forward only, so the mechanism is the same on
every backbone; the rule gets their predictions by name and the trace records which ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from .context import StepContext
from .history import HistoryTransform

#: What the trace records for a step that used the conditional prediction alone.
CONDITIONAL_ONLY = "cond"
#: The CFG scale at which guidance is the conditional prediction alone (one forward): the scale in force
#: in a run that turns true CFG off, which a schedule of it then starts from (boost at guidance 1 raises it).
NEUTRAL_SCALE = 1.0
#: The branch predictions of a step that runs none.
NO_BRANCHES: Mapping[str, torch.Tensor] = {}


@dataclass(frozen=True)
class Branch:
    """An extra forward a rule guides with: the conditional forward with one modification active.

    `skip_attention`: the layers (numbered as `AttentionHooks` numbers them) whose self-attention is
    skipped: its output is the values themselves (identity attention map), before the layer's output
    projection. `context`: a history transform (`core.history`) applied, after the run's own, to the
    context latents handed over in this forward only.
    """

    name: str
    skip_attention: frozenset[int] = frozenset()
    context: HistoryTransform | None = None


class CombinationRule(Protocol):
    name: str
    #: The names of the branches the rule can declare (empty: it combines cond and uncond only).
    branch_names: tuple[str, ...]

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        """Whether this step needs the unconditional prediction; `scale` is the step's true-CFG
        scale after the schedules, None when true CFG is off in the run."""

    def branches(self, scale: float | None, ctx: StepContext) -> tuple[Branch, ...]:
        """The extra forwards this step needs (after `needs_uncond`; empty at a step the rule skips)."""

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | None,
                ctx: StepContext, branches: Mapping[str, torch.Tensor] = NO_BRANCHES) -> torch.Tensor:
        """The guided prediction (`uncond` is None exactly when `needs_uncond` said no; `branches` holds
        the prediction of each branch `branches` declared for this step, by name)."""


def combine_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, in the operand order the diffusers pipelines use (bit parity)."""
    return uncond + scale * (cond - uncond)


class ClassifierFreeGuidance:
    """The default rule: uncond + s (cond - uncond); a scale of exactly 1 equals the conditional
    prediction, so that step runs one forward."""

    name = "cfg"
    branch_names: tuple[str, ...] = ()

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        return scale is not None and scale != NEUTRAL_SCALE

    def branches(self, scale: float | None, ctx: StepContext) -> tuple[Branch, ...]:
        return ()

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | None,
                ctx: StepContext, branches: Mapping[str, torch.Tensor] = NO_BRANCHES) -> torch.Tensor:
        return cond if uncond is None else combine_cfg(cond, uncond, scale)


CFG = ClassifierFreeGuidance()
