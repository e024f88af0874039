"""Command line: `inertia run`, `inertia score`, `inertia plugins`, `inertia testbed`, `inertia sweep`, `inertia report`, `inertia ui`.

User mistakes print one line (`error: field: what is allowed`) and exit with status 2, before
any model loads; a fault during a run (NaN latents, a full disk, a plugin or inertia itself raising)
prints one line and exits with status 3. No Python traceback is shown unless `--debug` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.config import ATTENTION_BACKENDS, PluginSpec, build_config, load_config_file
from .core.errors import DecodedShapeError, InertiaError, NonFiniteLatentsError, WriteFault, one_line
from .core.io import check_output_dir
from .core.runtime import quiet_libraries

#: CLI flag -> RunConfig field, for every flag that sets a config field.
RUN_FLAGS: dict[str, tuple[str, type, str]] = {
    "--backbone": ("backbone", str, "backbone plugin (see `inertia plugins`)"),
    "--model": ("model", str, "hub id or local checkpoint directory (default: built-in smoke-test model)"),
    "--prompt": ("prompt", str, "text prompt"),
    "--negative-prompt": ("negative_prompt", str, "negative prompt"),
    "--image": ("image", Path, "conditioning image: image-to-video"),
    "--height": ("height", int, "frame height in pixels"),
    "--width": ("width", int, "frame width in pixels"),
    "--frames": ("num_frames", int, "number of frames"),
    "--steps": ("steps", int, "denoising steps"),
    "--seed": ("seed", int, "random seed"),
    "--guidance": ("guidance_scale", float, "true classifier-free guidance scale"),
    "--guidance-2": ("guidance_scale_2", float, "Wan 2.2 A14B: the low-noise expert's CFG scale (default: --guidance)"),
    "--embedded-guidance": ("embedded_guidance_scale", float, "embedded (distilled) guidance scale"),
    "--window": ("latent_window_size", int, "FramePack: latent frames per section (default: the checkpoint's)"),
    "--history-frames": ("history_frames", int, "history mode: continue a previous clip from its last N frames "
                                                "(test bed models trained for it)"),
    "--fps": ("fps", int, "frame rate of the written video"),
    "--dtype": ("dtype", str, "auto, float32, bfloat16, float16"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
    "--attention": ("attention", str, f"attention backend: {', '.join(ATTENTION_BACKENDS)}"),
    "--attention-kernel": ("attention_kernel", str, "auto, backend, fa4 or cudnn_fp8 (FlashAttention-4, or cuDNN's "
                                                    "approximate FP8 attention, for the calls it can take; auto: under "
                                                    "--performance where measured fastest, cudnn_fp8 only under float8)"),
    "--performance": ("performance", str, "fast (compiled blocks, measured attention backend) or float8 "
                                          "(fast + float8 linears, CUDA); see docs/performance.md"),
    "--offload": ("offload", str, "model (whole components on the GPU only while they run) or group (the transformer's "
                                  "blocks streamed through the GPU): 13-14B models on 24-48 GB; see docs/performance.md"),
    "--vae-tiling": ("vae_tiling", str, "auto, on, off: decode the VAE in spatial tiles (less memory; auto: the "
                                        "backbone's default, on with --offload)"),
    "--context-parallel": ("context_parallel", int, "processes sharing one video: start with torchrun --nproc-per-node N "
                                                    "(Ulysses context parallelism; wan; docs/distributed.md)"),
    "--out": ("out_dir", Path, "output directory (default: outputs)"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a missing argument, `--seed x`, an unknown flag) as the CLI's one line
    `error: ...` with exit status 2, instead of the usage text and a second line; subcommands inherit it."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="inertia", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of any error")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="generate one video with interventions")
    run.add_argument("--config", type=Path, help="YAML/JSON run config; flags override its fields")
    for flag, (_, kind, text) in RUN_FLAGS.items():
        run.add_argument(flag, type=kind, default=None, help=text)
    run.add_argument(
        "--intervention", action="append", default=None, metavar="NAME[:key=value,...]",
        help="intervention, repeatable (e.g. relax:beta=0.75 decay:p=0.7); replaces the config file's list",
    )
    run.add_argument(
        "--metric", action="append", default=None, metavar="NAME[:key=value,...]",
        help="metric scored on the written video, repeatable (e.g. motion, action:labels=somersaulting); "
             "replaces the config file's list",
    )
    run.add_argument("--allow-pickled-weights", action="store_true", default=None,
                     help="also load pickled weights (.bin, .pt), which can run code: only for files you trust")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    score = commands.add_parser("score", help="score existing videos with metrics (appends to a run's record.json)")
    score.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files (e.g. outputs/*/video.mp4)")
    score.add_argument("--metric", action="append", default=None, metavar="NAME[:key=value,...]",
                       help="metric, repeatable (see `inertia plugins`)")
    score.add_argument("--prompt", default=None, help="prompt the video was made from (default: the run record's prompt)")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: a GPU when there is one)")
    score.add_argument("--out", type=Path, default=None,
                       help="directory for new records of videos that have no run record (default: beside each video)")

    _add_testbed_commands(commands)
    _add_sweep_commands(commands)

    plugins = commands.add_parser("plugins", help="list backbones, interventions and metrics with their parameters")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    ui = commands.add_parser("ui", help="web app: try interventions side by side, view a sweep (needs inertia[ui])")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    ui.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    ui.add_argument("--out", type=Path, default=Path("outputs"), help="default output directory of its runs")
    _accept_debug_after_commands(parser)
    return parser


def _accept_debug_after_commands(parser: argparse.ArgumentParser) -> None:
    """`--debug` also after a (sub)command (`inertia run ... --debug`); there it only sets the flag
    (SUPPRESS: a subcommand's default would overwrite a `--debug` given before it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show the Python traceback of any error")
                _accept_debug_after_commands(command)


def _add_testbed_commands(commands) -> None:
    """`inertia testbed train|evaluate|attention|set-defaults`: the test-bed model's training and evaluation."""
    from .testbed import attention_probe
    from .testbed import evaluate as testbed_evaluate
    from .testbed import train as testbed_train

    testbed = commands.add_parser("testbed", help="train and evaluate the test-bed model (synthetic ball physics)")
    actions = testbed.add_subparsers(dest="testbed_command", required=True)
    train = actions.add_parser("train", help="train the test-bed model (flow matching on simulator clips)",
                               description=testbed_train.__doc__.split("\n\n")[0])
    testbed_train.add_arguments(train)
    evaluate = actions.add_parser("evaluate", help="held-out static-death rate of a trained test-bed model",
                                  description=testbed_evaluate.__doc__.split("\n\n")[0])
    testbed_evaluate.add_arguments(evaluate)
    attention = actions.add_parser("attention", help="generated frames' attention to the first frame, static vs moving",
                                   description=attention_probe.__doc__.split("\n\n")[0])
    attention_probe.add_arguments(attention)
    defaults = actions.add_parser("set-defaults", help="set the sampling defaults a trained test-bed model declares")
    testbed_train.add_defaults_arguments(defaults)


def command_testbed(args: argparse.Namespace) -> int:
    from .testbed import attention_probe
    from .testbed import evaluate as testbed_evaluate
    from .testbed import train as testbed_train

    return {
        "train": testbed_train.command,
        "evaluate": testbed_evaluate.command,
        "attention": attention_probe.command,
        "set-defaults": testbed_train.defaults_command,
    }[args.testbed_command](args)


def _add_sweep_commands(commands) -> None:
    """`inertia sweep FILE` and `inertia report DIR` (inertia/sweep/cli.py)."""
    from .sweep.cli import add_commands

    add_commands(commands)


def _sweep_commands() -> dict:
    from .sweep.cli import command_report, command_sweep

    return {"sweep": command_sweep, "report": command_report}


def config_from_args(args: argparse.Namespace):
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for flag, (field, _, _) in RUN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            values[field] = value
    if args.allow_pickled_weights:
        values["allow_pickled_weights"] = True
    if args.intervention is not None:
        values["interventions"] = [PluginSpec.parse(text) for text in args.intervention]
    if args.metric is not None:
        values["metrics"] = [PluginSpec.parse(text) for text in args.metric]
    return build_config(values)


def command_run(args: argparse.Namespace) -> int:
    from .run import execute, plan_run

    plan = plan_run(config_from_args(args))
    check_output_dir("out_dir", plan.run_dir)
    result = execute(plan, progress=not args.quiet)
    record = result.record
    if not record:  # a rank other than 0 of a run split across processes: rank 0 writes and reports
        return 0
    print(f"video:  {result.video}")
    print(f"record: {result.run_dir / 'record.json'}")
    print(f"{record['backbone']} {record['model']}: {record['video']['frames']} frames "
          f"{record['video']['height']}x{record['video']['width']}, {len(record['trace'])} steps, "
          f"{record['wall_time_s']['total']:.1f} s; interventions: {', '.join(record['interventions']) or 'none'}")
    if record["smoke_test"]:
        print(f"note: {record['notice']}")
    if record.get("metrics"):
        from .scoring import format_entries

        for line in format_entries(record["metrics"]):
            print(f"metric  {line}")
    return 0


def command_score(args: argparse.Namespace) -> int:
    from .scoring import format_entries, score_videos

    def report(target, entries) -> None:
        print(f"{target.video} -> {target.record_path}")
        for line in format_entries(entries):
            print(f"  {line}")

    specs = [PluginSpec.parse(text) for text in args.metric or []]
    score_videos(args.videos, specs, prompt=args.prompt, device=args.device, out_dir=args.out, on_scored=report)
    return 0


def command_plugins(args: argparse.Namespace) -> int:
    from .plugin_listing import describe_registry, format_listing
    from .registry import default_registry

    listing = describe_registry(default_registry())
    print(json.dumps(listing, indent=2, default=str) if args.json else format_listing(listing))
    return 0


def command_ui(args: argparse.Namespace) -> int:
    try:
        from .ui.app import launch
    except ImportError as error:
        raise InertiaError(f"ui: {error.name} is not installed; install it with pip install 'inertia[ui]'") from None
    launch(args.host, args.port, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()  # before the parser imports the plugins: their imports log optional-dependency warnings
    args = build_parser().parse_args(argv)
    try:
        commands = {"run": command_run, "score": command_score, "plugins": command_plugins, "testbed": command_testbed,
                    "ui": command_ui}
        commands.update(_sweep_commands())
        return commands[args.command](args)
    except (NonFiniteLatentsError, DecodedShapeError, WriteFault) as error:
        return _report(args, error, one_line(error), 3)
    except InertiaError as error:
        return _report(args, error, one_line(error), 2)
    except Exception as error:
        from .registry import culprit, default_registry

        blamed = culprit(default_registry(), error.__traceback__)
        cause = f"{type(error).__name__}: {one_line(error)}"
        if blamed is not None:
            return _report(args, error, f"{blamed} raised {cause}", 3)
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        return _report(args, error, f"internal error: {cause}{hint}", 3)


def _report(args: argparse.Namespace, error: Exception, line: str, code: int) -> int:
    """Print `error: line` (after the traceback with --debug) and return the exit status `code`."""
    if args.debug:
        traceback.print_exception(error)
    print(f"error: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
