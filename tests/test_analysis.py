"""Loading runs into the tidy frame (directories and W&B history rows), score protocols, normalisation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import atari_game, final_scores, history_to_frame, human_normalized, load_run_dir, load_runs
from analysis.scores import env_bounds, load_reference, normalize_by_bounds, per_run_scores
from experiments.execute import RunOptions, execute_run
from experiments.runs import RunSpec

TINY = {
    "total_timesteps": 1024,
    "num_envs": 2,
    "num_steps": 128,
    "update_epochs": 2,
    "num_minibatches": 4,
    "eval_every": 512,
    "eval_episodes": 2,
}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        execute_run(RunSpec.create("ppo", "CartPole-v1", seed, TINY, suite="demo"), RunOptions(runs_dir=root, progress=False))
    return root


def test_load_runs_gives_the_tidy_schema(runs_dir):
    frame = load_runs(runs_dir)
    assert list(frame.columns) == [
        "suite",
        "algo",
        "variant",
        "env_id",
        "seed",
        "run_id",
        "step",
        "metric",
        "value",
        "complete",
    ]
    assert set(frame["seed"]) == {1, 2} and set(frame["suite"]) == {"demo"} and frame["complete"].all()
    evals = frame[frame["metric"] == "eval/episodic_return"]
    assert sorted(evals.loc[evals["seed"] == 1, "step"]) == [512, 1024]
    (run_dir,) = [p for p in runs_dir.rglob("seed1-*") if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    n_values = sum(1 for row in rows for k in row if k not in ("step", "time"))
    assert (frame["run_id"] == run_dir.name).sum() == n_values
    assert "time" not in set(frame["metric"])


def test_incomplete_runs_are_left_out_loudly_or_kept_on_request(runs_dir, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs_dir, copy)
    (done,) = [p for p in copy.rglob("DONE") if "seed2-" in str(p)]
    done.unlink()
    with pytest.warns(UserWarning, match="1 incomplete run"):
        frame = load_runs(copy)
    assert set(frame["seed"]) == {1}
    kept = load_runs(copy, include_incomplete=True)
    assert set(kept["seed"]) == {1, 2} and not kept.loc[kept["seed"] == 2, "complete"].any()


def test_wandb_history_rows_convert_to_the_same_frame_as_the_run_directory(runs_dir):
    (run_dir,) = [p for p in runs_dir.rglob("seed2-*") if p.is_dir()]
    spec = json.loads((run_dir / "spec.json").read_text())
    config = {
        **json.loads((run_dir / "config.json").read_text()),
        "exp_name": spec["algo"],
        "suite": spec["suite"],
        "variant": spec["variant"],
    }
    # scan_history yields one dict per wandb.log call: W&B's own keys, global_step, and what was logged then.
    rows = []
    for index, line in enumerate((run_dir / "metrics.jsonl").read_text().splitlines()):
        logged = json.loads(line)
        step, wall = logged.pop("step"), logged.pop("time")
        rows.append(
            {
                "_step": index,
                "_runtime": wall - 1.0,
                "_timestamp": wall,
                "global_step": step,
                **logged,
                "charts/unlogged_here": None,
            }
        )
    converted = history_to_frame(config, rows, run_id=run_dir.name)
    pd.testing.assert_frame_equal(converted, load_run_dir(run_dir))


def _frame(records):
    return pd.DataFrame(
        [
            ("s", algo, "default", env, seed, f"{algo}-{env}-{seed}", step, metric, value, True)
            for algo, env, seed, step, metric, value in records
        ],
        columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value", "complete"],
    )


def test_protocols_on_a_hand_built_frame():
    records = []
    for seed, evals in ((1, [0.0, 10.0, 20.0, 30.0]), (2, [0.0, 50.0, 10.0, 10.0])):
        records += [("ppo", "E-v0", seed, 100 * (i + 1), "eval/episodic_return", v) for i, v in enumerate(evals)]
        records += [("ppo", "E-v0", seed, i, "charts/episodic_return", float(i)) for i in range(150)]
    frame = _frame(records)
    last2 = final_scores(frame, "eval-last", n=2).set_index("seed")["score"]
    assert last2.to_dict() == {1: 25.0, 2: 10.0}
    train = final_scores(frame, "train-last100").set_index("seed")["score"]
    assert train.to_dict() == {1: np.mean(range(50, 150)), 2: np.mean(range(50, 150))}
    best = final_scores(frame, "eval-max")
    # seed-averages per step: 0, 30, 15, 20 -> max 30 at step 200
    assert len(best) == 1 and best.loc[0, "score"] == 30.0 and best.loc[0, "best_step"] == 200 and best.loc[0, "n_seeds"] == 2
    # Per seed, eval-max is each seed's evaluation at that best step; their mean is the cell's score.
    assert per_run_scores(frame, "eval-max").set_index("seed")["score"].to_dict() == {1: 10.0, 2: 50.0}
    pd.testing.assert_frame_equal(per_run_scores(frame, "eval-last", n=2), final_scores(frame, "eval-last", n=2))
    with pytest.raises(ValueError, match="unknown protocol"):
        final_scores(frame, "best")


def test_atari_human_normalisation_from_the_shipped_table():
    assert atari_game("ALE/Pong-v5") == atari_game("PongNoFrameskip-v4") == "pong"
    assert atari_game("ALE/MontezumaRevenge-v5") == "montezuma_revenge"
    table = load_reference("atari_human_random_57")
    pong = table[table["env_id"] == "pong"].set_index("algorithm")["value"]
    scores = pd.DataFrame({"env_id": ["ALE/Pong-v5", "ALE/Pong-v5"], "score": [pong["Random"], pong["Human"]]})
    np.testing.assert_allclose(human_normalized(scores).to_numpy(), [0.0, 1.0])
    with pytest.raises(KeyError, match="NoSuchGame"):
        human_normalized(pd.DataFrame({"env_id": ["ALE/NoSuchGame-v5"], "score": [1.0]}))


def test_minatar_games_are_not_matched_with_the_atari_games_of_the_same_name():
    from analysis.scores import env_key

    assert env_key("MinAtar/Breakout-v1") == env_key("Breakout-MinAtar") == "minatar_breakout"
    assert env_key("MinAtar/SpaceInvaders-v1") == "minatar_space_invaders" != env_key("ALE/SpaceInvaders-v5")
    with pytest.raises(KeyError, match="MinAtar"):
        human_normalized(pd.DataFrame({"env_id": ["MinAtar/Breakout-v1"], "score": [1.0]}))


def test_minmax_bounds():
    scores = pd.DataFrame({"env_id": ["A", "B"], "score": [5.0, 0.0]})
    np.testing.assert_allclose(normalize_by_bounds(scores, {"A": (0.0, 10.0), "B": (-10.0, 10.0)}), [0.5, 0.5])
    with pytest.raises(KeyError, match="B"):
        normalize_by_bounds(scores, {"A": (0.0, 1.0)})


def test_normalisation_bounds_by_name():
    assert env_bounds(["Hopper-v5"], "d4rl") == {"Hopper-v5": (-20.272305, 3234.3)}  # D4RL random / expert
    assert env_bounds(["PongNoFrameskip-v4"], "human") == {"PongNoFrameskip-v4": (-20.7, 14.6)}
    low, high = env_bounds(["Hopper-v5"], "mujoco_td3_paper_2018:PPO (openai/baselines):TD3")["Hopper-v5"]
    assert (low, high) == (2164.70, 3564.07)  # TD3 Table 1 values for Hopper-v1
    with pytest.raises(KeyError, match="CartPole-v1"):
        env_bounds(["Hopper-v5", "CartPole-v1"], "d4rl")
    with pytest.raises(ValueError, match="unknown normalisation"):
        env_bounds(["Hopper-v5"], "zscore")


# --- reference tables as published: free text in n_seeds_if_given, spreads given as standard errors ------------
REFERENCE_COLUMNS = (
    "source,algorithm,env_id,env_version_in_source,steps_or_frames,metric,value,std_or_ci_if_given,n_seeds_if_given,citation"
)


def _reference_csv(path, rows: list[tuple[str, str, str, str, str]]):
    """A reference CSV: one line per (env_id, metric, value, spread, n_seeds) for algorithm ppo at 1M steps."""
    lines = [REFERENCE_COLUMNS]
    lines += [
        f'paper,ppo,{env},v5,1M env steps,"{metric}",{value},"{spread}","{n}",table 1'
        for env, metric, value, spread, n in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_shipped_reference_table_loads_with_integer_seed_counts():
    from analysis.scores import REFERENCE_DIR

    names = sorted(p.stem for p in REFERENCE_DIR.glob("*.csv"))
    assert len(names) == 7
    for name in names:
        table = load_reference(name)
        assert str(table["n_seeds_if_given"].dtype) == "Int64", name
    cleanrl = load_reference("cleanrl_benchmarks")
    raw = pd.read_csv(REFERENCE_DIR / "cleanrl_benchmarks.csv", dtype=str)["n_seeds_if_given"]
    not_stated = raw.str.fullmatch("not stated", na=False)
    assert not_stated.sum() == 57 and cleanrl.loc[not_stated, "n_seeds_if_given"].isna().all()  # baselines' Atari rows
    assert set(load_reference("mujoco_td3_paper_2018")["n_seeds_if_given"]) == {10}


def test_free_text_seed_counts_are_read_as_their_leading_integer(tmp_path):
    cells = ["1 (single run)", "10 seeds", "3 (CleanRL); baselines seeds not stated", "5", "3.0", "", "n/a", "not stated"]
    rows = [(f"Env{i}-v5", "mean return", "100", "", n) for i, n in enumerate(cells)]
    table = load_reference(str(_reference_csv(tmp_path / "published.csv", rows)))
    assert table["n_seeds_if_given"].tolist() == [1, 10, 3, 5, 3, pd.NA, pd.NA, pd.NA]


def test_an_unreadable_seed_count_names_the_file_row_and_column(tmp_path):
    rows = [
        ("A-v5", "m", "1", "", "4"),
        ("B-v5", "m", "1", "", "about ten"),
        ("C-v5", "m", "1", "", "2"),
        ("D-v5", "m", "1", "", "3.5"),
    ]
    path = _reference_csv(tmp_path / "mine.csv", rows)
    with pytest.raises(ValueError) as info:
        load_reference(str(path))
    message = str(info.value)
    assert f"{path}, row 3 (the header is row 1), column n_seeds_if_given: cannot read a seed count in 'about ten'" in message
    assert f"{path}, row 5 (the header is row 1), column n_seeds_if_given: cannot read a seed count in '3.5'" in message
    assert "row 2" not in message and "row 4" not in message


@pytest.fixture(scope="module")
def hopper_frame(tmp_path_factory):
    """4 seeds of ppo on Hopper-v5 at about 2,400 (1M steps): the cell a user's reference table is compared with."""
    from tests.helpers import write_synthetic_runs

    root = tmp_path_factory.mktemp("hopper")
    write_synthetic_runs(
        root, {("ppo", "default", "Hopper-v5"): 2400.0}, seeds=[1, 2, 3, 4], total_steps=1_000_000, noise=50.0
    )
    return load_runs(root)


