"""What `inertia testbed evaluate` reports beyond rates: velocity ratio, grouped static death and
bootstrap intervals by item or by run seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inertia.cli import main
from inertia.core.errors import InertiaError
from inertia.testbed import simulator as sim
from inertia.testbed.data import commanded_spec, heldout_items
from inertia.testbed.evaluate import Bootstrap, evaluate, format_table, summarise, velocity_ratio
from inertia.testbed.physics import analyse
from inertia.testbed.stats import cluster_bootstrap_ci


@pytest.fixture
def model_dir(tiny_testbed_run: Path) -> Path:
    return tiny_testbed_run / "model"


def ball(prompt: str, rendered: str | None = None) -> dict:
    """physics.analyse's ball dict for `prompt`'s truth clip, optionally rendered with another command."""
    spec = commanded_spec(prompt, 2)
    if rendered is not None:
        spec = sim.spec_from_command(spec, rendered)
    (result,) = analyse(sim.render(spec).frames, prompt)["balls"].values()
    return result


def test_velocity_ratio_is_achieved_over_commanded_speed_of_moving_straight_lines():
    assert velocity_ratio(ball("the red ball rolls left fast")) == pytest.approx(1.0, abs=0.03)
    assert velocity_ratio(ball("the red ball moves up slow")) == pytest.approx(1.0, abs=0.03)
    slow_for_fast = velocity_ratio(ball("the red ball rolls left fast", "the red ball rolls left slow"))
    assert slow_for_fast == pytest.approx(0.75 / 1.25, abs=0.03)
    assert velocity_ratio(ball("the red ball rolls left fast", "the red ball stays still")) is None  # did not move
    assert velocity_ratio(ball("the red ball jumps")) is None  # no constant commanded speed


def test_cluster_bootstrap_keeps_a_seeds_items_together():
    # 10 seeds x 20 items; within a seed every item has the same outcome (perfectly correlated)
    seeds = np.repeat(np.arange(10), 20)
    dead = (seeds % 2 == 0).astype(float)[:, None]
    ones = np.ones_like(dead)
    by_item = cluster_bootstrap_ci(dead, ones, np.arange(len(dead)), resamples=2000)[0]
    by_seed = cluster_bootstrap_ci(dead, ones, seeds, resamples=2000)[0]
    assert by_item[0] < 0.5 < by_item[1] and by_seed[0] < 0.5 < by_seed[1]
    assert by_seed[1] - by_seed[0] > 2.5 * (by_item[1] - by_item[0])  # 10 independent units, not 200
    np.testing.assert_array_equal(cluster_bootstrap_ci(dead, ones, seeds, resamples=500),
                                  cluster_bootstrap_ci(dead, ones, seeds, resamples=500))  # seeded
    assert np.isnan(cluster_bootstrap_ci(dead, ones, np.zeros(len(dead)), resamples=100)).all()  # one cluster
    never = cluster_bootstrap_ci(np.zeros((5, 1)), np.zeros((5, 1)), np.arange(5), resamples=100)
    assert np.isnan(never).all()


def test_summary_gives_rates_with_intervals_and_the_velocity_ratio_spread():
    moving = dict(static_death=False, direction_correct=True, moved=True, integrity_ok=True,
                  correct_and_intact=True, velocity_error=0.2)
    static = {**moving, "static_death": True, "moved": False, "direction_correct": False,
              "correct_and_intact": False, "velocity_ratio": None}
    rows = [{**moving, "seed": i, "velocity_ratio": r} for i, r in enumerate([0.5, 1.0, 1.5, 2.0])]
    rows += [{**static, "seed": i} for i in range(4)]
    s = summarise(rows, Bootstrap(resamples=1000))
    assert (s["static_death_count"], s["static_death_rate"]) == (4, 0.5)
    assert s["velocity_ratio_n"] == 4 and s["velocity_ratio_mean"] == pytest.approx(1.25)
    spread = (s["velocity_ratio_q25"], s["velocity_ratio_median"], s["velocity_ratio_q75"])
    assert spread == pytest.approx((0.875, 1.25, 1.625))
    lo, hi = s["static_death_rate_ci"]
    assert 0 <= lo < 0.5 < hi <= 1
    lo, hi = s["velocity_ratio_mean_ci"]
    assert 0.5 <= lo < 1.25 < hi <= 2.0
    assert "static_death_rate_ci" not in summarise(rows)  # intervals only when asked


def test_evaluate_reports_groups_ratio_and_seed_clustered_intervals(model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["testbed", "evaluate", "--model", str(model_dir), "--seeds", "2", "--steps", "2", "--device", "cpu",
            "--batch-size", "44", "--bootstrap", "300", "--ci-by", "seed", "--json", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["bootstrap"] == {"resamples": 300, "by": "seed", "level": 0.95, "seed": 0}
    (result,) = report["results"]
    assert set(result["by_split"]) == {"seen_combo", "unseen_combo"}
    assert set(result["by_speed"]) == {"slow", "fast", "None"}
    assert len(result["by_motion"]) == 7
    for summary in [result["overall"], *result["by_split"].values(), *result["by_speed"].values()]:
        ci = summary["static_death_rate_ci"]
        assert ci is not None and ci[0] <= summary["static_death_rate"] <= ci[1]
    rows = result["rows"]
    ratios = [r["velocity_ratio"] for r in rows]
    assert all((v is None) == (not r["moved"] or r["motion"] not in sim.DIRECTIONS) for r, v in zip(rows, ratios))
    assert result["overall"]["velocity_ratio_n"] == sum(v is not None for v in ratios)
    table = capsys.readouterr().out
    assert "95% bootstrap intervals over seeds (300 resamples)" in table
    assert "split=unseen_combo" in table and "speed=fast" in table and "motion=jump" in table


def test_bad_bootstrap_settings_are_refused():
    with pytest.raises(InertiaError, match="bootstrap: resamples must be >= 0"):
        Bootstrap(resamples=-1)
    with pytest.raises(InertiaError, match="by one of item, seed"):
        Bootstrap(by="prompt")


def test_evaluate_with_performance_fast_records_it_and_gives_the_eager_videos(model_dir, eager_compiler):
    items = heldout_items(1)[:3]
    common = dict(items=items, steps=2, device="cpu", dtype="float32", batch_size=3, keep_videos=True, bootstrap=Bootstrap(0))
    eager, fast = evaluate(model_dir, **common), evaluate(model_dir, performance="fast", **common)
    assert (eager["performance"], fast["performance"]) == (None, "fast")
    assert "performance" not in eager["results"][0]
    result = fast["results"][0]
    # the run record's entry: one graph serves every block of both steps (cond and uncond alike)
    assert result["performance"] == {"level": "fast", "compiled_blocks": ["WanTransformerBlock"], "float8_linears": 0,
                                     "cfg_batching": False, "compile_s": result["performance"]["compile_s"],
                                     "graphs_compiled": 1, "graphs_compiled_after_first_step": 0, "attention": "native",
                                     "attention_choice": "no measurement for this device and testbed: the default",
                                     "attention_kernel": "backend",
                                     "attention_kernel_choice": "auto: fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"}
    # dynamo's eager backend runs the captured graph as is: bound 0 (inductor's difference: benchmarks/testbed_fast_agreement.py)
    np.testing.assert_array_equal(result["videos"], eager["results"][0]["videos"])
    assert result["rows"] == eager["results"][0]["rows"]
    assert "; performance fast" in format_table(fast).splitlines()[0]


def test_evaluate_refuses_float8_on_the_cpu_in_one_line_before_loading(model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--model", str(model_dir), "--seeds", "1", "--steps", "1", "--bootstrap", "0", "--json", str(out)]
    assert main(["testbed", "evaluate", "--device", "cpu", "--performance", "float8", *args]) == 2
    assert capsys.readouterr().err == "error: performance: float8 needs a CUDA GPU (device is cpu); allowed here: fast\n"
    assert not out.exists()
