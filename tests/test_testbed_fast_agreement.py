"""benchmarks/testbed_fast_agreement.py: the paired statistics on hand-computed cases, and the whole
comparison on a tiny trained test-bed model on the CPU (the GPU and the shipped weights run the same code)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import testbed_fast_agreement as agreement
from inertia.testbed.evaluate import Bootstrap


def rows(dead: list[int]) -> list[dict]:
    return [{"prompt": f"p{i % 2}", "seed": i // 2, "static_death": bool(d), "correct_and_intact": not d}
            for i, d in enumerate(dead)]


def test_the_paired_difference_counts_discordant_items_and_bootstraps_their_mean():
    reference, other = rows([1, 0, 0, 1, 0, 0]), rows([1, 1, 0, 0, 0, 0])
    result = agreement.paired(reference, other, "static_death", Bootstrap(2000))
    assert result["difference"] == 0.0 and result["discordant"] == {"reference_only": 1, "level_only": 1}
    low, high = result["difference_ci"]
    assert -0.5 <= low < 0 < high <= 0.5  # one +1 and one -1 among six items
    moved = agreement.paired(rows([0] * 6), rows([1] * 6), "static_death", Bootstrap(500))
    assert moved["difference"] == 1.0 and moved["difference_ci"] == [1.0, 1.0]
    assert moved["discordant"] == {"reference_only": 0, "level_only": 6}
    by_seed = agreement.paired(reference, other, "static_death", Bootstrap(500, "seed"))
    assert by_seed["difference"] == 0.0 and by_seed["difference_ci"][0] < 0 < by_seed["difference_ci"][1]
    with pytest.raises(ValueError, match="same items in the same order"):
        agreement.paired(reference, other[::-1], "static_death", Bootstrap(10))


def test_agreement_needs_zero_in_the_paired_interval_and_the_rate_in_the_reference_interval():
    reference = {"static_death_rate": 0.2, "static_death_rate_ci": [0.1, 0.3]}
    inside = {"difference": 0.05, "difference_ci": [-0.02, 0.1]}
    assert agreement.agreement(reference, {"static_death_rate": 0.25}, inside, "static_death")
    assert not agreement.agreement(reference, {"static_death_rate": 0.35}, inside, "static_death")
    shifted = {"difference": 0.05, "difference_ci": [0.01, 0.1]}
    assert not agreement.agreement(reference, {"static_death_rate": 0.25}, shifted, "static_death")


def test_video_differences_give_the_distribution_of_each_videos_largest_pixel_change():
    reference = np.zeros((4, 2, 3, 3, 3), dtype=np.uint8)
    other = reference.copy()
    other[1, 0, 0, 0, 0] = 1
    other[2, 1, 2, 2, 2] = 5
    other[3] = 255
    result = agreement.video_differences(reference, other)
    assert result["videos"] == 4 and result["identical"] == 1 and result["max_abs_per_video"] == [0, 1, 5, 255]
    assert result["max_abs"]["max"] == 255 and result["max_abs"]["median"] == 3.0  # largest: 0, 1, 5, 255
    assert result["max_abs_histogram"] == {"0": 1, "1": 1, "2": 0, "3-4": 0, "5-8": 1, "9-16": 0, "17-32": 0,
                                           "33-64": 0, "65-255": 1}
    assert result["mean_abs"] == {"median": pytest.approx((1 / 54 + 5 / 54) / 2), "max": 255.0}


def test_the_comparison_runs_every_level_on_the_same_items_and_writes_the_json(tiny_testbed_run, eager_compiler,
                                                                               tmp_path, capsys):
    out = tmp_path / "agreement.json"
    assert agreement.main(["--seeds", "1", "--steps", "1", "--model", str(tiny_testbed_run / "model"),
                           "--levels", "default,fast,float8", "--compile-backend", "eager", "--bootstrap", "200",
                           "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["items"], report["device"], report["dtype"], report["steps"]) == (44, "cpu", "float32", 1)
    entry = report["conditions"]["baseline"]
    assert list(entry["levels"]) == ["default", "fast", "float8"]
    assert entry["levels"]["float8"] == {"skipped": "performance: float8 needs a CUDA GPU (device is cpu); allowed here: fast"}
    assert entry["levels"]["fast"]["performance"]["level"] == "fast"
    assert "performance" not in entry["levels"]["default"]
    fast = entry["paired"]["fast"]
    # dynamo's eager backend runs the captured graph as is: the fast path's videos are the eager ones
    assert fast["video_difference"]["identical"] == 44 and fast["video_difference"]["max_abs"]["max"] == 0
    for outcome in ("static_death", "correct_and_intact"):
        assert fast[outcome]["difference"] == 0.0 and fast[outcome]["agree"]
        assert fast[outcome]["discordant"] == {"reference_only": 0, "level_only": 0}
        assert entry["levels"]["fast"][f"{outcome}_rate"] == entry["levels"]["default"][f"{outcome}_rate"]
        bits = entry["levels"]["default"]["items"][outcome]
        assert len(bits) == 44 and bits.count("1") == entry["levels"]["default"][f"{outcome}_count"]
    assert "baseline   fast" in capsys.readouterr().out
