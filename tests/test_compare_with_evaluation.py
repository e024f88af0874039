"""scripts/compare_with_evaluation.py: a sweep's condition against the held-out evaluation, item by item."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_with_evaluation", ROOT / "scripts" / "compare_with_evaluation.py")
compare_with_evaluation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_with_evaluation)

OUTCOMES = {"static_death": False, "direction_correct": True, "moved": True, "integrity_ok": True,
            "correct_and_intact": True}


def write_report(folder: Path, items: dict[tuple[str, int], dict]) -> None:
    folder.mkdir()
    with gzip.open(folder / "values.csv.gz", "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["condition", "prompt_id", "seed", "value_name", "value"])
        for (prompt_id, seed), values in items.items():
            for name, value in values.items():
                writer.writerow(["baseline", prompt_id, seed, name, "" if value is None else float(value)])
            writer.writerow(["boost(b=0.5)", prompt_id, seed, "static_death", 1.0])  # another condition: ignored


def row(prompt: str, seed: int, **changes) -> dict:
    return {"prompt": prompt, "seed": seed, **OUTCOMES, "velocity_error": 0.25, "position_error": 0.5, **changes}


def test_equal_items_count_zero_and_a_flip_and_a_moved_error_are_named(tmp_path: Path):
    same = {**OUTCOMES, "velocity_error": 0.25, "position_error": 0.5}
    write_report(tmp_path / "report", {
        ("red_left_slow", 0): same,
        ("red_left_fast", 0): {**same, "static_death": True, "moved": False, "position_error": 0.5 + 1e-6},
        ("red_right_slow", 3): {**same, "velocity_error": None},
    })
    rows = [row("the red ball rolls left slow", 0), row("the red ball rolls left fast", 0),
            row("the red ball rolls right slow", 3), row("the red ball rolls right fast", 1)]
    evaluation = tmp_path / "eval.json.gz"
    with gzip.open(evaluation, "wt") as f:
        json.dump({"results": [{"guidance_scale": 1.0, "rows": []}, {"guidance_scale": 1.1, "rows": rows}]}, f)

    ids = {"the red ball rolls left slow": "red_left_slow", "the red ball rolls left fast": "red_left_fast",
           "the red ball rolls right slow": "red_right_slow", "the red ball rolls right fast": "red_right_fast"}
    result = compare_with_evaluation.compare(
        compare_with_evaluation.sweep_values(tmp_path / "report", "baseline"),
        compare_with_evaluation.evaluation_rows(evaluation, 1.1), ids)

    assert result["items"] == 4 and result["only_in_evaluation"] == [("the red ball rolls right fast", 1)]
    assert result["differ"] == {"static_death": 1, "direction_correct": 0, "moved": 1, "integrity_ok": 0,
                                "correct_and_intact": 0, "velocity_error": 1, "position_error": 1}
    assert result["flips"] == [
        {"prompt": "the red ball rolls left fast", "seed": 0, "value": "static_death", "evaluation": False, "sweep": True},
        {"prompt": "the red ball rolls left fast", "seed": 0, "value": "moved", "evaluation": True, "sweep": False}]


def test_an_evaluation_of_several_scales_needs_one_named(tmp_path: Path):
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"results": [{"guidance_scale": 1.0, "rows": []}, {"guidance_scale": 1.5, "rows": []}]}))
    with pytest.raises(SystemExit, match=re.escape("holds scales [1.0, 1.5]: pick one with --guidance")):
        compare_with_evaluation.evaluation_rows(evaluation, None)
    with pytest.raises(SystemExit, match=re.escape("no scale 1.1 in")):
        compare_with_evaluation.evaluation_rows(evaluation, 1.1)
