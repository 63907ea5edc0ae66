"""TD3+BC: TD3 with a behavioural-cloning term in the actor loss and standardised observations, for offline RL.

Paper: Fujimoto & Gu (2021), "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS, arXiv:2106.06860 --
the actor maximises lambda Q(s, pi(s)) - (pi(s) - a)^2 over dataset pairs (s, a) (eq. 3), with
lambda = alpha / (1/N sum_i |Q(s_i, a_i)|) computed on the batch and not differentiated (eq. 4: it balances the
Q-term against the BC term whatever the scale of the returns), alpha = 2.5; observations are standardised by the
dataset's mean and std (eq. 5). Everything else is TD3 (Fujimoto et al. 2018): twin critics and the clipped double-Q
target, target policy smoothing, an actor and targets updated every second critic update.

The defaults are the paper's and CORL's `td3_bc.py`: 256-256 ReLU networks, Adam 3e-4, batch 256, tau 0.005, gamma
0.99, policy noise 0.2 clipped at 0.5 (in action half-ranges), d = 2, 1M updates. Deviations:
- The Q in the actor's loss and in lambda is Q_1 at (s, pi(s)), as in the paper's code (the authors' `TD3_BC.py`
  and CORL: `lmbda = alpha / Q.abs().mean().detach()` with Q = Q_1(s, pi(s))); eq. 4 writes Q(s_i, a_i), which the
  code does not use.
- The critics are rlgrid's `QEnsemble` (two independent networks, one kernel per layer), as in td3.py.
- The run's step is one gradient update: evaluations every `eval_every` updates (CORL: 5,000).
`compile=True` wraps the two updates in torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.networks import DeterministicActor, QEnsemble, soft_update
from algorithms.common.offline import (
    LOG_EVERY,
    OFFLINE_SMOKE,
    OfflineConfig,
    OfflineData,
    load_offline_task,
    offline_run_state,
)
from algorithms.common.run import log_due
from algorithms.common.targets import clipped_double_q_target, smoothed_target_actions

SMOKE = OFFLINE_SMOKE
"""Tiny settings for the contract tests (their dataset is made by tests/conftest.py)."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("dataset",)  # offline: the task is a dataset of vector observations


@dataclass(frozen=True)
class Config(OfflineConfig):
    alpha: float = 2.5
    """weight of the Q-term against the BC term (eq. 4's alpha)"""
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critics"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient (Polyak averaging)"""
    batch_size: int = 256
    """transitions per gradient update"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, in units of the action half-range"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise, in units of the action half-range"""
    policy_frequency: int = 2
    """critic updates per actor and target update (d)"""
    hidden_size: int = 256
    """width of the two hidden layers of actor and critics"""
    normalize_states: bool = True
    """standardise observations by the dataset's mean and std (eq. 5)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.batch_size, self.policy_frequency, self.hidden_size) < 1:
            raise ValueError("batch_size, policy_frequency and hidden_size must be >= 1")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.learning_rate <= 0 or self.alpha < 0:
            raise ValueError("need 0 < gamma <= 1, 0 < tau <= 1, learning_rate > 0 and alpha >= 0")
        if min(self.policy_noise, self.noise_clip) < 0:
            raise ValueError("policy_noise and noise_clip must be >= 0")


# --- pure maths --------------------------------------------------------------------------------------
def td3_bc_actor_loss(
    q_values: torch.Tensor, policy_actions: torch.Tensor, data_actions: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """-lambda mean(Q(s, pi(s))) + mean((pi(s) - a)^2) with lambda = alpha / mean|Q(s, pi(s))|, not differentiated
    (eq. 3-4). q_values (B,), actions (B, A); returns (loss, lambda). The squared error is averaged over batch and
    action dims, as F.mse_loss in the paper's code."""
    lam = alpha / q_values.abs().mean().detach()
    return -lam * q_values.mean() + F.mse_loss(policy_actions, data_actions), lam


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    transitions, envs = load_offline_task(cfg)
    try:
        # 1. The dataset on the device; actor, twin critics, their targets, optimizers.
        data = OfflineData(transitions, device, cfg.normalize_states)
        obs_dim, action_dim = data.obs.shape[1], envs.action_dim
        low_np, high_np = envs.single_action_space.low, envs.single_action_space.high
        actor = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        actor_target = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        actor_target.load_state_dict(actor.state_dict())
        qf_target.load_state_dict(qf.state_dict())
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=fused)
        low, high = torch.as_tensor(low_np, device=device), torch.as_tensor(high_np, device=device)

        def update_critics(obs, actions, rewards, next_obs, terminated) -> torch.Tensor:
            """TD3's critic step, unchanged: sum_k (Q_k(s, a) - y)^2 with the smoothed clipped double-Q target."""
            with torch.no_grad():
                noise = torch.randn_like(actions) * cfg.policy_noise
                next_actions = smoothed_target_actions(
                    actor_target(next_obs), noise, cfg.noise_clip, actor.action_scale, low, high
                )
                target = clipped_double_q_target(rewards, terminated, qf_target(next_obs, next_actions), cfg.gamma)
            loss = F.mse_loss(qf(obs, actions), target.expand(2, -1), reduction="none").mean(1).sum()
            q_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            q_optimizer.step()
            return loss.detach()

        def update_actor(obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            policy_actions = actor(obs)
            loss, lam = td3_bc_actor_loss(qf.first(obs, policy_actions), policy_actions, actions, cfg.alpha)
            actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            actor_optimizer.step()
            return loss.detach(), lam

        update_critics, update_actor = [compiled(f, cfg) for f in (update_critics, update_actor)]
        policy = data.policy(actor)

        # 2. State: fresh, or restored from the newest checkpoint.
        state = {
            "actor": actor,
            "qf": qf,
            "actor_target": actor_target,
            "qf_target": qf_target,
            "q_optimizer": q_optimizer,
            "actor_optimizer": actor_optimizer,
        }
        run = offline_run_state(cfg, envs, logger, checkpoint, state, data)
        step, _ = run.restore()
        while step < cfg.total_timesteps:
            # 3. Critics every update; actor and targets every d-th (Algorithm 1 of TD3, with eq. 3's actor loss).
            step += 1
            batch = data.sample(cfg.batch_size)
            q_loss = update_critics(*batch[:5])
            actor_updated = step % cfg.policy_frequency == 0
            if actor_updated:
                actor_loss, lam = update_actor(batch.obs, batch.actions)
                soft_update(actor_target, actor, cfg.tau)
                soft_update(qf_target, qf, cfg.tau)
            if log_due(step, cfg.total_timesteps, LOG_EVERY):
                metrics = {"losses/qf_loss": q_loss.item() / 2, "charts/SPS": run.steps_per_second(step)}
                if actor_updated:
                    metrics.update({"losses/actor_loss": actor_loss.item(), "losses/lambda": lam.item()})
                run.logger.log(step, metrics)

            # 4. Evaluate in the dataset's env, checkpoint.
            run.evaluate_if_due(step, policy)
            run.checkpoint_if_due(step)

        return run.finish(step, policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
