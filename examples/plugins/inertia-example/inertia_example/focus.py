"""example_focus: during the first `fraction` of the steps, raise the CFG scale by `gain` (the guidance
hook) and sharpen self-attention by scaling its queries by `temperature` (the attention hook).

Scaling the queries by t multiplies every attention logit q.k / sqrt(d) by t: t > 1 makes each token
attend more to its best matches, t < 1 spreads attention out.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from inertia.core.errors import ConfigError
from inertia.core.intervention import Intervention
from inertia.core.params import Params


class FocusParams(Params):
    gain: float = Field(1.5, gt=0.0, le=10.0, description="factor on the CFG scale during the early steps")
    temperature: float = Field(1.2, gt=0.0, le=10.0, description="factor on the attention queries during the early steps")
    fraction: float = Field(0.5, gt=0.0, le=1.0, description="share of the steps (from the first) the intervention acts on")


class Focus(Intervention):
    name = "example_focus"
    description = "Example plugin: early steps get CFG x gain and attention queries x temperature."
    Params: ClassVar[type[FocusParams]] = FocusParams
    transforms_attention = True  # the run routes self-attention through transform_qkv

    def check(self, setup) -> None:
        """Before any model loads: refuse what cannot change anything, naming the field."""
        if self.params.gain == 1.0 and self.params.temperature == 1.0:
            raise ConfigError(self.name, "cannot change anything: gain and temperature are both 1")
        if self.params.gain != 1.0 and "cfg" not in setup.guidance:
            raise ConfigError(f"{self.name}.gain", f"true CFG is off in this run ({setup.backbone}), so the gain "
                                                   "cannot change anything; set gain=1 or raise the guidance scale")
        if self.params.temperature != 1.0 and not setup.attention_hooks:
            raise ConfigError(f"{self.name}.temperature", f"{setup.backbone} does not route its attention through "
                                                          "inertia's hook")

    def guidance_target(self, setup) -> str | None:
        """It schedules the CFG scale: another schedule of the same scale (relax, boost) is refused."""
        return "cfg" if self.params.gain != 1.0 else None

    def _early(self, step) -> bool:
        return step.step < self.params.fraction * step.num_steps

    def guidance(self, ctx, scales):
        if "cfg" in scales and self._early(ctx):
            return {**scales, "cfg": scales["cfg"] * self.params.gain}
        return scales

    def transform_qkv(self, query, key, value, call):
        if self._early(call.step):
            return query * self.params.temperature, key, value
        return query, key, value
