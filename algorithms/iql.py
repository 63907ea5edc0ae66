"""Implicit Q-Learning (IQL): in-sample value learning by expectile regression, and policy extraction by
advantage-weighted regression, for offline RL.

Paper: Kostrikov, Nair, Levine (2022), "Offline Reinforcement Learning with Implicit Q-Learning", ICLR,
arXiv:2110.06169 -- Algorithm 1. V(s) is fit to Q_target(s, a) of the dataset's own actions by the expectile loss
L_2^tau(u) = |tau - 1(u < 0)| u^2 on u = Q(s, a) - V(s) (eq. 5): with tau near 1, V approaches the maximum of Q over
the actions the data supports, without ever querying an unseen action. Q(s, a) is fit to r + gamma V(s') (eq. 6).
The policy maximises E[exp(beta (Q(s, a) - V(s))) log pi(a|s)] over dataset pairs (eq. 7: advantage-weighted
regression), the weights clipped at 100 as in the authors' code.

The defaults are the paper's for MuJoCo locomotion and CORL's `iql.py`: expectile tau 0.7, temperature beta 3.0, two
Q-functions whose minimum is taken at the target network, 256-256 ReLU networks, Adam 3e-4 for all three with a
cosine decay of the policy's learning rate over the run, batch 256, gamma 0.99, target rate 0.005, rewards scaled by
1000 / (max return - min return) of the dataset's episodes (the paper's experimental details), observations
standardised, 1M updates. The policy is a Gaussian with a tanh-bounded, box-scaled mean and a state-independent log-std
(CORL's GaussianPolicy); `deterministic_policy=True` gives CORL's deterministic variant (weighted squared error
instead of log-likelihood). Deviations: the two Q-functions are rlgrid's `QEnsemble`; the deterministic evaluation
plays the Gaussian's mean; the run's step is one gradient update.
`compile=True` wraps the update in torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.distributions import gaussian_log_prob
from algorithms.common.networks import DeterministicActor, QEnsemble, StateValue, soft_update
from algorithms.common.offline import (
    LOG_EVERY,
    OFFLINE_SMOKE,
    OfflineConfig,
    OfflineData,
    load_offline_task,
    offline_run_state,
    return_range_reward_scale,
)
from algorithms.common.run import log_due

SMOKE = OFFLINE_SMOKE
"""Tiny settings for the contract tests (their dataset is made by tests/conftest.py)."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("dataset",)  # offline: the task is a dataset of vector observations
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""bounds of the policy's log-std (CORL's)"""


@dataclass(frozen=True)
class Config(OfflineConfig):
    expectile: float = 0.7
    """tau of the expectile loss that fits V (eq. 5); 0.5 is a mean (SARSA-like), near 1 a maximum"""
    temperature: float = 3.0
    """beta of the advantage weights exp(beta A) (eq. 7)"""
    max_weight: float = 100.0
    """clip of the advantage weights"""
    deterministic_policy: bool = False
    """a deterministic policy trained by weighted squared error instead of the Gaussian's log-likelihood"""
    learning_rate: float = 3e-4
    """Adam learning rate of Q, V and the policy (the policy's decays to 0 along a cosine)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient of the Q target network"""
    batch_size: int = 256
    """transitions per gradient update"""
    hidden_size: int = 256
    """width of the two hidden layers of every network"""
    normalize_states: bool = True
    """standardise observations by the dataset's mean and std"""
    normalize_reward: bool = True
    """rewards times 1000 / (max - min episode return) of the dataset (the paper's locomotion setting)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.expectile < 1:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if min(self.batch_size, self.hidden_size) < 1 or min(self.learning_rate, self.max_weight) <= 0:
            raise ValueError("batch_size and hidden_size must be >= 1, learning_rate and max_weight > 0")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.temperature < 0:
            raise ValueError("need 0 < gamma <= 1, 0 < tau <= 1 and temperature >= 0")


# --- networks ----------------------------------------------------------------------------------------
class GaussianPolicy(nn.Module):
    """pi(a|s) = N(tanh(f(s)) * scale + bias, diag(exp(log_std))^2): a box-bounded mean from a 256-256 ReLU MLP and a
    state-independent log-std (CORL's GaussianPolicy for IQL)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.mean_net = DeterministicActor(obs_dim, action_dim, hidden, low, high)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action (B, A): the deterministic evaluation."""
        return self.mean_net(obs)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(actions, self(obs), self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))


