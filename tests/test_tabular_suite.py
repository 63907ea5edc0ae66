"""Suites with per-algorithm env lists (`[algo.X] env_ids`), the shipped `tabular` suite (Sutton & Barto's Figures 6.4
and 6.2 in one file), and its report: value-error curves and the final value-error table where runs log
`eval/value_rmse`, probability of improvement between methods that share their envs, and the episodes axis."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures
from analysis.load import load_runs
from analysis.report import FIGURE_TITLES, TITLES
from experiments.cli import main
from experiments.suite import SUITES_DIR, SuiteError, load_suite

CLIFF, WALK = "CliffWalking-v1", "rlgrid/RandomWalk-v0"
CONTROL = ("sarsa", "q_learning", "expected_sarsa")
TD_ALPHAS = {"alpha=0.05": 0.05, "alpha=0.10": 0.1, "alpha=0.15": 0.15}
MC_ALPHAS = {"alpha=0.01": 0.01, "alpha=0.02": 0.02, "alpha=0.03": 0.03, "alpha=0.04": 0.04}
PREDICTION = [f"td0[{v}]" for v in TD_ALPHAS] + [f"mc_prediction[{v}]" for v in MC_ALPHAS]


def write_suite(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_per_algorithm_env_ids_narrow_the_grid(tmp_path):
    """`[algo.X] env_ids` runs X on those of the top-level envs only (in the top-level order); an algorithm without
    the key runs on every env; the other keys of its table are still its Config overrides."""
    path = write_suite(
        tmp_path,
        f"""
algorithms = ["sarsa", "td0", "q_learning"]
env_ids = ["{CLIFF}", "{WALK}", "FrozenLake-v1"]
seeds = 2
total_timesteps = 1000
[algo.sarsa]
env_ids = ["FrozenLake-v1", "{CLIFF}"]
epsilon = 0.2
[algo.td0]
env_ids = ["{WALK}"]
""",
        "narrow",
    )
    suite = load_suite(str(path))
    cells = [(s.algo, s.env_id) for s in suite.specs if s.seed == 1]
    assert cells == [
        ("sarsa", CLIFF),
        ("sarsa", "FrozenLake-v1"),
        ("td0", WALK),
        ("q_learning", CLIFF),
        ("q_learning", WALK),
        ("q_learning", "FrozenLake-v1"),
    ]
    assert len(suite.specs) == 2 * len(cells)
    assert {s.config().epsilon for s in suite.specs if s.algo == "sarsa"} == {0.2}
    assert all("env_ids" not in dict(s.overrides) for s in suite.specs)


def test_bad_per_algorithm_env_ids_are_listed_at_once_and_start_nothing(tmp_path, capsys):
    """An env that is not one of the top-level env_ids (registered or not, with the closest suggested), a value that is
    not a list of ids, a repeated id, and a top-level env that no algorithm runs: each is one line of the SuiteError."""
    path = write_suite(
        tmp_path,
        f"""
