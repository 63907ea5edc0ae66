"""The pinned statistics stack (rliable, arch<8, pandas<3) imports and computes what it should."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

rly = pytest.importorskip("rliable.library")
metrics = pytest.importorskip("rliable.metrics")


def _aggregates(x: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x)])


def test_iqm_is_the_25_percent_trimmed_mean():
    x = np.random.default_rng(0).normal(size=(10, 4))
    assert np.isclose(metrics.aggregate_iqm(x), stats.trim_mean(x.ravel(), 0.25))


def test_stratified_bootstrap_intervals_are_reproducible_with_a_fixed_seed_and_cover_the_point():
    rng = np.random.default_rng(1)
    scores = {"a": rng.normal(1.0, 0.3, size=(10, 3)), "b": rng.normal(1.5, 0.3, size=(10, 3))}
    results = []
    for _ in range(2):
        np.random.seed(7)  # rliable draws from numpy's global RNG
        results.append(rly.get_interval_estimates(scores, _aggregates, reps=300))
    (points, intervals), (points2, intervals2) = results
    np.testing.assert_array_equal(intervals["a"], intervals2["a"])
    for algo in scores:
        assert np.all(intervals[algo][0] <= points[algo]) and np.all(points[algo] <= intervals[algo][1])
    assert intervals["a"][1, 0] < intervals["b"][0, 0], "clearly separated means give disjoint IQM intervals"
