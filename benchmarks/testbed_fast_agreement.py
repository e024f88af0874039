"""Does `--performance` change the test bed's answer? Static-death rate with and without fast mode.

The held-out evaluation of the shipped test-bed model (`inertia.testbed.evaluate`: every single-ball
motion prompt x `--seeds` run seeds, each video parsed against the simulator's truth) is generated at
each performance level (`default` = eager, `fast`, and on CUDA `float8`) for a few conditions of
`examples/testbed_ablation.yaml`, and the levels are compared with the eager one. `--attention-kernel`
names the attention kernel of the compared levels as `inertia run --attention-kernel` does (default `auto`:
the one the level chooses); the reference level stays eager with the attention backend, so e.g.
`--levels default,float8 --attention-kernel cudnn_fp8` measures float8 with cuDNN's FP8 attention against
eager bf16. A level whose kernel cannot run here is skipped with the reason; each level's entry states the
kernel, why, and the calls it ran (its `performance` record).

Statistics. Every level generates the same items: the same (prompt, seed) pairs, so the same first
frame, command and initial noise. The comparison is therefore paired: the difference of static-death
rates is the mean of the per-item differences (fast - default: +1, 0 or -1), and its 95% interval is a
percentile bootstrap of that mean over items (or, with `--ci-by seed`, whole run seeds). Pairing takes
out the item-to-item spread (which prompt, which noise) that makes up each rate's own interval, so a
change in a few videos shows up instead of hiding inside two overlapping intervals; two unpaired rates
could differ by most of an interval's width with no video changed. Reported per condition and level:
each rate with its 95% interval, the paired difference with its interval, the discordant items (dead
at one level only), whether they agree (the paired interval contains 0 and the level's rate lies
inside the eager rate's interval), and the distribution over videos of the largest absolute pixel
difference (uint8 levels) from the eager video. The same for correct-and-intact.

    PYTHONPATH=. python benchmarks/testbed_fast_agreement.py --seeds 1 --device cpu \\
        --json benchmarks/results/testbed_fast_agreement_cpu.json
    PYTHONPATH=. python benchmarks/testbed_fast_agreement.py --seeds 32 --device cuda --batch-size 176 \\
        --conditions baseline,relax,boost,unlearn --json testbed_fast_agreement_h200.json
    PYTHONPATH=. python benchmarks/testbed_fast_agreement.py --seeds 32 --device cuda --batch-size 176 \\
        --levels default,float8 --attention-kernel cudnn_fp8 --json testbed_cudnn_fp8_h200.json

The JSON is rewritten after every (condition, level), so a killed run keeps what it finished.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence, get_args

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from inertia.core import performance  # noqa: E402
from inertia.core.config import AttentionKernel  # noqa: E402
from inertia.core.errors import ConfigError  # noqa: E402
from inertia.core.io import write_json  # noqa: E402
from inertia.core.records import device_description, package_versions, utc_now  # noqa: E402
from inertia.core.runtime import quiet_libraries  # noqa: E402
from inertia.testbed.checkpoint import DEFAULT_MODEL, model_path  # noqa: E402
from inertia.testbed.data import heldout_items  # noqa: E402
from inertia.testbed.evaluate import Bootstrap, evaluate, holdout_of  # noqa: E402
from inertia.testbed.stats import cluster_bootstrap_ci  # noqa: E402

#: Conditions of examples/testbed_ablation.yaml (same names as its report's rows).
CONDITIONS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "relax": ("relax:beta=0.75", "decay:p=0.7"),
    "boost": ("boost:b=0.5",),
    "unlearn": ("unlearn:sigma_blur=1.3",),
}
#: The reference level first; None = eager (no performance option).
LEVELS: dict[str, str | None] = {"default": None, "fast": "fast", "float8": "float8"}
#: Outcomes compared item by item.
OUTCOMES = ("static_death", "correct_and_intact")
#: Upper edges (uint8 levels) of the histogram of per-video largest pixel differences.
DIFF_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 255)


def paired(reference: list[dict[str, Any]], other: list[dict[str, Any]], outcome: str,
           bootstrap: Bootstrap) -> dict[str, Any]:
    """The paired difference (other - reference) of one outcome's rate over the same items, in order."""
    if [(r["prompt"], r["seed"]) for r in reference] != [(r["prompt"], r["seed"]) for r in other]:
        raise ValueError("paired comparison needs the same items in the same order")
    a = np.array([bool(r[outcome]) for r in reference], dtype=float)
    b = np.array([bool(r[outcome]) for r in other], dtype=float)
    clusters = list(range(len(a))) if bootstrap.by == "item" else [r["seed"] for r in reference]
    (low, high), = cluster_bootstrap_ci((b - a)[:, None], np.ones((len(a), 1)), clusters, bootstrap.resamples)
    interval = None if np.isnan(low) else [float(low), float(high)]
    return {"difference": float((b - a).mean()), "difference_ci": interval,
            "discordant": {"reference_only": int(((a == 1) & (b == 0)).sum()),
                           "level_only": int(((a == 0) & (b == 1)).sum())}}


