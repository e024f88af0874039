"""CogVideoX's dynamic CFG, in the form diffusers computes it and in the form it was meant.

With N steps, s_base the run's scale and `exp` the cosine exponent (5 in CogVideoX):

    s = 1 + s_base * (1 - cos(pi * ((N - x) / N) ** exp)) / 2

* form "step" (default): x = i, the step index 0..N-1. The scale starts at 1 + s_base and falls
  along a cosine to about 1 at the last step: the schedule the formula describes, and what the
  fix proposed for diffusers issue 9641 (PR 13172) computes.
* form "diffusers": x = t, the timestep value (0..999) as `use_dynamic_cfg=True` in diffusers'
  CogVideoX pipelines computes it. (N - t) / N is far below -1, so after ** exp the cosine
  oscillates from step to step (issue 9641; THUDM call the wave a coincidence they found useful,
  CogVideo issue 267). Kept for bit parity with the pipelines.

The schedule only reads the step context, so it runs on any backbone with true CFG.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..core.config import MAX_EXPONENT
from ..core.context import StepContext
from ..core.intervention import GuidanceParams, GuidanceSchedule, GuidanceTarget


class DynamicCfgParams(GuidanceParams):
    target: GuidanceTarget = Field("cfg", description="guidance scale to schedule (true CFG by default)")
    form: Literal["step", "diffusers"] = Field(
        "step", description="step: cosine over the step index (intended); diffusers: over the timestep value (issue 9641)"
    )
    exp: float = Field(5.0, gt=0.0, le=MAX_EXPONENT, description="cosine exponent (CogVideoX uses 5)")

    @model_validator(mode="after")
    def _real_power(self) -> "DynamicCfgParams":
        # The diffusers form raises a negative base to `exp`: only integer powers stay real.
        if self.form == "diffusers" and not float(self.exp).is_integer():
            raise ValueError(f"form 'diffusers' needs an integer exp (it powers a negative number), got {self.exp}")
        return self


class DynamicCfg(GuidanceSchedule):
    name = "dynamic_cfg"
    description = (
        "CogVideoX dynamic CFG s = 1 + s_base * (1 - cos(pi * ((N - x) / N) ** exp)) / 2; "
        "form=step: x = step index (intended cosine decay from 1 + s_base to ~1); "
        "form=diffusers: x = timestep value, as diffusers' use_dynamic_cfg computes it (oscillates, issue 9641)."
    )
    Params: ClassVar[type[DynamicCfgParams]] = DynamicCfgParams
    uses_envelope = False  # a fixed schedule over steps; decay cannot shape it

    def scale(self, base: float, ctx: StepContext) -> float:
        n = ctx.num_steps
        x = ctx.timestep if self.params.form == "diffusers" else ctx.step
        # Same operations and order as the pipelines, so form=diffusers is bit-identical to them.
        return 1 + base * ((1 - math.cos(math.pi * ((n - x) / n) ** self.params.exp)) / 2)
