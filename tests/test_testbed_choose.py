"""The written rule that picks the shipped test-bed model and its default CFG (inertia.testbed.choose)."""

from __future__ import annotations

import json

import pytest

from inertia.core.errors import InertiaError
from inertia.testbed.choose import band_distance, choose, default_result, main, targets_met


def row(scale: float, static: float, intact: float, correct: float) -> dict:
    return {"guidance_scale": scale, "overall": {
        "static_death_rate": static, "integrity_ok_rate": intact, "correct_and_intact_rate": correct}}


def test_band_distance_is_zero_inside_and_the_gap_outside() -> None:
    assert band_distance(0.2) == 0.0 and band_distance(0.5) == 0.0 and band_distance(0.35) == 0.0
    assert band_distance(0.168) == pytest.approx(0.032)
    assert band_distance(0.6) == pytest.approx(0.1)


def test_targets_met_counts_each_target() -> None:
    assert targets_met(row(1.5, 0.25, 0.96, 0.55)["overall"]) == 3
    assert targets_met(row(1.5, 0.168, 0.91, 0.717)["overall"]) == 1
    assert targets_met(row(1.5, 0.10, 0.90, 0.40)["overall"]) == 0


def test_default_scale_skips_cfg_off_and_prefers_the_band_then_success() -> None:
    results = [row(1.0, 0.30, 0.9, 0.6),  # in the band, but CFG is off at 1
               row(1.25, 0.22, 0.9, 0.65), row(1.5, 0.21, 0.9, 0.70), row(2.0, 0.05, 0.9, 0.8)]
    assert default_result(results)["guidance_scale"] == 1.5  # both in the band: more correct-and-intact
    nearest = [row(1.0, 0.3, 0.9, 0.6), row(1.25, 0.168, 0.9, 0.7), row(1.5, 0.115, 0.9, 0.77)]
    assert default_result(nearest)["guidance_scale"] == 1.25  # none in the band: the nearest


def test_default_needs_a_guided_scale() -> None:
    with pytest.raises(InertiaError, match="no guidance scale above 1"):
        default_result([row(1.0, 0.3, 0.9, 0.6)])


def test_choose_takes_more_targets_over_more_success() -> None:
    more_targets = [row(1.25, 0.21, 0.91, 0.60)]  # band + success: 2 targets
    more_success = [row(1.25, 0.168, 0.91, 0.72)]  # success only: 1 target
    assert choose({"a": more_success, "b": more_targets})[0] == "b"
    tie = {"a": [row(1.25, 0.168, 0.910, 0.717)], "b": [row(1.25, 0.196, 0.928, 0.711)]}
    name, chosen = choose(tie)
    assert (name, chosen["guidance_scale"]) == ("a", 1.25)


def test_cli_prints_the_chosen_evaluation_and_scale(tmp_path, capsys) -> None:
    paths = []
    for name, results in {"a": [row(1.25, 0.168, 0.91, 0.717)], "b": [row(1.5, 0.25, 0.96, 0.6)]}.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"results": results}))
        paths.append(str(path))
    assert main(paths) == 0
    out = capsys.readouterr()
    assert out.out == f"{paths[1]} 1.5\n"
    assert "3/3 targets" in out.err and "1/3 targets" in out.err
    (tmp_path / "bad.json").write_text("{}")
    assert main([str(tmp_path / "bad.json")]) == 2
    assert f"{tmp_path / 'bad.json'}: not a held-out evaluation" in capsys.readouterr().err
