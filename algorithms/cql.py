"""Conservative Q-Learning (CQL(H) on SAC), with the Lagrange variant as an option, for offline RL.

Paper: Kumar, Zhou, Tucker, Levine (2020), "Conservative Q-Learning for Offline Reinforcement Learning", NeurIPS,
arXiv:2006.04779 -- CQL(H) (eq. 4): each critic's Bellman error plus alpha (E_s~D[log sum_a exp Q(s, a)] -
E_(s,a)~D[Q(s, a)]), which pushes Q down on actions the data does not support and up on the data's. The log-sum-exp
over a continuous action space is estimated by importance sampling (the paper's appendix): N actions uniform on the
action box and N from the current policy at s and at s' (all evaluated at s), each Q minus its sampling log-density,
log-sum-exp'd over the 3N samples. The Lagrange variant (the paper's appendix) scales the penalty by a learned
alpha' >= 0 that rises while the penalty exceeds a threshold tau and falls below it. The rest is SAC (Haarnoja et
al. 2018b): twin critics with a clipped double-Q target, a tanh-squashed Gaussian policy maximising E[min_j Q_j(s, a)
- alpha_ent log pi(a|s)], the entropy temperature tuned towards -dim(A).

The defaults are CORL's `cql.py` with its D4RL Hopper configs (the CQL authors' PyTorch port by Geng): CQL alpha 10,
10 sampled actions, temperature 1, importance sampling, no Lagrange (tau 5 when on), Adam 3e-5 for the policy and the
entropy temperature and 3e-4 for the critics and alpha', batch 256, gamma 0.99, target rate 0.005, no entropy term in
the target, observations standardised, rewards scaled by 1000 / (max - min episode return) of the dataset (CORL's
normalize_reward; its TrainConfig also multiplies by 5 and subtracts 1 afterwards, the AntMaze reward_scale and
reward_bias it defines last, which we do not). Deviations, each on purpose:
- rlgrid's SAC networks: the policy and both critics have two hidden layers of 256 (CORL: three), PyTorch's default
  initialisation (CORL: orthogonal), the policy's log-std squashed into [-5, 2] (CORL: clamped to [-20, 2]).
- In each update the critics step before the policy, as in sac.py (CORL computes both losses before either step).
- No behavioural-cloning warm-up of the policy (CORL's bc_steps, 0 in its MuJoCo configs).
- The run's step is one gradient update; the deterministic evaluation plays the squashed mean.
`compile=True` wraps the two updates in torch.compile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.networks import QEnsemble, SquashedGaussianActor, soft_update
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
from algorithms.common.targets import clipped_double_q_target

SMOKE = OFFLINE_SMOKE
"""Tiny settings for the contract tests (their dataset is made by tests/conftest.py)."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("dataset",)  # offline: the task is a dataset of vector observations
ALPHA_PRIME_MAX = 1e6
"""alpha' is clamped to [0, 1e6] (the authors' code)"""


