"""Report figures (matplotlib/seaborn), each saved as PNG and PDF, one colour per method in every figure.

Inputs are the frames of `analysis.load`, `analysis.scores`, `analysis.stats` and `analysis.verdicts`; nothing here
computes a statistic except the per-step bootstrap band of the learning curves (and the rolling mean that smooths
training returns, whose window the axis label states). Every `plot_*` function returns the Figure (tests inspect it);
the function of the same name without `plot_` saves it and returns the files.

Axes read at a glance: environment steps in k/M (`format_steps`), value axes in plain numbers (never an offset such as
"1e-9+5e2" or a "1e6" multiplier), and an axis whose data has no spread (every seed scored 500) gets a margin around
the value instead of a span of 1e-12.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.ticker import FuncFormatter, ScalarFormatter  # noqa: E402

from analysis.stats import method_name  # noqa: E402
from analysis.verdicts import SOURCES  # noqa: E402

Colors = dict[str, tuple[float, float, float]]
ANY_METHOD_COLOR = (0.35, 0.35, 0.35)  # reference lines that hold for every method (e.g. a "solved" threshold)
METRIC_LABELS = {
    "eval/episodic_return": "evaluation return (deterministic policy)",
    "charts/episodic_return": "training episode return",
    "eval/value_rmse": "RMS error of the value estimate\n(lower is better)",
}
X_AXES = ("steps", "episodes")
X_LABELS = {"steps": "environment steps", "episodes": "training episodes"}


def method_colors(methods: list[str] | pd.Series) -> Colors:
    """A fixed colour per method: sorted names take the colourblind palette in order, in every figure; past its 10
    colours (a preference suite has 13 methods) evenly spaced hues instead, so no two methods share one."""
    names = sorted(set(methods))
    palette = sns.color_palette("colorblind" if len(names) <= 10 else "husl", max(len(names), 1))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def format_steps(x: float, _pos: int | None = None) -> str:
    """Environment steps for a tick label: 0, 500, 20k, 250k, 1M, 1.5M, 10M, 2B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.4g}{suffix}"
    return f"{x:.4g}"


def steps_axis(axis: Axis) -> None:
    axis.set_major_formatter(FuncFormatter(format_steps))


