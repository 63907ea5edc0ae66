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


def learning_curves(frame: pd.DataFrame, out_dir: str | Path, metric: str = "eval/episodic_return", points: int = 100,
                    reps: int = 1000, seed: int = 0) -> list[Path]:  # fmt: skip
    """One panel per env: mean over seeds and a 95% bootstrap band, on a common step grid (interpolated)."""
    rows = frame[frame["metric"] == metric].copy()
    rows["method"] = [method_name(a, v) for a, v in zip(rows["algo"], rows["variant"])]
    colors = method_colors(rows["method"])
    envs = sorted(rows["env_id"].unique())
    fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.4), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, env_id in zip(axes[0], envs):
        env_rows = rows[rows["env_id"] == env_id]
        grid = np.linspace(env_rows["step"].min(), env_rows["step"].max(), points)
        for method, group in env_rows.groupby("method"):
            curves = np.stack([np.interp(grid, run["step"].to_numpy(float), run["value"].to_numpy(float))
                               for _, run in group.sort_values("step").groupby("run_id")])  # fmt: skip
            resampled = curves[rng.integers(0, len(curves), size=(reps, len(curves)))].mean(axis=1)
            low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
            ax.plot(grid, curves.mean(axis=0), color=colors[method], label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(grid, low, high, color=colors[method], alpha=0.2, linewidth=0)
        ax.set(title=env_id, xlabel="environment steps", ylabel=metric)
        ax.legend(fontsize=8)
    return save(fig, out_dir, "learning_curves")


def aggregate_intervals(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The rliable interval plot: one panel per aggregate, a bar per method spanning its 95% CI."""
    colors = method_colors(table["method"])
    aggregates = ["IQM", "Median", "Mean", "Optimality Gap"]
    fig, axes = plt.subplots(1, len(aggregates), figsize=(3.2 * len(aggregates), 0.5 + 0.45 * len(table)), squeeze=False)
    for ax, name in zip(axes[0], aggregates):
        for i, (_, row) in enumerate(table.iterrows()):
            low, high = row[f"{name} low"], row[f"{name} high"]
            ax.barh(i, high - low, left=low, height=0.6, color=colors[row["method"]], alpha=0.75)
            ax.plot([row[name]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=1.5)
        ax.set_yticks(range(len(table)), table["method"] if ax is axes[0][0] else [""] * len(table))
        ax.set_title(name)
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
