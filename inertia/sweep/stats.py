"""Statistics over a sweep's results: per-condition means with bootstrap CIs, paired differences
against the baseline, and a paired test. numpy only, plus scipy's Wilcoxon test when installed.

* **Cell**: (backbone, condition, metric value); its units are the runs, one per (prompt, seed).
  Mean and 95% percentile-bootstrap CI: 10,000 resamples of the units with replacement, numpy
  generator seeded with 0 (the same numbers every time). n < 2 gives no CI.
* **Paired difference**: for each (prompt, seed) run of a condition, minus the baseline run of
  the same backbone, prompt and seed; mean difference, its bootstrap CI (as above), and a
  two-sided paired test: Wilcoxon signed-rank (`scipy.stats.wilcoxon`, zero differences dropped)
  when scipy is importable, else an exact sign-flip permutation test of the mean difference
  (all 2^n sign patterns for n <= 16, otherwise 10,000 random ones, seeded). Holm's correction
  over the conditions of each (backbone, metric value).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
EXACT_SIGN_FLIP_MAX_N = 16


def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) for fewer than two values."""
    data = np.asarray(values, dtype=np.float64)
    n = data.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_test_name() -> str:
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        return "sign-flip permutation test (two-sided, mean difference)"
    return "Wilcoxon signed-rank test (two-sided, scipy)"


def paired_p_value(differences: Sequence[float], seed: int = SEED) -> float:
    """Two-sided p-value of the paired differences (see module doc); nan below two pairs."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return sign_flip_p_value(d, seed)
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def sign_flip_p_value(differences: Sequence[float], seed: int = SEED, resamples: int = RESAMPLES) -> float:
    """Permutation test of mean(d) = 0 by random sign flips: exact for n <= 16, else Monte Carlo."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= EXACT_SIGN_FLIP_MAX_N:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        flipped = np.abs((patterns * d).mean(axis=1))
        return float(np.mean(flipped >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(resamples, n))
    flipped = np.abs((signs * d).mean(axis=1))
    return float((np.sum(flipped >= observed - tolerance) + 1) / (resamples + 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and is not counted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Observation:
    """One numeric value of one run."""

    backbone: str
    condition: str
    prompt_id: str
    seed: int
    metric: str  # "key.value_name", e.g. motion.mean_magnitude
    value: float


@dataclass
class CellStat:
    backbone: str
    condition: str
    metric: str
    n: int
    n_prompts: int
    n_seeds: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float


@dataclass
class PairedStat:
    backbone: str
    condition: str
    metric: str
    n_pairs: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan
    unpaired: int = 0  # runs of the condition with no baseline partner


@dataclass
class SweepStats:
    cells: list[CellStat] = field(default_factory=list)
    paired: list[PairedStat] = field(default_factory=list)
    test: str = field(default_factory=paired_test_name)
    resamples: int = RESAMPLES
    level: float = LEVEL
    seed: int = SEED

    _cells: dict = field(default_factory=dict, repr=False)
    _paired: dict = field(default_factory=dict, repr=False)

    def index(self) -> "SweepStats":
        self._cells = {(c.backbone, c.condition, c.metric): c for c in self.cells}
        self._paired = {(p.backbone, p.condition, p.metric): p for p in self.paired}
        return self

    def cell(self, backbone: str, condition: str, metric: str) -> CellStat | None:
        return self._cells.get((backbone, condition, metric))

    def pair(self, backbone: str, condition: str, metric: str) -> PairedStat | None:
        return self._paired.get((backbone, condition, metric))


def compute_stats(observations: Iterable[Observation], baseline: str | None = "baseline",
                  resamples: int = RESAMPLES, seed: int = SEED) -> SweepStats:
    """Cell statistics for every (backbone, condition, metric) and paired differences vs `baseline`."""
    groups: dict[tuple[str, str, str], dict[tuple[str, int], float]] = defaultdict(dict)
    for obs in observations:
        groups[(obs.backbone, obs.condition, obs.metric)][(obs.prompt_id, obs.seed)] = obs.value
    stats = SweepStats(resamples=resamples, seed=seed)
    for (backbone, condition, metric), units in groups.items():
        values = np.array(list(units.values()), dtype=np.float64)
        low, high = bootstrap_ci(values, resamples, seed=seed)
        stats.cells.append(CellStat(
            backbone, condition, metric, int(values.size), len({u[0] for u in units}), len({u[1] for u in units}),
            float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan, low, high))
        if baseline is None or condition == baseline:
            continue
        base = groups.get((backbone, baseline, metric))
        if not base:
            continue
        keys = [u for u in units if u in base]
        diffs = np.array([units[u] - base[u] for u in keys], dtype=np.float64)
        low, high = bootstrap_ci(diffs, resamples, seed=seed)
        stats.paired.append(PairedStat(
            backbone, condition, metric, int(diffs.size), float(diffs.mean()) if diffs.size else math.nan,
            low, high, paired_p_value(diffs, seed), unpaired=len(units) - len(keys)))
    families: dict[tuple[str, str], list[PairedStat]] = defaultdict(list)
    for item in stats.paired:
        families[(item.backbone, item.metric)].append(item)
    for items in families.values():
        for item, adjusted in zip(items, holm([i.p_value for i in items])):
            item.p_holm = adjusted
    return stats.index()
