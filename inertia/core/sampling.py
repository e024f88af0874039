"""The sampling loop: owns the denoising steps and applies interventions at each one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from .attention import AttentionHooks, check_layer_range
from .backbone import Backbone, Section
from .combination import CONDITIONAL_ONLY, NO_BRANCHES, Branch
from .context import StepContext
from .errors import NonFiniteLatentsError
from .history import HistoryHooks
from .intervention import InterventionStack


@dataclass(frozen=True)
class StepRecord:
    """What actually happened at one step: the noise level, every guidance scale used, the rule
    that combined the predictions ("cond" when the conditional prediction was used alone), for a
    checkpoint with several experts the one that predicted, in a run with history transforms
    the ones that changed the context latents the model was fed (`context`), and in a run whose rule
    guides with extra branches the ones run at this step (`branches`, `core.combination.Branch`);
    `context` and `branches` are None, and left out of `to_dict`, in runs without them."""

    section: int
    step: int
    timestep: float
    sigma: float
    guidance: dict[str, float]
    combine: str
    expert: str | None = None
    context: list[str] | None = None
    branches: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for optional in ("context", "branches"):
            if record[optional] is None:
                del record[optional]
        return record


@contextmanager
def branch_active(branch: Branch, hooks: AttentionHooks | None, history: HistoryHooks | None) -> Iterator[None]:
    """`branch`'s modification switched on in the run's hooks for the duration (one forward)."""
    if (branch.skip_attention and hooks is None) or (branch.context is not None and history is None):
        raise RuntimeError(f"branch {branch.name!r} needs the run's attention and history hooks")
    if hooks is not None:
        # checked before loading where the count could be read (`RunSetup.check_layers`)
        check_layer_range("layers", branch.skip_attention, hooks.num_layers, f" for the {branch.name} branch")
        hooks.skip = branch.skip_attention
    if history is not None:
        history.branch = branch.context
    try:
        yield
    finally:
        if hooks is not None:
            hooks.skip = frozenset()
        if history is not None:
            history.branch = None


def step_context(section: Section, step: int, stack: InterventionStack, guidance: Mapping[str, float],
                 expert_guidance: Mapping[str, Mapping[str, float]] | None = None) -> StepContext:
    """What the interventions see at `step` of `section`: the step's sigma, its base guidance scales
    (those of the step's expert where the section names one) and the run's envelope. The loop and
    every preview of a run's schedule (`inertia ui`) build it here, so they cannot disagree."""
    sigma = section.sigmas[step]
    expert = None if section.experts is None else section.experts[step]
    return StepContext(
        step=step,
        num_steps=len(section.timesteps),
        timestep=float(section.timesteps[step]),
        sigma=sigma,
        guidance=guidance if expert is None else expert_guidance[expert],
        envelope=stack.envelope(sigma),
        section=section.index,
        num_sections=section.count,
    )


def sample(
    backbone: Backbone,
    job: Any,
    stack: InterventionStack,
    guidance: Mapping[str, float],
    total_steps: int | None = None,
    progress: bool = True,
    hooks: AttentionHooks | None = None,
    history: HistoryHooks | None = None,
    expert_guidance: Mapping[str, Mapping[str, float]] | None = None,
    first_step_note: str | None = None,
    first_step_done: Callable[[], None] | None = None,
) -> list[StepRecord]:
    """Denoise every section of `job` in place and return the per-step trace.

    `first_step_note`: what the progress bar says until the first step is done (a compiled model's first
    step compiles, for 5-23 s on an H200, with the bar at 0); `first_step_done` is called once it is done
    (`core.performance.CompileClock` counts the graphs compiled after it).

    A step's base guidance scales (`StepContext.guidance`) are `guidance`, or, when its section
    names the expert that predicts it, that expert's scales in `expert_guidance`
    (`RunSetup.expert_guidance`).

    With `hooks`, the loop keeps them told of the current section's token layout and step, so
    the backbone's attention processors can apply the run's q/k/v transforms; with `history`, of
    the step, so a backbone can apply the run's history transforms to its context latents.

    At each step the schedules set the guidance scales, then the run's combination rule
    (`core.combination`; classifier-free guidance by default) says whether the unconditional
    branch is needed and combines the predictions: under CFG a scale of exactly 1 costs one
    forward and equals the conditional output. A rule that guides with extra branches declares
    them per step; each runs as the conditional forward with its modification active in `hooks`
    and `history` (`branch_active`), after the conditional and unconditional ones.
    """
    trace: list[StepRecord] = []
    rule = stack.rule
    traces_branches = bool(rule.branch_names)
    with tqdm(total=total_steps, desc=f"{backbone.name} sampling", unit="step", disable=not progress,
              postfix=first_step_note) as bar:
        for section in backbone.sections(job):
            if hooks is not None:
                hooks.layout = backbone.token_layout(job, section)
            for step, timestep in enumerate(section.timesteps):
                ctx = step_context(section, step, stack, guidance, expert_guidance)
                sigma = ctx.sigma
                expert = None if section.experts is None else section.experts[step]
                if hooks is not None:
                    hooks.step = ctx
                if history is not None:
                    history.step = ctx
                scales = stack.guidance(ctx)
                cfg = scales.get("cfg")
                cond, uncond = backbone.predict(job, section, step, scales, uncond=rule.needs_uncond(cfg, ctx))
                branches = NO_BRANCHES
                for branch in rule.branches(cfg, ctx):
                    with branch_active(branch, hooks, history):
                        branches = {**branches, branch.name: backbone.predict(job, section, step, scales, uncond=False)[0]}
                prediction = rule.combine(cond, uncond, cfg, ctx, branches)
                section.latents = backbone.scheduler_step(job, section, step, prediction)
                if not torch.isfinite(section.latents).all():
                    where = f"step {step}" + (f" of section {section.index}" if section.count > 1 else "")
                    raise NonFiniteLatentsError(f"latents became NaN/Inf at {where} (sigma {sigma:.4f}); run stopped")
                combined = CONDITIONAL_ONLY if uncond is None and not branches else rule.name
                context = list(history.acted) if history is not None and history.transforms else None
                trace.append(StepRecord(section.index, step, float(timestep), sigma, dict(scales), combined, expert,
                                        context, list(branches) if traces_branches else None))
                if len(trace) == 1:
                    if first_step_note:
                        bar.set_postfix_str("", refresh=False)
                    if first_step_done is not None:
                        first_step_done()
                bar.update()
    return trace
