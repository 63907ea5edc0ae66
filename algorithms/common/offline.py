"""Offline RL plumbing shared by bc, td3_bc, iql and cql: a dataset as the run's task, on the training device, sampled
uniformly; the statistics that standardise its observations and scale its rewards; the evaluation policy in the
dataset's env; the D4RL-normalised score of each evaluation.

The run's `env_id` names the dataset (a Minari id or a D4RL .hdf5 path: `envs.datasets.is_dataset_id`), and the run
is evaluated in the env the dataset was collected in. A step of an offline run is one gradient update:
`total_timesteps` updates, `eval_every` updates between evaluations (no env step is taken but the evaluations').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from algorithms.common.checkpoint import Checkpointer
from algorithms.common.config import RunConfig
from algorithms.common.logging import Logger
from algorithms.common.replay import Batch
from algorithms.common.run import RunState, numpy_policy
from envs import VecEnv, dataset_env_id, make_vec_env
from envs.datasets import Transitions, is_dataset_id, load_dataset

STATE_STD_EPS = 1e-3
"""added to each observation dimension's std before dividing (TD3+BC's code and CORL: a constant dimension stays 0)"""
LOG_EVERY = 1_000
"""gradient updates between two logs of the losses (and the last update)"""
OFFLINE_SMOKE = {
    "env_id": "rlgrid/pendulum-v1/smoke-v0",
    "total_timesteps": 300,
    "batch_size": 32,
    "eval_every": 150,
    "eval_episodes": 2,
}
"""the offline algorithms' SMOKE settings: 300 updates on the smoke dataset tests/conftest.py makes"""


@dataclass(frozen=True)
class OfflineConfig(RunConfig):
    env_id: str = "rlgrid/hopper-v5/medium-v0"
    """the dataset: a Minari id under $MINARI_DATASETS_PATH (`rlgrid dataset list`) or a D4RL .hdf5 path; the run is
    evaluated in the env it was collected in"""
    total_timesteps: int = 1_000_000
    """gradient updates (D4RL tables: 1M)"""
    eval_every: int = 5_000
    """gradient updates between evaluations (CORL's eval_freq; 0: only at the end)"""


class OfflineData:
    """A dataset's transitions as tensors on `device`: observations standardised by the dataset's own mean and std when
    `standardize` (TD3+BC, sec. 5: s_i <- (s_i - mu_i) / (sigma_i + eps)), rewards times `reward_scale`. `sample`
    draws uniformly with replacement from torch's global generator, which the run's checkpoints save and restore."""

    def __init__(self, data: Transitions, device: torch.device, standardize: bool, reward_scale: float = 1.0) -> None:
        n = len(data)
        observations = data.observations.reshape(n, -1).astype(np.float64)
        self.obs_mean = observations.mean(0) if standardize else np.zeros(observations.shape[1])
        self.obs_std = observations.std(0) + STATE_STD_EPS if standardize else np.ones(observations.shape[1])

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(array, np.float32), device=device)

        self.obs = tensor((observations - self.obs_mean) / self.obs_std)  # (N, obs_dim)
        self.next_obs = tensor((data.next_observations.reshape(n, -1) - self.obs_mean) / self.obs_std)  # (N, obs_dim)
        self.actions = tensor(data.actions.reshape(n, -1))  # (N, action_dim)
        self.rewards = tensor(data.rewards * reward_scale)  # (N,)
        self.terminated = tensor(data.terminals)  # (N,) 1: no bootstrap; a timeout bootstraps (its flag is not kept)
        self.size, self.device = n, device
        self.ref_min_score, self.ref_max_score = data.ref_min_score, data.ref_max_score

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.device)
        obs, next_obs = self.obs[index], self.next_obs[index]
        return Batch(obs, self.actions[index], self.rewards[index], next_obs, self.terminated[index], self.terminated[index])

    def policy(self, act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
        """The evaluation policy: raw env observations standardised as the training data were, then `act`."""
        mean = torch.as_tensor(self.obs_mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(self.obs_std, dtype=torch.float32, device=self.device)
        return numpy_policy(lambda obs: act((obs.reshape(obs.shape[0], -1) - mean) / std), self.device)

    def normalized_score(self, episode_return: float) -> float | None:
        """D4RL's normalised score 100 (R - R_random) / (R_expert - R_random), from the dataset's reference returns."""
        if self.ref_min_score is None or self.ref_max_score is None or self.ref_max_score == self.ref_min_score:
            return None
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def return_range_reward_scale(data: Transitions, max_episode_steps: int = 1000) -> float:
    """IQL's reward normalisation for locomotion (Kostrikov et al. 2022, its experimental details): rewards times
    max_episode_steps / (max return - min return) over the dataset's episodes, so that returns span about 1000."""
    returns = data.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) > 1 else 0.0
    return max_episode_steps / spread if spread > 0 else 1.0


def load_offline_task(cfg: OfflineConfig) -> tuple[Transitions, VecEnv]:
    """The run's dataset and one seeded copy of the env it was collected in (for evaluation). ValueError, before any
    update, when the task is not a dataset, the data do not fit that env (observation or action shapes) or its actions
    are not continuous."""
    if not is_dataset_id(cfg.env_id):
        raise ValueError(
            f"an offline algorithm needs a dataset as its task (a Minari id such as rlgrid/hopper-v5/medium-v0 or a D4RL "
            f".hdf5 path), not the env {cfg.env_id}"
        )
    env_id = dataset_env_id(cfg.env_id)
    data = load_dataset(cfg.env_id)
    envs, _ = make_vec_env(env_id, 1, cfg.seed)
    try:
        if not envs.is_continuous:
            raise ValueError(f"the offline algorithms need continuous (Box) actions; {env_id} has {envs.single_action_space}")
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        data_obs_dim, data_action_dim = int(np.prod(data.observations.shape[1:])), int(np.prod(data.actions.shape[1:]))
        if (data_obs_dim, data_action_dim) != (obs_dim, envs.action_dim):
            raise ValueError(
                f"dataset {cfg.env_id} does not fit its env {env_id}: {data_obs_dim}-dim observations and {data_action_dim}"
                f"-dim actions in the data, {obs_dim} and {envs.action_dim} in the env (a dataset of another env?)"
            )
        if len(data) == 0:
            raise ValueError(f"dataset {cfg.env_id} holds no transitions")
    except BaseException:
        envs.close()
        raise
    return data, envs


def offline_run_state(
    cfg: OfflineConfig,
    envs: VecEnv,
    logger: Logger | None,
    checkpoint: Checkpointer | None,
    state: dict,
    data: OfflineData,
) -> RunState:
    """The run's `RunState`; each evaluation also logs `eval/normalized_score` when the dataset has reference returns."""
    run = RunState(cfg, envs, logger, checkpoint, state)
    if data.normalized_score(0.0) is not None:
        run.eval_metrics = lambda: {"eval/normalized_score": data.normalized_score(run.eval_history[-1][1])}
    return run
