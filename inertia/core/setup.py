"""What is known about a run before any model loads: the resolved config and its guidance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .attention import Role, check_layer_range
from .config import RunConfig

#: Why true CFG is off in a run of the true-CFG pipelines' rule (`Backbone.cfg_off_reason`).
CFG_OFF_REASON = "guidance_scale <= 1 runs no unconditional pass"


@dataclass(frozen=True)
class RunSetup:
    """A resolved config together with the backbone facts interventions check themselves against.

    `guidance` maps each guidance target in force to its base scale (a target is absent when
    the run turns it off, e.g. Wan with guidance_scale <= 1 runs no unconditional pass (`cfg_off_reason`); a `cfg` schedule then
    starts from 1, the conditional prediction alone: `core.intervention.OFF_SCALES`).
    `expert_guidance` holds each expert's base scales when the checkpoint hands denoising from one
    model to another during the run (Wan 2.2 A14B: "high_noise", then "low_noise"); a step then
    takes the scales of the expert that predicts it, and `guidance` is the first expert's.
    `default_guidance_target` is the target a schedule drives when it does not name one.
    `token_roles` are the roles of the video tokens in the run's self-attention;
    `attention_hooks` says whether the backbone routes self-attention through inertia's hook, and
    `history_hooks` whether it hands the clean context latents it feeds its model to the run's history
    transforms, and `history_blocks` which blocks this run hands over, by name and role ("history" or
    "condition"), in hand-over order (`core.history`): empty for a text-to-video run without history.
    `cfg_off_reason` says, in the backbone's exact terms, why true CFG is off where `guidance` has no "cfg".
    `attention_layers` is how many self-attention layers the hooks number in the run's checkpoint, read from
    its transformer config before loading (`Backbone.attention_layers`); None where it cannot be read then.
    """

    config: RunConfig
    backbone: str
    guidance: Mapping[str, float]
    default_guidance_target: str
    guidance_targets: tuple[str, ...]
    token_roles: frozenset[Role] = frozenset({"noisy"})
    attention_hooks: bool = False
    history_hooks: bool = False
    history_blocks: Mapping[str, Role] = field(default_factory=dict)
    expert_guidance: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    attention_layers: int | None = None
    cfg_off_reason: str = CFG_OFF_REASON

    def check_layers(self, field: str, layers: Iterable[int] | None) -> None:
        """ConfigError naming `field` when some of `layers` is not an attention layer of the run's model, before
        loading; where `attention_layers` is unknown (an uncached hub id), the hooks check at the first forward."""
        if self.attention_layers is not None:
            check_layer_range(field, layers, self.attention_layers)

    @property
    def guidance_sets(self) -> tuple[Mapping[str, float], ...]:
        """The base scales a step of this run can have: each expert's, or the run's `guidance`."""
        return tuple(self.expert_guidance.values()) or (self.guidance,)
