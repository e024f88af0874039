"""The intervention contract, and how several interventions compose into one run.

An intervention is a class registered through the `inertia_interventions` hook. It overrides
only the hooks it needs; each is called by the sampling loop at a fixed point:

* `check(setup)`: before any model loads. Raise `ConfigError` when the intervention cannot
  change anything in this run, or cannot run on this backbone. Never a silent no-op.
* `envelope(sigma)`: provide e(sigma), the fade-out shape other interventions scale their
  strength by (only `decay` does this; at most one provider per run).
* `guidance(ctx, scales)`: return the guidance scales for this step, given those set so far.
* `needs_uncond(scale, ctx)`, `branches(scale, ctx)` and `combine(cond, uncond, scale, ctx, branches)`:
  replace how the conditional and unconditional predictions are combined, optionally with extra
  perturbed forwards (branches) the rule declares per step (at most one rule per run;
  `PredictionCombiner`). The schedules run first, so the rule combines at the scale they set
  (`core.combination`).
* `transform_qkv(q, k, v, call)`: transform one self-attention call's queries, keys and values
  (after position embeddings, right before the attention backend); see `core.attention`.
* `attention_bias(q, k, call)`: an additive logit bias for one self-attention call, or None
  (`core.attention.AttentionBias`; refuse `BIAS_REFUSING_ATTENTION` backends in `check`).
* `transform_history(latents_by_block, ctx)`: transform the clean context latents a backbone feeds
  its model at this step: history blocks (FramePack) and the conditioning image of image-to-video
  runs, each block with its role; `setup.history_blocks` says before loading which a run hands
  over. See `core.history` for what it receives and must return.

The flags `uses_envelope`, `provides_envelope`, `combines_predictions`, `transforms_attention`, `biases_attention`
and `transforms_history`
say which hooks the run must call; an intervention may make the last two properties of its
parameters (e.g. unlearn transforms attention or history depending on its `target`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import Field

from .combination import CFG, NEUTRAL_SCALE, NO_BRANCHES, Branch, CombinationRule
from .context import StepContext
from .errors import ConfigError
from .params import Params
from .plugin import Plugin
from .setup import RunSetup

GuidanceTarget = Literal["auto", "cfg", "embedded"]


class Intervention(Plugin):
    """Base class for intervention plugins."""

    #: True when the intervention's strength follows the envelope e(sigma) (e.g. relax, boost).
    uses_envelope: ClassVar[bool] = False
    #: True when the intervention defines e(sigma) through `envelope` (e.g. decay).
    provides_envelope: ClassVar[bool] = False
    #: True when the intervention combines the predictions itself (`needs_uncond`/`combine`).
    combines_predictions: ClassVar[bool] = False
    #: True when the intervention transforms self-attention q/k/v through `transform_qkv`.
    transforms_attention: ClassVar[bool] = False
    #: True when the intervention transforms context latents (history, conditioning image) through `transform_history`.
    transforms_history: ClassVar[bool] = False
    #: True when the intervention adds a logit bias to self-attention through `attention_bias`.
    biases_attention: ClassVar[bool] = False

    def check(self, setup: RunSetup) -> None:
        """Raise ConfigError if this intervention cannot act in the run `setup` describes."""

    def envelope(self, sigma: float) -> float | None:
        """e(sigma) for the other interventions, or None when this one does not shape it."""
        return None

    def guidance_target(self, setup: RunSetup) -> str | None:
        """The guidance scale this intervention schedules, or None if it schedules none."""
        return None

    def transform_qkv(self, query, key, value, call):
        """Transform post-position-embedding q, k, v (batch, sequence, heads, head_dim) of one
        self-attention call; `call` gives the layer, the token layout and the step."""
        return query, key, value

    def attention_bias(self, query, key, call):
        """An additive logit bias for one self-attention call (`core.attention.AttentionBias`), or None."""
        return None

    def transform_history(self, latents_by_block, ctx):
        """Transform the context latents, by block name (`core.history.HistoryBlocks`: with roles and
        seeds), that the backbone feeds its model at the step `ctx`; the default leaves them as they are."""
        return latents_by_block

    def guidance(self, ctx: StepContext, scales: dict[str, float]) -> dict[str, float]:
        """The guidance scales to use at this step."""
        return scales


class GuidanceParams(Params):
    target: GuidanceTarget = Field(
        "auto", description="guidance scale to schedule: cfg (true CFG), embedded (distilled), auto = backbone default"
    )


class GuidanceSchedule(Intervention):
    """An intervention that replaces one guidance scale by a function of its base value and the step.

    Subclasses implement `scale(base, ctx)` and `unchangeable(base)`; target resolution, the
    "cannot change anything" check and writing the scale are shared here.

    The base is the scale in force at the step. Where a run turns true CFG off, that is 1 (the
    conditional prediction alone, `NEUTRAL_SCALE`): a schedule that moves it from 1 at some step (boost,
    relax toward s_min < 1, a constant other than 1) changes the video, and the loop then runs the
    unconditional forward at exactly those steps. A run without an embedded scale has no base for it.
    """

    Params: ClassVar[type[GuidanceParams]] = GuidanceParams
    uses_envelope = True

    def guidance_target(self, setup: RunSetup) -> str:
        target = self.params.target
        return setup.default_guidance_target if target == "auto" else target

    def check(self, setup: RunSetup) -> None:
        target = self.guidance_target(setup)
        field = f"{self.name}.target"
        if target not in setup.guidance_targets:
            raise ConfigError(
                field, f"{setup.backbone} has no {target!r} guidance; allowed: {', '.join(setup.guidance_targets)}"
            )
        sets = setup.guidance_sets  # one per expert of a checkpoint with several
        off = any(target not in base for base in sets)
        if off and target not in OFF_SCALES:
            raise ConfigError(
                field,
                f"{target} guidance is off in this run ({_off_reason(target, setup)}), so {self.name} cannot change anything",
            )
        reasons = [self.unchangeable(base_scale(base, target)) for base in sets]
        if all(reasons):
            if off:
                reasons.insert(0, f"{target} guidance is off in this run ({_off_reason(target, setup)}), so its scale in "
                                  f"force is {OFF_SCALES[target]:g}")
            raise ConfigError(self.name, f"cannot change anything: {'; '.join(dict.fromkeys(reasons))}")

    def unchangeable(self, base: float) -> str | None:
        """Why this schedule would leave a base scale unchanged at every step, or None."""
        return None

    def scale(self, base: float, ctx: StepContext) -> float:
        raise NotImplementedError

    def guidance(self, ctx: StepContext, scales: dict[str, float]) -> dict[str, float]:
        target = self._target
        return {**scales, target: self.scale(base_scale(ctx.guidance, target), ctx)}

    def bind(self, setup: RunSetup) -> None:
        """Fix the resolved target for the run (called once the setup is checked)."""
        self._target = self.guidance_target(setup)


#: The scale in force of a guidance a run turns off, by target: true CFG off is the conditional prediction
#: alone, as at a scale of 1. An embedded (distilled) scale has no "off" value, so a schedule of it needs one.
OFF_SCALES = {"cfg": NEUTRAL_SCALE}


def base_scale(guidance: Mapping[str, float], target: str) -> float:
    """The base scale of `target` among a step's (or an expert's) `guidance` in force, or its off scale."""
    return guidance[target] if target in guidance else OFF_SCALES[target]


def _off_reason(target: str, setup: RunSetup) -> str:
    if target == "cfg":
        return setup.cfg_off_reason
    return "the run sets no embedded guidance scale"


class PredictionCombiner(Intervention):
    """An intervention that replaces classifier-free guidance's combination of the conditional and
    unconditional predictions (the scale still comes from the schedules); it needs true CFG.

    Subclasses implement `combine`; `needs_uncond` defaults to CFG's rule (not at a scale of 1). A
    rule that guides with extra forwards names them in `branch_names` and declares them per step
    in `branches` (`core.combination.Branch`).
    """

    combines_predictions = True
    branch_names: ClassVar[tuple[str, ...]] = ()

    def check(self, setup: RunSetup) -> None:
        """Refuses a backbone without true CFG; a run that turns it off is refused by `InterventionStack`
        unless a schedule of it moves its scale from 1 at some steps (the combiner then acts there)."""
        if "cfg" not in setup.guidance_targets:
            raise ConfigError(self.name, f"combines true-CFG predictions, and {setup.backbone} has no true CFG")

    def needs_uncond(self, scale: float | None, ctx: StepContext) -> bool:
        return CFG.needs_uncond(scale, ctx)

    def branches(self, scale: float | None, ctx: StepContext) -> tuple[Branch, ...]:
        return ()

    def combine(self, cond, uncond, scale: float | None, ctx: StepContext,
                branches: Mapping[str, torch.Tensor] = NO_BRANCHES):
        raise NotImplementedError


class InterventionStack:
    """The interventions of one run, checked for conflicts and applied in the order given."""

    def __init__(self, interventions: list[Intervention], setup: RunSetup):
        self.interventions = list(interventions)
        for intervention in self.interventions:
            intervention.check(setup)
        self._check_composition(setup)
        for intervention in self.interventions:
            if isinstance(intervention, GuidanceSchedule):
                intervention.bind(setup)
        self._envelope = next((i for i in self.interventions if i.provides_envelope), None)
        #: The rule that combines each step's predictions: the run's combiner, else classifier-free guidance.
        self.rule: CombinationRule = next((i for i in self.interventions if i.combines_predictions), CFG)

    def _check_composition(self, setup: RunSetup) -> None:
        names = [i.name for i in self.interventions]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            raise ConfigError("interventions", f"{twice} is given twice; give each intervention once, with all its parameters")
        combiners = [i.name for i in self.interventions if i.combines_predictions]
        if len(combiners) > 1:
            raise ConfigError("interventions", f"{' and '.join(combiners)} both combine the predictions (use one)")
        providers = [i.name for i in self.interventions if i.provides_envelope]
        if len(providers) > 1:
            raise ConfigError("interventions", f"conflicting envelopes: {' and '.join(providers)} (use one)")
        if providers and not any(i.uses_envelope for i in self.interventions):
            raise ConfigError(
                providers[0],
                "shapes how another intervention fades over denoising, but none is given "
                "(combine it with relax, boost or unlearn)",
            )
        owners: dict[str, str] = {}
        for intervention in self.interventions:
            target = intervention.guidance_target(setup)
            if target is None:
                continue
            if target in owners:
                raise ConfigError(
                    "interventions",
                    f"{owners[target]} and {intervention.name} both schedule the {target} guidance (use one)",
                )
            owners[target] = intervention.name
        combiner = next((i for i in self.interventions if i.combines_predictions), None)
        if (combiner is not None and not combiner.branch_names and "cfg" not in owners
                and not any("cfg" in base for base in setup.guidance_sets)):
            raise ConfigError(combiner.name, f"true CFG is off in this run ({_off_reason('cfg', setup)}), so {combiner.name} "
                                             "has no predictions to combine (unless a schedule moves its scale from 1)")

    def envelope(self, sigma: float) -> float | None:
        """e(sigma) of the run's envelope provider, or None when no intervention provides one."""
        return None if self._envelope is None else self._envelope.envelope(sigma)

    @property
    def attention_transforms(self) -> list["Intervention"]:
        return [i for i in self.interventions if i.transforms_attention]

    @property
    def attention_biases(self) -> list["Intervention"]:
        return [i for i in self.interventions if i.biases_attention]

    @property
    def history_transforms(self) -> list["Intervention"]:
        return [i for i in self.interventions if i.transforms_history]

    def guidance(self, ctx: StepContext) -> dict[str, float]:
        scales = dict(ctx.guidance)
        for intervention in self.interventions:
            scales = intervention.guidance(ctx, scales)
        return scales