algorithms = ["sarsa", "q_learning", "td0"]
env_ids = ["{CLIFF}", "{WALK}", "FrozenLake-v1"]
seeds = 1
[algo.sarsa]
env_ids = ["CliffWalkin-v1", "Taxi-v4", "{CLIFF}", "{CLIFF}"]
[algo.q_learning]
env_ids = "{CLIFF}"
[algo.td0]
env_ids = ["{WALK}", 3]
""",
        "bad-envs",
    )
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    problems = info.value.problems
    expected = [
        "algo.sarsa.env_ids[0]: unknown environment id 'CliffWalkin-v1', and not one of the top-level env_ids "
        "(did you mean 'CliffWalking-v1'?): CliffWalking-v1, rlgrid/RandomWalk-v0, FrozenLake-v1",
        "algo.sarsa.env_ids[1]: 'Taxi-v4' is not one of the top-level env_ids: CliffWalking-v1, rlgrid/RandomWalk-v0, "
        "FrozenLake-v1",
        "algo.sarsa.env_ids[3]: 'CliffWalking-v1' is listed twice",
        "algo.q_learning.env_ids: need a non-empty list of environment ids",
        "algo.td0.env_ids[1]: need an environment id (a string), got 3",
        "env_ids[2]: no algorithm runs 'FrozenLake-v1'",
    ]
    text = str(info.value)
    for fragment in expected:
        assert fragment in text, fragment
    assert len(problems) == len(expected), problems
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "problem(s)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_tabular_suite_holds_the_books_two_comparisons():
    """Figure 6.4: Sarsa, Q-learning and Expected SARSA on the cliff only, epsilon 0.1, alpha 0.5, gamma 1, 500 episodes
    with a step budget that does not bind first. Figure 6.2: TD(0) and every-visit constant-alpha MC on the random walk
    only, from V = 0.5, 100 episodes, the book's alphas, the value error after every episode."""
    suite = load_suite("tabular")
    seeds = sorted({s.seed for s in suite.specs})
    assert seeds == list(range(1, 101))
    cells = {(s.algo, s.variant, s.env_id) for s in suite.specs}
    assert cells == {(a, "default", CLIFF) for a in CONTROL} | {("td0", v, WALK) for v in TD_ALPHAS} | {
        ("mc_prediction", v, WALK) for v in MC_ALPHAS
    }
    assert len(suite.specs) == len(cells) * len(seeds)
    for spec in suite.specs:
        cfg = spec.config()
        assert cfg.gamma == 1.0
        if spec.algo in CONTROL:
            assert (cfg.epsilon, cfg.step_size, cfg.step_size_decay, cfg.final_epsilon) == (0.1, 0.5, 0.0, None)
            assert cfg.total_episodes == 500 and cfg.total_timesteps >= 100_000 and cfg.initial_value == 0.0
        else:
            alphas = TD_ALPHAS if spec.algo == "td0" else MC_ALPHAS
            assert (cfg.step_size, cfg.step_size_decay, cfg.initial_value) == (alphas[spec.variant], 0.0, 0.5)
            assert cfg.total_episodes == 100 and cfg.total_timesteps >= 10_000 and cfg.eval_every == 1
            if spec.algo == "mc_prediction":
                assert cfg.first_visit is False and cfg.control is False


def tiny_tabular(tmp_path: Path) -> Path:
    """The shipped tabular suite cut to 2 seeds, 30 cliff episodes and 10 random-walk episodes: same cells, same
    settings otherwise."""
    text = (SUITES_DIR / "tabular.toml").read_text()
    for pattern, value, count in (
        (r"^name = \"tabular\"$", 'name = "tiny-tabular"', 1),
        (r"^seeds = .*$", "seeds = 2", 1),
        (r"^total_episodes = 500$", "total_episodes = 30", 3),
        (r"^total_episodes = 100$", "total_episodes = 10", 2),
        (r"^eval_every = 2_000$", "eval_every = 300", 3),
    ):
        text, n = re.subn(pattern, value, text, flags=re.MULTILINE)
        assert n == count, pattern
    path = tmp_path / "tiny-tabular.toml"
    path.write_text(text)
    return path


