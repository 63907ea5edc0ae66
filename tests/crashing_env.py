"""An env that raises after a few steps, importable by spawned grid workers as `crashing_env:Crash-v0`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CrashEnv(gym.Env):
    def __init__(self, crash_after: int = 50) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.crash_after = crash_after
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps > self.crash_after:
            raise RuntimeError("simulator exploded (test env)")
        return np.zeros(2, np.float32), 0.0, False, self.steps % 10 == 0, {}


gym.register(id="Crash-v0", entry_point=CrashEnv)


class NaNRewardEnv(CrashEnv):
    """Rewards become NaN after a few steps: the learner's losses go non-finite (a diverging run)."""

    def step(self, action):
        self.steps += 1
        reward = float("nan") if self.steps > self.crash_after else 0.0
        return np.zeros(2, np.float32), reward, False, self.steps % 10 == 0, {}


gym.register(id="NaNReward-v0", entry_point=NaNRewardEnv)


class NaNRewardBoxEnv(NaNRewardEnv):
    """NaNRewardEnv with continuous actions (DDPG, TD3, SAC)."""

    def __init__(self, crash_after: int = 50) -> None:
        super().__init__(crash_after)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


# The rewards of every episode (10 steps) turn NaN at step 6: training and evaluation returns are all NaN.
gym.register(id="NaNRewardSoon-v0", entry_point=NaNRewardEnv, kwargs={"crash_after": 5})
gym.register(id="NaNRewardSoonBox-v0", entry_point=NaNRewardBoxEnv, kwargs={"crash_after": 5})


class HugeRewardEnv(CrashEnv):
    """Rewards of 1e30: every return is finite (1e31 in float64), but a squared TD error overflows float32 (a
    diverging critic while the env looks healthy)."""

    def step(self, action):
        self.steps += 1
        return np.zeros(2, np.float32), 1e30, False, self.steps % 10 == 0, {}


gym.register(id="HugeReward-v0", entry_point=HugeRewardEnv)


class NaNEvalRewardEnv(CrashEnv):
    """Healthy in training; NaN rewards in episodes reset with a seed of 1,000,000 or more, which only evaluation uses
    (RunState's evaluation seeds): the evaluation path alone meets them."""

    def reset(self, *, seed=None, options=None):
        self.in_evaluation = seed is not None and seed >= 1_000_000
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan") if self.in_evaluation else 0.0, terminated, truncated, info


gym.register(id="NaNEvalReward-v0", entry_point=NaNEvalRewardEnv, kwargs={"crash_after": 10**9})


class NaNRewardForSeedTwoBoxEnv(NaNRewardBoxEnv):
    """NaNRewardSoonBox-v0 for the copy first reset with seed 2 only; every other seed is an ordinary (dull) task: one
    seed of a pack diverges while the others do not."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.doomed = seed == 2
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward if self.doomed else 0.0, terminated, truncated, info


gym.register(id="NaNRewardForSeedTwoBox-v0", entry_point=NaNRewardForSeedTwoBoxEnv, kwargs={"crash_after": 5})
