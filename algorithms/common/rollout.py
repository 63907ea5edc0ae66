"""Storage for one on-policy rollout: T steps in N env copies, filled step by step, read back as tensors.

Plumbing shared by the on-policy algorithms (PPO and PPO-KL, A2C, ACKTR, TRPO and NPG): what is stored and how the
env is stepped is the same for all of them; what they compute from it (log-probs, values, advantages) stays
in each file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.vector import VecEnv


@dataclass
class RolloutBatch:
    obs: torch.Tensor  # (T, N, *obs_shape) float32: s_t
    actions: torch.Tensor  # (T, N, *action_shape): float32 (Box) or int64 (Discrete)
    rewards: torch.Tensor  # (T, N) float32
    final_obs: torch.Tensor  # (T, N, *obs_shape): s_{t+1} as the env produced it (the true last obs of an episode)
    terminated: torch.Tensor  # (T, N) bool: s_{t+1} is terminal, nothing to bootstrap from
    episode_ends: torch.Tensor  # (T, N) bool: terminated or truncated, the episode does not continue at t + 1


class RolloutStorage:
    def __init__(
        self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...], continuous: bool
    ) -> None:
        T, N = num_steps, num_envs
        self.obs = np.zeros((T, N, *obs_shape), np.float32)
        self.final_obs = np.zeros((T, N, *obs_shape), np.float32)
        self.rewards = np.zeros((T, N), np.float32)
        self.terminated = np.zeros((T, N), bool)
        self.truncated = np.zeros((T, N), bool)
        self.actions = torch.zeros((T, N, *action_shape), dtype=torch.float32 if continuous else torch.long)

    def step(
        self, envs: VecEnv, t: int, obs: np.ndarray, action: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
        """Store (s_t, a_t), step every env copy with `action` and store what comes back. Returns the next observation
        (after an automatic reset where an episode ended) and the training episodes that ended (`info["episodes"]`)."""
        self.obs[t] = obs
        self.actions[t] = torch.from_numpy(action)
        next_obs, self.rewards[t], self.terminated[t], self.truncated[t], info = envs.step(action)
        self.final_obs[t] = info["final_obs"]
        return next_obs, info["episodes"]

    def tensors(self, device: torch.device) -> RolloutBatch:
        terminated = torch.from_numpy(self.terminated).to(device)
        return RolloutBatch(
            obs=torch.from_numpy(self.obs).to(device),
            actions=self.actions.to(device),
            rewards=torch.from_numpy(self.rewards).to(device),
            final_obs=torch.from_numpy(self.final_obs).to(device),
            terminated=terminated,
            episode_ends=terminated | torch.from_numpy(self.truncated).to(device),
        )
