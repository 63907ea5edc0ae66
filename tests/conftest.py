"""Shared test setup: W&B can never go online, MuJoCo's log stays out of the repo, a tiny test env."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

# A tripwire: if any code path tried to reach W&B's servers it would fail fast on a closed loopback port.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_BASE_URL"] = "http://127.0.0.1:9"
os.environ["WANDB_INIT_TIMEOUT"] = "30"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
# Ray reads these when it is imported: every node on 127.0.0.1 (else Ray binds the primary interface) and no
# token authentication for the tests' local clusters. test_ray.py also asserts the node addresses.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"


class CountEnv(gym.Env):
    """Observation = [steps taken in the episode]; reward 1 per step; terminates after `terminate_at` steps
    (if set). Registered with a TimeLimit, so it is truncated at max_episode_steps otherwise."""

    def __init__(self, terminate_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1e6, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


gym.register(id="rlgrid-test/Count-v0", entry_point=CountEnv, max_episode_steps=3)


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path, monkeypatch):
    """Run every test in a scratch directory (MuJoCo writes MUJOCO_LOG.TXT into the working directory)."""
    monkeypatch.chdir(tmp_path)
