"""The guidance schedule a planned run will apply, computed before it runs by the loop's own code.

The sigmas come from the backbone itself (loaded through the run's model cache, the job prepared
as the run prepares it, its first section read without denoising), and every step's scales from
`core.sampling.step_context` and `InterventionStack.guidance`, as in `core.sampling.sample`; so
the plot shows what the run's trace will record, not a re-derivation of the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.backbone import Section
from ..core.sampling import step_context
from ..run import ModelCache, PlannedRun


@dataclass(frozen=True)
class SchedulePoint:
    """One step: its noise level, the base scales, the scales the interventions set, the envelope."""

    step: int
    sigma: float
    base: dict[str, float]
    scales: dict[str, float]
    envelope: float | None


def first_section(plan: PlannedRun, models: ModelCache) -> Section:
    """The run's first section (its sigmas, timesteps and experts), prepared as the run prepares it;
    nothing is denoised. A section-by-section model repeats this schedule in every section."""
    backbone = models.get(plan.backbone, plan.config)
    with torch.inference_mode():
        job = backbone.prepare(plan.config, torch.Generator("cpu").manual_seed(plan.config.seed))
        sections = backbone.sections(job)
        try:
            return next(sections)
        finally:
            sections.close()


def planned_schedule(plan: PlannedRun, section: Section) -> list[SchedulePoint]:
    """Every step's scales in `section` under the plan's interventions."""
    points = []
    for step in range(len(section.timesteps)):
        ctx = step_context(section, step, plan.stack, plan.setup.guidance, plan.setup.expert_guidance)
        points.append(SchedulePoint(step, ctx.sigma, dict(ctx.guidance), plan.stack.guidance(ctx), ctx.envelope))
    return points


def schedule_figure(points: list[SchedulePoint], title: str):
    """Each guidance scale against step (left) and sigma (right, falling as denoising goes on): the
    interventions' scales solid, the base scales dashed, the envelope e(sigma) dotted on its own axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    targets = list(dict.fromkeys(key for point in points for key in point.scales))
    for ax, x, label in ((axes[0], [p.step for p in points], "step"), (axes[1], [p.sigma for p in points], "sigma")):
        for index, target in enumerate(targets):
            colour = f"C{index}"
            ax.plot(x, [p.scales.get(target, float("nan")) for p in points], "o-", color=colour, markersize=3,
                    label=f"{target} (interventions)")
            ax.plot(x, [p.base.get(target, float("nan")) for p in points], "--", color=colour, label=f"{target} (base)")
        if any(p.envelope is not None for p in points):
            twin = ax.twinx()
            twin.plot(x, [p.envelope for p in points], ":", color="grey", label="e(sigma)")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("e(sigma)", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("guidance scale")
        ax.grid(alpha=0.3)
    axes[1].invert_xaxis()
    axes[0].legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.07, right=0.93, bottom=0.16, top=0.86, wspace=0.35)
    return figure