def agreement(reference: dict[str, Any], other: dict[str, Any], difference: dict[str, Any], outcome: str) -> bool:
    """Agree: the paired interval contains 0 and the level's rate lies inside the reference's interval."""
    ci, ref_ci = difference["difference_ci"], reference[f"{outcome}_rate_ci"]
    paired_ok = ci is None and difference["difference"] == 0 or ci is not None and ci[0] <= 0 <= ci[1]
    rate = other[f"{outcome}_rate"]
    return bool(paired_ok and (ref_ci is None or ref_ci[0] <= rate <= ref_ci[1]))


def video_differences(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """Per video, the largest and the mean absolute difference in uint8 levels: their distribution."""
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16)).reshape(len(reference), -1)
    largest, mean = diff.max(axis=1), diff.mean(axis=1)
    upper = np.searchsorted(DIFF_EDGES, largest)  # bin i: DIFF_EDGES[i-1] < largest <= DIFF_EDGES[i]
    labels = ["0"] + [f"{lo + 1}-{hi}" if hi > lo + 1 else str(hi) for lo, hi in zip(DIFF_EDGES, DIFF_EDGES[1:])]
    q = np.quantile(largest, [0.5, 0.9, 0.99])
    return {"videos": len(largest), "identical": int((largest == 0).sum()), "max_abs_per_video": largest.tolist(),
            "max_abs": {"median": float(q[0]), "q90": float(q[1]), "q99": float(q[2]), "max": int(largest.max())},
            "max_abs_histogram": {label: int((upper == i).sum()) for i, label in enumerate(labels)},
            "mean_abs": {"median": float(np.median(mean)), "max": float(mean.max())}}


