"""Temporal unlearning: blur, along time, the self-attention keys and values of video tokens.

The model forgets the exact state it clings to: each key/value of frame f becomes a Gaussian-
weighted mix of the same row and column in nearby frames (kernel in `core.temporal_blur`).
With `decay`, the blur's strength fades as sigma ** p over denoising; without it, the blur is
applied in full at every selected step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..core.attention import CONTEXT_ROLES, AttentionCall, Role
from ..core.errors import ConfigError
from ..core.intervention import Intervention
from ..core.params import Params
from ..core.setup import RunSetup
from ..core.temporal_blur import blur_frames, changes_anything


class UnlearnParams(Params):
    sigma_blur: float = Field(0.6, ge=0.0, description="Gaussian sigma in frames (0 = no blur, the baseline)")
    tokens: Literal["auto", "context", "video"] = Field(
        "auto", description="context = history/conditioning tokens only; video = all; auto = history if the model has any, else video"
    )
    layers: list[int] | None = Field(None, description="transformer layers to act on (default: all)")
    start_step: int = Field(0, ge=0, description="first step (per section) to act on")
    end_step: int | None = Field(None, ge=1, description="step to stop before (default: the last)")


class Unlearn(Intervention):
    name = "unlearn"
    description = "Temporal unlearning: Gaussian blur along frames of self-attention keys/values (same row/column)."
    Params: ClassVar[type[UnlearnParams]] = UnlearnParams
    uses_envelope = True
    transforms_attention = True

    def roles(self, setup: RunSetup) -> tuple[Role, ...]:
        tokens = self.params.tokens
        if tokens == "auto":
            tokens = "context" if "history" in setup.token_roles else "video"
        return CONTEXT_ROLES if tokens == "context" else ("noisy", *CONTEXT_ROLES)

    def check(self, setup: RunSetup) -> None:
        if not setup.attention_hooks:
            raise ConfigError(self.name, f"{setup.backbone} does not route self-attention through inertia's hook")
        if self.params.tokens == "context" and not setup.token_roles & set(CONTEXT_ROLES):
            raise ConfigError(
                "unlearn.tokens", f"this {setup.backbone} run has no context tokens to blur; allowed: video, auto"
            )
        end = self.params.end_step
        if end is not None and end <= self.params.start_step:
            raise ConfigError("unlearn.end_step", f"{end} must be greater than start_step {self.params.start_step}")
        self._roles = self.roles(setup)
        self._checked_layout = None

    def _check_layout(self, call: AttentionCall) -> None:
        """Once per layout: layers exist, and some selected block is long enough to blur."""
        layers = self.params.layers or []
        bad = [layer for layer in layers if not 0 <= layer < call.num_layers]
        if bad:
            raise ConfigError("unlearn.layers", f"{bad} out of range; the model has layers 0..{call.num_layers - 1}")
        grids = call.layout.grids(self._roles)
        if self.params.sigma_blur > 0 and not any(changes_anything(self.params.sigma_blur, g.frames) for g in grids):
            frames = ", ".join(str(g.frames) for g in grids) or "none"
            raise ConfigError(
                self.name,
                f"cannot change anything: the selected token blocks have {frames} frame(s), too short for "
                f"a kernel at sigma_blur {self.params.sigma_blur:g}",
            )
        self._checked_layout = call.layout

    def transform_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, call: AttentionCall):
        if call.layout is not self._checked_layout:
            self._check_layout(call)
        step, params = call.step.step, self.params
        if step < params.start_step or (params.end_step is not None and step >= params.end_step):
            return query, key, value
        if params.layers is not None and call.layer not in params.layers:
            return query, key, value
        strength = 1.0 if call.step.decay is None else call.step.decay
        return query, self._blur(key, call, strength), self._blur(value, call, strength)

    def _blur(self, tokens: torch.Tensor, call: AttentionCall, strength: float) -> torch.Tensor:
        out = tokens
        for grid in call.layout.grids(self._roles):
            block = tokens[:, grid.start : grid.stop]
            blurred = blur_frames(block, grid.frames, self.params.sigma_blur, strength)
            if blurred is block:
                continue
            if grid.start == 0 and grid.stop == tokens.shape[1]:
                out = blurred
            else:
                out = out.clone() if out is tokens else out
                out[:, grid.start : grid.stop] = blurred
        return out
