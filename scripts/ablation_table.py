"""One summary table (Markdown) of a sweep report's conditions.csv and paired.csv.

    python scripts/ablation_table.py docs/testbed/v3/ablation [--against "relax-0.75-p0.7"]

Rates in percent with their 95% bootstrap CIs, paired differences against the baseline in points
with theirs. `--against C` adds each condition's difference from C in static death and in correct and
intact. With the per-run values beside the report (`values.csv.gz`, as `scripts/testbed_gpu.sh
ablation` writes them) the difference is paired on the (prompt, seed) items both conditions have,
with its bootstrap CI and the number of pairs; without them it is the difference of the two paired
means against the baseline, with no CI (exact only when both conditions ran every item).
`--by split|motion|speed` (needs values.csv.gz) gives instead each condition's paired difference from
the baseline per group of the test bed's prompt ids (`COLOUR_MOTION[_SPEED][_unseen]`,
examples/testbed_prompts.yaml): seen vs unseen colour-motion pairs, the commanded motion, or speed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from collections import defaultdict
from pathlib import Path

from inertia.sweep.stats import bootstrap_ci

RATES = ["static_death", "correct_and_intact", "direction_correct", "integrity_ok"]


def read(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as f:
        return {(row["condition"], row["metric"].removeprefix("physics.")): row for row in csv.DictReader(f)}


def read_values(path: Path) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """(condition, value name) -> {(prompt_id, seed): value}, from a report's values.csv.gz."""
    values: dict[tuple[str, str], dict[tuple[str, int], float]] = defaultdict(dict)
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["value"] != "":
                values[row["condition"], row["value_name"]][row["prompt_id"], int(row["seed"])] = float(row["value"])
    return values


def paired_against(values: dict, name: str, against: str, metric: str) -> str:
    """The mean of `name` minus `against` over their shared items, in points, with its CI and pairs."""
    if name == against:
        return "(reference)"
    mine, theirs = values.get((name, metric), {}), values.get((against, metric), {})
    shared = sorted(mine.keys() & theirs.keys())
    if not shared:
        return "—"
    differences = [mine[item] - theirs[item] for item in shared]
    low, high = bootstrap_ci(differences)
    mean = 100 * sum(differences) / len(differences)
    ci = "" if low != low else f" [{100 * low:+.1f}, {100 * high:+.1f}]"  # nan: a single pair
    return f"{mean:+.1f}{ci} ({len(shared)})"


GROUPS = {
    "split": lambda prompt: "unseen" if prompt.endswith("_unseen") else "seen",
    "motion": lambda prompt: prompt.split("_")[1],
    "speed": lambda prompt: next((p for p in prompt.split("_")[2:] if p in ("slow", "fast")), "none"),
}


def grouped_table(report: Path, by: str) -> str:
    """Per condition and group: the baseline's rate, then each condition's paired difference from it
    in points (pairs), for static death and correct and intact."""
    path = report / "values.csv.gz"
    if not path.is_file():
        raise SystemExit(f"--by needs the per-run values: no {path}")
    values, group = read_values(path), GROUPS[by]
    names = list(dict.fromkeys(c for c, _ in read(report / "conditions.csv")))  # the report's order
    tables = []
    for metric in ("static_death", "correct_and_intact"):
        baseline = values.get(("baseline", metric), {})
        groups = sorted({group(prompt) for prompt, _ in baseline})
        lines = [f"| {metric.replace('_', ' ')} by {by} | " + " | ".join(groups) + " |", "|" + " --- |" * (len(groups) + 1)]
        for name in names:
            mine, cells = values.get((name, metric), {}), [name]
            for g in groups:
                shared = [item for item in mine.keys() & baseline.keys() if group(item[0]) == g]
                if not shared:
                    cells.append("—")
                elif name == "baseline":
                    cells.append(f"{100 * sum(baseline[i] for i in shared) / len(shared):.1f}% ({len(shared)})")
                else:
                    cells.append(f"{100 * sum(mine[i] - baseline[i] for i in shared) / len(shared):+.1f} ({len(shared)})")
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def percent(row: dict[str, str], key: str, low: str, high: str, signed: bool = False) -> str:
    sign = "+" if signed else ""
    value, lo, hi = (100 * float(row[k]) for k in (key, low, high))
    return f"{value:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]"


def table(report: Path, against: str | None) -> str:
    conditions, paired = read(report / "conditions.csv"), read(report / "paired.csv")
    values = read_values(report / "values.csv.gz") if against and (report / "values.csv.gz").is_file() else None
    names = list(dict.fromkeys(c for c, _ in conditions))
    head = ["condition", "static death %", "Δ pts", "correct & intact %", "Δ pts", "direction correct %",
            "ball intact %", "Δ velocity error px/frame"]
    if against:
        pairs = " pts [CI] (pairs)" if values is not None else " pts"
        head += [f"Δ static vs {against}{pairs}", f"Δ correct vs {against}{pairs}"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in names:
        cells = [name]
        for metric in RATES:
            row = conditions.get((name, metric))
            cells.append(percent(row, "mean", "ci_low", "ci_high") if row else "—")
            if metric in ("static_death", "correct_and_intact"):
                diff = paired.get((name, metric))
                cells.append(percent(diff, "mean_diff", "ci_low", "ci_high", signed=True) if diff else "—")
        velocity = paired.get((name, "velocity_error"))
        cells.append(f"{float(velocity['mean_diff']):+.2f} [{float(velocity['ci_low']):+.2f}, "
                     f"{float(velocity['ci_high']):+.2f}]" if velocity else "—")
        if against and values is not None:
            cells += [paired_against(values, name, against, metric) for metric in ("static_death", "correct_and_intact")]
        elif against:
            for metric in ("static_death", "correct_and_intact"):
                mine = float(paired[name, metric]["mean_diff"]) if (name, metric) in paired else 0.0
                theirs = float(paired[against, metric]["mean_diff"]) if (against, metric) in paired else 0.0
                cells.append(f"{100 * (mine - theirs):+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report directory (conditions.csv, paired.csv)")
    parser.add_argument("--against", help="a condition to compare every other condition with")
    parser.add_argument("--by", choices=sorted(GROUPS), help="paired differences from the baseline per group of prompts")
    args = parser.parse_args()
    print(grouped_table(args.report, args.by) if args.by else table(args.report, args.against))


if __name__ == "__main__":
    main()
