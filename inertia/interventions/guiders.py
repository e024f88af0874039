"""Combination rules that diffusers' guiders implement, run at the scale inertia's schedules set.

Each plugin here is a `PredictionCombiner` that hands the step's conditional and unconditional
predictions to one of diffusers' guiders (`diffusers.guiders`) rather than writing its formula
again. `GuiderCombiner` drives the guider as diffusers' modular pipelines do, once per step:

1. `set_state(step, num_steps, timestep)` and the step's scale, as relax, boost, ... set it (so a
   schedule composes with the rule: the schedule sets the scale, the guider combines with it);
2. `prepare_inputs({})`: at step 0 this resets the guider's per-run state (APG's momentum), so every
   run, and every FramePack section (whose steps restart at 0), starts afresh;
3. the guider's `num_conditions` says whether the step needs the unconditional prediction (not
   when the guider would return the conditional one alone, e.g. at a scale of 1: one forward);
4. `forward(pred_cond, pred_uncond).pred` is the step's prediction.

The loop calls `needs_uncond` once and then `combine` once per step, in that order; the guider is
built in `check`, so each planned run gets its own.

Scale: the guiders run in diffusers' default formulation (`use_original_formulation=False`), built
on uncond + s (cond - uncond), inertia's CFG convention. Where that changes a rule against its
paper, the plugin says so and offers the paper's form (APG's `formulation=paper`).

Predictions are the backbone's raw model outputs, as diffusers' pipelines feed their guiders:
flow velocities for Wan, HunyuanVideo, FramePack and the test bed, v for CogVideoX. Each video is
one row of the batch (dim 0). CFG-Zero*, APG and TCFG reduce over all other dims of a row, so they
do not depend on the latent layout (Wan's (B, C, F, H, W) or CogVideoX's (B, F, C, H, W)); FDG's
frequency transform works on the last two dims (height, width), see `Fdg`. Batched runs combine
row by row, as single runs do.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ..core.combination import NO_BRANCHES
from ..core.config import MAX_GUIDANCE, MAX_STEPS
from ..core.context import StepContext
from ..core.errors import ConfigError
from ..core.intervention import PredictionCombiner
from ..core.params import Params
from ..core.setup import RunSetup


class GuiderCombiner(PredictionCombiner):
    """A prediction combiner that drives one diffusers guider; subclasses build it (`build_guider`)
    and may say how the step's scale sets it (`set_scale`) and how predictions enter it (`forward`)."""

    def build_guider(self):
        """A fresh diffusers guider with this plugin's parameters."""
        raise NotImplementedError

    def set_scale(self, guider, scale: float) -> None:
        guider.guidance_scale = scale

    def forward(self, guider, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        return guider.forward(cond, uncond).pred

    def check(self, setup: RunSetup) -> None:
        super().check(setup)
        try:
            self._guider = self.build_guider()
        except ImportError as error:  # e.g. FDG without kornia
            raise ConfigError(self.name, f"cannot run here: {error}") from None

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        guider = self._guider
        guider.set_state(ctx.step, ctx.num_steps, ctx.timestep)
        self.set_scale(guider, scale)
        guider.prepare_inputs({})
        return guider.num_conditions > 1

    def combine(self, cond, uncond, scale: float | None, ctx: StepContext, branches=NO_BRANCHES):
        return self.forward(self._guider, cond, uncond)


class CfgZeroStarParams(Params):
    zero_init_steps: int = Field(
        1, ge=0, le=MAX_STEPS, description="first steps (of each section) whose prediction is zero (the paper: about 4% of steps)"
    )


class CfgZeroStar(GuiderCombiner):
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
    Models", arXiv 2503.18886), through diffusers' `ClassifierFreeZeroStarGuidance`:

        s* = <cond, uncond> / (||uncond||^2 + 1e-8)      (per video, over all its elements)
        pred = s* uncond + s (cond - s* uncond)
        pred = 0 at the first `zero_init_steps` steps of each section ("zero-init")

    The paper's form, at the same scale s. Its zero-init step still runs both forwards, as diffusers'
    guider asks for them, and is traced as cfg_zero_star even at a scale of 1.
    """

    name = "cfg_zero_star"
    description = ("CFG-Zero* (Fan et al. 2025): pred = s* u + s (c - s* u), s* = <c, u> / ||u||^2 per video; "
                   "zero prediction at the first zero_init_steps steps (diffusers' guider).")
    Params: ClassVar[type[CfgZeroStarParams]] = CfgZeroStarParams

    def check(self, setup: RunSetup) -> None:
        super().check(setup)
        steps = setup.config.steps
        if steps is not None and self.params.zero_init_steps >= steps:
            raise ConfigError(f"{self.name}.zero_init_steps",
                              f"{self.params.zero_init_steps} >= the run's {steps} steps: every prediction would be zero")

    def build_guider(self):
        from diffusers.guiders import ClassifierFreeZeroStarGuidance

        return ClassifierFreeZeroStarGuidance(zero_init_steps=self.params.zero_init_steps)

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        # At a scale of 1 the guider needs no uncond, yet zero-inits: ask for it so the trace names the rule.
        return super().needs_uncond(scale, ctx) or ctx.step < self.params.zero_init_steps


class ApgParams(Params):
    eta: float = Field(0.0, ge=0.0, le=1.0, description="weight of the update's component parallel to cond (paper: 0)")
    momentum: float = Field(
        -0.5, gt=-1.0, lt=1.0, description="momentum of the update across steps (negative = the paper's reverse momentum; 0 = none)"
    )
    rescale: float = Field(
        15.0, ge=0.0, le=MAX_GUIDANCE, description="cap r on the update's L2 norm over the whole video latent (0 = none; diffusers' default 15)"
    )
    formulation: Literal["diffusers", "paper"] = Field(
        "diffusers", description="diffusers: pred = u + s * update (diffusers' default); paper: pred = c + (s - 1) * update"
    )


class Apg(GuiderCombiner):
    """Adaptive projected guidance (Sadat, Hilliges and Weber, ICLR 2025, "Eliminating
    oversaturation and artifacts of high guidance scales in diffusion models", arXiv 2410.02416),
    through diffusers' `AdaptiveProjectedGuidance`:

        D = cond - uncond;  D <- D + momentum * D_prev   (running sum over the steps of a section)
        D <- D * min(1, r / ||D||)                       (r = rescale; skipped at 0)
        D_par = <D, c^> c^,  D_orth = D - D_par          (c^ = cond / ||cond||)
        pred = uncond + s (D_orth + eta D_par)          (formulation=diffusers, the default)
        pred = cond + (s - 1)(D_orth + eta D_par)        (formulation=paper)

    Norms and projections are over all elements of a video (diffusers' default `norm_dim`), so `rescale`
    is an absolute norm that grows with the latent's size (sqrt of its element count), not a per-pixel one.
    Scale semantics: the default is diffusers' default formulation. The paper's form is diffusers'
    `use_original_formulation` at scale s - 1. The two agree when the update is plain D (eta 1, no
    momentum, no cap); otherwise the default drops the update's removed part (with eta 0: all of D
    parallel to cond) from the whole prediction, not only from the guidance added to cond, so just
    above s = 1 it is far from cond (diffusers' guider returns cond only at exactly 1; on the test
    bed at CFG 1.1 this form multiplied static death by 2.7), while the paper's form moves away from
    cond by (s - 1) times the update. The momentum state is reset at step 0 of every run and section.
    """

    name = "apg"
    description = ("Adaptive projected guidance (Sadat et al. 2025): pred = u + s (D_orth + eta D_par), D = c - u "
                   "with momentum and a norm cap r, projected on c (diffusers' guider); formulation=paper: "
                   "c + (s - 1)(D_orth + eta D_par).")
    Params: ClassVar[type[ApgParams]] = ApgParams

    def check(self, setup: RunSetup) -> None:
        p = self.params
        if p.eta == 1.0 and p.momentum == 0.0 and p.rescale == 0.0:
            raise ConfigError(self.name, "cannot change anything: with eta 1, momentum 0 and rescale 0 APG is "
                                         "classifier-free guidance")
        super().check(setup)

    def build_guider(self):
        from diffusers.guiders import AdaptiveProjectedGuidance

        p = self.params
        return AdaptiveProjectedGuidance(adaptive_projected_guidance_momentum=p.momentum,
                                         adaptive_projected_guidance_rescale=p.rescale, eta=p.eta,
                                         use_original_formulation=p.formulation == "paper")

    def set_scale(self, guider, scale: float) -> None:
        guider.guidance_scale = scale - 1.0 if self.params.formulation == "paper" else scale


class Tcfg(GuiderCombiner):
    """Tangential damping CFG (Kwon et al. 2025, "TCFG: Tangential Damping Classifier-free Guidance",
    CVPR 2025, arXiv 2503.18137), through diffusers' `TangentialClassifierFreeGuidance`: per video,
    v1 is the first right singular vector of the 2 x N matrix [cond; uncond] (N = its element count),

        u~ = <uncond, v1> v1                              (uncond without its tangential part)
        pred = u~ + s (cond - u~)
    """

    name = "tcfg"
    description = ("Tangential damping CFG (Kwon et al. 2025): pred = u~ + s (c - u~), u~ = uncond projected on the "
                   "first right singular vector of [c; u] per video (diffusers' guider).")

    def build_guider(self):
        from diffusers.guiders import TangentialClassifierFreeGuidance

        return TangentialClassifierFreeGuidance()


class FdgParams(Params):
    ratios: list[float] = Field(
        [2.0, 1.0], min_length=2,
        description="guidance strength of each frequency level (at least 2, each in [0, 100]), highest first, relative "
                    "to the step's: level scale 1 + ratio * (s - 1)",
    )
    parallel_weight: float = Field(1.0, ge=0.0, le=1.0, description="weight of each level's update component "
                                                                       "parallel to cond (1 = plain CFG update)")

    @field_validator("ratios")
    @classmethod
    def _non_negative(cls, ratios: list[float]) -> list[float]:
        if min(ratios) < 0 or max(ratios) > MAX_GUIDANCE:
            raise ValueError(f"ratios must be >= 0 and <= {MAX_GUIDANCE:g}, got {ratios}")
        return ratios


class Fdg(GuiderCombiner):
    """Frequency-decoupled guidance (Sadat et al. 2025, "Guidance in the frequency domain enables
    high-fidelity sampling at low CFG scales", arXiv 2506.19713), through diffusers'
    `FrequencyDecoupledGuidance` (needs the kornia package: `pip install 'inertia[fdg]'`):

        cond, uncond -> Laplacian pyramids of L = len(ratios) levels over (height, width)
        level l: pred_l = u_l + w_l (c_l - u_l),  w_l = 1 + ratios[l] (s - 1)   (highest frequency first)
        (with parallel_weight < 1, each level's update c_l - u_l keeps only that share of its component
         parallel to c_l)
        pred = the pyramid of the pred_l, collapsed

    The scale of every level follows the step's scale s, so relax and boost drive it, and at s = 1
    every level is 1 (the conditional prediction, one forward). The default ratios (2, 1) guide high
    frequencies twice as strongly as CFG at s and low ones as CFG: about the paper's w_high 10,
    w_low 5 for SDXL at s = 5 (9 and 5).
    Layout: the pyramid is 2-D, so the dims between batch and (height, width) (channels and frames,
    in either order) are folded into one; every (channel, frame) plane is filtered alike, and the
    projection runs over the whole video, so the fold changes nothing. kornia pads a height or width
    that is not a power of two (or not divisible by 2 ** (L - 1)) at the bottom and right, and the
    guider returns that padded size: the result is cropped back. Each level halves the plane, and
    the plane entering the last halving must be larger than 2 latent pixels (kornia's blur), which
    limits L on small latents.
    """

    name = "fdg"
    description = ("Frequency-decoupled guidance (Sadat et al. 2025): CFG per Laplacian-pyramid level at scale "
                   "1 + ratio (s - 1), highest frequency first (diffusers' guider; needs kornia).")
    Params: ClassVar[type[FdgParams]] = FdgParams

    def check(self, setup: RunSetup) -> None:
        if all(r == 1.0 for r in self.params.ratios) and self.params.parallel_weight == 1.0:
            raise ConfigError(self.name, "cannot change anything: every level at the step's scale with the whole "
                                         "parallel component is classifier-free guidance")
        super().check(setup)

    def build_guider(self):
        from diffusers.guiders import FrequencyDecoupledGuidance

        p = self.params
        return FrequencyDecoupledGuidance(guidance_scales=[1.0] * len(p.ratios), parallel_weights=p.parallel_weight)

    def set_scale(self, guider, scale: float) -> None:
        guider.guidance_scales = [1.0 + r * (scale - 1.0) for r in self.params.ratios]

    def forward(self, guider, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        shape = cond.shape
        planes = [x if x is None else x.flatten(1, -3) for x in (cond, uncond)]
        pred = guider.forward(*planes).pred
        return pred[..., : shape[-2], : shape[-1]].reshape(shape)
