"""Twin Delayed DDPG (TD3), and DDPG as its ablation (`ddpg`).

Papers: Fujimoto, van Hoof, Meger (2018), "Addressing Function Approximation Error in Actor-Critic Methods", ICML,
arXiv:1802.09477 -- Algorithm 1: clipped double-Q learning (eq. 10, the target takes the smaller of two target
critics), target policy smoothing (eq. 14, clipped Gaussian noise on the target action), delayed policy and target
updates (every d critic updates), Gaussian exploration noise. Lillicrap et al. (2016), "Continuous control with deep
reinforcement learning", ICLR, arXiv:1509.02971 -- DDPG, Algorithm 1: one critic learned towards
y = r + gamma Q'(s', mu'(s')), target networks tracking by Polyak averaging, an actor following the deterministic
policy gradient (Silver et al. 2014, eq. 6) through the critic, exploration noise on the actions.

TD3 is DDPG with three changes, and its paper's ablation study adds each of them to, and removes each from, a DDPG
with TD3's architecture and hyperparameters ("AHE"). `twin_critics=False, policy_noise=0` (registered as `ddpg`) is
that DDPG with the delayed policy updates kept: the algorithm and defaults of CleanRL's `ddpg_continuous_action.py`
(based on `OurDDPG.py` of the TD3 authors' repository, with `policy_frequency` 2). Its differences from Lillicrap et
al., taken from that re-tuning: Gaussian instead of Ornstein-Uhlenbeck exploration noise, no L2 weight decay on the
critic, no batch normalisation, 256-256 networks on the concatenated observation and action, Adam 3e-4 for both,
batch 256, tau 0.005.

The defaults are CleanRL's `td3_continuous_action.py` MuJoCo setting (the paper's: 256-256 ReLU MLPs, Adam 3e-4,
batch 256, tau 0.005, policy noise 0.2 clipped at 0.5, exploration noise 0.1, d = 2, 25k random steps first, 1M
buffer). Details, each on purpose:
- Time-limit truncation is not termination: the target bootstraps from the true final observation of a truncated
  episode, as CleanRL does (it stores `terminations` with the real final observation); the paper's code stored
  `done` without the time-limit correction for Hopper/Walker.
- The critics are one module holding both weight stacks and evaluated with batched matmuls (`QEnsemble`): the same
  independent networks (separate initialisation and parameters, one summed loss as in the paper's code), with one
  kernel per layer. The actor loss evaluates Q_1 alone and differentiates through its value only, not into its
  weights (those gradients would be discarded).
`compile=True` wraps the update and acting functions in torch.compile.
`train_seeds` trains K seeds of one config in one process (algorithms.common.packing): every tensor carries a
leading seed axis, noted in the shapes below; `train` is the pack of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.networks import DeterministicActor, QEnsemble, soft_update
from algorithms.common.packing import (
    OptimizerSlice,
    SeedPack,
    SeedStack,
    draw_normal,
    lone,
    same_run_but_seed,
    seeded_members,
)
from algorithms.common.replay import ReplayBuffer, sample_seeds
from algorithms.common.run import RunState, numpy_policy
from algorithms.common.targets import clipped_double_q_target, smoothed_target_actions
from envs import make_vec_env

SMOKE = {
    "total_timesteps": 600,
    "learning_starts": 200,
    "buffer_size": 1000,
    "batch_size": 32,
    "eval_every": 300,
    "eval_episodes": 2,
}
"""Tiny settings for the contract tests."""
ACTION_SPACES = ("continuous",)  # deterministic policy gradient: Box actions
OBSERVATIONS = ("vector",)
VARIANTS = {"ddpg": {"twin_critics": False, "policy_noise": 0.0}}
"""Registered names of the paper's ablations (suites and run directories use them): name -> Config values."""


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 1
    """parallel env copies"""
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critics"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient (Polyak averaging)"""
    batch_size: int = 256
    """transitions per gradient step"""
    twin_critics: bool = True
    """clipped double-Q learning: two critics, the target takes the smaller (eq. 10); False: one critic (DDPG)"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, in units of the action half-range (eq. 14; 0: none, DDPG)"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise, in units of the action half-range"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise, in units of the action half-range"""
    learning_starts: int = 25_000
    """environment steps of uniform random actions before learning"""
    policy_frequency: int = 2
    """critic updates per actor and target update (d)"""
    hidden_size: int = 256
    """width of the two hidden layers of actor and critics"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.num_envs, self.buffer_size, self.batch_size, self.policy_frequency, self.hidden_size) < 1:
            raise ValueError("num_envs, buffer_size, batch_size, policy_frequency and hidden_size must be >= 1")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.learning_rate <= 0:
            raise ValueError(
                f"need 0 < gamma <= 1, 0 < tau <= 1, learning_rate > 0; got {self.gamma}, {self.tau}, {self.learning_rate}"
            )
        if min(self.policy_noise, self.noise_clip, self.exploration_noise, self.learning_starts) < 0:
            raise ValueError("noise scales and learning_starts must be >= 0")


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    """One seed: a pack of one."""
    return lone(train_seeds([cfg], [logger], [checkpoint]))


def train_seeds(
    cfgs: Sequence[Config], loggers: Sequence[Logger | None], checkpoints: Sequence[Checkpointer | None]
) -> list[TrainResult | Exception]:
    """K seeds of one config in lockstep (algorithms.common.packing): every tensor below has a leading seed axis K.
    Returns each seed's result, or the FloatingPointError it diverged with."""
    cfg = same_run_but_seed(cfgs)
    K, N, device = len(cfgs), cfg.num_envs, torch.device(cfg.device)
    envs = [make_vec_env(cfg.env_id, N, seed_cfg.seed)[0] for seed_cfg in cfgs]
    try:
        # 1. Actor, critics, their targets, optimizers, replay memories (Algorithm 1, "initialize"), per seed.
        if not envs[0].is_continuous:
            raise ValueError(
                f"TD3 (and its DDPG ablation) needs continuous (Box) actions; {cfg.env_id} has {envs[0].single_action_space}"
            )
        obs_dim = int(np.prod(envs[0].single_observation_space.shape))
        action_shape, action_dim = envs[0].action_shape, envs[0].action_dim
        low_np, high_np = envs[0].single_action_space.low, envs[0].single_action_space.high
        critics = 2 if cfg.twin_critics else 1

        def networks() -> tuple[torch.nn.Module, ...]:
            actor = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np)
            qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size, critics)
            actor_target = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np)
            qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size, critics)
            actor_target.load_state_dict(actor.state_dict())
            qf_target.load_state_dict(qf.state_dict())
            return actor, qf, actor_target, qf_target

        members, streams = seeded_members([c.seed for c in cfgs], networks, device, cfg.torch_deterministic)
        actor, qf, actor_target, qf_target = (SeedStack(nets).to(device) for nets in zip(*members))
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=fused)
        shape = envs[0].single_observation_space.shape
        buffers = [ReplayBuffer(cfg.buffer_size, shape, action_shape, torch.float32, device) for _ in cfgs]
        low, high = torch.as_tensor(low_np, device=device), torch.as_tensor(high_np, device=device)
        scale = members[0][0].action_scale.to(device)

        def update_critics(obs, actions, rewards, next_obs, terminated, noise) -> tuple[torch.Tensor, torch.Tensor]:
            """One step on sum_k (Q_k(s,a) - y)^2 per seed: obs (K, B, O), actions and smoothing noise (K, B, A), rewards
            and terminated (K, B). Returns (losses (K,), Q values (K, critics, B))."""
            with torch.no_grad():
                next_actions = actor_target(next_obs)  # (K, B, A)
                if cfg.policy_noise > 0:
                    next_actions = smoothed_target_actions(next_actions, noise, cfg.noise_clip, scale, low, high)
                target = clipped_double_q_target(rewards, terminated, qf_target(next_obs, next_actions), cfg.gamma)
            q_values = qf(obs, actions)  # (K, critics, B)
            loss = F.mse_loss(q_values, target[:, None].expand_as(q_values), reduction="none").mean(-1).sum(-1)  # (K,)
            q_optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # each seed's parameters get its own loss's gradient
            q_optimizer.step()
            return loss.detach(), q_values.detach()

        def update_actor(obs: torch.Tensor) -> torch.Tensor:
            """Deterministic policy gradient through Q_1 (Algorithm 1: grad of Q_theta1(s, mu(s))); losses (K,)."""
            loss = -qf.call("first", obs, actor(obs)).mean(-1)
            actor_optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            actor_optimizer.step()
            return loss.detach()

        def explore(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return torch.max(torch.min(actor(obs) + noise * scale, high), low)  # (K, N, A)

        update_critics, update_actor, explore = [compiled(f, cfg) for f in (update_critics, update_actor, explore)]
        policies = [numpy_policy(actor.member(k), device) for k in range(K)]

        # 2. State: fresh, or restored from each seed's newest checkpoint (replay memory included).
        random_actions = [np.random.default_rng(c.seed) for c in cfgs]  # the uniform warm-up actions

        def state(k: int) -> dict[str, Any]:
            nets = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target}
            optimizers = {"q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer}
            return {
                **{name: net.seed(k) for name, net in nets.items()},
                **{name: OptimizerSlice(optimizer, k) for name, optimizer in optimizers.items()},
                "envs": envs[k],
                "random_actions": random_actions[k],
            }

        pack = SeedPack(
            RunState(c, envs[k], loggers[k], checkpoints[k], state(k), extras={"replay": buffers[k]}, stream=streams[k])
            for k, c in enumerate(cfgs)
        )
        global_step, saved = pack.restore(updates=0)
        updates = saved[0]["updates"]  # the same for every seed
        next_obs = [e.observation() for e in envs]  # K x (N, O)
        while global_step < cfg.total_timesteps and pack.live:
            # 3. Act: uniform random before learning starts, then mu(s) + N(0, sigma) clipped to the box.
            global_step += N
            if global_step <= cfg.learning_starts:
                actions = np.stack([r.uniform(low_np, high_np, (N, action_dim)).astype(np.float32) for r in random_actions])
            else:
                with torch.inference_mode():
                    noise = draw_normal(streams, (N, action_dim), device) * cfg.exploration_noise
                    actions = explore(torch.from_numpy(np.stack(next_obs)).to(device), noise).cpu().numpy()
            for k in pack.live:
                obs = next_obs[k]
                next_obs[k], rewards, terminated, truncated, info = envs[k].step(actions[k])
                buffers[k].add(obs, actions[k], rewards, info["final_obs"], terminated, truncated)
                pack.record_episodes(k, info["episodes"], global_step)

            # 4. Critics every step; actor and targets every d-th step (Algorithm 1, "if t mod d").
            if global_step > cfg.learning_starts:
                for _ in range(N):  # one update per environment step, as in the paper
                    batch = sample_seeds(buffers, cfg.batch_size, streams)
                    noise = None
                    if cfg.policy_noise > 0:  # eq. 14's epsilon, (K, B, A)
                        noise = draw_normal(streams, batch.actions.shape[1:], device) * cfg.policy_noise
                    q_loss, q_values = update_critics(*batch[:5], noise)
                    updates += 1
                    if updates % cfg.policy_frequency == 0:
                        actor_loss = update_actor(batch.obs)
                        soft_update(actor_target, actor, cfg.tau)
                        soft_update(qf_target, qf, cfg.tau)
                if updates % 100 < N and updates >= cfg.policy_frequency:  # CleanRL logs every 100 steps
                    q_means, q_losses, actor_losses = q_values.mean(-1).tolist(), q_loss.tolist(), actor_loss.tolist()
                    sps = pack.steps_per_second(global_step)
                    rows = [
                        {
                            **{f"losses/qf{i + 1}_values": q_mean for i, q_mean in enumerate(q_means[k])},
                            "losses/qf_loss": q_losses[k] / critics,
                            "losses/actor_loss": actor_losses[k],
                            "charts/SPS": sps,
                        }
                        for k in range(K)
                    ]
                    pack.log(global_step, rows)

            # 5. Evaluate, checkpoint.
            pack.evaluate_if_due(global_step, policies)
            pack.checkpoint_if_due(global_step, updates=updates)

        return pack.finish(global_step, policies)
    finally:
        for e in envs:
            e.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
