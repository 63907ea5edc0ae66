"""DDPG, TD3 and SAC learn Pendulum-v1 within 20k environment steps (the off-policy issue's learning test).

Calibration on the project's 2-core machine, final deterministic evaluation over 10 episodes after 20k steps
(1k uniform random steps first, 64-unit hidden layers, each algorithm's other defaults but the learning rate
noted below; a random policy scores about -1,200, a good one about -150):
  DDPG (lr 1e-3) seeds 1-3: -122.1, -132.5, -113.5 (seed 2 passed through -393.7 at 15k)
  TD3 (lr 1e-3)  seeds 1-3: -108.9, -130.8, -110.1
  SAC            seeds 1-3: -107.8, -134.6, -108.5
The test asks what the issue asks, better than -250, of seed 1 of each (all three calibrated seeds clear it by more
than 100; a second seed per algorithm cost CI three more minutes); the 64-unit networks keep each run short on two
cores.
"""

from __future__ import annotations

import pytest

from algorithms import sac, td3
from algorithms.common import NullLogger
from experiments.registry import load_algorithm

ddpg = load_algorithm("ddpg")  # td3.py without clipped double-Q and target smoothing

PENDULUM = {
    "env_id": "Pendulum-v1",
    "total_timesteps": 20_000,
    "learning_starts": 1_000,
    "hidden_size": 64,
    "eval_every": 0,
    "eval_episodes": 10,
}
SETTINGS = {"ddpg": (ddpg, {"learning_rate": 1e-3}), "td3": (td3, {"learning_rate": 1e-3}), "sac": (sac, {})}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(SETTINGS))
def test_learns_pendulum_within_20k_steps(algo):
    seed = 1
    module, overrides = SETTINGS[algo]
    result = module.train(module.Config(**PENDULUM, **overrides, seed=seed), NullLogger())
    assert result.global_step == 20_000
    assert result.final_eval_return > -250, f"{algo} seed {seed}: {result.final_eval_return:.1f} after 20k steps"
