"""The Gradio layout of `inertia ui`: a "Compare" tab (a baseline and an intervention run side by side,
the guidance schedule they apply, their metrics) and a "Load sweep" tab. Only wiring lives here; what
the widgets do is in the other modules of the package.

The app never reaches the internet: analytics and the version check are off, no share link, no
web fonts (the browser uses system fonts), no server-side rendering process. One generation job
runs at a time (the queue's concurrency is one for everything that loads a model); closing the page
stops a job between its runs, and the run path writes each run atomically, its record last.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.config import PluginSpec
from ..core.errors import InertiaError
from ..core.params import parse_value
from ..registry import Registry, default_registry
from ..run import ModelCache
from .compare import Request, metric_table, plan_pair, record_path, run_or_reuse
from .controls import Control, InterventionForms, spec_text
from .media import preview_video, record_copy, thumbnails
from .schedule import first_section, planned_schedule, schedule_figure
from .sweep_view import open_sweep

#: The backbone the form starts on: the test bed runs on a CPU in seconds with no downloads.
DEFAULT_BACKBONE = "testbed"
#: Metrics ticked when the form opens, where installed (the test bed's ground-truth physics).
DEFAULT_METRICS = ("physics",)
#: Everything that loads a model shares this queue slot.
GPU_QUEUE = "generation"


def _gradio():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check
    import gradio

    return gradio


def _widget(gr, control: Control):
    common = dict(label=control.label, info=control.info or None)
    if control.kind == "slider":
        return gr.Slider(control.minimum, control.maximum, value=control.value, step=control.step, **common)
    if control.kind == "number":
        return gr.Number(value=control.value, precision=0 if control.integer else None, **common)
    if control.kind == "dropdown":
        return gr.Dropdown(choices=list(control.choices), value=control.value, **common)
    if control.kind == "checkbox":
        return gr.Checkbox(value=control.value, **common)
    return gr.Textbox(value=control.value, placeholder="default" if not control.required else "required", **common)


def _typed(text: str | None) -> Any:
    """A text box's value read as the command line reads one (`5` an int, `4.5` a float); None when empty."""
    text = (text or "").strip()
    return parse_value(text) if text else None


def _error(error: Exception) -> str:
    """The message the CLI prints for the same input."""
    return "error: " + str(error).replace("\n", " ")


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
            return _error(error)
        return f"ok: `{request.command_line()}`"

    def schedule(self, *form):
        request = self.request(*form)
        pair = plan_pair(request, self.registry)
        points = planned_schedule(pair.treated, first_section(pair.treated, self.models))
        names = " + ".join(spec_text(spec) for spec in request.interventions)
        return schedule_figure(points, f"{request.backbone}: {names}")

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
            return None, None, _error(error), []
        missing = [f"{r.condition}: {r.status}" for r in (run, baseline) if r.video is None]
        line = f"not complete: {', '.join(missing)}" if missing else f"{run.run_dir} vs {baseline.run_dir}"
        return (self.shown(run.video)[0], self.shown(baseline.video)[0], line,
                metric_table(baseline.record or {}, run.record or {}))

    def shown(self, video: Path | None) -> tuple[str | None, str | None]:
        if video is None:
            return None, None
        return str(preview_video(video, self.cache)), str(thumbnails(video, self.cache))


