"""Learning: PPO solves CartPole-v1 within 100k steps (mean evaluation return over 3 seeds >= 475).

Settings are RL Zoo's tuned CartPole PPO hyperparameters (8 envs x 32 steps, 1 minibatch of 256, 20
epochs, gamma 0.98, lambda 0.8, lr 1e-3 annealed, no entropy bonus, no normalisation). Calibrated on seeds
1-6 (final evaluation 500.0 on each, see the issue note); the threshold leaves room for one weaker seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PPO_CARTPOLE

from algorithms import ppo

CARTPOLE = {**PPO_CARTPOLE, "eval_every": 25_000, "eval_episodes": 10}


@pytest.mark.slow
def test_ppo_solves_cartpole_within_100k_steps():
    finals = [ppo.train(ppo.Config(**CARTPOLE, seed=seed)).final_eval_return for seed in (1, 2, 3)]
    assert np.mean(finals) >= 475, f"final evaluation returns {finals}"