@dataclass(frozen=True)
class Config(OfflineConfig):
    cql_alpha: float = 10.0
    """weight of the conservative penalty (alpha in eq. 4; with lagrange, multiplied by the learned alpha')"""
    cql_n_actions: int = 10
    """actions sampled per state from the uniform box and from the policy at s and at s' (3N samples in all)"""
    cql_temperature: float = 1.0
    """temperature of the log-sum-exp"""
    lagrange: bool = False
    """learn alpha' so that the penalty stays at target_action_gap (the Lagrange variant)"""
    target_action_gap: float = 5.0
    """tau, the penalty's threshold of the Lagrange variant"""
    policy_lr: float = 3e-5
    """Adam learning rate of the policy and of the entropy temperature"""
    q_lr: float = 3e-4
    """Adam learning rate of the critics and of alpha'"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient (Polyak averaging)"""
    batch_size: int = 256
    """transitions per gradient update"""
    hidden_size: int = 256
    """width of the two hidden layers of every network"""
    normalize_states: bool = True
    """standardise observations by the dataset's mean and std"""
    normalize_reward: bool = True
    """rewards times 1000 / (max - min episode return) of the dataset"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.cql_n_actions, self.batch_size, self.hidden_size) < 1:
            raise ValueError("cql_n_actions, batch_size and hidden_size must be >= 1")
        if min(self.policy_lr, self.q_lr, self.cql_temperature) <= 0 or self.cql_alpha < 0:
            raise ValueError("learning rates and cql_temperature must be > 0, cql_alpha >= 0")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("need 0 < gamma <= 1 and 0 < tau <= 1")


# --- pure maths --------------------------------------------------------------------------------------
def cql_penalty(
    q_data: torch.Tensor,
    q_random: torch.Tensor,
    q_current: torch.Tensor,
    q_next: torch.Tensor,
    random_log_density: float,
    log_prob_current: torch.Tensor,
    log_prob_next: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per critic, the mean over the batch of T log sum exp(Q(s, a_i) / T) - Q(s, a_data), the sum estimated by
    importance sampling (the paper's appendix, the authors' code): each sampled action's Q minus its log-density under
    the distribution it was drawn from (the uniform box's `random_log_density`, the policy's at s and at s').

    q_data (K, B); q_random, q_current, q_next (K, B, N); log_prob_current, log_prob_next (B, N) -> (K,)."""
    weighted = torch.cat(
        [q_random - random_log_density, q_current - log_prob_current, q_next - log_prob_next], dim=-1
    )  # (K, B, 3N)
    return (temperature * torch.logsumexp(weighted / temperature, dim=-1) - q_data).mean(-1)