@pytest.mark.parametrize(
    ("metric", "spread"),
    [
        ("mean return of the final policy", "±62 (standard error)"),  # the spread says it
        ("mean return; ± = standard error of the mean over seeds", "±62"),  # the metric says it
        ("mean return", "±62 (s.e.)"),
    ],
    ids=["spread-says-se", "metric-says-se", "abbreviated"],
)
def test_a_standard_error_over_seeds_becomes_a_seed_std(tmp_path, hopper_frame, metric, spread):
    from scipy import stats

    from analysis.verdicts import compare_to_references

    path = _reference_csv(tmp_path / "se.csv", [("Hopper-v5", metric, "2500", spread, "5 (seeds)")])
    row = compare_to_references(hopper_frame, [str(path)], {"Hopper-v5": "mujoco"}).iloc[0]
    assert row["reference_n"] == 5
    assert row["reference_std"] == pytest.approx(62 * np.sqrt(5))  # se = s / sqrt(n)
    ours = per_run_scores(hopper_frame).sort_values("seed")["score"].to_numpy()
    expected = stats.ttest_ind_from_stats(ours.mean(), ours.std(ddof=1), 4, 2500.0, 62 * np.sqrt(5), 5, equal_var=False)
    assert row["statistic"] == f"Welch t={expected.statistic:.2f}, p={expected.pvalue:.3f}"


def test_a_standard_error_without_seeds_or_over_episodes_is_not_a_seed_std(tmp_path, hopper_frame):
    from analysis.verdicts import compare_to_references

    rows = [("Hopper-v5", "mean return", "2500", "±62 (standard error)", "")]
    row = compare_to_references(hopper_frame, [str(_reference_csv(tmp_path / "a.csv", rows))], {}).iloc[0]
    assert np.isnan(row["reference_std"]) and "bootstrap" in row["statistic"]  # no n: nothing to convert with
    rows = [("Hopper-v5", "mean return", "2500", "±62 (standard error over 30 evaluation episodes)", "1")]
    row = compare_to_references(hopper_frame, [str(_reference_csv(tmp_path / "b.csv", rows))], {}).iloc[0]
    assert np.isnan(row["reference_std"]) and row["reference_n"] == 1
