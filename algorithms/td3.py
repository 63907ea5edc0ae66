"""Twin Delayed DDPG (TD3).

Paper: Fujimoto, van Hoof, Meger (2018), "Addressing Function Approximation Error in Actor-Critic
Methods", ICML, arXiv:1802.09477 -- Algorithm 1: clipped double-Q learning (eq. 10, the target takes the
smaller of two target critics), target policy smoothing (eq. 14, clipped Gaussian noise on the target
action), delayed policy and target updates (every d critic updates), Gaussian exploration noise.

The defaults are CleanRL's `td3_continuous_action.py` MuJoCo setting (the paper's: 256-256 ReLU MLPs,
Adam 3e-4, batch 256, tau 0.005, policy noise 0.2 clipped at 0.5, exploration noise 0.1, d = 2, 25k random
steps first, 1M buffer). Deviations, each on purpose:
- Time-limit truncation is not termination: the target bootstraps from the true final observation of a
  truncated episode (CleanRL does too since gymnasium 1.0; the paper's code stored `done` without the
  time-limit correction for Hopper/Walker).
- The two critics are one module holding both weight stacks and evaluated with batched matmuls: the same
  two independent networks (separate initialisation, separate parameters, one summed loss as in the paper's
  code), with one kernel per layer instead of two. The actor loss evaluates Q_1 alone and differentiates
  through its value only, not into its weights (those gradients would be discarded).
`compile=True` wraps the update and acting functions in torch.compile.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, NullLogger, TrainResult, restore_rng_state, rng_state, seed_everything
from algorithms.common.config import RunConfig
from algorithms.common.evaluation import evaluate_and_log, finish_run, record_episodes
from algorithms.common.logging import train_from_cli
from algorithms.common.replay import ReplayBuffer
from envs import make_vec_env

SMOKE = {"total_timesteps": 600, "learning_starts": 200, "buffer_size": 1000, "batch_size": 32, "eval_every": 300,
         "eval_episodes": 2}  # fmt: skip
"""Tiny settings for the contract tests."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("vector",)


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
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, in units of the action half-range"""
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
        if min(self.num_envs, self.buffer_size, self.batch_size, self.policy_frequency,
               self.hidden_size) < 1:  # fmt: skip
            raise ValueError("num_envs, buffer_size, batch_size, policy_frequency and hidden_size "
                             "must be >= 1")  # fmt: skip
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.learning_rate <= 0:
            raise ValueError(f"need 0 < gamma <= 1, 0 < tau <= 1, learning_rate > 0; got {self.gamma}, {self.tau}, "
                             f"{self.learning_rate}")  # fmt: skip
        if min(self.policy_noise, self.noise_clip, self.exploration_noise, self.learning_starts) < 0:
            raise ValueError("noise scales and learning_starts must be >= 0")


# --- networks ----------------------------------------------------------------------------------------
class TwinQ(nn.Module):
    """Q_1(s, a) and Q_2(s, a): two independent 3-layer ReLU MLPs whose weights are stacked (2, in, out), so
    both are evaluated by one batched matmul per layer. Initialised like two nn.Linear stacks."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        sizes = [(in_dim, hidden), (hidden, hidden), (hidden, 1)]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in sizes:
            layers = [nn.Linear(fan_in, fan_out) for _ in range(2)]
            self.weights.append(nn.Parameter(torch.stack([layer.weight.T.detach() for layer in layers])))
            self.biases.append(nn.Parameter(torch.stack([layer.bias.detach()[None] for layer in layers])))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, obs), (B, act) -> (2, B): both critics' values."""
        x = torch.cat([obs, actions], -1).expand(2, -1, -1)  # (2, B, in)
        x = F.relu(torch.baddbmm(self.biases[0], x, self.weights[0]))  # (2, B, H)
        x = F.relu(torch.baddbmm(self.biases[1], x, self.weights[1]))  # (2, B, H)
        return (x * self.weights[2].mT).sum(-1) + self.biases[2].squeeze(-1)  # (2, B): a width-1 layer as a dot product

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_1 alone with frozen weights, (B,): the actor's loss, whose gradient must reach the actions only."""
        weights, biases = [w[0].detach() for w in self.weights], [b[0].detach() for b in self.biases]
        x = F.relu(torch.addmm(biases[0], torch.cat([obs, actions], -1), weights[0]))  # (B, H)
        x = F.relu(torch.addmm(biases[1], x, weights[1]))  # (B, H)
        return x @ weights[2].squeeze(-1) + biases[2].squeeze()  # (B,)


class Actor(nn.Module):
    """mu(s): a 3-layer ReLU MLP with a tanh output scaled to the action box."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, action_dim), nn.Tanh())  # fmt: skip
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


# --- pure maths --------------------------------------------------------------------------------------
def smoothed_target_actions(target_actions: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                            action_scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Target policy smoothing (eq. 14): a' = clip(mu'(s') + clip(eps, -c, c), low, high); `noise` is eps, already
    multiplied by the policy noise std, in action half-range units (times action_scale here)."""
    clipped = noise.clamp(-noise_clip, noise_clip) * action_scale
    return torch.max(torch.min(target_actions + clipped, high), low)