# --- pure maths --------------------------------------------------------------------------------------
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2 averaged over the batch (eq. 5), u = Q(s, a) - V(s): (B,) -> ()."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def advantage_weights(advantages: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """exp(beta A(s, a)) clipped at max_weight (eq. 7, the authors' clip at 100): (B,) -> (B,)."""
    return torch.exp(temperature * advantages).clamp(max=max_weight)


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    transitions, envs = load_offline_task(cfg)
    try:
        # 1. The dataset on the device (rewards scaled); Q, its target, V, the policy, optimizers.
        reward_scale = return_range_reward_scale(transitions) if cfg.normalize_reward else 1.0
        data = OfflineData(transitions, device, cfg.normalize_states, reward_scale)
        obs_dim, action_dim = data.obs.shape[1], envs.action_dim
        low, high = envs.single_action_space.low, envs.single_action_space.high
        qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target.load_state_dict(qf.state_dict())
        vf = StateValue(obs_dim, cfg.hidden_size).to(device)
        policy_class = DeterministicActor if cfg.deterministic_policy else GaussianPolicy
        actor = policy_class(obs_dim, action_dim, cfg.hidden_size, low, high).to(device)
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=cfg.learning_rate, fused=fused)
        v_optimizer = torch.optim.Adam(vf.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(actor_optimizer, cfg.total_timesteps)

        def update(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, ...]:
            """One step of Algorithm 1: V by eq. 5, Q by eq. 6, the policy by eq. 7 (advantages from before V's step)."""
            with torch.no_grad():
                target_q = qf_target(obs, actions).min(dim=0).values  # (B,)
            advantages = target_q - vf(obs)  # (B,)
            v_loss = expectile_loss(advantages, cfg.expectile)
            v_optimizer.zero_grad(set_to_none=True)
            v_loss.backward()
            v_optimizer.step()

            with torch.no_grad():
                q_target = rewards + cfg.gamma * (1.0 - terminated) * vf(next_obs)  # (B,)
            q_loss = F.mse_loss(qf(obs, actions), q_target.expand(2, -1), reduction="none").mean(1).sum()
            q_optimizer.zero_grad(set_to_none=True)
            q_loss.backward()
            q_optimizer.step()

            weights = advantage_weights(advantages.detach(), cfg.temperature, cfg.max_weight)  # (B,)
            if cfg.deterministic_policy:
                imitation = (actor(obs) - actions).pow(2).sum(-1)  # (B,)
            else:
                imitation = -actor.log_prob(obs, actions)  # (B,)
            actor_loss = (weights * imitation).mean()
            actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            actor_optimizer.step()
            return v_loss.detach(), q_loss.detach(), actor_loss.detach(), advantages.detach().mean()

        update = compiled(update, cfg)
        policy = data.policy(actor)

        # 2. State: fresh, or restored from the newest checkpoint.
        state = {
            "qf": qf,
            "qf_target": qf_target,
            "vf": vf,
            "actor": actor,
            "q_optimizer": q_optimizer,
            "v_optimizer": v_optimizer,
            "actor_optimizer": actor_optimizer,
            "actor_schedule": actor_schedule,
        }
        run = offline_run_state(cfg, envs, logger, checkpoint, state, data)
        step, _ = run.restore()
        while step < cfg.total_timesteps:
            # 3. One update of V, Q and the policy; the target Q follows Q.
            step += 1
            v_loss, q_loss, actor_loss, mean_advantage = update(*data.sample(cfg.batch_size)[:5])
            actor_schedule.step()
            soft_update(qf_target, qf, cfg.tau)
            if log_due(step, cfg.total_timesteps, LOG_EVERY):
                metrics = {"losses/value_loss": v_loss.item(), "losses/qf_loss": q_loss.item() / 2}
                metrics.update({"losses/actor_loss": actor_loss.item(), "losses/advantage": mean_advantage.item()})
                metrics.update({"charts/actor_lr": actor_schedule.get_last_lr()[0], "charts/SPS": run.steps_per_second(step)})
                run.logger.log(step, metrics)

            # 4. Evaluate in the dataset's env, checkpoint.
            run.evaluate_if_due(step, policy)
            run.checkpoint_if_due(step)

        return run.finish(step, policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
