"""Reference verdicts on constructed cases, the parsing of reference tables, and matching across env versions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.load import load_runs
from analysis.scores import load_reference, per_run_scores
from analysis.verdicts import bootstrap_ci, compare_to_references, parse_spread, parse_steps, reference_rows, verdict
from tests.helpers import write_synthetic_runs


def test_welch_verdicts_when_the_reference_gives_a_seed_spread():
    rng = np.random.default_rng(0)
    close = 3000 + 100 * rng.standard_normal(10)
    assert verdict(close, 3000.0, 150.0, 10)["verdict"] == "reproduced"
    assert verdict(close - 1000, 3000.0, 150.0, 10)["verdict"] == "below"
    assert verdict(close + 1000, 3000.0, 150.0, 10)["verdict"] == "above"
    result = verdict(close - 1000, 3000.0, 150.0, 10)
    assert result["statistic"].startswith("Welch") and result["p_value"] < 1e-6


def _scores(mean: float, std: float, n: int) -> np.ndarray:
    """n per-seed scores with exactly this mean and sample std (ddof=1)."""
    z = np.random.default_rng(1).standard_normal(n)
    return mean + std * (z - z.mean()) / z.std(ddof=1)


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_welch_verdicts_just_either_side_of_p_005(side):
    """Our 5 seeds (std 100) against a reference of 10 seeds (std 300): Welch's two-sided test at 5% changes its verdict
    where |mean difference| = t_0.975(Welch-Satterthwaite df) x standard error. 1% inside: reproduced; 1% outside: below
    or above. (Student's pooled t would still say reproduced 1% outside; a one-sided test would not say so 1% inside.)"""
    ref, ref_std, ref_n, std, n = 3000.0, 300.0, 10, 100.0, 5
    a, b = std**2 / n, ref_std**2 / ref_n
    df = (a + b) ** 2 / (a**2 / (n - 1) + b**2 / (ref_n - 1))
    critical = stats.t.ppf(0.975, df) * np.sqrt(a + b)
    inside = verdict(_scores(ref + side * 0.99 * critical, std, n), ref, ref_std, ref_n)
    outside = verdict(_scores(ref + side * 1.01 * critical, std, n), ref, ref_std, ref_n)
    assert inside["verdict"] == "reproduced" and 0.05 < inside["p_value"] < 0.052, inside
    assert outside["verdict"] == ("above" if side > 0 else "below") and 0.048 < outside["p_value"] < 0.05, outside


def test_bootstrap_verdicts_without_a_reference_spread():
    ours = np.array([99.0, 100.0, 101.0, 100.5, 99.5])
    assert verdict(ours, 100.0)["verdict"] == "reproduced"
    assert verdict(ours, 110.0)["verdict"] == "below"
    assert verdict(ours, 90.0)["verdict"] == "above"
    assert "bootstrap" in verdict(ours, 90.0)["statistic"]
    assert verdict(ours[:1], 100.0)["verdict"] == "inconclusive"
    # At the edges of the 95% CI: a reference on the edge is inside, one a hair beyond it is not.
    low, high = bootstrap_ci(ours)
    assert verdict(ours, low)["verdict"] == "reproduced" and verdict(ours, high)["verdict"] == "reproduced"
    assert verdict(ours, low - 1e-6)["verdict"] == "above" and verdict(ours, high + 1e-6)["verdict"] == "below"


def test_reference_text_parsing():
    assert parse_steps("1M env steps") == 1e6
    assert parse_steps("500k env steps (same budget as ppo.py)") == 5e5
    assert parse_steps("40M frames (10M timesteps) per paper caption") == 1e7  # frame skip 4
    assert parse_steps("max_episode_steps=500") is None and parse_steps("n/a") is None
    assert parse_spread("±271.74 (std across seeds)", "numpy std (ddof=0) across seeds") == (271.74, True, True)
    assert parse_spread("±1093 (std over evaluation episodes)", "30 episodes") == (1093.0, False, False)
    assert parse_spread(float("nan"), "") == (None, False, False)


def test_cells_map_to_the_right_rows_across_env_versions_and_families():
    hopper = reference_rows("cleanrl_benchmarks", "ppo", "mujoco", "Hopper-v5")
    assert list(hopper["algorithm"]) == ["CleanRL ppo_continuous_action.py"] and list(hopper["env_id"]) == ["Hopper-v4"]
    cartpole = reference_rows("cleanrl_benchmarks", "ppo", "classic_control", "CartPole-v1")
    assert list(cartpole["algorithm"]) == ["CleanRL ppo.py"]
    td3 = reference_rows("mujoco_td3_paper_2018", "td3", "mujoco", "HalfCheetah-v5")
    assert list(td3["value"]) == [9636.95], "Table 1 only (max average return), not Table 2"
    thresholds = reference_rows("gymnasium_reward_thresholds", "ppo", "classic_control", "CartPole-v1")
    assert set(thresholds["value"]) == {475.0} and set(thresholds["env_id"]) == {"CartPole-v1"}, "not CartPole-v0's 195"
    assert reference_rows("cleanrl_benchmarks", "no_such_algo", "mujoco", "Hopper-v5").empty


@pytest.fixture()
def synthetic_frame(tmp_path):
    # CleanRL's PPO on Hopper-v4: 2382.86 ± 271.74 (ddof=0, 3 seeds). One cell at that level, one far below.
    cells = {("ppo", "default", "Hopper-v5"): 2382.86, ("ppo", "broken", "Hopper-v5"): 500.0}
    write_synthetic_runs(tmp_path, cells, seeds=[1, 2, 3, 4, 5], points=40, total_steps=1_000_000, noise=150.0)
    return load_runs(tmp_path)


def test_comparison_end_to_end_on_runs_with_known_levels(synthetic_frame):
    table = compare_to_references(synthetic_frame, ["cleanrl_benchmarks"], {"Hopper-v5": "mujoco"})
    by_variant = table.set_index("variant")
    assert by_variant.loc["default", "verdict"] == "reproduced" and by_variant.loc["broken", "verdict"] == "below"
    row = by_variant.loc["default"]
    assert row["protocol"] == "train-last100" and row["versions"] == "ours v5, reference v4" and row["note"] == ""
    # CleanRL's std is ddof=0 over 3 seeds; the test uses the ddof=1 equivalent.
    assert np.isclose(row["reference_std"], 271.74 * np.sqrt(3 / 2))
    expected = per_run_scores(synthetic_frame, "train-last100").query("variant == 'default'")["score"].mean()
    assert np.isclose(row["ours"], expected)


def test_budget_differences_are_stated(tmp_path):
    write_synthetic_runs(tmp_path, {("ppo", "default", "Hopper-v5"): 2400.0}, seeds=[1, 2, 3], total_steps=200_000)
    table = compare_to_references(load_runs(tmp_path), ["cleanrl_benchmarks"], {"Hopper-v5": "mujoco"})
    assert table.iloc[0]["note"] == "budget differs: ours 200,000 steps, reference 1,000,000"
    # 2,400 is within CleanRL's 1M-step spread, but a 200k-step run cannot reproduce (or fall below) a 1M-step figure
    assert table.iloc[0]["verdict"] == "budget differs" and "Welch" in table.iloc[0]["statistic"]


def test_the_budget_rule_just_either_side_of_10_percent(tmp_path):
    """CleanRL's PPO on Hopper: 1M steps. A budget more than 10% away from it is `budget differs`; exactly 10% or
    less is compared (and here reproduced: the level is CleanRL's)."""
    budgets = {"b899000": 899_000, "b900000": 900_000, "b1100000": 1_100_000, "b1101000": 1_101_000}
    for variant, steps in budgets.items():
        cell = {("ppo", variant, "Hopper-v5"): 2382.86}
        write_synthetic_runs(tmp_path, cell, seeds=[1, 2, 3, 4, 5], total_steps=steps, noise=150.0)
    table = compare_to_references(load_runs(tmp_path), ["cleanrl_benchmarks"], {"Hopper-v5": "mujoco"})
    rows = table.set_index("variant")
    assert rows["budget"].to_dict() == {variant: float(steps) for variant, steps in budgets.items()}
    for variant in ("b900000", "b1100000"):
        assert rows.loc[variant, "verdict"] == "reproduced" and rows.loc[variant, "note"] == "", rows.loc[variant]
    for variant, steps in (("b899000", "899,000"), ("b1101000", "1,101,000")):
        assert rows.loc[variant, "verdict"] == "budget differs", rows.loc[variant]
        assert rows.loc[variant, "note"] == f"budget differs: ours {steps} steps, reference 1,000,000"


def test_eval_max_verdict_uses_the_max_of_the_seed_average(tmp_path):
    # TD3 Table 1, TD3 on Hopper-v1: 3564.07 ± 114.74 over 10 trials.
    write_synthetic_runs(
        tmp_path, {("td3", "default", "Hopper-v5"): 3564.0}, seeds=list(range(10)), noise=110.0, total_steps=1_000_000
    )
    frame = load_runs(tmp_path)
    row = compare_to_references(frame, ["mujoco_td3_paper_2018"], {"Hopper-v5": "mujoco"}).iloc[0]
    evals = frame[frame["metric"] == "eval/episodic_return"]
    assert np.isclose(row["ours"], evals.groupby("step")["value"].mean().max())
    assert row["protocol"] == "eval-max" and row["verdict"] == "reproduced" and row["statistic"].startswith("Welch")


def test_a_user_table_in_the_same_format_works(tmp_path, synthetic_frame):
    columns = load_reference("cleanrl_benchmarks").columns
    mine = pd.DataFrame([dict.fromkeys(columns, ""), dict.fromkeys(columns, "")])
    mine["algorithm"], mine["env_id"], mine["value"] = ["PPO", "PPO"], ["Hopper-v5", "Walker2d-v5"], [5000.0, 1.0]
    mine["steps_or_frames"], mine["std_or_ci_if_given"], mine["n_seeds_if_given"] = "1M steps", None, None
    path = tmp_path / "mine.csv"
    mine.to_csv(path, index=False)
    table = compare_to_references(synthetic_frame, [str(path)], {"Hopper-v5": "mujoco"}, protocol="eval-last")
    assert set(table["verdict"]) == {"below"} and set(table["protocol"]) == {"eval-last"} and len(table) == 2
