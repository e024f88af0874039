"""What the app's widgets do, without Gradio: read the form into a `compare.Request`, check it as the
CLI would, preview the schedule, run a comparison stage by stage, open a sweep. One `Session` serves
every browser tab: it holds the registry, the one loaded model (`ModelCache(max_models=1)`) and the
cache of browser previews.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.config import PluginSpec
from ..core.errors import InertiaError
from ..core.params import parse_value
from ..registry import Registry
from ..run import ModelCache
from .compare import Request, metric_table, plan_pair, record_path, run_or_reuse
from .controls import InterventionForms, spec_text
from .media import preview_video, record_copy, thumbnails
from .schedule import first_section, planned_schedule, schedule_figure
from .sweep_view import open_sweep


def _typed(text: str | None) -> Any:
    """A text box's value read as the command line reads one (`5` an int, `4.5` a float); None when empty."""
    text = (text or "").strip()
    return parse_value(text) if text else None


def error_line(error: Exception) -> str:
    """The line the CLI prints for the same input (`cli.one_line`: line breaks in a quoted name escaped)."""
    return "error: " + str(error).replace("\r", "\\r").replace("\n", "\\n")


class Session:
    """The app's state shared by all browser sessions: the registry, the loaded model, the preview cache."""

    def __init__(self, registry: Registry, out_dir: Path):
        self.registry = registry
        self.out_dir = Path(out_dir)
        self.forms = InterventionForms.of(registry.interventions.plugins)
        self.models = ModelCache(max_models=1)
        self.cache = Path(tempfile.mkdtemp(prefix="inertia-ui-"))

    def request(self, backbone, model, prompt, image, seed, steps, guidance, metrics, out_dir, chosen,
                *values) -> Request:
        return Request(
            backbone=backbone, model=(model or "").strip() or None, prompt=(prompt or "").strip() or None,
            image=Path(image) if image else None, seed=int(seed or 0), steps=_typed(steps), guidance_scale=_typed(guidance),
            interventions=self.forms.specs(list(chosen or []), list(values)),
            metrics=[PluginSpec(name=name) for name in metrics or []], out_dir=Path(out_dir or self.out_dir),
        )

    def check(self, *form) -> str:
        """The equivalent command line, or the error the CLI would give; nothing loads."""
        try:
            request = self.request(*form)
            plan_pair(request, self.registry)
        except (InertiaError, ValueError) as error:
            return error_line(error)
        return f"ok: `{request.command_line()}`"

    def schedule(self, *form):
        """The figure of the guidance schedule the form's intervention run will apply (loads the model)."""
        request = self.request(*form)
        pair = plan_pair(request, self.registry)
        points = planned_schedule(pair.treated, first_section(pair.treated, self.models))
        names = " + ".join(spec_text(spec) for spec in request.interventions)
        return schedule_figure(points, f"{request.backbone}: {names}")

    def preview(self, *form) -> tuple[Any, str]:
        """The schedule figure and no message, or no figure and the error."""
        try:
            return self.schedule(*form), ""
        except (InertiaError, ValueError) as error:
            return None, error_line(error)

    def compare(self, *form) -> Iterator[list[Any]]:
        """Run the baseline and the intervention; yields the outputs after each stage: [figure, status,
        then per side preview video, frame strip, record copy, then the metric table]."""
        empty = [None] * 7
        try:
            pair = plan_pair(self.request(*form), self.registry)
            figure = self.schedule(*form)
        except (InertiaError, ValueError) as error:
            yield [None, error_line(error), *empty]
            return
        results = []
        for label, plan in (("baseline", pair.baseline), ("intervention", pair.treated)):
            yield [figure, f"running the {label}", *empty]
            try:
                results.append(run_or_reuse(plan, self.models))
            except InertiaError as error:
                yield [figure, error_line(error), *empty]
                return
        shown = []
        for result, _ in results:
            shown.extend([*self.shown(result.video), str(record_copy(record_path(result), self.cache))])
        done = ", ".join(f"{r.run_dir}{'' if new else ' (already complete: read back)'}" for r, new in results)
        yield [figure, f"done: {done}", *shown, metric_table(results[0][0].record, results[1][0].record)]

    def about(self, backbone: str) -> str:
        return self.registry.backbones.get(backbone).description

    def default_prompt(self, backbone: str) -> str:
        return f"default: {self.registry.backbones.get(backbone).default_prompt}"

    def open_sweep(self, path: str) -> tuple[list, list, list, list, str]:
        """A sweep directory's choices (backbones, conditions, (label, id) of prompts, seeds) and a summary."""
        index = open_sweep(Path(path))
        prompts = [(f"{key}: {text}", key) for key, text in index.prompts.items()]
        summary = f"{index.data.name}: {len(index.data.complete)} complete runs of {len(index.data.runs)}"
        return index.backbones, index.conditions, prompts, index.seeds, summary

    def sweep_pair(self, path, backbone, condition, prompt_id, seed) -> tuple[str | None, str | None, str, list]:
        """Playable copies of a sweep cell's run and its baseline, a line about them, their metric table."""
        try:
            run, baseline = open_sweep(Path(path)).pair(backbone, condition, prompt_id, int(seed))
        except (InertiaError, TypeError, ValueError) as error:
            return None, None, error_line(error), []
        missing = [f"{r.condition}: {r.status}" for r in (run, baseline) if r.video is None]
        line = f"not complete: {', '.join(missing)}" if missing else f"{run.run_dir} vs {baseline.run_dir}"
        playable = [None if r.video is None else str(preview_video(r.video, self.cache)) for r in (run, baseline)]
        return (*playable, line,
                metric_table(baseline.record or {}, run.record or {}))

    def shown(self, video: Path | None) -> tuple[str | None, str | None]:
        if video is None:
            return None, None
        return str(preview_video(video, self.cache)), str(thumbnails(video, self.cache))
