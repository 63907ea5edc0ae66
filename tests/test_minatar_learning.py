"""Learning on images: DQN and PPO with their CNN torsos clearly learn MinAtar Breakout on CPU.

A random policy scores 0.3 per game here (50 episodes). Settings are those of experiments/suites/minatar.toml
except the budgets (and, for DQN, a shorter exploration and an update every 2 steps instead of every step, to fit
CI). Calibration, final greedy evaluation over 10 games: PPO at 150k steps, seeds 1-4: 3.8, 3.0, 3.2, 3.0; DQN at 50k
steps, seeds 1-4: 5.6, 5.9, 4.1, 3.4. The tests take seeds 1-2 (PPO) and 1 (DQN).
"""

from __future__ import annotations

import numpy as np
import pytest

from algorithms import dqn, ppo

pytest.importorskip("minatar")

BREAKOUT = "MinAtar/Breakout-v1"
PPO_SETTINGS = {
    "env_id": BREAKOUT,
    "total_timesteps": 150_000,
    "num_envs": 8,
    "num_steps": 128,
    "learning_rate": 2.5e-4,
    "num_minibatches": 4,
    "update_epochs": 4,
    "clip_coef": 0.1,
    "ent_coef": 0.01,
    "normalize_obs": False,
    "normalize_reward": False,
    "eval_every": 50_000,
    "eval_episodes": 10,
}
DQN_SETTINGS = {
    "env_id": BREAKOUT,
    "total_timesteps": 50_000,
    "buffer_size": 50_000,
    "learning_rate": 2.5e-4,
    "batch_size": 32,
    "target_network_frequency": 1000,
    "end_e": 0.05,
    "exploration_fraction": 0.3,
    "learning_starts": 5000,
    "train_frequency": 2,
    "loss": "huber",
    "eval_every": 25_000,
    "eval_episodes": 10,
}


@pytest.mark.slow
@pytest.mark.minatar
def test_ppo_learns_minatar_breakout_within_150k_steps():
    finals = [ppo.train(ppo.Config(**PPO_SETTINGS, seed=seed)).final_eval_return for seed in (1, 2)]
    assert np.mean(finals) >= 2.0, f"final evaluation returns {finals} (random policy: 0.3)"


@pytest.mark.slow
@pytest.mark.minatar
def test_dqn_learns_minatar_breakout_within_50k_steps():
    finals = [dqn.train(dqn.Config(**DQN_SETTINGS, seed=seed)).final_eval_return for seed in (1,)]
    assert np.mean(finals) >= 2.0, f"final evaluation returns {finals} (random policy: 0.3)"
