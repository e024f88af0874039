"""Bootstrap intervals for the test bed's evaluation: rates and means over items, resampled by
item or by cluster (all items of one run seed together).

Conventions follow the sweep report (`inertia.sweep.stats`): percentile bootstrap, 95%, NumPy
generator seeded with 0, so the same rows always give the same interval. Resampling clusters
matters because the items of one run seed are not independent: every prompt of a seed starts
from the same noise tensor.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
#: Elements of one gathered chunk of resamples (resamples x clusters x statistics), to bound memory.
CHUNK_ELEMENTS = 4_000_000


def cluster_bootstrap_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    clusters: Sequence[Hashable],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> np.ndarray:
    """Percentile bootstrap intervals of ratio statistics sum(numerator) / sum(denominator).

    `numerators` and `denominators` are (rows, K): one column per statistic (a rate: numerator 0/1
    and denominator 1; a mean over the rows where a value is defined: numerator the value or 0 and
    denominator 1 or 0). Whole clusters are drawn with replacement, their rows kept together; with
    one cluster per row this is the ordinary bootstrap of a rate or mean. Returns (K, 2) bounds;
    NaN for a statistic with fewer than two clusters or never defined.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    k, c = num.shape[1], len(ids)
    bounds = np.full((k, 2), np.nan)
    per_num, per_den = np.zeros((c, k)), np.zeros((c, k))
    np.add.at(per_num, inverse.ravel(), num)
    np.add.at(per_den, inverse.ravel(), den)
    defined = per_den.sum(axis=0) > 0
    if c < 2 or not defined.any():
        return bounds
    rng = np.random.default_rng(seed)
    stats = np.empty((resamples, k))
    chunk = max(1, CHUNK_ELEMENTS // (c * k))
    for start in range(0, resamples, chunk):
        draw = rng.integers(0, c, size=(min(resamples, start + chunk) - start, c))
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[start:start + len(draw)] = per_num[draw].sum(axis=1) / per_den[draw].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    bounds[defined] = np.nanquantile(stats[:, defined], [alpha, 1.0 - alpha], axis=0).T
    return bounds
