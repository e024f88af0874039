"""Guidance schedules that rival relax in a static-death ablation: a constant scale, and guidance
applied in a limited interval of noise levels.

With s_base the scale the run asked for and sigma the step's noise level in [0, 1]:

* constant: s = scale at every step. relax at beta 0.75, p 0.7 averages well below s_base over a
  run, so a constant lower scale is the first rival it has to beat.
* interval (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves sample and
  distribution quality in diffusion models", arXiv 2404.07724):
  s = s_base while sigma_lo < sigma <= sigma_hi (the paper's half-open interval), else `floor`.
  With true CFG the floor of 1 is the paper's "no guidance": the loop then runs the conditional
  prediction alone, one forward. For the embedded (distilled) scale there is no "off" value, so the
  floor is whatever the caller chooses.

The paper states its interval in EDM's sigma (e.g. (0.28, 5.42] for EDM2-XXL); inertia's sigma is
the flow-matching sigma for flow-matching schedulers (sigma_edm / (1 + sigma_edm): (0.22, 0.84]) and
sqrt(1 - alphabar) for DDPM-family ones such as CogVideoX (sigma_edm / sqrt(1 + sigma_edm ** 2)),
so the bounds are required parameters rather than one default that would mean different things.

Which sigmas a run visits is known only once its scheduler is loaded, so `interval` refuses before
loading only the interval that holds every possible step, (0, 1]; the trace records each step's
scale, so a run whose sigmas all fell inside shows s_base at every step.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..core.config import MAX_GUIDANCE
from ..core.context import StepContext
from ..core.intervention import GuidanceParams, GuidanceSchedule


class ConstantParams(GuidanceParams):
    scale: float = Field(ge=0.0, le=MAX_GUIDANCE, description="the guidance scale at every step")


class Constant(GuidanceSchedule):
    name = "constant"
    description = "Constant guidance: s = scale at every step (the rival a lower average scale must beat)."
    Params: ClassVar[type[ConstantParams]] = ConstantParams
    uses_envelope = False  # no fade: decay has nothing to shape

    def unchangeable(self, base: float) -> str | None:
        if base == self.params.scale:
            return f"the base scale {base:g} equals the constant {self.params.scale:g}"
        return None

    def scale(self, base: float, ctx: StepContext) -> float:
        return self.params.scale


class IntervalParams(GuidanceParams):
    sigma_lo: float = Field(ge=0.0, le=1.0, description="guidance only while sigma_lo < sigma <= sigma_hi")
    sigma_hi: float = Field(ge=0.0, le=1.0, description="upper end of the guidance interval (sigma 1 = pure noise)")
    floor: float = Field(
        1.0, ge=0.0, le=MAX_GUIDANCE, description="scale outside the interval (1 = no guidance; true CFG then runs one forward)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "IntervalParams":
        if not self.sigma_lo < self.sigma_hi:
            raise ValueError(f"sigma_lo ({self.sigma_lo:g}) must be below sigma_hi ({self.sigma_hi:g})")
        return self


class Interval(GuidanceSchedule):
    name = "interval"
    description = (
        "Guidance interval (Kynkäänniemi et al. 2024): s = s_base while sigma_lo < sigma <= sigma_hi, "
        "else floor (1 = no guidance)."
    )
    Params: ClassVar[type[IntervalParams]] = IntervalParams
    uses_envelope = False

    def unchangeable(self, base: float) -> str | None:
        p = self.params
        if p.sigma_lo == 0.0 and p.sigma_hi == 1.0:
            return "the interval (0, 1] holds every step's sigma"
        if base == p.floor:
            return f"the base scale {base:g} equals the floor {p.floor:g}"
        return None

    def scale(self, base: float, ctx: StepContext) -> float:
        p = self.params
        return base if p.sigma_lo < ctx.sigma <= p.sigma_hi else p.floor
