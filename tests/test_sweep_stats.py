"""Sweep statistics: bootstrap CIs, paired differences against the baseline, paired tests, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inertia.sweep.stats import (
    Observation,
    bootstrap_ci,
    compute_stats,
    holm,
    paired_p_value,
    paired_test_name,
    sign_flip_p_value,
)


def test_bootstrap_ci_is_deterministic_brackets_the_mean_and_needs_two_values():
    values = np.random.default_rng(1).normal(3.0, 1.0, size=20)
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)  # fixed seed
    assert low < values.mean() < high
    # close to the normal-theory interval for a sample this size
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert high - low == pytest.approx(2 * half, rel=0.2)
    assert all(math.isnan(x) for x in bootstrap_ci([1.0]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_sign_flip_test_is_exact_for_small_n():
    # all 2^4 sign patterns of (1, 2, 3, 4): |mean| >= 2.5 only for all-plus and all-minus
    assert sign_flip_p_value([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 / 16)
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    # Monte Carlo above 16 pairs: a clear shift gives a small p, with the +1 correction
    p = sign_flip_p_value(np.full(30, 0.5) + np.random.default_rng(0).normal(0, 0.1, 30))
    assert 0 < p < 0.001


def test_paired_p_value_uses_wilcoxon_when_scipy_is_there():
    pytest.importorskip("scipy")
    from scipy.stats import wilcoxon

    diffs = [0.3, 0.1, -0.05, 0.4, 0.2, 0.25]
    assert paired_p_value(diffs) == pytest.approx(wilcoxon(diffs).pvalue)
    assert "Wilcoxon" in paired_test_name()
    assert paired_p_value([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(paired_p_value([0.5]))


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


def observations():
    rows = []
    rng = np.random.default_rng(0)
    for backbone in ("wan", "framepack"):
        for prompt in ("p0", "p1"):
            for seed in range(5):
                base = rng.normal(1.0, 0.2)
                rows.append(Observation(backbone, "baseline", prompt, seed, "motion.mean_magnitude", base))
                rows.append(Observation(backbone, "relax", prompt, seed, "motion.mean_magnitude", base + 0.5))
                if seed < 4:  # one run of this condition failed per prompt: 8 runs, 8 pairs
                    rows.append(Observation(backbone, "boost", prompt, seed, "motion.mean_magnitude", base - 0.01 * seed))
    return rows


def test_compute_stats_pairs_runs_by_backbone_prompt_and_seed():
    stats = compute_stats(observations())
    cell = stats.cell("wan", "relax", "motion.mean_magnitude")
    assert (cell.n, cell.n_prompts, cell.n_seeds) == (10, 2, 5)
    assert cell.ci_low < cell.mean < cell.ci_high
    pair = stats.pair("wan", "relax", "motion.mean_magnitude")
    assert pair.n_pairs == 10 and pair.mean_diff == pytest.approx(0.5)
    assert pair.ci_low == pytest.approx(0.5) and pair.ci_high == pytest.approx(0.5)  # a constant shift
    assert pair.p_value < 0.01 and pair.p_holm >= pair.p_value
    boost = stats.pair("framepack", "boost", "motion.mean_magnitude")
    assert boost.n_pairs == 8 and boost.unpaired == 0
    assert stats.pair("wan", "baseline", "motion.mean_magnitude") is None
    assert stats.cell("wan", "baseline", "motion.mean_magnitude").n == 10

    # A baseline run that failed leaves its partners in every condition unpaired, and only there.
    missing = ("framepack", "baseline", "p1", 3)
    rows = [o for o in observations() if (o.backbone, o.condition, o.prompt_id, o.seed) != missing]
    stats = compute_stats(rows)
    relax = stats.pair("framepack", "relax", "motion.mean_magnitude")
    assert (relax.n_pairs, relax.unpaired) == (9, 1) and relax.mean_diff == pytest.approx(0.5)
    boost = stats.pair("framepack", "boost", "motion.mean_magnitude")
    assert (boost.n_pairs, boost.unpaired) == (7, 1)
    wan = stats.pair("wan", "relax", "motion.mean_magnitude")
    assert (wan.n_pairs, wan.unpaired) == (10, 0)
