"""Which trained test-bed model ships, and at which default CFG scale (`python -m inertia.testbed.choose`).

The rule is written down here, not applied by hand, so that a model card's "why this model, why
this scale" is a rerunnable command over the held-out evaluations (`inertia testbed evaluate
--json`). The targets are issue 19's: static death inside 20-50%, ball intact >= 95%, correct and
intact >= 50%, all at the default scale.

- **Default scale of one model**: among the evaluated scales above 1 (at 1 true CFG is off, so no
  guidance intervention could act), those whose static death lies in the band, the one with the
  most correct-and-intact motion; if none is in the band, the scale whose static death is nearest it.
- **Model**: the candidate meeting the most targets at its default scale; ties go to the higher
  correct-and-intact rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import InertiaError
from .commands import run_command

STATIC_DEATH_BAND = (0.2, 0.5)
MIN_INTACT = 0.95
MIN_CORRECT_AND_INTACT = 0.5


def band_distance(static_death: float) -> float:
    """How far a static-death rate lies outside the target band (0 inside it)."""
    low, high = STATIC_DEATH_BAND
    return max(low - static_death, static_death - high, 0.0)


def targets_met(overall: dict[str, Any]) -> int:
    """How many of the three targets one evaluated scale meets."""
    return (
        int(band_distance(overall["static_death_rate"]) == 0.0)
        + int(overall["integrity_ok_rate"] >= MIN_INTACT)
        + int(overall["correct_and_intact_rate"] >= MIN_CORRECT_AND_INTACT)
    )


def default_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation row (one guidance scale) that becomes the model's default."""
    guided = [r for r in results if r["guidance_scale"] > 1]
    if not guided:
        raise InertiaError("the evaluation has no guidance scale above 1 (CFG off at 1): evaluate with --guidance 1.25,1.5,...")
    return min(guided, key=lambda r: (band_distance(r["overall"]["static_death_rate"]),
                                      -r["overall"]["correct_and_intact_rate"]))


def choose(evaluations: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The candidate to ship (its name) and its default row, from each candidate's evaluation rows."""
    if not evaluations:
        raise InertiaError("no evaluations to choose from")
    defaults = {name: default_result(results) for name, results in evaluations.items()}
    name = max(defaults, key=lambda n: (targets_met(defaults[n]["overall"]), defaults[n]["overall"]["correct_and_intact_rate"]))
    return name, defaults[name]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("evaluations", nargs="+", type=Path, help="heldout_eval.json files (`inertia testbed evaluate --json`)")


def command(args: argparse.Namespace) -> int:
    evaluations = {}
    for path in args.evaluations:
        try:
            evaluations[str(path)] = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError) as error:
            raise InertiaError(f"{path}: not a held-out evaluation ({error})") from None
    chosen, row = choose(evaluations)
    for name, results in evaluations.items():
        default = default_result(results)
        r = default["overall"]
        print(f"{name}: CFG {default['guidance_scale']}: static death {r['static_death_rate']:.3f}, "
              f"intact {r['integrity_ok_rate']:.3f}, correct and intact {r['correct_and_intact_rate']:.3f}, "
              f"{targets_met(r)}/3 targets", file=sys.stderr)
    print(f"{chosen} {row['guidance_scale']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("python -m inertia.testbed.choose", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
