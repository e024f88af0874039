"""What the interventions on a model's context latents share (`history_noise`, `alg`): which blocks of
the history interface's hand-over they act on, at which steps, at what strength.

A run's blocks are known before loading (`RunSetup.history_blocks`, see `core.history`): FramePack
hands over its history blocks "4x", "2x", "1x" (role "history") and its start image "image" (role
"condition"); image-to-video runs of Wan, CogVideoX and the test bed hand over "image"; text-to-video
runs hand over nothing. `role` picks blocks by role ("context": both roles), `blocks` by name (each
of them must have the chosen role); a selection that is empty here is refused before loading.

Strength at a step: 0 from `end_step` on (steps count per section, as FramePack restarts them), else
the run's envelope e(sigma) when `decay` provides one, else 1 (`StepContext.envelope_or(1.0)`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..core.config import MAX_STEPS
from ..core.context import StepContext
from ..core.errors import ConfigError
from ..core.history import HistoryBlocks
from ..core.intervention import Intervention
from ..core.params import Params
from ..core.setup import RunSetup

ContextRole = Literal["context", "history", "condition"]
#: The block roles each `role` value selects.
ROLES = {"context": ("history", "condition"), "history": ("history",), "condition": ("condition",)}


class ContextParams(Params):
    role: ContextRole = Field(
        "context", description="blocks to act on by role: history (e.g. framepack's 4x/2x/1x), condition (the "
                               "conditioning image of an image-to-video run), context = both"
    )
    blocks: list[str] | None = Field(
        None, min_length=1, description="block names to act on (default: every block of the role); e.g. image, 4x"
    )
    end_step: int | None = Field(None, ge=1, le=MAX_STEPS, description="step (per section) to stop before (default: every step)")


class ContextIntervention(Intervention):
    """An intervention that transforms some blocks of the context latents (`core.history`).

    Subclasses implement `unchangeable()` (why the parameters alone change nothing, or None) and
    `transform_history`, using `selected(blocks)` and `strength(ctx)`.
    """

    Params: ClassVar[type[ContextParams]] = ContextParams
    transforms_history = True
    uses_envelope = True

    def check(self, setup: RunSetup) -> None:
        reason = self.unchangeable()
        if reason is not None:
            raise ConfigError(self.name, f"cannot change anything: {reason}")
        self._names = self.select(setup)

    def unchangeable(self) -> str | None:
        return None

    def select(self, setup: RunSetup) -> tuple[str, ...]:
        """The names of the blocks to act on, in hand-over order; ConfigError when there are none."""
        available, name, backbone = dict(setup.history_blocks), self.name, setup.backbone
        if not available:
            if not setup.history_hooks:
                raise ConfigError(name, f"{backbone} does not hand its context latents to inertia's hooks, so {name} "
                                        "cannot change anything")
            raise ConfigError(name, f"cannot change anything: this {backbone} run hands over no context latents (a "
                                    "text-to-video run has no conditioning image: give --image, or use a backbone "
                                    "with history such as framepack)")
        role = self.params.role
        listing = ", ".join(f"{block} ({kind})" for block, kind in available.items())
        chosen = [block for block, kind in available.items() if kind in ROLES[role]]
        if not chosen:
            roles = ["context", *dict.fromkeys(available.values())]
            raise ConfigError(f"{name}.role", f"this {backbone} run hands over no {role} block (it hands over "
                                              f"{listing}); allowed: {', '.join(roles)}")
        wanted = self.params.blocks
        if wanted is None:
            return tuple(chosen)
        unknown = [block for block in wanted if block not in available]
        if unknown:
            raise ConfigError(f"{name}.blocks", f"{', '.join(unknown)} not handed over by this {backbone} run; "
                                                f"allowed: {listing}")
        outside = [block for block in wanted if block not in chosen]
        if outside:
            raise ConfigError(f"{name}.blocks", f"{outside[0]} is a {available[outside[0]]} block, which role={role} "
                                                f"leaves out; allowed with role={role}: {', '.join(chosen)}")
        return tuple(block for block in available if block in wanted)

    def selected(self, blocks: HistoryBlocks) -> tuple[str, ...]:
        """The checked selection, as the prediction's blocks name them."""
        return tuple(name for name in blocks if name in self._names)

    def strength(self, ctx: StepContext) -> float:
        """0 from `end_step` on, else e(sigma) with `decay`, else 1."""
        end = self.params.end_step
        return 0.0 if end is not None and ctx.step >= end else ctx.envelope_or(1.0)
