"""Guidance-schedule interventions from the static-death research: relax, decay, boost.

With e(sigma) the envelope (sigma itself, or sigma ** p under `decay`) and s_base the scale
the run asked for:

* relax: s = s_min + (s_base - s_min) * (1 - beta * e(sigma))
* boost: s = s_base * (1 + 3 * b * e(sigma))   (the seed's "beta = -b" forced impulse)
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..core.config import MAX_EXPONENT, MAX_GUIDANCE
from ..core.context import StepContext
from ..core.intervention import GuidanceParams, GuidanceSchedule, Intervention
from ..core.params import Params


class RelaxParams(GuidanceParams):
    beta: float = Field(0.75, ge=0.0, le=1.0, description="relaxation strength at sigma = 1 (0 = baseline)")
    s_min: float = Field(1.0, ge=0.0, le=MAX_GUIDANCE, description="floor the scale relaxes toward")


class Relax(GuidanceSchedule):
    name = "relax"
    description = "Adaptive CFG relaxation: lower guidance toward s_min early in denoising, by beta * e(sigma)."
    Params: ClassVar[type[RelaxParams]] = RelaxParams

    def unchangeable(self, base: float) -> str | None:
        if base == self.params.s_min:
            return f"the base scale {base:g} equals the floor s_min {self.params.s_min:g}"
        return None

    def scale(self, base: float, ctx: StepContext) -> float:
        # Written as s_base - (s_base - s_min) * beta * e, the same value as the spec's form,
        # so that beta = 0 returns s_base exactly (bit-identical to no intervention).
        return base - (base - self.params.s_min) * self.params.beta * ctx.envelope_or(ctx.sigma)


class BoostParams(GuidanceParams):
    b: float = Field(0.5, gt=0.0, le=MAX_GUIDANCE, description="impulse strength (the seed's beta = -b)")


class Boost(GuidanceSchedule):
    name = "boost"
    description = "Forced-impulse baseline: raise guidance by a factor 1 + 3 b e(sigma) early in denoising."
    Params: ClassVar[type[BoostParams]] = BoostParams

    def unchangeable(self, base: float) -> str | None:
        return f"the base scale is {base:g}, and boost multiplies it" if base == 0 else None

    def scale(self, base: float, ctx: StepContext) -> float:
        return base * (1.0 + 3.0 * self.params.b * ctx.envelope_or(ctx.sigma))


class DecayParams(Params):
    p: float = Field(1.0, gt=0.0, le=MAX_EXPONENT, description="envelope power: e(sigma) = sigma ** p (p < 1 lasts longer)")


class Decay(Intervention):
    name = "decay"
    description = "Decay envelope e(sigma) = sigma ** p shaping how fast relax/boost/unlearn fade over denoising."
    Params: ClassVar[type[DecayParams]] = DecayParams
    provides_envelope = True

    def envelope(self, sigma: float) -> float:
        return sigma**self.params.p
