"""Report figures (matplotlib/seaborn), each saved as PNG and PDF, one colour per method in every figure.

Inputs are the frames of `analysis.load`, `analysis.scores` and `analysis.stats`; nothing here computes a
statistic except the per-step bootstrap band of the learning curves.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.stats import method_name  # noqa: E402


def method_colors(methods: list[str] | pd.Series) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per method: sorted names take the colourblind palette in order, in every figure."""
    names = sorted(set(methods))
    palette = sns.color_palette("colorblind", max(len(names), 1))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def learning_curves(
    frame: pd.DataFrame,
    out_dir: str | Path,
    metric: str = "eval/episodic_return",
    points: int = 100,
    reps: int = 1000,
    seed: int = 0,
    name: str = "learning_curves",
) -> list[Path]:
    """One panel per env: mean over seeds and a 95% bootstrap band, on a common step grid (interpolated)."""
    rows = frame[frame["metric"] == metric].copy()
    rows["method"] = [method_name(a, v) for a, v in zip(rows["algo"], rows["variant"])]
    colors = method_colors(rows["method"])
    envs = sorted(rows["env_id"].unique())
    columns = min(4, len(envs))
    rows_of_panels = -(-len(envs) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.5 * columns, 3.4 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    rng = np.random.default_rng(seed)
    for ax, env_id in zip(axes.flat, envs):
        env_rows = rows[rows["env_id"] == env_id]
        grid = np.linspace(env_rows["step"].min(), env_rows["step"].max(), points)
        for method, group in env_rows.groupby("method"):
            curves = np.stack(
                [
                    np.interp(grid, run["step"].to_numpy(float), run["value"].to_numpy(float))
                    for _, run in group.sort_values("step").groupby("run_id")
                ]
            )
            resampled = curves[rng.integers(0, len(curves), size=(reps, len(curves)))].mean(axis=1)
            low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
            ax.plot(grid, curves.mean(axis=0), color=colors[method], label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(grid, low, high, color=colors[method], alpha=0.2, linewidth=0)
        ax.set(title=env_id, xlabel="environment steps", ylabel=metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, name)


def aggregate_intervals(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The rliable interval plot: a panel per aggregate in the table, a bar per method spanning its 95% CI.

    A table with an `env_id` column (per-env aggregates of raw returns) gets a row of panels per env, each
    with its own scale."""
    colors = method_colors(table["method"])
    aggregates = [name for name in ("IQM", "Median", "Mean", "Optimality Gap") if name in table]
    groups = list(table.groupby("env_id")) if "env_id" in table else [(None, table)]
    height = sum(0.7 + 0.45 * len(group) for _, group in groups)
    fig, axes = plt.subplots(len(groups), len(aggregates), figsize=(3.2 * len(aggregates), height), squeeze=False)
    for row_axes, (env_id, group) in zip(axes, groups):
        for ax, name in zip(row_axes, aggregates):
            for i, (_, row) in enumerate(group.iterrows()):
                low, high = row[f"{name} low"], row[f"{name} high"]
                ax.barh(i, max(high - low, 1e-12), left=low, height=0.6, color=colors[row["method"]], alpha=0.75)
                ax.plot([row[name]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=1.5)
            ax.set_yticks(range(len(group)), group["method"] if ax is row_axes[0] else [""] * len(group))
            ax.set_title(name if env_id is None else f"{name}, {env_id}", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, "aggregate_intervals")


def performance_profile_plot(profiles: pd.DataFrame, out_dir: str | Path, xlabel: str = "score tau") -> list[Path]:
    colors = method_colors(profiles["method"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, group in profiles.groupby("method"):
        ax.plot(group["tau"], group["fraction"], color=colors[method], label=method)
        ax.fill_between(group["tau"], group["low"], group["high"], color=colors[method], alpha=0.2, linewidth=0)
    ax.set(xlabel=xlabel, ylabel="fraction of runs with score > tau", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return save(fig, out_dir, "performance_profiles")


def sample_efficiency_plot(curves: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    colors = method_colors(curves["method"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, group in curves.groupby("method"):
        ax.plot(group["step"], group["IQM"], color=colors[method], label=method)
        ax.fill_between(group["step"], group["low"], group["high"], color=colors[method], alpha=0.2, linewidth=0)
    ax.set(xlabel="environment steps", ylabel="IQM score")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "sample_efficiency")


def improvement_plot(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5, 0.6 + 0.5 * len(table)))
    for i, row in table.reset_index(drop=True).iterrows():
        ax.barh(i, row["high"] - row["low"], left=row["low"], height=0.6, color="tab:blue", alpha=0.6)
        ax.plot([row["P(X > Y)"]] * 2, [i - 0.3, i + 0.3], color="black")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(table)), [f"P({x} > {y})" for x, y in zip(table["X"], table["Y"])])
    ax.set(xlim=(0, 1), xlabel="probability of improvement")
    return save(fig, out_dir, "probability_of_improvement")


def variant_comparison(
    scores: pd.DataFrame, out_dir: str | Path, column: str = "score", reps: int = 2000, seed: int = 0
) -> list[Path]:
    """Hyperparameter variants side by side: a row of panels per algorithm that has several variants, a panel
    per env; each variant's per-seed final scores (dots) and their mean with a 95% bootstrap CI (bar).
    Returns no files when no algorithm has more than one variant."""
    algos = sorted(a for a, group in scores.groupby("algo") if group["variant"].nunique() > 1)
    if not algos:
        return []
    colors = method_colors([method_name(a, v) for a, v in zip(scores["algo"], scores["variant"])])
    envs = sorted(scores.loc[scores["algo"].isin(algos), "env_id"].unique())
    most_variants = max(scores.loc[scores["algo"] == a, "variant"].nunique() for a in algos)
    fig, axes = plt.subplots(
        len(algos), len(envs), figsize=(4.2 * len(envs), 0.8 + 0.45 * most_variants * len(algos)), squeeze=False
    )
    rng = np.random.default_rng(seed)
    for row, algo in enumerate(algos):
        for ax, env_id in zip(axes[row], envs):
            cell = scores[(scores["algo"] == algo) & (scores["env_id"] == env_id)]
            variants = sorted(cell["variant"].unique(), key=lambda v: (v != "default", v))
            for i, variant in enumerate(variants):
                values = cell.loc[cell["variant"] == variant, column].to_numpy(float)
                means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
                low, high = np.percentile(means, [2.5, 97.5])
                color = colors[method_name(algo, variant)]
                ax.barh(i, high - low, left=low, height=0.5, color=color, alpha=0.35)
                ax.plot([values.mean()] * 2, [i - 0.25, i + 0.25], color="black", linewidth=1.5)
                ax.scatter(values, np.full(len(values), i), color=color, s=12, zorder=3)
            ax.set_yticks(range(len(variants)), variants)
            ax.set(title=f"{algo} on {env_id}", xlabel=column)
    return save(fig, out_dir, "variant_comparison")
