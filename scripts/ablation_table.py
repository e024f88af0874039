"""One summary table (Markdown) of a sweep report's conditions.csv and paired.csv.

    python scripts/ablation_table.py docs/testbed/ablation [--against "relax-0.75-p0.7"]

Rates in percent with their 95% bootstrap CIs, paired differences against the baseline in points
with theirs; `--against C` adds the difference of each condition's paired mean from C's (exact as a
point estimate, since every condition runs the same prompt-seed items; its CI needs the per-run
values, which the report does not keep).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

RATES = ["static_death", "correct_and_intact", "direction_correct", "integrity_ok"]


def read(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as f:
        return {(row["condition"], row["metric"].removeprefix("physics.")): row for row in csv.DictReader(f)}


def percent(row: dict[str, str], key: str, low: str, high: str, signed: bool = False) -> str:
    sign = "+" if signed else ""
    value, lo, hi = (100 * float(row[k]) for k in (key, low, high))
    return f"{value:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]"


def table(report: Path, against: str | None) -> str:
    conditions, paired = read(report / "conditions.csv"), read(report / "paired.csv")
    names = list(dict.fromkeys(c for c, _ in conditions))
    head = ["condition", "static death %", "Δ pts", "correct & intact %", "Δ pts", "direction correct %",
            "ball intact %", "Δ velocity error px/frame"]
    if against:
        head += [f"Δ static vs {against}", f"Δ correct vs {against}"]
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
        if against:
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
    args = parser.parse_args()
    print(table(args.report, args.against))


if __name__ == "__main__":
    main()
