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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.config import RunConfig
from algorithms.common.networks import DeterministicActor, QEnsemble, soft_update
from algorithms.common.replay import ReplayBuffer
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
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, _ = make_vec_env(cfg.env_id, cfg.num_envs, cfg.seed)
    try:
        # 1. Actor, critics, their targets, optimizers, replay memory (Algorithm 1, "initialize").
        if not envs.is_continuous:
            raise ValueError(
                f"TD3 (and its DDPG ablation) needs continuous (Box) actions; {cfg.env_id} has {envs.single_action_space}"
            )
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        action_shape, action_dim, N = envs.action_shape, envs.action_dim, cfg.num_envs
        low_np, high_np = envs.single_action_space.low, envs.single_action_space.high
        critics = 2 if cfg.twin_critics else 1
        actor = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size, critics).to(device)
        actor_target = DeterministicActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size, critics).to(device)
        actor_target.load_state_dict(actor.state_dict())
        qf_target.load_state_dict(qf.state_dict())
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=fused)
        buffer = ReplayBuffer(cfg.buffer_size, envs.single_observation_space.shape, action_shape, torch.float32, device)
        low, high = torch.as_tensor(low_np, device=device), torch.as_tensor(high_np, device=device)
        scale = actor.action_scale

        def update_critics(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, torch.Tensor]:
            """One step on sum_k (Q_k(s,a) - y)^2; returns (loss, Q values (K, B))."""
            with torch.no_grad():
                next_actions = actor_target(next_obs)
                if cfg.policy_noise > 0:
                    noise = torch.randn_like(actions) * cfg.policy_noise
                    next_actions = smoothed_target_actions(next_actions, noise, cfg.noise_clip, scale, low, high)
                target = clipped_double_q_target(rewards, terminated, qf_target(next_obs, next_actions), cfg.gamma)
            q_values = qf(obs, actions)
            loss = F.mse_loss(q_values, target.expand(critics, -1), reduction="none").mean(1).sum()
            q_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            q_optimizer.step()
            return loss.detach(), q_values.detach()

        def update_actor(obs: torch.Tensor) -> torch.Tensor:
            """Deterministic policy gradient through Q_1 (Algorithm 1: grad of Q_theta1(s, mu(s)))."""
            loss = -qf.first(obs, actor(obs)).mean()
            actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            actor_optimizer.step()
            return loss.detach()

        def explore(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return torch.max(torch.min(actor(obs) + noise * scale, high), low)

        if cfg.compile:
            update_critics, update_actor, explore = map(torch.compile, (update_critics, update_actor, explore))
        deterministic_policy = numpy_policy(actor, device)

        # 2. State: fresh, or restored from the newest checkpoint (replay memory included).
        random_actions = np.random.default_rng(cfg.seed)  # the uniform warm-up actions
        state = {
            "actor": actor,
            "qf": qf,
            "actor_target": actor_target,
            "qf_target": qf_target,
            "q_optimizer": q_optimizer,
            "actor_optimizer": actor_optimizer,
            "envs": envs,
            "random_actions": random_actions,
        }
        run = RunState(cfg, envs, logger, checkpoint, state, extras={"replay": buffer})
        global_step, saved = run.restore(updates=0)
        updates = saved["updates"]
        next_obs = envs.observation()
        while global_step < cfg.total_timesteps:
            # 3. Act: uniform random before learning starts, then mu(s) + N(0, sigma) clipped to the box.
            global_step += N
            if global_step <= cfg.learning_starts:
                actions = random_actions.uniform(low_np, high_np, (N, action_dim)).astype(np.float32)
            else:
                with torch.inference_mode():
                    noise = torch.randn(N, action_dim, device=device) * cfg.exploration_noise
                    actions = explore(torch.from_numpy(next_obs).to(device), noise).cpu().numpy()
            obs = next_obs
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            buffer.add(obs, actions, rewards, info["final_obs"], terminated, truncated)
            run.record_episodes(info["episodes"], global_step)

            # 4. Critics every step; actor and targets every d-th step (Algorithm 1, "if t mod d").
            if global_step > cfg.learning_starts:
                for _ in range(N):  # one update per environment step, as in the paper
                    batch = buffer.sample(cfg.batch_size)
                    q_loss, q_values = update_critics(*batch[:5])
                    updates += 1
                    if updates % cfg.policy_frequency == 0:
                        actor_loss = update_actor(batch.obs)
                        soft_update(actor_target, actor, cfg.tau)
                        soft_update(qf_target, qf, cfg.tau)
                if updates % 100 < N and updates >= cfg.policy_frequency:  # CleanRL logs every 100 steps
                    q_means = q_values.mean(1).tolist()
                    metrics = {f"losses/qf{k + 1}_values": q_mean for k, q_mean in enumerate(q_means)}
                    metrics.update({"losses/qf_loss": q_loss.item() / critics, "losses/actor_loss": actor_loss.item()})
                    run.logger.log(global_step, {**metrics, "charts/SPS": run.steps_per_second(global_step)})

            # 5. Evaluate, checkpoint.
            run.evaluate_if_due(global_step, deterministic_policy)
            run.checkpoint_if_due(global_step, updates=updates)

        return run.finish(global_step, deterministic_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