def level_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Rates with intervals, and each item's outcomes as a 0/1 string (items in the report's order), so
    other statistics (a bootstrap by seed, McNemar) can be computed from the JSON alone."""
    overall = result["overall"]
    keys = [f"{o}_{k}" for o in OUTCOMES for k in ("rate", "rate_ci", "count")]
    return {"n": overall["n"], **{k: overall[k] for k in keys}, "seconds": result["seconds"],
            **({"performance": result["performance"]} if "performance" in result else {}),
            "items": {o: "".join("1" if row[o] else "0" for row in result["rows"]) for o in OUTCOMES}}


def kernel_of(args: argparse.Namespace, level: str) -> str:
    """The attention kernel a level runs with: `--attention-kernel` at the compared levels, "auto" (eager: the
    backend) at the reference."""
    return "auto" if level == args.levels[0] else args.attention_kernel


def measure(args: argparse.Namespace, report: dict[str, Any], progress) -> None:
    """Fill report["conditions"], writing the JSON after every (condition, level)."""
    items = heldout_items(args.seeds, holdout_of(model_path(args.model)), args.first_seed)
    bootstrap = Bootstrap(args.bootstrap, args.ci_by)
    report.update(items=len(items), seeds=sorted({i.seed for i in items}), bootstrap=bootstrap.to_dict(),
                  item_order="seed-major: each seed's 44 prompts in `data.motion_commands` order (`data.heldout_items`)")
    for name in args.conditions:
        entry: dict[str, Any] = {"interventions": list(CONDITIONS[name]), "levels": {}, "paired": {}}
        report["conditions"][name] = entry
        reference = None
        for level in args.levels:
            started = time.perf_counter()
            try:
                evaluation = evaluate(args.model, items=items, guidance_scales=[args.guidance], steps=args.steps,
                                      interventions=CONDITIONS[name], device=args.device, dtype=args.dtype,
                                      performance=LEVELS[level], attention_kernel=kernel_of(args, level),
                                      batch_size=args.batch_size, keep_videos=True, bootstrap=bootstrap)
            except ConfigError as error:  # float8 off CUDA or without torchao, a kernel that cannot run: recorded,
                # the rest still runs
                if reference is None:
                    raise
                entry["levels"][level] = {"skipped": str(error)}
                progress(f"{name} {level}: skipped ({error})")
                continue
            (result,) = evaluation["results"]
            report.update(device=evaluation["device"], dtype=evaluation["dtype"],
                          guidance_scale=result["guidance_scale"], steps=result["steps"])
            entry["levels"][level] = level_summary(result)
            if reference is None:
                reference = result
            else:
                comparison = {}
                for outcome in OUTCOMES:
                    difference = paired(reference["rows"], result["rows"], outcome, bootstrap)
                    difference["agree"] = agreement(reference["overall"], result["overall"], difference, outcome)
                    comparison[outcome] = difference
                comparison["video_difference"] = video_differences(reference["videos"], result["videos"])
                entry["paired"][level] = comparison
            if args.json:
                write_json(args.json, report)
            progress(f"{name} {level}: static death {result['overall']['static_death_rate']:.4f} "
                     f"({time.perf_counter() - started:.1f} s)")


def _percent(rate: float, ci: list[float] | None) -> str:
    return f"{rate * 100:.1f}%" + (f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else "")


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['items']} held-out items (seeds {report['seeds'][0]}..{report['seeds'][-1]}) on "
             f"{report['device']} {report['dtype']}, guidance {report['guidance_scale']:g}, {report['steps']} steps"
             + (f"; attention kernel {report['attention_kernel']} at the compared levels"
                if report.get("attention_kernel", "auto") != "auto" else ""),
             f"{'condition':<10} {'level':<8} {'static death':<22} {'paired diff (points)':<24} {'discordant':<11} "
             f"{'agree':<6} {'identical':<10} max |diff| median/q90/max"]
    for name, entry in report["conditions"].items():
        for level, summary in entry["levels"].items():
            if "skipped" in summary:
                lines.append(f"{name:<10} {level:<8} skipped: {summary['skipped']}")
                continue
            line = f"{name:<10} {level:<8} {_percent(summary['static_death_rate'], summary['static_death_rate_ci']):<22}"
            if level in entry["paired"]:
                comparison = entry["paired"][level]
                sd, video = comparison["static_death"], comparison["video_difference"]
                ci = sd["difference_ci"]
                diff = f"{sd['difference'] * 100:+.2f}" + (f" [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]" if ci else "")
                discordant = f"{sd['discordant']['reference_only']}/{sd['discordant']['level_only']}"
                m = video["max_abs"]
                line += (f" {diff:<24} {discordant:<11} {'yes' if sd['agree'] else 'NO':<6} "
                         f"{video['identical']}/{video['videos']:<6} {m['median']:g}/{m['q90']:g}/{m['max']}")
            lines.append(line)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="run seeds, each with all 44 held-out prompts (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto (float32 on the CPU, bfloat16 on CUDA), float32, bfloat16")
    p.add_argument("--conditions", default="baseline",
                   help=f"comma-separated, of {', '.join(CONDITIONS)} (default %(default)s)")
    p.add_argument("--levels", default=None,
                   help="comma-separated, of default, fast, float8; default first (default: default,fast on the CPU, "
                        "default,fast,float8 on CUDA)")
    p.add_argument("--attention-kernel", default="auto", choices=get_args(AttentionKernel),
                   help="attention kernel of the compared levels, as `inertia run --attention-kernel` (default "
                        "%(default)s); the default level stays eager with the attention backend")
    p.add_argument("--model", default=DEFAULT_MODEL, help="test-bed checkpoint (default: the shipped weights)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the fast levels (default %(default)s; eager: the CPU test)")
    p.add_argument("--batch-size", type=int, default=44, help="videos per batched forward (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--ci-by", choices=("item", "seed"), default="item")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = sorted(set(args.conditions) - set(CONDITIONS))
    if unknown or not args.conditions:
        p.error(f"--conditions: unknown {', '.join(unknown) or '(none given)'}; allowed: {', '.join(CONDITIONS)}")
    default_levels = "default,fast,float8" if args.device.startswith("cuda") else "default,fast"
    args.levels = [level.strip() for level in (args.levels or default_levels).split(",") if level.strip()]
    if args.levels[0] != "default" or not set(args.levels) <= set(LEVELS) or len(args.levels) < 2:
        p.error(f"--levels: default first, then at least one of fast, float8; got {','.join(args.levels)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"command": " ".join(["python", "benchmarks/testbed_fast_agreement.py", *(argv or sys.argv[1:])]),
                              "created": utc_now(), "model": args.model, "device_name": device_description(args.device)["name"],
                              "versions": package_versions(), "compile_backend": args.compile_backend,
                              "attention_kernel": args.attention_kernel, "conditions": {}}
    started = time.perf_counter()
    quiet_libraries()
    backend, performance.COMPILE_BACKEND = performance.COMPILE_BACKEND, args.compile_backend
    try:
        measure(args, report, lambda text: print(text, file=sys.stderr, flush=True))
    finally:
        performance.COMPILE_BACKEND = backend
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        write_json(args.json, report)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
