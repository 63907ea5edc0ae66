"""Aggregate statistics on synthetic runs with known distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import aggregate_table, probability_of_improvement, score_matrices


def synthetic_scores(means: dict[str, float], seeds: int = 10, envs: int = 5, sd: float = 0.2, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    return pd.DataFrame(
        [
            {"algo": algo, "variant": "default", "env_id": f"E{e}-v0", "seed": s, "score": rng.normal(mean, sd)}
            for algo, mean in means.items()
            for s in range(seeds)
            for e in range(envs)
        ]
    )


def test_iqm_point_estimate_is_the_trimmed_mean_and_intervals_are_reproducible():
    scores = synthetic_scores({"a": 1.0, "b": 1.5})
    first = aggregate_table(scores, reps=300, seed=3)
    second = aggregate_table(scores, reps=300, seed=3)
    pd.testing.assert_frame_equal(first, second)
    a = first.set_index("method").loc["a"]
    assert np.isclose(a["IQM"], stats.trim_mean(score_matrices(scores)["a"].ravel(), 0.25))
    assert a["IQM low"] < a["IQM"] < a["IQM high"] and (a["runs"], a["tasks"]) == (10, 5)
    assert not first.equals(aggregate_table(scores, reps=300, seed=4)), "another seed gives other intervals"


@pytest.mark.slow
def test_mean_intervals_cover_the_truth_at_about_the_nominal_rate():
    covered = 0
    draws = 60
    for draw in range(draws):
        table = aggregate_table(synthetic_scores({"a": 0.7}, seeds=10, envs=3, rng_seed=100 + draw), reps=300, seed=draw)
        row = table.iloc[0]
        covered += row["Mean low"] <= 0.7 <= row["Mean high"]
    # 95% nominal; percentile bootstrap with 30 values is a little narrow. 60 draws: expect ~55, allow sampling noise.
    assert covered >= 48, covered


def test_probability_of_improvement_orders_clearly_different_methods():
    scores = synthetic_scores({"good": 2.0, "bad": 1.0})
    table = probability_of_improvement(scores, [("good", "bad"), ("bad", "good")], reps=300)
    good_bad, bad_good = table["P(X > Y)"]
    assert good_bad > 0.95 and bad_good < 0.05 and np.isclose(good_bad + bad_good, 1.0)
    assert (table["low"] <= table["P(X > Y)"]).all() and (table["P(X > Y)"] <= table["high"]).all()
    with pytest.raises(ValueError, match="unknown methods"):
        probability_of_improvement(scores, [("good", "ugly")])


def test_score_matrix_needs_every_env_per_seed():
    scores = synthetic_scores({"a": 1.0}, seeds=2, envs=2).iloc[:-1]
    with pytest.raises(ValueError, match="lack a score"):
        score_matrices(scores)


def test_performance_profile_is_one_below_every_score_and_zero_above():
    from analysis.stats import performance_profiles

    scores = synthetic_scores({"a": 1.0}, sd=0.1)
    taus = np.array([-10.0, 1.0, 10.0])
    profile = performance_profiles(scores, taus, reps=200).set_index("tau")["fraction"]
    assert profile[-10.0] == 1.0 and profile[10.0] == 0.0 and 0.2 < profile[1.0] < 0.8


def test_sample_efficiency_curve_follows_known_linear_learning_curves():
    from analysis.stats import sample_efficiency

    rows = []
    for seed in range(5):
        for env, scale in (("A-v0", 1.0), ("B-v0", 100.0)):
            for step in range(0, 1001, 100):  # every run learns linearly from 0 to its scale
                rows.append(
                    ("s", "ppo", "default", env, seed, f"{env}{seed}", step, "eval/episodic_return", scale * step / 1000)
                )
    frame = pd.DataFrame(rows, columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value"])
    curve = sample_efficiency(frame, points=5, bounds={"A-v0": (0.0, 1.0), "B-v0": (0.0, 100.0)}, reps=100)
    np.testing.assert_allclose(curve["step"], [0, 250, 500, 750, 1000])
    np.testing.assert_allclose(curve["IQM"], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-12)  # normalised, identical runs


def test_vectorised_bootstrap_agrees_with_rliables_own_interval_estimates():
    """Same statistics as rliable exactly, same intervals up to Monte-Carlo error of the two bootstraps."""
    rly = pytest.importorskip("rliable.library")
    from rliable import metrics

    scores = synthetic_scores({"a": 1.0, "b": 1.2}, seeds=8, envs=3, sd=0.4, rng_seed=5)
    matrices = score_matrices(scores)
    ours = aggregate_table(scores, reps=5000, seed=1).set_index("method")

    def rliable_aggregates(x):
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_median(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_optimality_gap(x, 1.0),
            ]
        )

    np.random.seed(0)
    points, intervals = rly.get_interval_estimates({"a": matrices["a"]}, rliable_aggregates, reps=5000)
    names = ["IQM", "Median", "Mean", "Optimality Gap"]
    np.testing.assert_allclose(ours.loc["a", names].to_numpy(float), points["a"], rtol=1e-12)
    for i, name in enumerate(names):
        width = intervals["a"][1, i] - intervals["a"][0, i]
        assert abs(ours.loc["a", f"{name} low"] - intervals["a"][0, i]) < 0.1 * width, name
        assert abs(ours.loc["a", f"{name} high"] - intervals["a"][1, i]) < 0.1 * width, name

    improvement = probability_of_improvement(scores, [("b", "a")], reps=5000).iloc[0]
    assert np.isclose(improvement["P(X > Y)"], metrics.probability_of_improvement(matrices["b"], matrices["a"]))
    np.random.seed(0)
    _, poi_interval = rly.get_interval_estimates(
        {"ba": (matrices["b"], matrices["a"])}, metrics.probability_of_improvement, reps=2000
    )
    low, high = np.ravel(poi_interval["ba"])
    assert abs(improvement["low"] - low) < 0.1 * (high - low) and abs(improvement["high"] - high) < 0.1 * (high - low)