def lagrange_loss(log_alpha_prime: torch.Tensor, penalty: torch.Tensor, cql_alpha: float, gap: float) -> torch.Tensor:
    """The loss of alpha' (its dual step): -alpha' cql_alpha (penalty - gap), averaged over the critics. Descending it
    raises alpha' while the penalty exceeds the gap (more conservatism) and lowers it below. penalty (K,) detached."""
    alpha_prime = log_alpha_prime.exp().clamp(0.0, ALPHA_PRIME_MAX)
    return -(alpha_prime * cql_alpha * (penalty.detach() - gap)).mean()


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    transitions, envs = load_offline_task(cfg)
    try:
        # 1. The dataset on the device (rewards scaled); policy, twin critics and targets, temperatures, optimizers.
        reward_scale = return_range_reward_scale(transitions) if cfg.normalize_reward else 1.0
        data = OfflineData(transitions, device, cfg.normalize_states, reward_scale)
        obs_dim, action_dim, n = data.obs.shape[1], envs.action_dim, cfg.cql_n_actions
        low_np, high_np = envs.single_action_space.low, envs.single_action_space.high
        actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target.load_state_dict(qf.state_dict())
        log_alpha = torch.zeros((), device=device, requires_grad=True)  # entropy temperature, alpha = 1 at first
        log_alpha_prime = torch.ones((), device=device, requires_grad=True)  # CORL's start, alpha' = e
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam([*qf.parameters(), log_alpha_prime], lr=cfg.q_lr, fused=fused)
        actor_optimizer = torch.optim.Adam([*actor.parameters(), log_alpha], lr=cfg.policy_lr, fused=fused)
        target_entropy = -float(action_dim)
        low, high = torch.as_tensor(low_np, device=device), torch.as_tensor(high_np, device=device)
        random_log_density = -float(torch.log(high - low).sum())  # log of the uniform density on the box

        def q_of_samples(obs_repeated: torch.Tensor, actions: torch.Tensor, batch: int) -> torch.Tensor:
            return qf(obs_repeated, actions).view(2, batch, n)  # (B * N, ...) -> (K, B, N)

        def update_critics(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, ...]:
            """Bellman errors of both critics plus the conservative penalty (eq. 4), and alpha' (Lagrange)."""
            batch = obs.shape[0]
            with torch.no_grad():
                next_actions, _ = actor.sample(next_obs, torch.randn_like(actions))
                target = clipped_double_q_target(rewards, terminated, qf_target(next_obs, next_actions), cfg.gamma)
                obs_n, next_obs_n = obs.repeat_interleave(n, 0), next_obs.repeat_interleave(n, 0)  # (B * N, O)
                uniform = torch.rand(batch * n, action_dim, device=device) * (high - low) + low
                current, log_prob_current = actor.sample(obs_n, torch.randn(batch * n, action_dim, device=device))
                following, log_prob_next = actor.sample(next_obs_n, torch.randn(batch * n, action_dim, device=device))
            q_data = qf(obs, actions)  # (K, B)
            bellman = F.mse_loss(q_data, target.expand(2, -1), reduction="none").mean(1).sum()
            penalty = cql_penalty(
                q_data,
                q_of_samples(obs_n, uniform, batch),
                q_of_samples(obs_n, current, batch),
                q_of_samples(obs_n, following, batch),  # the next state's policy actions, valued at s (as CORL)
                random_log_density,
                log_prob_current.view(batch, n),
                log_prob_next.view(batch, n),
                cfg.cql_temperature,
            )  # (K,)
            if cfg.lagrange:
                alpha_prime = log_alpha_prime.detach().exp().clamp(0.0, ALPHA_PRIME_MAX)
                conservative = (alpha_prime * cfg.cql_alpha * (penalty - cfg.target_action_gap)).sum()
                dual = lagrange_loss(log_alpha_prime, penalty, cfg.cql_alpha, cfg.target_action_gap)
            else:
                conservative, dual = cfg.cql_alpha * penalty.sum(), torch.zeros((), device=device)
            q_optimizer.zero_grad(set_to_none=True)
            (bellman + conservative + dual).backward()
            q_optimizer.step()
            return bellman.detach(), penalty.detach().mean(), q_data.detach().mean()

        def update_actor(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """SAC's policy loss E[alpha log pi(a|s) - min_j Q_j(s, a)] and the temperature's loss."""
            new_actions, log_prob = actor.sample(obs, torch.randn(obs.shape[0], action_dim, device=device))
            loss = (log_alpha.detach().exp() * log_prob - qf(obs, new_actions, frozen=True).min(dim=0).values).mean()
            alpha_loss = -(log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()
            actor_optimizer.zero_grad(set_to_none=True)
            (loss + alpha_loss).backward()
            actor_optimizer.step()
            return loss.detach(), log_prob.detach().mean()

        update_critics, update_actor = [compiled(f, cfg) for f in (update_critics, update_actor)]
        policy = data.policy(actor.mean_action)

        # 2. State: fresh, or restored from the newest checkpoint.
        state = {
            "actor": actor,
            "qf": qf,
            "qf_target": qf_target,
            "log_alpha": log_alpha,
            "log_alpha_prime": log_alpha_prime,
            "q_optimizer": q_optimizer,
            "actor_optimizer": actor_optimizer,
        }
        run = offline_run_state(cfg, envs, logger, checkpoint, state, data)
        step, _ = run.restore()
        while step < cfg.total_timesteps:
            # 3. Critics (with the penalty), then policy and temperature; the targets follow the critics.
            step += 1
            batch = data.sample(cfg.batch_size)
            bellman, penalty, q_mean = update_critics(*batch[:5])
            actor_loss, mean_log_prob = update_actor(batch.obs)
            soft_update(qf_target, qf, cfg.tau)
            if log_due(step, cfg.total_timesteps, LOG_EVERY):
                metrics = {"losses/qf_loss": bellman.item() / 2, "losses/cql_penalty": penalty.item()}
                metrics.update({"losses/qf_values": q_mean.item(), "losses/actor_loss": actor_loss.item()})
                metrics.update({"losses/alpha": log_alpha.exp().item(), "losses/entropy": -mean_log_prob.item()})
                if cfg.lagrange:
                    metrics["losses/alpha_prime"] = math.exp(log_alpha_prime.item())
                run.logger.log(step, {**metrics, "charts/SPS": run.steps_per_second(step)})

            # 4. Evaluate in the dataset's env, checkpoint.
            run.evaluate_if_due(step, policy)
            run.checkpoint_if_due(step)

        return run.finish(step, policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
