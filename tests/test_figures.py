"""Figures are written as PNG and PDF, with a fixed colour per method across figures, and read at a glance: steps in
k/M, no offset or degenerate axes, published references as labelled dashed lines, training returns smoothed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis import figures
from analysis.load import load_runs
from analysis.report import tau_grid
from analysis.stats import aggregate_table, performance_profiles, probability_of_improvement, sample_efficiency
from analysis.verdicts import compare_to_references
from tests.helpers import write_synthetic_runs


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for algo, rate in (("ppo", 1.0), ("a2c", 0.6)):
        for env in ("A-v0", "B-v0"):
            for seed in range(4):
                for step in range(0, 1001, 100):
                    value = rate * step / 1000 + rng.normal(0, 0.05)
                    rows.append(("s", algo, "default", env, seed, f"{algo}{env}{seed}", step, "eval/episodic_return", value))
    return pd.DataFrame(rows, columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value"])


def _assert_image(path):
    assert path.exists() and path.stat().st_size > 5000
    pixels = imread(path) if path.suffix == ".png" else None
    if pixels is not None:
        assert pixels.std() > 0.01, "image is blank"


def test_every_figure_is_written(tmp_path):
    frame = _frame()
    last = frame[frame["step"] == 1000].rename(columns={"value": "score"})
    table = aggregate_table(last, reps=100)
    written = [
        *figures.learning_curves(frame, tmp_path, reps=100),
        *figures.aggregate_intervals(table, tmp_path),
        *figures.performance_profile_plot(performance_profiles(last, np.linspace(0, 1.2, 25), reps=100), tmp_path),
        *figures.sample_efficiency_plot(sample_efficiency(frame, points=11, reps=100), tmp_path),
        *figures.improvement_plot(probability_of_improvement(last, [("ppo", "a2c")], reps=100), tmp_path),
    ]
    per_env = pd.concat([aggregate_table(last[last["env_id"] == e], reps=100).assign(env_id=e) for e in ("A-v0", "B-v0")])
    variants = pd.concat([last, last.assign(variant="lr_x3", score=last["score"] - 0.3)])
    written += figures.aggregate_intervals(per_env, tmp_path / "per_env") + figures.variant_comparison(variants, tmp_path)
    assert len(written) == 14 and {p.suffix for p in written} == {".png", ".pdf"}
    assert figures.variant_comparison(last, tmp_path / "none") == [], "no algorithm with several variants: no figure"
    for path in written:
        _assert_image(path)


def test_method_colours_are_fixed_whatever_the_order():
    assert figures.method_colors(["ppo", "a2c", "sac"]) == figures.method_colors(["sac", "ppo", "a2c", "ppo"])
    colours = figures.method_colors(["ppo", "a2c"])
    assert colours["ppo"] != colours["a2c"]


def _drawn(fig):
    fig.canvas.draw()  # tick labels and offset texts are set at draw time
    return fig


def _offsets(fig) -> list[str]:
    return [axis.get_offset_text().get_text() for ax in fig.axes if ax.get_visible() for axis in (ax.xaxis, ax.yaxis)]


def test_step_axes_read_in_k_and_m_without_offset(tmp_path):
    """A 1M-step run: ticks like 200k ... 1M, and no '1e6' or other offset text on any axis of the step figures."""
    write_synthetic_runs(tmp_path, {("ppo", "default", "Hopper-v5"): 2400.0, ("sac", "default", "Hopper-v5"): 3000.0}, [1, 2])
    frame = load_runs(tmp_path)
    frame = frame.assign(step=frame["step"] * 10)  # the helper's 100k steps -> 1M
    assert frame["step"].max() == 1_000_000
    for fig in (
        figures.plot_learning_curves(frame, reps=100),
        figures.plot_learning_curves(frame, "charts/episodic_return", reps=100, smooth=20),
        figures.plot_sample_efficiency(sample_efficiency(frame, points=11, reps=100)),
    ):
        _drawn(fig)
        assert _offsets(fig) == [""] * len(_offsets(fig)), _offsets(fig)
        ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert "1M" in ticks and any(t.endswith("k") for t in ticks), ticks
    assert figures.format_steps(1_500_000) == "1.5M" and figures.format_steps(250_000) == "250k"
    assert figures.format_steps(10_000_000) == "10M" and figures.format_steps(500) == "500"


@pytest.mark.parametrize(
    ("level", "spread"), [(500.0, 0.0), (500.0, 1e-11), (1e6, 3.0)], ids=["exactly-500", "500-within-rounding", "1e6+-3"]
)
def test_interval_and_profile_axes_have_no_offset_and_flat_ones_a_margin(level, spread):
    """Every seed scored 500 (CartPole solved), exactly or up to float rounding: the interval and profile panels show 500
    with room around it, not an axis labelled '1e-9+5e2' spanning 1e-11. Scores near 1e6 with a small spread: plain
    numbers, not '+1e6' offsets."""
    scores = pd.DataFrame(
        [
            ("s", algo, "default", "CartPole-v1", seed, f"{algo}{seed}", level + spread * seed)
            for algo in ("ppo", "dqn")
            for seed in (1, 2, 3)
        ],
        columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "score"],
    )
    table = aggregate_table(scores, reps=100).assign(env_id="CartPole-v1")
    profiles = performance_profiles(scores, tau_grid(scores["score"]), reps=100)
    for fig in (figures.plot_aggregate_intervals(table), figures.plot_performance_profiles(profiles)):
        _drawn(fig)
        assert _offsets(fig) == [""] * len(_offsets(fig)), _offsets(fig)
        low, high = fig.axes[0].get_xlim()
        if level == 500:
            assert low < 500 - 5 and high > 500 + 5, (low, high)  # 5% of 500 either side, not 1e-11
            assert "500" in [t.get_text() for t in fig.axes[0].get_xticklabels()]


def _reference_figure(tmp_path, cells, references, metric="eval/episodic_return"):
    write_synthetic_runs(tmp_path, cells, [1, 2, 3], noise=5.0)
    frame = load_runs(tmp_path)
    env_ids = sorted(frame["env_id"].unique())
    verdicts = compare_to_references(frame, references, {e: "classic_control" for e in env_ids}, "eval-last", 3)
    protocols = ["train-last100"] if metric == "charts/episodic_return" else ["eval-last", "eval-max"]
    lines = figures.reference_lines(verdicts, protocols)
    fig = figures.plot_learning_curves(frame, metric, reps=100, references=lines)
    return fig, [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_a_matching_reference_is_drawn_as_a_labelled_dashed_line(tmp_path):
    cells = {("ppo", "default", "CartPole-v1"): 480.0, ("dqn", "default", "CartPole-v1"): 300.0}
    fig, dashed = _reference_figure(tmp_path / "eval", cells, ["gymnasium_reward_thresholds", "cleanrl_benchmarks"])
    assert [(line.get_label(), tuple(line.get_ydata())) for line in dashed] == [
        ("gymnasium reward_threshold (solved): 475.0", (475.0, 475.0))
    ], "on evaluation curves: the eval-protocol reference only, once for both methods, grey"
    assert dashed[0].get_color() == figures.ANY_METHOD_COLOR
    assert "gymnasium reward_threshold (solved): 475.0" in fig.axes[0].get_legend_handles_labels()[1]

    fig, dashed = _reference_figure(tmp_path / "train", cells, ["cleanrl_benchmarks"], "charts/episodic_return")
    colours = figures.method_colors(["ppo", "dqn"])
    assert sorted((line.get_label(), line.get_color(), line.get_ydata()[0]) for line in dashed) == [
        ("CleanRL dqn.py, 500k steps: 488.7", colours["dqn"], 488.69),
        ("CleanRL ppo.py, 500k steps: 490.0", colours["ppo"], 490.04),
    ], "on training curves: CleanRL's rows (last 100 training episodes), each in its method's colour"
    assert "last 20 episodes" not in fig.axes[0].get_ylabel()  # smooth=1 here: nothing claimed


@pytest.mark.parametrize(
    ("cells", "references"),
    [
        ({("reinforce", "default", "CartPole-v1"): 400.0}, ["cleanrl_benchmarks"]),  # no CleanRL script for the algorithm
        ({("ppo", "default", "Pendulum-v1"): -200.0}, ["gymnasium_reward_thresholds"]),  # no threshold for the env
    ],
)
def test_no_reference_line_where_no_reference_row_matches(tmp_path, cells, references):
    fig, dashed = _reference_figure(tmp_path, cells, references)
    assert dashed == [] and not any("reference" in label for label in fig.axes[0].get_legend_handles_labels()[1])


def test_training_returns_are_smoothed_over_a_stated_window():
    """Training returns alternating 0 / 100 episode by episode: raw, the curve zigzags; smoothed over the last 20
    episodes of each run, it stays near 50, and the y label names the window."""
    rows = [
        ("s", "ppo", "default", "A-v0", seed, f"r{seed}", 100 * step, "charts/episodic_return", 100.0 * (step % 2))
        for seed in (1, 2)
        for step in range(1, 401)
    ]
    frame = pd.DataFrame(rows, columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value"])
    spread = {}
    for window in (1, 20):
        fig = figures.plot_learning_curves(frame, "charts/episodic_return", points=400, reps=100, smooth=window)
        mean = fig.axes[0].get_lines()[0].get_ydata()[20:]
        spread[window] = mean.max() - mean.min()
    assert spread[1] > 50 and spread[20] < 10, spread
    assert "mean of its last 20 episodes" in fig.axes[0].get_ylabel()


def test_the_report_gives_every_figure_the_same_colour_per_method():
    """A figure without one of the methods keeps the others' colours when given the report's colours."""
    colours = figures.method_colors(["a2c", "dqn", "ppo"])
    frame = _frame()  # ppo and a2c only
    fig = figures.plot_learning_curves(frame, reps=100, colors=colours)
    by_label = {line.get_label().split(" ")[0]: line.get_color() for line in fig.axes[0].get_lines()}
    assert by_label == {"a2c": colours["a2c"], "ppo": colours["ppo"]}


def test_a_curve_is_drawn_only_where_every_run_has_data():
    """One run's first training episode ends at step 4,000, the other's at 100: the mean curve starts at 4,000 rather
    than holding the late run's first return back to step 100."""
    rows = [
        ("s", "ppo", "default", "A-v0", seed, f"r{seed}", step, "charts/episodic_return", float(step))
        for seed, first in ((1, 100), (2, 4_000))
        for step in range(first, 10_001, 100)
    ]
    frame = pd.DataFrame(rows, columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value"])
    line = figures.plot_learning_curves(frame, "charts/episodic_return", reps=100).axes[0].get_lines()[0]
    assert line.get_xdata().min() >= 4_000 and line.get_xdata().max() == 10_000
