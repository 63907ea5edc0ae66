"""`rlgrid report` on preference runs: the reward-KL table and figure, with the task's exact optimum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pandas")

from analysis.report import frontier_points, frontier_table, optimal_frontier  # noqa: E402
from experiments.cli import main  # noqa: E402

TASK = "SyntheticSentiment-v0"


def write_run(
    root: Path, algo: str, variant: str, seed: int, kl: float, reward: float, kl_metric: str = "eval/kl", task: str = TASK
) -> None:
    run_dir = root / "prefs" / algo / task.replace("/", "-") / f"{variant}-seed{seed}"
    run_dir.mkdir(parents=True)
    spec = {"algo": algo, "env_id": task, "seed": seed, "overrides": {}, "suite": "prefs", "variant": variant}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    rows = [  # an earlier evaluation, then the last one, which the frontier takes
        {"step": 50, "time": 0.0, "eval/episodic_return": reward / 2, kl_metric: kl / 2},
        {"step": 100, "time": 0.0, "eval/episodic_return": reward, kl_metric: kl},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "DONE").touch()


@pytest.fixture
def runs(tmp_path) -> Path:
    for seed, (a, b) in enumerate([(1.0, 2.0), (3.0, 4.0)], start=1):
        write_run(tmp_path, "dpo", "beta-0.1", seed, kl=a, reward=b)
        write_run(tmp_path, "rlhf_ppo", "kl-0.05", seed, kl=2 * a, reward=b + 1)
        write_run(tmp_path, "sft", "default", seed, kl=0.1 * seed, reward=-0.3, kl_metric="eval/language_kl")
    return tmp_path


def test_the_frontier_takes_each_runs_last_evaluation_and_puts_pi_ref_at_kl_0(runs):
    from analysis.load import load_runs

    points = frontier_points(load_runs(runs))
    assert len(points) == 6 and set(points["step"]) == {100}
    table = frontier_table(points, reps=200, seed=0).set_index("method")
    assert table.loc["dpo[beta-0.1]", "kl"] == pytest.approx(2.0) and table.loc["dpo[beta-0.1]", "reward"] == pytest.approx(
        3.0
    )
    assert table.loc["rlhf_ppo[kl-0.05]", "kl"] == pytest.approx(4.0) and table.loc["rlhf_ppo[kl-0.05]", "reward"] == 4.0
    assert table.loc["sft", "kl"] == 0.0 and table.loc["sft", "reward"] == pytest.approx(
        -0.3
    )  # its language KL is not plotted
    low, high = table.loc["dpo[beta-0.1]", ["reward_low", "reward_high"]]
    assert 2.0 <= low <= 3.0 <= high <= 4.0


def test_the_optimum_is_the_tasks_exact_frontier_and_only_a_known_task_has_one():
    curve = optimal_frontier(TASK)
    assert (np.diff(curve["kl"].to_numpy()) < 0).all() and (np.diff(curve["reward"].to_numpy()) < 0).all()  # beta rises
    assert curve["kl"].iloc[-1] < 0.01 and curve["kl"].iloc[0] > 10
    assert optimal_frontier("CartPole-v1") is None


def test_rlgrid_report_writes_the_frontier_table_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--reps", "200", "--reference", "none"]) == 0
    assert "Reward against KL to the reference" in capsys.readouterr().out
    assert (out / "figures" / "frontier.png").stat().st_size > 10_000
    table = (out / "tables" / "frontier.csv").read_text()
    assert "dpo[beta-0.1]" in table and "rlhf_ppo[kl-0.05]" in table
    assert "Reward-KL frontier" in (out / "report.html").read_text()


def test_every_method_has_its_own_colour_past_the_palettes_ten():
    from analysis.figures import method_colors

    for count in (3, 10, 13):
        colors = method_colors([f"method{i}" for i in range(count)])
        assert len(set(colors.values())) == count


def test_reward_models_are_left_out_of_the_scores_and_a_files_score_is_its_held_out_accuracy(runs, tmp_path, capsys):
    """A reward model's evaluation return is a pair-ranking accuracy (it logs no KL): not a policy's score to compare."""
    for seed in (1, 2):
        write_run(runs, "reward_model", "default", seed, kl=0.0, reward=0.7, kl_metric="eval/label_accuracy")
        write_run(runs, "dpo", "beta-0.1", seed, kl=1.0, reward=0.8, task="data/pairs.jsonl")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--reps", "200", "--reference", "none"]) == 0
    printed = capsys.readouterr().out
    assert "2 reward-model runs (reward_model) are left out of the scores" in printed
    scores = (out / "tables" / "scores.csv").read_text()
    assert "reward_model" not in scores and "dpo[beta-0.1]" in scores
    frontier = (out / "tables" / "frontier.csv").read_text().splitlines()
    assert [line for line in frontier if "pairs.jsonl" in line] and "reward_model" not in "".join(frontier)
    shown = printed[printed.index("Reward against KL") :]
    assert "held-out preference accuracy" in shown and "true reward" in shown
