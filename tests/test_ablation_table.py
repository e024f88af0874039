"""scripts/ablation_table.py: the summary table of a sweep report, and its comparison against one
condition paired on the items both conditions have."""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "scripts" / "ablation_table.py")
ablation_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation_table)

CONDITIONS = ["baseline", "relax", "boost"]
#: static death per (condition, prompt, seed); boost lacks ("p1", 1), as a shard that died leaves it.
STATIC = {
    "baseline": {("p0", 0): 1, ("p0", 1): 0, ("p1", 0): 0, ("p1", 1): 1},
    "relax": {("p0", 0): 1, ("p0", 1): 1, ("p1", 0): 0, ("p1", 1): 1},
    "boost": {("p0", 0): 0, ("p0", 1): 0, ("p1", 0): 0},
}


def write_report(directory: Path, values: bool) -> Path:
    with (directory / "conditions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "condition", "metric", "n", "mean", "ci_low", "ci_high"])
        for name in CONDITIONS:
            mean = sum(STATIC[name].values()) / len(STATIC[name])
            writer.writerow(["testbed", name, "physics.static_death", len(STATIC[name]), mean, 0, 1])
    with (directory / "paired.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["backbone", "condition", "metric", "mean_diff", "ci_low", "ci_high"])
        writer.writerow(["testbed", "relax", "physics.static_death", 0.25, 0, 0.5])
        writer.writerow(["testbed", "boost", "physics.static_death", -1 / 3, -1, 0])
    if values:
        with gzip.open(directory / "values.csv.gz", "wt", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["condition", "prompt_id", "seed", "value_name", "value"])
            for name, items in STATIC.items():
                for (prompt, seed), value in items.items():
                    writer.writerow([name, prompt, seed, "static_death", value])
    return directory


def rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()[2:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_against_a_condition_is_paired_on_the_items_both_have(tmp_path):
    table = rows(ablation_table.table(write_report(tmp_path, values=True), "relax"))
    # boost - relax on the 3 shared items: (0-1) + (0-1) + (0-0) = -2 over 3 = -66.7 points
    assert table["boost"][-2].startswith("-66.7 [") and table["boost"][-2].endswith("(3)")
    assert table["baseline"][-2].startswith("-25.0 [") and table["baseline"][-2].endswith("(4)")
    assert table["relax"][-2] == "(reference)"


def test_against_without_per_run_values_is_the_difference_of_paired_means(tmp_path):
    table = rows(ablation_table.table(write_report(tmp_path, values=False), "relax"))
    assert table["boost"][-2] == f"{100 * (-1 / 3 - 0.25):+.1f}"  # -58.3: not the paired -66.7
    assert table["relax"][-2] == "+0.0"


@pytest.mark.parametrize("values", [True, False])
def test_the_table_without_against_has_no_comparison_columns(tmp_path, values):
    header = ablation_table.table(write_report(tmp_path, values), None).splitlines()[0]
    assert "vs" not in header and header.count("|") == 9


def test_by_group_gives_the_baseline_rate_and_paired_differences_per_group(tmp_path):
    report = write_report(tmp_path, values=True)
    static = ablation_table.grouped_table(report, "split").split("\n\n")[0]
    # prompt ids p0, p1 are all "seen" (no _unseen suffix): one group of 4 baseline items (2 static)
    assert rows(static) == {
        "baseline": ["baseline", "50.0% (4)"],
        "relax": ["relax", "+25.0 (4)"],  # (0 + 1 + 0 + 0) / 4
        "boost": ["boost", "-33.3 (3)"],  # (-1 + 0 + 0) / 3 on the 3 items boost has
    }


def test_grouping_reads_the_test_bed_prompt_ids():
    groups = ablation_table.GROUPS
    assert [groups["split"](p) for p in ("red_left_slow", "green_up_fast_unseen")] == ["seen", "unseen"]
    assert [groups["motion"](p) for p in ("red_left_slow", "red_bounce_unseen", "red_jump")] == ["left", "bounce", "jump"]
    assert [groups["speed"](p) for p in ("red_left_slow", "blue_left_fast_unseen", "red_jump")] == ["slow", "fast", "none"]


def test_by_group_without_per_run_values_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--by needs the per-run values: no .*values.csv.gz"):
        ablation_table.grouped_table(write_report(tmp_path, values=False), "motion")