def clipped_double_q_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                            gamma: float) -> torch.Tensor:  # fmt: skip
    """y = r + gamma (1 - terminated) min(Q'_1, Q'_2)(s', a') (eq. 10); next_q is (2, B). Truncation bootstraps."""
    return rewards + gamma * (1.0 - terminated) * next_q.min(dim=0).values


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, in one fused op over all parameters."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    logger = logger or NullLogger()
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, first_obs = make_vec_env(cfg.env_id, cfg.num_envs, cfg.seed)
    try:
        # 1. Actor, twin critics, their targets, optimizers, replay memory (Algorithm 1, "initialize").
        if not envs.is_continuous:
            raise ValueError(f"TD3 needs continuous (Box) actions; {cfg.env_id} has {envs.single_action_space}")
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        action_shape = envs.single_action_space.shape
        action_dim, N = int(np.prod(action_shape)), cfg.num_envs
        low_np, high_np = envs.single_action_space.low, envs.single_action_space.high
        actor = Actor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf = TwinQ(obs_dim + action_dim, cfg.hidden_size).to(device)
        actor_target = Actor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf_target = TwinQ(obs_dim + action_dim, cfg.hidden_size).to(device)
        actor_target.load_state_dict(actor.state_dict())
        qf_target.load_state_dict(qf.state_dict())
        fused = device.type in ("cpu", "cuda")
        q_optimizer = torch.optim.Adam(qf.parameters(), lr=cfg.learning_rate, fused=fused)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.learning_rate, fused=fused)
        buffer = ReplayBuffer(cfg.buffer_size, envs.single_observation_space.shape, action_shape, torch.float32, device)
        low, high = torch.as_tensor(low_np, device=device), torch.as_tensor(high_np, device=device)
        scale = actor.action_scale

        def update_critics(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, torch.Tensor]:
            """One step on (Q_1(s,a) - y)^2 + (Q_2(s,a) - y)^2; returns (loss, Q values (2, B))."""
            with torch.no_grad():
                noise = torch.randn_like(actions) * cfg.policy_noise
                next_actions = smoothed_target_actions(actor_target(next_obs), noise, cfg.noise_clip, scale, low, high)
                target = clipped_double_q_target(rewards, terminated, qf_target(next_obs, next_actions), cfg.gamma)
            q_values = qf(obs, actions)
            loss = F.mse_loss(q_values, target.expand(2, -1), reduction="none").mean(1).sum()
            q_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            q_optimizer.step()
            return loss.detach(), q_values.detach()

        def update_actor(obs: torch.Tensor) -> torch.Tensor:
            """Deterministic policy gradient through Q_1 (Algorithm 1: grad of Q_theta1(s, mu(s)))."""
            loss = -qf.q1(obs, actor(obs)).mean()
            actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            actor_optimizer.step()
            return loss.detach()

        def explore(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return torch.max(torch.min(actor(obs) + noise * scale, high), low)

        if cfg.compile:
            update_critics, update_actor, explore = map(torch.compile, (update_critics, update_actor, explore))

        def deterministic_policy(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return actor(torch.as_tensor(obs, device=device)).cpu().numpy()

        # 2. State: fresh, or restored from the newest checkpoint (replay memory included).
        next_obs, global_step, updates = first_obs, 0, 0
        eval_history: list[tuple[int, float]] = []
        recent_returns: deque[float] = deque(maxlen=100)
        random_actions = np.random.default_rng(cfg.seed)  # the uniform warm-up actions
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:
            restorable = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target,
                          "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer, "envs": envs}  # fmt: skip
            for key, module in restorable.items():
                module.load_state_dict(state[key])
            buffer.load_state_dict(checkpoint.load_extra("replay"))
            next_obs, global_step, updates = state["next_obs"], state["global_step"], state["updates"]
            eval_history, recent_returns = state["eval_history"], deque(state["recent_returns"], maxlen=100)
            random_actions.bit_generator.state = state["random_actions"]
            restore_rng_state(state["rng"])

        start_time, start_step = time.perf_counter(), global_step
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
            record_episodes(info["episodes"], recent_returns, logger, global_step)

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
                    sps = (global_step - start_step) / (time.perf_counter() - start_time)
                    logger.log(global_step, {"losses/qf_loss": q_loss.item() / 2, "losses/qf1_values": q_means[0],
                                             "losses/qf2_values": q_means[1], "losses/actor_loss": actor_loss.item(),
                                             "charts/SPS": sps})  # fmt: skip

            # 5. Evaluate, checkpoint.
            if cfg.eval_every and global_step % cfg.eval_every < N:
                evaluate_and_log(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step)
            if checkpoint is not None and checkpoint.due(global_step):
                checkpoint.save(global_step, {
                    "actor": actor.state_dict(), "qf": qf.state_dict(), "actor_target": actor_target.state_dict(),
                    "qf_target": qf_target.state_dict(), "q_optimizer": q_optimizer.state_dict(),
                    "actor_optimizer": actor_optimizer.state_dict(), "envs": envs.state_dict(), "next_obs": next_obs,
                    "global_step": global_step, "updates": updates, "eval_history": eval_history,
                    "recent_returns": list(recent_returns), "random_actions": random_actions.bit_generator.state,
                    "rng": rng_state(),
                }, extras={"replay": buffer.state_dict()})  # fmt: skip

        return finish_run(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step,
                          start_step, start_time, recent_returns)  # fmt: skip
    finally:
        envs.close()


if __name__ == "__main__":
    train_from_cli(Config, train)
