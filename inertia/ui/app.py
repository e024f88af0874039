"""The Gradio layout of `inertia ui`: a "Compare" tab (a baseline and an intervention run side by side,
the guidance schedule they apply, their metrics) and a "Load sweep" tab. Only layout and wiring live
here; what the widgets do is `session.Session`.

The app never reaches the internet: analytics and the version check are off, no share link, no
web fonts (the browser uses system fonts), no server-side rendering process. One generation job
runs at a time (the queue's concurrency is one for everything that loads a model). A comparison is
a generator with one stage per run, so a job stopped when its page closes stops between runs; and
the run path writes each file atomically, the record last: no half-written run either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import InertiaError
from ..registry import Registry, default_registry
from .controls import Control
from .session import Session, error_line

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
                                                            "one from the prompt without it)", height=160,
                                     format="png")  # lossless for pasted images (uploads pass unchanged); webp is lossy
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

        plan_button.click(session.preview, form, [plot, status], concurrency_id=GPU_QUEUE, concurrency_limit=1)

        def run(*values, progress=gr.Progress(track_tqdm=True)) -> Iterator[list[Any]]:
            yield from session.compare(*values)  # the progress bar follows the sampling loop's tqdm bars

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
            return [gr.update()] * 4 + [error_line(error)]
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