def build_app(registry: Registry | None = None, out_dir: Path = Path("outputs")):
    """The Gradio Blocks of the app (not launched)."""
    gr = _gradio()
    session = Session(registry or default_registry(), out_dir)
    backbones, metrics = list(session.registry.backbones), list(session.registry.metrics)
    with gr.Blocks(title="inertia", analytics_enabled=False) as app:
        gr.Markdown("## inertia: interventions side by side")
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=2):
                    backbone = gr.Dropdown(backbones, value=DEFAULT_BACKBONE if DEFAULT_BACKBONE in backbones else backbones[0],
                                           label="backbone")
                    model = gr.Textbox(label="model", placeholder="built-in default, or a hub id / local checkpoint directory")
                    about = gr.Markdown(session.about(backbone.value))
                    prompt = gr.Textbox(label="prompt", placeholder=session.default_prompt(backbone.value))
                    image = gr.Image(type="filepath", label="conditioning image (image-to-video; the test bed renders "
                                                            "one from the prompt without it)", height=160)
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="seed")
                        # text boxes: empty is the backbone's default (a number box would send 0)
                        steps = gr.Textbox(label="steps", placeholder="default", elem_id="steps")
                        guidance = gr.Textbox(label="guidance scale", placeholder="default")
                    metric = gr.Dropdown(metrics, value=[m for m in DEFAULT_METRICS if m in metrics], multiselect=True,
                                         label="metrics")
                    out = gr.Textbox(str(session.out_dir), label="output directory")
                with gr.Column(scale=3):
                    chosen = gr.Dropdown(list(session.forms.forms), value=[], multiselect=True,
                                         label="interventions (applied in the order chosen)", elem_id="interventions")
                    groups, widgets = [], []
                    for name, controls in session.forms.forms.items():
                        plugin = session.registry.interventions.get(name)
                        with gr.Group(visible=False, elem_id=f"params-{name}") as group:
                            gr.Markdown(f"**{name}**: {plugin.description}")
                            widgets.extend(_widget(gr, control) for control in controls)
                        groups.append(group)
                    check = gr.Markdown("add an intervention", elem_id="check")
                    with gr.Row():
                        plan_button = gr.Button("Preview schedule")
                        run_button = gr.Button("Run side by side", variant="primary", elem_id="run")
            plot = gr.Plot(label="guidance schedule (the interventions' scales solid, the base dashed)", elem_id="schedule")
            status = gr.Markdown(elem_id="status")
            with gr.Row():
                sides = []
                for side in ("baseline", "intervention"):
                    with gr.Column():
                        sides.append((gr.Video(label=side, autoplay=True, loop=True, height=320, elem_id=f"video-{side}"),
                                      gr.Image(label=f"{side}: frames", height=80),
                                      gr.File(label=f"{side}: run record")))
            table = gr.Dataframe(headers=["metric", "baseline", "intervention", "difference"], label="metrics",
                                 elem_id="metrics")

        form = [backbone, model, prompt, image, seed, steps, guidance, metric, out, chosen, *widgets]

        def show_groups(names):
            return [gr.update(visible=name in (names or [])) for name in session.forms.forms]

        chosen.change(show_groups, chosen, groups, concurrency_limit=None)
        backbone.change(lambda name: (session.about(name), gr.update(placeholder=session.default_prompt(name))),
                        backbone, [about, prompt], concurrency_limit=None)
        for widget in form:
            widget.change(session.check, form, check, concurrency_limit=None)

        def preview(*values):
            try:
                return session.schedule(*values), ""
            except (InertiaError, ValueError) as error:
                return None, _error(error)

        plan_button.click(preview, form, [plot, status], concurrency_id=GPU_QUEUE, concurrency_limit=1)

        def run(*values, progress=gr.Progress(track_tqdm=True)) -> Iterator[list[Any]]:
            empty = [None] * 7
            try:
                request = session.request(*values)
                pair = plan_pair(request, session.registry)
                figure = session.schedule(*values)
            except (InertiaError, ValueError) as error:
                yield [None, _error(error), *empty]
                return
            yield [figure, "running the baseline", *empty]
            results = []
            for label, plan in (("baseline", pair.baseline), ("intervention", pair.treated)):
                try:
                    result, generated = run_or_reuse(plan, session.models)
                except InertiaError as error:
                    yield [figure, _error(error), *empty]
                    return
                results.append((result, generated))
                if label == "baseline":
                    yield [figure, "running the intervention", *empty]
            shown = []
            for result, _ in results:
                shown.extend([*session.shown(result.video), str(record_copy(record_path(result), session.cache))])
            done = ", ".join(f"{r.run_dir}{'' if new else ' (already complete: read back)'}" for r, new in results)
            yield [figure, f"done: {done}", *shown, metric_table(results[0][0].record, results[1][0].record)]

        outputs = [plot, status, *[c for side in sides for c in side], table]
        run_button.click(run, form, outputs, concurrency_id=GPU_QUEUE, concurrency_limit=1)

        with gr.Tab("Load sweep"):
            _sweep_tab(gr, session)
    return app


def _sweep_tab(gr, session: Session) -> None:
    """Open a sweep directory, pick a cell, play its run against the baseline run of the same prompt and seed."""
    with gr.Row():
        directory = gr.Textbox(label="sweep directory (holds results.sqlite)", scale=4)
        open_button = gr.Button("Open", scale=1)
    with gr.Row():
        backbone = gr.Dropdown([], label="backbone")
        condition = gr.Dropdown([], label="condition")
        prompt = gr.Dropdown([], label="prompt")
        seed = gr.Dropdown([], label="seed")
    message = gr.Markdown()
    with gr.Row():
        videos = [gr.Video(label=side, autoplay=True, loop=True, height=320) for side in ("condition", "baseline")]
    table = gr.Dataframe(headers=["metric", "baseline", "condition", "difference"], label="metrics")

    def opened(path):
        try:
            backbones, conditions, prompts, seeds, summary = session.open_sweep(path)
        except InertiaError as error:
            return [gr.update()] * 4 + [_error(error)]
        first = lambda items: items[0] if items else None  # noqa: E731
        return [gr.update(choices=backbones, value=first(backbones)),
                gr.update(choices=conditions, value=first(conditions)),
                gr.update(choices=prompts, value=first([key for _, key in prompts])),
                gr.update(choices=seeds, value=first(seeds)), summary]

    open_button.click(opened, directory, [backbone, condition, prompt, seed, message], concurrency_limit=None)
    for widget in (backbone, condition, prompt, seed):
        widget.change(session.sweep_pair, [directory, backbone, condition, prompt, seed], [*videos, message, table],
                      concurrency_limit=None)


def launch(host: str = "127.0.0.1", port: int = 7860, out_dir: Path = Path("outputs"), block: bool = True):
    """Start the app on `host:port` (never a public share link); with `block`, serve until interrupted,
    else return the running app (its `local_url`; `close()` stops it)."""
    gr = _gradio()
    app = build_app(out_dir=out_dir)
    app.queue(default_concurrency_limit=1)
    system_fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                     font_mono=["ui-monospace", "monospace"])  # no web fonts to fetch
    app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, prevent_thread_lock=not block,
               quiet=not block, footer_links=[], theme=system_fonts)
    return app
