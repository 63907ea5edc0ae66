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


def performance_profiles(scores: pd.DataFrame, thresholds: np.ndarray, column: str = "score", reps: int = 2000,
                         seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Score distributions: fraction of runs above each threshold tau, with 95% bootstrap CIs (long frame)."""
    from rliable import library as rly

    matrices = score_matrices(scores, column)
    np.random.seed(seed)
    profiles, intervals = rly.create_performance_profile(matrices, np.asarray(thresholds, dtype=float), reps=reps)
    return pd.concat([pd.DataFrame({"method": method, "tau": thresholds, "fraction": profiles[method],
                                    "low": intervals[method][0], "high": intervals[method][1]}) for method in matrices],
                     ignore_index=True)  # fmt: skip


def sample_efficiency(frame: pd.DataFrame, points: int = 20, metric: str = "eval/episodic_return",
                      bounds: dict[str, tuple[float, float]] | None = None, reps: int = 1000,
                      seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """IQM over runs x envs at `points` common steps (each run's curve linearly interpolated), with 95% CIs.

    `bounds` min-max normalises per env first, so tasks with different return scales can be pooled."""
    from rliable import library as rly
    from rliable import metrics

    rows = frame[frame["metric"] == metric]
    grid = np.linspace(rows["step"].min(), rows["step"].max(), points)
    curves = []
    for (algo, variant, env_id, seed_, _), run in rows.groupby(["algo", "variant", "env_id", "seed", "run_id"]):
        run = run.sort_values("step")
        values = np.interp(grid, run["step"].to_numpy(float), run["value"].to_numpy(float))
        if bounds is not None:
            low, high = bounds[env_id]
            values = (values - low) / (high - low)
        curves.append({"method": method_name(algo, variant), "env_id": env_id, "seed": seed_, "values": values})
    by_method: dict[str, np.ndarray] = {}
    for method in sorted({c["method"] for c in curves}):
        mine = [c for c in curves if c["method"] == method]
        envs, seeds = sorted({c["env_id"] for c in mine}), sorted({c["seed"] for c in mine})
        cube = np.full((len(seeds), len(envs), points), np.nan)
        for c in mine:
            cube[seeds.index(c["seed"]), envs.index(c["env_id"])] = c["values"]
        if np.isnan(cube).any():
            raise ValueError(f"{method}: some seeds lack a curve on some env")
        by_method[method] = cube
    iqm_per_step = lambda x: np.array([metrics.aggregate_iqm(x[..., t]) for t in range(x.shape[-1])])  # noqa: E731
    np.random.seed(seed)
    points_, intervals = rly.get_interval_estimates(by_method, iqm_per_step, reps=reps)
    return pd.concat([pd.DataFrame({"method": m, "step": grid, "IQM": points_[m], "low": intervals[m][0],
                                    "high": intervals[m][1]}) for m in by_method], ignore_index=True)  # fmt: skip
