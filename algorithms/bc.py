"""Behavioural cloning (BC): regress a deterministic policy onto the dataset's actions, the baseline of every offline
RL table.

Papers: Pomerleau (1991), "Efficient Training of Artificial Neural Networks for Autonomous Navigation", Neural
Computation 3(1) -- supervised learning of actions from demonstrations; in the offline RL tables (Fu et al. 2020,
"D4RL", arXiv:2004.07219; Fujimoto & Gu 2021, arXiv:2106.06860, Table 1) BC is a deterministic policy trained by
mean squared error on every transition of the dataset: min_pi E_(s,a)~D [(pi(s) - a)^2].

The defaults are CORL's `any_percent_bc.py` with frac = 1.0 (all the data, "100% BC"): TD3's 256-256 ReLU actor with
a tanh output scaled to the action box, Adam 3e-4, batch 256, observations standardised by the dataset's mean and std,
1M updates. Deviations: none in the learning rule; the run's step is one gradient update, so evaluations happen every
`eval_every` updates (CORL: 5,000), each `eval_episodes` (10) deterministic episodes in the dataset's env.
`compile=True` wraps the update in torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.networks import DeterministicActor
from algorithms.common.offline import (
    LOG_EVERY,
    OFFLINE_SMOKE,
    OfflineConfig,
    OfflineData,
    load_offline_task,
    offline_run_state,
)
from algorithms.common.run import log_due

SMOKE = OFFLINE_SMOKE
"""Tiny settings for the contract tests (their dataset is made by tests/conftest.py)."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("dataset",)  # offline: the task is a dataset of vector observations


@dataclass(frozen=True)
class Config(OfflineConfig):
    learning_rate: float = 3e-4
    """Adam learning rate"""
    batch_size: int = 256
    """transitions per gradient update"""
    hidden_size: int = 256
    """width of the policy's two hidden layers"""
    normalize_states: bool = True
    """standardise observations by the dataset's mean and std (CORL's normalize)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.batch_size, self.hidden_size) < 1 or self.learning_rate <= 0:
            raise ValueError("batch_size and hidden_size must be >= 1 and learning_rate > 0")


def bc_loss(policy_actions: torch.Tensor, data_actions: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the policy's and the dataset's actions, averaged over batch and action dims."""
    return F.mse_loss(policy_actions, data_actions)


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    transitions, envs = load_offline_task(cfg)
    try:
        # 1. The dataset on the device; the policy and its optimizer.
        data = OfflineData(transitions, device, cfg.normalize_states)
        low, high = envs.single_action_space.low, envs.single_action_space.high
        actor = DeterministicActor(data.obs.shape[1], envs.action_dim, cfg.hidden_size, low, high).to(device)
        optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=device.type in ("cpu", "cuda"))

        def update(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            loss = bc_loss(actor(obs), actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()

        update = compiled(update, cfg)
        policy = data.policy(actor)

        # 2. State: fresh, or restored from the newest checkpoint.
        run = offline_run_state(cfg, envs, logger, checkpoint, {"actor": actor, "optimizer": optimizer}, data)
        step, _ = run.restore()
        while step < cfg.total_timesteps:
            # 3. One gradient update on a uniform batch.
            step += 1
            batch = data.sample(cfg.batch_size)
            loss = update(batch.obs, batch.actions)
            if log_due(step, cfg.total_timesteps, LOG_EVERY):
                run.logger.log(step, {"losses/bc_loss": loss.item(), "charts/SPS": run.steps_per_second(step)})

            # 4. Evaluate in the dataset's env, checkpoint.
            run.evaluate_if_due(step, policy)
            run.checkpoint_if_due(step)

        return run.finish(step, policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
