"""Aggregate statistics with stratified bootstrap confidence intervals (Agarwal et al. 2021, rliable).

Inputs are per-run scores (`final_scores` output, usually normalised) with columns `algo`, `variant`,
`env_id`, `seed` and a score column. A score matrix per method is (runs, tasks): runs are the seeds, tasks the
envs. rliable draws from numpy's global RNG, so every call seeds it right before use: same inputs, same
intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AGGREGATES = ("IQM", "Median", "Mean", "Optimality Gap")


def method_name(algo: str, variant: str) -> str:
    return algo if variant == "default" else f"{algo}[{variant}]"


def score_matrices(scores: pd.DataFrame, column: str = "score") -> dict[str, np.ndarray]:
    """{method: (n_seeds, n_envs)}; every method needs a score for each of its seeds on every env."""
    matrices = {}
    for (algo, variant), group in scores.groupby(["algo", "variant"], sort=True):
        table = group.pivot_table(index="seed", columns="env_id", values=column, aggfunc="mean")
        if table.isna().any().any():
            missing = table.columns[table.isna().any()].tolist()
            raise ValueError(f"{method_name(algo, variant)}: some seeds lack a score on {missing}; use seeds run on every env")
        matrices[method_name(algo, variant)] = table.sort_index(axis=1).to_numpy(dtype=float)
    return matrices


def _aggregate_fn(optimality_threshold: float):
    from rliable import metrics

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x, optimality_threshold)])  # fmt: skip

    return aggregates


def aggregate_table(scores: pd.DataFrame, column: str = "score", reps: int = 2000, seed: int = 0,
                    optimality_threshold: float = 1.0) -> pd.DataFrame:  # fmt: skip
    """One row per method: IQM, median, mean and optimality gap with 95% stratified bootstrap CIs."""
    from rliable import library as rly

    matrices = score_matrices(scores, column)
    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates(matrices, _aggregate_fn(optimality_threshold), reps=reps)
    rows = []
    for method in matrices:
        row = {"method": method, "runs": matrices[method].shape[0], "tasks": matrices[method].shape[1]}
        for i, name in enumerate(AGGREGATES):
            row[name], row[f"{name} low"], row[f"{name} high"] = (
                points[method][i],
                intervals[method][0, i],
                intervals[method][1, i],
            )
        rows.append(row)
    return pd.DataFrame(rows)


def probability_of_improvement(scores: pd.DataFrame, pairs: list[tuple[str, str]], column: str = "score",
                               reps: int = 2000, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """P(X > Y) per named pair (X, Y) of methods, with 95% stratified bootstrap CIs."""
    from rliable import library as rly
    from rliable import metrics

    matrices = score_matrices(scores, column)
    unknown = sorted({m for pair in pairs for m in pair} - set(matrices))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(matrices)}")
    pair_scores = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in pairs}
    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates(pair_scores, metrics.probability_of_improvement, reps=reps)
    rows = []
    for (x, y), key in zip(pairs, pair_scores):
        low, high = np.ravel(intervals[key])
        rows.append({"X": x, "Y": y, "P(X > Y)": float(np.ravel(points[key])[0]), "low": float(low), "high": float(high)})
    return pd.DataFrame(rows)
