"""`inertia sweep FILE` and `inertia report DIR` (wired into `inertia.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a cross-model ablation sweep from a YAML file (resumable)",
        description="Expand a sweep file into runs, show the plan, and run what is not complete yet. "
                    "Killed at any point, the same command resumes. See docs/sweeps.md.")
    sweep.add_argument("file", type=Path, metavar="FILE", help="sweep file (YAML)")
    sweep.add_argument("--out", type=Path, default=None, help="sweep directory (default: the file's `out`, else outputs/sweeps/NAME)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: this process (default); ray: one actor per GPU on a Ray cluster (pip install 'inertia[ray]')")
    sweep.add_argument("--dry-run", action="store_true", help="validate and show the plan; run nothing")
    sweep.add_argument("--skip-unsupported", action="store_true",
                       help="run the rest when a backbone cannot run a condition, listing it as not run (default: error)")
    sweep.add_argument("--workers", type=int, default=None, help="ray: number of actors (default: one per GPU, else per CPU; more than the GPUs share them)")
    sweep.add_argument("--ray-address", default=None, help="ray: cluster address (default: $RAY_ADDRESS, else a local cluster)")
    sweep.add_argument("--retries", type=int, default=None, help="extra attempts for a failed run (default: the file's retries, 2)")
    sweep.add_argument("--batch-size", type=int, default=None,
                       help="runs sampled as one batch where the backbone can batch (the test bed; default: the file's "
                            "batch_size, 1)")
    sweep.add_argument("--shard", default=None, metavar="K/N",
                       help="run only shard K of N (0-based): N processes or cluster jobs share one sweep directory "
                            "without Ray; give every shard the same --batch-size")
    sweep.add_argument("--threads", type=int, default=None,
                       help="local: torch CPU threads (default: torch's choice; 1 is often fastest for tiny models on a busy CPU)")
    sweep.add_argument("--quiet", action="store_true", help="print only the plan and the summary")

    report = commands.add_parser(
        "report", help="write Markdown and self-contained HTML reports of a sweep directory",
        description="Statistics (bootstrap CIs, paired differences vs the baseline), plots and thumbnails of a sweep.")
    report.add_argument("dir", type=Path, metavar="DIR", help="sweep directory (holds results.sqlite)")
    report.add_argument("--out", type=Path, default=None, help="report directory (default: DIR/report)")
    report.add_argument("--value", action="append", default=None, metavar="KEY.VALUE",
                        help="metric value to report, repeatable (e.g. motion.mean_magnitude); default: the sweep file's "
                             "report.values, else every value that varies")


#: Count flags of `inertia sweep` and the least value each takes (--batch-size: the driver checks it
#: against the file's batch_size).
COUNT_FLAGS = {"retries": 0, "workers": 1, "threads": 1}


def check_counts(args: argparse.Namespace) -> None:
    """Refuse a negative --retries (or --workers, --threads below 1) before anything is read."""
    from ..core.errors import ConfigError

    for name, least in COUNT_FLAGS.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise ConfigError(name, f"must be at least {least}, got {value}")


def command_sweep(args: argparse.Namespace) -> int:
    from .driver import Shard, run_sweep

    check_counts(args)
    shard = Shard.parse(args.shard) if args.shard is not None else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        result = run_sweep(args.file, out=args.out, executor=args.executor, dry_run=args.dry_run,
                           skip_unsupported=True if args.skip_unsupported else None, workers=args.workers,
                           address=args.ray_address, retries=args.retries, stream=sys.stdout, progress=not args.quiet,
                           batch_size=args.batch_size, shard=shard)
    except KeyboardInterrupt:
        print("interrupted: complete runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    if not result.dry_run:
        print(f"report: inertia report {result.plan.out}")
    return 0 if result.ok else 1


def command_report(args: argparse.Namespace) -> int:
    from .report import write_report

    files = write_report(args.dir, args.out, args.value)
    print(f"markdown: {files.markdown}")
    print(f"html:     {files.html}")
    print(f"tables:   {files.conditions_csv}, {files.paired_csv}")
    print(f"{len(files.metrics)} metric values, {files.images} images")
    return 0