def test_a_tiny_tabular_suite_runs_and_its_report_shows_the_value_errors(tmp_path, capsys):
    """`rlgrid run` (the grid runner, inline executor: a tabular run is shorter than a worker's start) on the tabular suite
    cut short, then `rlgrid report` with the suite's flags: the value-error curves (a panel per env, only the methods run
    there) and the final value-error table (every cell, its episodes), the summary's value-error lines, probability of
    improvement for the three cliff methods only, and curves against training episodes. The default report (steps axis)
    works on the same runs and says how to get the book's axis; a --pair of methods on different envs is refused."""
    path = tiny_tabular(tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "report"
    assert main(["run", str(path), "--runs-dir", str(runs), "--executor", "inline", "--retries", "0"]) == 0
    capsys.readouterr()
    args = ["report", str(runs / "tiny-tabular"), "--out", str(out), "--reps", "200"]
    assert main([*args, "--protocol", "train-last100", "--x-axis", "episodes"]) == 0
    printed = capsys.readouterr().out

    assert (out / "figures" / "value_error_curves.png").is_file() and (out / "figures" / "value_error_curves.pdf").is_file()
    page, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert f'alt="{html.escape(FIGURE_TITLES["value_error_curves"])}"' in page
    assert "](figures/value_error_curves.png)" in markdown and f"## {TITLES['value_error']}" in markdown
    assert "](figures/variant_value_error.png)" in markdown

    table = pd.read_csv(out / "tables" / "value_error.csv")
    expected_cells = {(m, CLIFF) for m in CONTROL} | {(m, WALK) for m in PREDICTION}
    assert set(zip(table["method"], table["env_id"])) == expected_cells and len(table) == len(expected_cells)
    assert (table["seeds"] == 2).all()
    episodes = table.set_index("method")[["episodes_min", "episodes_max"]]
    assert (episodes.loc[list(CONTROL)] == 30).all().all() and (episodes.loc[PREDICTION] == 10).all().all()
    assert np.isfinite(table["value_rmse"]).all() and (table["value_rmse"] > 0).all()
    assert (table["ci_low"] <= table["value_rmse"]).all() and (table["value_rmse"] <= table["ci_high"]).all()
    walk = table[table["env_id"] == WALK]
    assert (walk["value_rmse"] < 0.3).all(), "from V = 0.5 the error starts at 0.236 and falls"
    for env_id in (CLIFF, WALK):
        assert any(line.startswith(f"- {env_id} (RMS error of the value estimate") for line in printed.splitlines()), env_id
    assert "Final value error (RMS, lower is better)" in printed

    improvement = pd.read_csv(out / "tables" / "probability_of_improvement.csv")
    assert {frozenset(p) for p in zip(improvement["X"], improvement["Y"])} == {
        frozenset(p) for p in [("sarsa", "q_learning"), ("sarsa", "expected_sarsa"), ("q_learning", "expected_sarsa")]
    }
    assert "Probability of improvement not drawn for the 7 methods run on rlgrid/RandomWalk-v0" in markdown

    frame = load_runs(runs)  # the value-error figure as the report drew it: a panel per env, only its own methods
    fig = figures.plot_learning_curves(frame, "eval/value_rmse", reps=50, x_axis="episodes")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {CLIFF, WALK}
    assert sorted(panels[CLIFF].get_legend_handles_labels()[1]) == sorted(f"{m} (2 seeds)" for m in CONTROL)
    assert sorted(panels[WALK].get_legend_handles_labels()[1]) == sorted(f"{m} (2 seeds)" for m in PREDICTION)
    for ax in panels.values():
        assert ax.get_xlabel() == "training episodes" and "RMS error" in ax.get_ylabel()
    walk_x = np.concatenate([line.get_xdata() for line in panels[WALK].get_lines()])
    assert walk_x.max() == 10 and walk_x.min() == 1  # evaluated at the end of every one of the 10 episodes
    numbered = figures.episodes_axis(frame, "charts/episodic_return")
    assert (numbered.groupby("run_id")["step"].agg(lambda s: list(s) == list(range(1, len(s) + 1)))).all()

    default = tmp_path / "report-default"
    assert main(["report", str(runs / "tiny-tabular"), "--out", str(default), "--reps", "200"]) == 0
    assert "--x-axis episodes" in (default / "report.md").read_text()
    assert (default / "figures" / "value_error_curves.png").is_file()
    capsys.readouterr()
    assert main([*args, "--pair", "td0[alpha=0.10],sarsa"]) == 2
    assert "td0[alpha=0.10] ran on rlgrid/RandomWalk-v0 and sarsa on CliffWalking-v1" in capsys.readouterr().err
