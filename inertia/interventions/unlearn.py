"""Temporal unlearning: blur, along time, the self-attention keys and values of video tokens.

The model forgets the exact state it clings to: each key/value of frame f becomes a Gaussian-
weighted mix of the same row and column in nearby frames (kernel in `core.temporal_blur`).
With `decay`, the blur's strength fades as sigma ** p over denoising; without it, the blur is
applied in full at every selected step.

`target=history` is the variant the seed code actually ran on FramePack: the same blur, along
time, of each clean history latent block fed to the model (FramePack's 4x, 2x and 1x blocks, each
on its own; the start image is the condition and is left alone), through the history interface
(`core.history`, `Intervention.transform_history`), with the same steps and decay. A block with fewer frames than
the kernel needs is left as it is, and the run warns once about it (`UnlearnWarning`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..core.config import MAX_FRAMES, MAX_STEPS
from ..core.attention import CONTEXT_ROLES, AttentionCall, Role, check_layer_range
from ..core.context import StepContext
from ..core.errors import ConfigError
from ..core.history import HistoryBlocks
from ..core.intervention import Intervention
from ..core.params import Params
from ..core.setup import RunSetup
from ..core.temporal_blur import blur_frames, changes_anything, kernel_length


class UnlearnWarning(UserWarning):
    """A part of what unlearning was asked to blur is too short for the kernel (left unchanged)."""


def blur_latent_frames(latents: torch.Tensor, sigma_blur: float, strength: float = 1.0) -> torch.Tensor:
    """`blur_frames` along the frame axis of (B, C, F, H, W) latents; the input itself when unchanged."""
    frames = latents.shape[2]
    frame_major = latents.transpose(1, 2)  # (B, F, C, H, W): frame f at f * C * H * W, as blur_frames expects
    blurred = blur_frames(frame_major, frames, sigma_blur, strength)
    return latents if blurred is frame_major else blurred.transpose(1, 2).contiguous()


class UnlearnParams(Params):
    sigma_blur: float = Field(0.6, ge=0.0, le=MAX_FRAMES, description="Gaussian sigma in frames (0 = no blur, the baseline)")
    target: Literal["kv", "history"] = Field(
        "kv", description="kv = self-attention keys/values; history = the history latents fed to the model (FramePack)"
    )
    tokens: Literal["auto", "context", "video"] = Field(
        "auto",
        description="context = history/conditioning tokens only; video = all; auto = history if the model has any, "
        "else video (target=kv)",
    )
    layers: list[int] | None = Field(None, min_length=1, description="transformer layers to act on (default: all; target=kv)")
    start_step: int = Field(0, ge=0, le=MAX_STEPS, description="first step (per section) to act on")
    end_step: int | None = Field(None, ge=1, le=MAX_STEPS, description="step to stop before (default: the last)")


class Unlearn(Intervention):
    name = "unlearn"
    description = (
        "Temporal unlearning: Gaussian blur along frames of self-attention keys/values (same row/column), "
        "or of the history latents fed to the model (target=history, FramePack)."
    )
    Params: ClassVar[type[UnlearnParams]] = UnlearnParams
    uses_envelope = True
    _checked_history = False

    @property
    def transforms_attention(self) -> bool:  # type: ignore[override]
        return self.params.target == "kv"

    @property
    def transforms_history(self) -> bool:  # type: ignore[override]
        return self.params.target == "history"

    def roles(self, setup: RunSetup) -> tuple[Role, ...]:
        tokens = self.params.tokens
        if tokens == "auto":
            tokens = "context" if "history" in setup.token_roles else "video"
        return CONTEXT_ROLES if tokens == "context" else ("noisy", *CONTEXT_ROLES)

    def check(self, setup: RunSetup) -> None:
        if self.params.target == "history":
            self._check_history_target(setup)
        elif not setup.attention_hooks:
            raise ConfigError(self.name, f"{setup.backbone} does not route self-attention through inertia's hook")
        else:
            setup.check_layers("unlearn.layers", self.params.layers)
        if self.params.tokens == "context" and not setup.token_roles & set(CONTEXT_ROLES):
            raise ConfigError(
                "unlearn.tokens", f"this {setup.backbone} run has no context tokens to blur; allowed: video, auto"
            )
        end = self.params.end_step
        if end is not None and end <= self.params.start_step:
            raise ConfigError("unlearn.end_step", f"{end} must be greater than start_step {self.params.start_step}")
        self._roles = self.roles(setup)
        self._checked_layout = None
        self._checked_history = False

    def _check_history_target(self, setup: RunSetup) -> None:
        """Before loading: the backbone feeds history latents (and hands them to interventions)."""
        if "history" not in setup.token_roles:
            raise ConfigError(
                "unlearn.target",
                f"{setup.backbone} feeds its model no history latents, so target=history cannot change anything "
                "(it needs a backbone with history, e.g. framepack); allowed here: kv",
            )
        if not setup.history_hooks:
            raise ConfigError(self.name, f"{setup.backbone} does not hand its history latents to inertia's hooks")
        for field, default in (("tokens", "auto"), ("layers", None)):
            if getattr(self.params, field) != default:
                raise ConfigError(
                    f"unlearn.{field}", "selects attention tokens/layers, which target=history does not blur; "
                    "drop it or use target=kv",
                )
        sigma = self.params.sigma_blur
        if sigma > 0 and _uncapped_length(sigma) == 1:
            raise ConfigError(
                self.name,
                f"cannot change anything: at sigma_blur {sigma:g} the kernel has length 1 (blurring starts at 1/6)",
            )

    def _active(self, step: int) -> bool:
        params = self.params
        return step >= params.start_step and (params.end_step is None or step < params.end_step)

    def _check_layout(self, call: AttentionCall) -> None:
        """Once per layout: layers exist (checked before loading where the count could be read), and some
        selected block is long enough to blur."""
        check_layer_range("unlearn.layers", self.params.layers, call.num_layers)
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
        params = self.params
        if not self._active(call.step.step):
            return query, key, value
        if params.layers is not None and call.layer not in params.layers:
            return query, key, value
        strength = call.step.envelope_or(1.0)
        return query, self._blur(key, call, strength), self._blur(value, call, strength)

    def _blur(self, tokens: torch.Tensor, call: AttentionCall, strength: float) -> torch.Tensor:
        out = tokens
        for grid in call.layout.grids(self._roles):
            block = tokens[:, grid.start : grid.stop]
            blurred = blur_frames(block, grid.frames, self.params.sigma_blur, strength, fused=call.fused)
            if blurred is block:
                continue
            if grid.start == 0 and grid.stop == tokens.shape[1]:
                out = blurred
            else:
                out = out.clone() if out is tokens else out
                out[:, grid.start : grid.stop] = blurred
        return out

    # ----- target=history --------------------------------------------------------------------------
    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext):
        """Blur each history block along its frames (blocks too short for the kernel stay as they are;
        the conditioning image, role "condition", is not history and is left alone)."""
        history = latents_by_block.names("history")
        if not self._checked_history:
            self._check_history({name: latents_by_block[name] for name in history})
        if not self._active(ctx.step):
            return latents_by_block
        strength = ctx.envelope_or(1.0)
        sigma = self.params.sigma_blur
        return {name: blur_latent_frames(latents, sigma, strength) if name in history else latents
                for name, latents in latents_by_block.items()}

    def _check_history(self, latents_by_block: Mapping[str, torch.Tensor]) -> None:
        """Once per run: some block is long enough to blur (else an error), and a warning for each one that is not."""
        sigma = self.params.sigma_blur
        self._checked_history = True
        if sigma == 0:
            return
        frames = {name: latents.shape[2] for name, latents in latents_by_block.items()}
        short = [name for name, count in frames.items() if not changes_anything(sigma, count)]
        if len(short) == len(frames):
            listed = ", ".join(f"{count} ({name})" for name, count in frames.items()) or "none"
            raise ConfigError(
                self.name,
                f"cannot change anything: the history blocks have {listed} latent frame(s), too short for a kernel "
                f"at sigma_blur {sigma:g}",
            )
        length = _uncapped_length(sigma)
        for name in short:
            _warn(
                f"unlearn: history block {name} has {frames[name]} latent frame(s), too short for the length-{length} "
                f"kernel at sigma_blur {sigma:g}; it is left unblurred"
            )


def _uncapped_length(sigma_blur: float) -> int:
    """The kernel's length before the cap at the number of frames."""
    return kernel_length(sigma_blur, 1 << 30)


def _warn(message: str) -> None:
    """Issue an UnlearnWarning every time it is called (each run calls it once per short block), not only
    the first time in the process as `warnings.warn` would; warning filters still apply."""
    warnings.warn_explicit(message, UnlearnWarning, __file__, 0, module=__name__, registry=None)
