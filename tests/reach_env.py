"""A one-dimensional reaching task for offline learning tests: cheap to step and to learn, with an optimal policy
known in closed form.

The state is a position x in [-1, 1], starting uniformly in [-1, -0.5]; the action a in [-1, 1] moves it by 0.2 a
(clipped to the interval); the reward is -|x' - 0.8|, the distance to the goal after the move; episodes last 25 steps
(a time limit, no termination). `toward_goal(x)` moves at full speed towards the goal and stops on it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GOAL, SPEED = 0.8, 0.2


class Reach1D(gym.Env):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1.0, -0.5))
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + SPEED * float(np.clip(action[0], -1.0, 1.0)), -1.0, 1.0))
        return np.array([self.x], np.float32), -abs(self.x - GOAL), False, False, {}


def toward_goal(observation: np.ndarray) -> np.ndarray:
    """The optimal policy: full speed towards the goal, the exact step onto it at the end."""
    return np.clip((GOAL - observation) / SPEED, -1.0, 1.0).astype(np.float32)
