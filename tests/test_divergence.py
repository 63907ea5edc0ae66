"""Divergence and runaway evaluation: a run whose rewards, returns, losses or weights turn non-finite is recorded as
diverged for every algorithm (the shared `RunState` checks), and evaluation always ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CountEnv
from helpers import run_env

from algorithms.common import Checkpointer
from algorithms.common.config import RunConfig
from algorithms.common.run import RunState
from envs import evaluate, make_vec_env

gym.register(id="rlgrid-test/CountForever-v0", entry_point=CountEnv)  # no time limit: its episodes never end


def _constant_policy(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


def test_an_evaluation_whose_returns_are_nan_ends():
    """NaN used to be the 'not finished' marker: an episode with a NaN return never counted as finished and the
    evaluation loop never ended."""
    import crashing_env  # noqa: F401  (registers the test envs)

    envs, _ = make_vec_env("NaNRewardSoon-v0", 1, seed=0)
    returns = evaluate(envs, _constant_policy, episodes=3, seed=1)
    assert returns.shape == (3,) and np.isnan(returns).all()


def test_an_evaluation_on_an_env_without_a_time_limit_is_cut_at_max_steps():
    envs, _ = make_vec_env("rlgrid-test/CountForever-v0", 1, seed=0)
    returns = evaluate(envs, _constant_policy, episodes=2, seed=1, max_steps=50)
    assert returns.tolist() == [50.0, 50.0]  # reward 1 per step, counted up to the cut


def test_a_non_finite_evaluation_return_is_a_divergence():
    import crashing_env  # noqa: F401

    envs, _ = make_vec_env("NaNRewardSoon-v0", 1, seed=0)
    run = RunState(RunConfig(env_id="NaNRewardSoon-v0", total_timesteps=100), envs, None, None, {})
    with pytest.raises(FloatingPointError, match="non-finite evaluation return at step 7"):
        run.evaluate(7, _constant_policy)


def test_a_network_with_non_finite_weights_is_never_checkpointed(tmp_path):
    envs, _ = make_vec_env("CartPole-v1", 1, seed=0)
    network = torch.nn.Linear(4, 2)
    checkpoint = Checkpointer(tmp_path, every_steps=1, every_seconds=None)
    run = RunState(RunConfig(total_timesteps=100), envs, None, checkpoint, {"q_network": network})
    run.checkpoint_if_due(0)  # the interval counts from here
    run.checkpoint_if_due(1)
    with torch.no_grad():
        network.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite weights in q_network at step 2"):
        run.checkpoint_if_due(2)
    assert [p.name for p in checkpoint.paths()] == ["ckpt-000000000001.pt"]


OFF_POLICY = "--learning-starts 200 --buffer-size 1000 --batch-size 32 --eval-every 1000 --eval-episodes 2"


@pytest.mark.parametrize(
    ("algo", "env_id", "why"),
    [
        # Rewards NaN from the 6th step of each episode: the case (DQN then spun for ever in its evaluation).
        ("dqn", "crashing_env:NaNRewardSoon-v0", "non-finite training episode return nan at step 10"),
        ("sac", "crashing_env:NaNRewardSoonBox-v0", "non-finite training episode return nan at step 10"),
        ("td3", "crashing_env:NaNRewardSoonBox-v0", "non-finite training episode return nan at step 10"),
        # Healthy training, NaN evaluation returns: the evaluation ends (it used to spin for ever) and says so.
        ("dqn", "crashing_env:NaNEvalReward-v0", "non-finite evaluation return at step 1000"),
        # Finite returns, overflowing TD errors: caught at the first logged update, through the shared logger.
        ("dqn", "crashing_env:HugeReward-v0", "non-finite loss at step 2"),
    ],
)
def test_an_off_policy_run_that_diverges_is_recorded_as_diverged(tmp_path, algo, env_id, why):
    """Real `rlgrid train` processes; the timeout only bounds a regression (the evaluation used to hang for ever)."""
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "experiments", "train", algo, "--env-id", env_id, "--total-timesteps", "3000"]
    command += [*OFF_POLICY.split(), "--runs-dir", str(runs), "--quiet"]
    tests = str(Path(__file__).resolve().parent)
    env = run_env()
    env["PYTHONPATH"] += f":{tests}"  # crashing_env
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 1, finished.stderr
    assert f"diverged: {why}" in finished.stderr and "Traceback" not in finished.stderr
    (run_dir,) = runs.glob(f"single/{algo}/*/seed1-*")
    assert why in (run_dir / "DIVERGED").read_text() and not (run_dir / "DONE").exists()
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "diverged" in again.stderr, "a diverged run is not started again"
