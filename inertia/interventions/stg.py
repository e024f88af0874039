"""stg: spatiotemporal skip guidance, guidance away from the model with some self-attention skipped.

STG (Hyung, Kim, Hong, Shin, Kim, Kim, Choo and Kim 2024, "Spatiotemporal Skip Guidance for
Enhanced Video Diffusion Sampling", arXiv 2411.18664) builds a weaker model out of the model
itself, without training, by skipping the spatiotemporal self-attention of chosen layers, and
guides away from its prediction:

    pred = uncond + s (cond - uncond) + g (cond - skip)     (CFG in force at the step)
    pred = cond + g (cond - skip)                           (CFG off at the step)

`skip` is the conditional forward with the self-attention of `layers` replaced by the identity
attention map (each token attends to itself only, so the attention returns the values, before the
layer's output projection: the paper's STG-A, diffusers' `skip_attention_scores`). The skip acts at
inertia's attention hook point (`core.attention.AttentionHooks.attend`), so it is the same on
every backbone and attention backend; layers are numbered as the hooks number them (HunyuanVideo:
dual-stream blocks first, then single-stream). On joint text-video attention (CogVideoX,
HunyuanVideo) the whole joint call is skipped, text tokens included, as diffusers' guider does.
The formula and its relation to diffusers' `SkipLayerGuidance`: `interventions.perturbed`.

Cost: one more forward at each step of the window [`start_step`, `end_step`), none elsewhere.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from ..core.combination import Branch
from ..core.config import MAX_GUIDANCE, MAX_STEPS
from ..core.errors import ConfigError
from ..core.params import Params, distinct_layers
from ..core.setup import RunSetup
from .perturbed import PerturbedGuidance


class StgParams(Params):
    layers: list[int] = Field(min_length=1, description="transformer layers whose self-attention the skip branch skips "
                                                        "(0-based, as `unlearn:layers` numbers them)")
    scale: float = Field(1.0, gt=0.0, le=MAX_GUIDANCE, description="g, the weight of cond - skip")
    start_step: int = Field(0, ge=0, le=MAX_STEPS, description="first step (per section) with the skip branch")
    end_step: int | None = Field(None, ge=1, le=MAX_STEPS, description="step (per section) to stop before (default: the last)")

    _distinct_layers = field_validator("layers")(distinct_layers)


class Stg(PerturbedGuidance):
    name = "stg"
    description = ("Spatiotemporal skip guidance (Hyung et al. 2024): pred = CFG + g (cond - skip), skip = the "
                   "conditional forward with the self-attention of `layers` skipped (identity attention).")
    Params: ClassVar[type[StgParams]] = StgParams
    branch_names = ("skip",)

    def check(self, setup: RunSetup) -> None:
        if not setup.attention_hooks:
            raise ConfigError(self.name, f"{setup.backbone} does not route self-attention through inertia's hooks, "
                                         "so no layer can be skipped")
        setup.check_layers(f"{self.name}.layers", self.params.layers)
        super().check(setup)

    def branch(self) -> Branch:
        return Branch(self.branch_names[0], skip_attention=frozenset(self.params.layers))

    def weight(self) -> float:
        return self.params.scale

    def window(self) -> tuple[int, int | None]:
        return self.params.start_step, self.params.end_step
