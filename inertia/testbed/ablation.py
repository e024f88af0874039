"""The test-bed ablation: every condition of the seed's design on the same held-out items.

Each condition generates all held-out motion prompts x seeds (paired: the same first frames and
noise for every condition), scores them with the physics analysis, and reports per condition the
static-death rate and velocity error with 95% bootstrap confidence intervals (10,000 resamples
of items, fixed seed) and the paired difference against the baseline.

    python -m inertia.testbed.ablation --seeds 32 --out docs/testbed/ablation
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import numpy as np

#: The seed's ablation design (issue 7): label -> interventions.
CONDITIONS: dict[str, list[str]] = {
    "baseline": [],
    "boost b=0.5": ["boost:b=0.5"],
    "boost b=1.0": ["boost:b=1.0"],
    "relax beta=0.25 p=0.7": ["relax:beta=0.25", "decay:p=0.7"],
    "relax beta=0.5 p=0.7": ["relax:beta=0.5", "decay:p=0.7"],
    "relax beta=0.75 p=0.7": ["relax:beta=0.75", "decay:p=0.7"],
    "relax beta=1.0 p=0.7": ["relax:beta=1.0", "decay:p=0.7"],
    "relax beta=0.75 p=1.0": ["relax:beta=0.75", "decay:p=1.0"],
    "relax beta=0.75 p=2.1": ["relax:beta=0.75", "decay:p=2.1"],
    "unlearn sigma=0.6": ["unlearn:sigma_blur=0.6"],
    "unlearn sigma=1.3": ["unlearn:sigma_blur=1.3"],
    "unlearn 0.6 + relax 0.75 p=0.7": ["unlearn:sigma_blur=0.6", "relax:beta=0.75", "decay:p=0.7"],
    "unlearn 1.3 + relax 0.75 p=0.7": ["unlearn:sigma_blur=1.3", "relax:beta=0.75", "decay:p=0.7"],
}
RESAMPLES = 10_000


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(rows: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, Any]:
    death = np.array([float(r["static_death"]) for r in rows])
    base = np.array([float(r["static_death"]) for r in baseline])
    velocity = np.array([r["velocity_error"] for r in rows if r["velocity_error"] is not None], dtype=float)
    direction = np.array([float(r["direction_correct"]) for r in rows])
    return {
        "n": len(rows),
        "static_death": float(death.mean()), "static_death_ci": bootstrap_ci(death),
        "static_death_diff": float((death - base).mean()), "static_death_diff_ci": bootstrap_ci(death - base),
        "direction_correct": float(direction.mean()), "direction_correct_ci": bootstrap_ci(direction),
        "velocity_error": float(velocity.mean()), "velocity_error_ci": bootstrap_ci(velocity),
        "velocity_n": len(velocity),
    }


def markdown(summary: dict[str, dict[str, Any]], command: str) -> str:
    pct = lambda x: f"{100 * x:.1f}%"
    ci = lambda pair, f: f"[{f(pair[0])}, {f(pair[1])}]"
    lines = [
        "| condition | n | static death [95% CI] | vs baseline (paired) [95% CI] | direction correct [95% CI] | velocity error px/frame [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['n']} | {pct(s['static_death'])} {ci(s['static_death_ci'], pct)} | "
            f"{100 * s['static_death_diff']:+.1f} pts {ci(s['static_death_diff_ci'], lambda x: f'{100 * x:+.1f}')} | "
            f"{pct(s['direction_correct'])} {ci(s['direction_correct_ci'], pct)} | "
            f"{s['velocity_error']:.2f} {ci(s['velocity_error_ci'], lambda x: f'{x:.2f}')} |"
        )
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def main(argv: Sequence[str] | None = None) -> int:
    from ..core.io import atomic_write_text, write_json
    from .evaluate import evaluate

    parser = argparse.ArgumentParser(prog="python -m inertia.testbed.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="trained checkpoint (default: the shipped weights)")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per held-out motion prompt (default %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", required=True, help="directory for ablation.json and ablation.md")
    args = parser.parse_args(argv)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, interventions in CONDITIONS.items():
        report = evaluate(args.model, num_seeds=args.seeds, interventions=interventions, device=args.device,
                          batch_size=args.batch_size)
        rows[name] = report["results"][0]["rows"]
        print(f"{name}: {report['results'][0]['overall']['static_death_rate']:.3f} static death "
              f"({report['results'][0]['seconds']} s)", file=sys.stderr, flush=True)
    summary = {name: summarise(r, rows["baseline"]) for name, r in rows.items()}
    command = "python -m inertia.testbed.ablation " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(f"{args.out}/ablation.json", {"command": command, "summary": summary})
    write_json(f"{args.out}/ablation_rows.json", rows)
    atomic_write_text(__import__("pathlib").Path(args.out) / "ablation.md", markdown(summary, command))
    print(markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