def plain_axis(axis: Axis) -> None:
    """Tick labels as plain numbers: no offset ("1e-9+5e2") and no scientific multiplier ("1e6")."""
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def widen_if_flat(ax: plt.Axes, which: str) -> None:
    """Give an axis whose data spans (almost) nothing a margin of 5% of the value (at least 0.05) either side."""
    low, high = ax.dataLim.intervalx if which == "x" else ax.dataLim.intervaly
    if np.isfinite(low) and np.isfinite(high) and high - low <= 1e-9 * max(1.0, abs(low), abs(high)):
        centre = (low + high) / 2
        pad = max(0.05 * abs(centre), 0.05)
        (ax.set_xlim if which == "x" else ax.set_ylim)(centre - pad, centre + pad)


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def reference_lines(verdicts: pd.DataFrame, protocols: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The reference scores to draw on a learning curve, from `analysis.verdicts.compare_to_references` (which matched
    each (method, env) cell to its published rows): those measured under one of `protocols` (the curve's quantity).

    Columns `env_id`, `method` (None where the row holds for every method, e.g. gymnasium's "solved" threshold),
    `label` (who published it, their step budget, the value) and `value`; one row per distinct line."""
    columns = ["env_id", "method", "label", "value"]
    if verdicts is None or verdicts.empty:
        return pd.DataFrame(columns=columns)
    rows = verdicts[verdicts["protocol"].isin(protocols)]
    out = []
    for _, row in rows.iterrows():
        source = SOURCES.get(row["reference"])
        method = None if source is not None and source.any_algorithm else method_name(row["algo"], row["variant"])
        budget = row.get("reference_budget")
        at = f", {format_steps(float(budget))} steps" if budget is not None and pd.notna(budget) else ""
        label = f"{row['reference_algorithm']}{at}: {row['reference_value']:,.1f}"
        out.append({"env_id": row["env_id"], "method": method, "label": label, "value": float(row["reference_value"])})
    return pd.DataFrame(out, columns=columns).drop_duplicates(["env_id", "label"], ignore_index=True)


def episodes_axis(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of `metric` with `step` replaced by the number of training episodes the run had finished by then
    (its `charts/episodic_return` rows at or before that step): the x-axis of the book's tabular figures, where methods
    whose episodes differ in length would not line up on environment steps. For `charts/episodic_return` itself this
    numbers a run's episodes 1, 2, 3, ... (one env copy)."""
    rows = frame[frame["metric"] == metric].sort_values(["run_id", "step"], kind="stable")
    if metric == "charts/episodic_return":
        return rows.assign(step=rows.groupby("run_id").cumcount() + 1)
    ends = frame[frame["metric"] == "charts/episodic_return"]
    ends_of = {run_id: np.sort(run["step"].to_numpy()) for run_id, run in ends.groupby("run_id")}
    counts = [
        np.searchsorted(ends_of.get(run_id, np.zeros(0, np.int64)), run["step"].to_numpy(), side="right")
        for run_id, run in rows.groupby("run_id", sort=False)
    ]
    return rows.assign(step=np.concatenate(counts) if counts else rows["step"])


def plot_learning_curves(
    frame: pd.DataFrame,
    metric: str = "eval/episodic_return",
    points: int = 100,
    reps: int = 1000,
    seed: int = 0,
    smooth: int = 1,
    references: pd.DataFrame | None = None,
    colors: Colors | None = None,
    x_axis: str = "steps",
) -> plt.Figure:
    """One panel per env: mean over seeds and a 95% bootstrap band, on a common step grid (interpolated).

    `smooth` > 1 replaces each run's values by the mean of its last `smooth` values (training episodes) before
    interpolating; the y label says so. `references` (`reference_lines`) are drawn as labelled dashed lines in the
    colour of their method (grey where they hold for every method). `x_axis` "episodes" draws against the number of
    training episodes finished (`episodes_axis`) instead of environment steps."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {', '.join(X_AXES)}, got {x_axis!r}")
    rows = episodes_axis(frame, metric) if x_axis == "episodes" else frame[frame["metric"] == metric].copy()
    rows["method"] = [method_name(a, v) for a, v in zip(rows["algo"], rows["variant"])]
    colors = colors or method_colors(rows["method"])
    envs = sorted(rows["env_id"].unique())
    columns = min(4, len(envs))
    rows_of_panels = -(-len(envs) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.8 * columns, 3.6 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    ylabel = METRIC_LABELS.get(metric, metric)
    if smooth > 1:
        ylabel += f"\n(each run: mean of its last {smooth} episodes)"
    rng = np.random.default_rng(seed)
    for ax, env_id in zip(axes.flat, envs):
        env_rows = rows[rows["env_id"] == env_id]
        grid = np.linspace(env_rows["step"].min(), env_rows["step"].max(), points)
        for method, group in env_rows.groupby("method"):
            curves, first, last = [], -np.inf, np.inf
            for _, run in group.sort_values("step", kind="stable").groupby("run_id"):
                values = run["value"].astype(float)
                if smooth > 1:
                    values = values.rolling(smooth, min_periods=1).mean()
                steps = run["step"].to_numpy(float)
                curves.append(np.interp(grid, steps, values.to_numpy()))
                first, last = max(first, steps[0]), min(last, steps[-1])
            # Drawn only where every run has data: a run's first training episode may end thousands of steps in, and
            # interpolation would otherwise hold its first value back to step 0 (or an unfinished run's last one on).
            shown = (grid >= first) & (grid <= last) if first <= last else np.ones(len(grid), dtype=bool)
            curves = np.stack(curves)[:, shown]
            resampled = curves[rng.integers(0, len(curves), size=(reps, len(curves)))].mean(axis=1)
            low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
            ax.plot(grid[shown], curves.mean(axis=0), color=colors[method], label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(grid[shown], low, high, color=colors[method], alpha=0.2, linewidth=0)
        if references is not None:
            for _, ref in references[references["env_id"] == env_id].iterrows():
                color = colors.get(ref["method"], ANY_METHOD_COLOR) if ref["method"] else ANY_METHOD_COLOR
                ax.axhline(ref["value"], color=color, linestyle="--", linewidth=1.1, alpha=0.9, label=ref["label"])
        ax.set(title=env_id, xlabel=X_LABELS[x_axis], ylabel=ylabel)
        steps_axis(ax.xaxis)
        plain_axis(ax.yaxis)
        widen_if_flat(ax, "y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def learning_curves(
    frame: pd.DataFrame, out_dir: str | Path, metric: str = "eval/episodic_return", *, name: str = "learning_curves", **kwargs
) -> list[Path]:
    """`plot_learning_curves`, saved as `name`.png/.pdf."""
    return save(plot_learning_curves(frame, metric, **kwargs), out_dir, name)


def plot_aggregate_intervals(table: pd.DataFrame, colors: Colors | None = None) -> plt.Figure:
    """The rliable interval plot: a panel per aggregate in the table, a bar per method spanning its 95% CI.

    A table with an `env_id` column (per-env aggregates of raw returns) gets a row of panels per env, each
    with its own scale. A panel where every interval has zero width (every seed scored 500) is drawn around the value."""
    colors = colors or method_colors(table["method"])
    aggregates = [name for name in ("IQM", "Median", "Mean", "Optimality Gap") if name in table]
    groups = list(table.groupby("env_id")) if "env_id" in table else [(None, table)]
    height = sum(0.9 + 0.45 * len(group) for _, group in groups)
    fig, axes = plt.subplots(len(groups), len(aggregates), figsize=(3.2 * len(aggregates), height), squeeze=False)
    for row_axes, (env_id, group) in zip(axes, groups):
        for ax, name in zip(row_axes, aggregates):
            for i, (_, row) in enumerate(group.iterrows()):
                low, high = row[f"{name} low"], row[f"{name} high"]
                ax.barh(i, high - low, left=low, height=0.6, color=colors[row["method"]], alpha=0.75)
                ax.plot([row[name]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=1.5)
                if not high - low > 1e-9 * max(1.0, abs(low)):  # a zero-width interval: mark the value in colour
                    ax.plot(row[name], i, marker="D", markersize=6, color=colors[row["method"]], markeredgecolor="black")
            ax.set_yticks(range(len(group)), group["method"] if ax is row_axes[0] else [""] * len(group))
            ax.set_title(name if env_id is None else f"{name}, {env_id}", fontsize=9)
            ax.use_sticky_edges = False  # a margin beyond the bars, so a value at the edge is not drawn on the frame
            ax.margins(x=0.05)
            plain_axis(ax.xaxis)
            widen_if_flat(ax, "x")
    fig.tight_layout()
    return fig


def aggregate_intervals(table: pd.DataFrame, out_dir: str | Path, colors: Colors | None = None) -> list[Path]:
    return save(plot_aggregate_intervals(table, colors), out_dir, "aggregate_intervals")


def plot_performance_profiles(profiles: pd.DataFrame, xlabel: str = "score tau", colors: Colors | None = None) -> plt.Figure:
    """Fraction of runs scoring above tau, with 95% bootstrap bands; a panel per env where `profiles` has `env_id`
    (raw returns of several envs, each on its own scale)."""
    colors = colors or method_colors(profiles["method"])
    groups = list(profiles.groupby("env_id")) if "env_id" in profiles else [(None, profiles)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
    for ax, (env_id, group) in zip(axes[0], groups):
        for method, curve in group.groupby("method"):
            ax.plot(curve["tau"], curve["fraction"], color=colors[method], label=method)
            ax.fill_between(curve["tau"], curve["low"], curve["high"], color=colors[method], alpha=0.2, linewidth=0)
        ax.set(xlabel=xlabel, ylabel="fraction of runs with score > tau", ylim=(0, 1.02))
        if env_id is not None:
            ax.set_title(env_id)
        plain_axis(ax.xaxis)
        widen_if_flat(ax, "x")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def performance_profile_plot(
    profiles: pd.DataFrame, out_dir: str | Path, xlabel: str = "score tau", colors: Colors | None = None
) -> list[Path]:
    return save(plot_performance_profiles(profiles, xlabel, colors), out_dir, "performance_profiles")


def plot_sample_efficiency(curves: pd.DataFrame, colors: Colors | None = None) -> plt.Figure:
    colors = colors or method_colors(curves["method"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, group in curves.groupby("method"):
        ax.plot(group["step"], group["IQM"], color=colors[method], label=method)
        ax.fill_between(group["step"], group["low"], group["high"], color=colors[method], alpha=0.2, linewidth=0)
    ax.set(xlabel="environment steps", ylabel="IQM score")
    steps_axis(ax.xaxis)
    plain_axis(ax.yaxis)
    widen_if_flat(ax, "y")
    ax.legend(fontsize=8)
    return fig


def sample_efficiency_plot(curves: pd.DataFrame, out_dir: str | Path, colors: Colors | None = None) -> list[Path]:
    return save(plot_sample_efficiency(curves, colors), out_dir, "sample_efficiency")


def plot_improvement(table: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 0.9 + 0.5 * len(table)))
    for i, row in table.reset_index(drop=True).iterrows():
        ax.barh(i, row["high"] - row["low"], left=row["low"], height=0.6, color="tab:blue", alpha=0.6)
        ax.plot([row["P(X > Y)"]] * 2, [i - 0.3, i + 0.3], color="black")
        ax.plot(row["P(X > Y)"], i, marker="D", markersize=5, color="tab:blue", markeredgecolor="black")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(table)), [f"P({x} > {y})" for x, y in zip(table["X"], table["Y"])])
    ax.set(xlim=(-0.03, 1.03), xlabel="probability of improvement (0.5: no difference)")
    return fig


def improvement_plot(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    return save(plot_improvement(table), out_dir, "probability_of_improvement")


def variant_comparison(
    scores: pd.DataFrame,
    out_dir: str | Path,
    column: str = "score",
    reps: int = 2000,
    seed: int = 0,
    colors: Colors | None = None,
    name: str = "variant_comparison",
) -> list[Path]:
    """Hyperparameter variants side by side: a row of panels per algorithm that has several variants, a panel
    per env; each variant's per-seed final scores (dots) and their mean with a 95% bootstrap CI (bar), the x label
    `column`. Saved as `name`; returns no files when no algorithm has more than one variant."""
    algos = sorted(a for a, group in scores.groupby("algo") if group["variant"].nunique() > 1)
    if not algos:
        return []
    colors = colors or method_colors([method_name(a, v) for a, v in zip(scores["algo"], scores["variant"])])
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
            plain_axis(ax.xaxis)
            widen_if_flat(ax, "x")
    fig.tight_layout()
    return save(fig, out_dir, name)


def plot_frontier(
    points: pd.DataFrame, table: pd.DataFrame, optimum: dict[str, pd.DataFrame | None], colors: Colors | None = None
) -> plt.Figure:
    """Reward against KL to the reference, a panel per env (the DPO paper's Figure 2, left): each run a small dot, each
    method its seed mean with 95% bootstrap intervals on both axes, labelled; the exact KL-regularised optimum as a line
    where the task knows it."""
    env_ids = sorted(points["env_id"].unique())
    colors = colors or method_colors(points["method"])
    fig, axes = plt.subplots(1, len(env_ids), figsize=(6.5 * len(env_ids), 4.8), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        curve = optimum.get(env_id)
        if curve is not None:
            ax.plot(curve["kl"], curve["reward"], color=ANY_METHOD_COLOR, lw=1, ls="--", label="optimum (exact)")
        for _, row in points[points["env_id"] == env_id].iterrows():
            ax.scatter(row["kl"], row["reward"], s=12, alpha=0.4, color=colors.get(row["method"], ANY_METHOD_COLOR))
        for _, row in table[table["env_id"] == env_id].iterrows():
            color = colors.get(row["method"], ANY_METHOD_COLOR)
            ax.errorbar(
                row["kl"],
                row["reward"],
                xerr=[[row["kl"] - row["kl_low"]], [row["kl_high"] - row["kl"]]],
                yerr=[[row["reward"] - row["reward_low"]], [row["reward_high"] - row["reward"]]],
                fmt="o",
                color=color,
                ms=6,
                capsize=2,
                label=row["method"],
            )
        if curve is not None:  # the optimum runs far past the methods' KLs: show their range, and some of the curve
            ax.set_xlim(-0.02 * (points["kl"].max() + 1), 1.15 * max(points["kl"].max(), 1.0))
            inside = curve[curve["kl"] <= ax.get_xlim()[1]]
            ax.set_ylim(
                min(points["reward"].min(), inside["reward"].min()) - 0.3,
                max(points["reward"].max(), inside["reward"].max()) + 0.3,
            )
        score = "held-out preference accuracy" if str(env_id).endswith(".jsonl") else "true reward"
        ax.set(title=env_id, xlabel="KL(pi || pi_ref) per sequence", ylabel=score)
        plain_axis(ax.yaxis)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def frontier_plot(
    points: pd.DataFrame,
    table: pd.DataFrame,
    optimum: dict[str, pd.DataFrame | None],
    out_dir: str | Path,
    colors: Colors | None = None,
) -> list[Path]:
    return save(plot_frontier(points, table, optimum, colors), out_dir, "frontier")
