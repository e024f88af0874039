"""Does a test-bed sweep's condition reproduce the held-out evaluation, value for value?

    python scripts/compare_with_evaluation.py docs/testbed/ablation docs/testbed/heldout_eval.json.gz \
        [--condition baseline] [--guidance 1.1]

The sweep scores each written video (`values.csv.gz` beside its report, rows keyed by prompt id and seed)
and `inertia testbed evaluate` the frames in memory (rows keyed by prompt text and seed); both cover the
same items, so for each value the count of items that differ says whether the two runs are the same
computation. Outcomes (0/1) are compared exactly, errors within 1e-9; the items whose outcome flips are
listed. Prompt ids come from examples/testbed_prompts.yaml.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script's reader of values.csv.gz
from ablation_table import read_values  # noqa: E402

OUTCOMES = ("static_death", "direction_correct", "moved", "integrity_ok", "correct_and_intact")
ERRORS = ("velocity_error", "position_error")
PROMPTS = Path(__file__).resolve().parents[1] / "examples" / "testbed_prompts.yaml"


def sweep_values(report: Path, condition: str) -> dict[tuple[str, int], dict[str, float]]:
    """(prompt id, seed) -> {value name: value} of one condition (a value left empty is absent)."""
    items: dict[tuple[str, int], dict[str, float]] = {}
    for (name, value_name), values in read_values(report / "values.csv.gz").items():
        if name == condition:
            for item, value in values.items():
                items.setdefault(item, {})[value_name] = value
    return items


def evaluation_rows(path: Path, guidance: float | None) -> list[dict]:
    """The per-item rows of the evaluation at `guidance` (the only scale when None)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        results = json.load(f)["results"]
    if guidance is None:
        if len(results) != 1:
            raise SystemExit(f"{path} holds scales {[r['guidance_scale'] for r in results]}: pick one with --guidance")
        return results[0]["rows"]
    for result in results:
        if abs(result["guidance_scale"] - guidance) < 1e-9:
            return result["rows"]
    raise SystemExit(f"no scale {guidance} in {path}; it holds {[r['guidance_scale'] for r in results]}")


def compare(sweep: dict[tuple[str, int], dict], rows: list[dict], ids: dict[str, str]) -> dict:
    """Per value, the items that differ; the items whose outcome flips; and the items only one side has."""
    differ = {name: 0 for name in OUTCOMES + ERRORS}
    flips, missing = [], []
    for row in rows:
        values = sweep.get((ids[row["prompt"]], row["seed"]))
        if values is None:
            missing.append((row["prompt"], row["seed"]))
            continue
        for name in OUTCOMES:
            if float(row[name]) != values.get(name):
                differ[name] += 1
                flips.append({"prompt": row["prompt"], "seed": row["seed"], "value": name,
                              "evaluation": bool(row[name]), "sweep": bool(values.get(name))})
        for name in ERRORS:
            a, b = row[name], values.get(name)
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9):
                differ[name] += 1
    return {"items": len(rows), "only_in_evaluation": missing, "differ": differ, "flips": flips}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a sweep report directory holding values.csv.gz")
    parser.add_argument("evaluation", type=Path, help="an `inertia testbed evaluate --json` file (.json or .json.gz)")
    parser.add_argument("--condition", default="baseline", help="the sweep's condition (default: baseline)")
    parser.add_argument("--guidance", type=float, help="the evaluation's CFG scale to compare with (needed when it has several)")
    args = parser.parse_args(argv)
    ids = {prompt["text"]: prompt["id"] for prompt in yaml.safe_load(PROMPTS.read_text())["prompts"]}
    result = compare(sweep_values(args.report, args.condition), evaluation_rows(args.evaluation, args.guidance), ids)
    print(f"{result['items']} items; missing from the sweep: {len(result['only_in_evaluation'])}")
    for name, count in result["differ"].items():
        print(f"  {name}: {count} differ")
    for flip in result["flips"]:
        print(f"  {flip['value']} flips: {flip['prompt']!r} seed {flip['seed']}: "
              f"evaluation {flip['evaluation']}, sweep {flip['sweep']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
