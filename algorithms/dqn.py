"""Deep Q-Network (DQN), and Double DQN through `double_q` (registered as `double_dqn`).

Papers: Mnih et al. (2015), "Human-level control through deep reinforcement learning", Nature 518:529 --
Algorithm 1: epsilon-greedy acting, experience replay, a target network Q^ copied every C steps, the
target y = r + gamma * max_a' Q^(s', a'). Double DQN: van Hasselt, Guez, Silver (2016), "Deep Reinforcement
Learning with Double Q-learning", AAAI -- eq. 4: the online network selects a' = argmax Q(s', .), the
target network evaluates it, y = r + gamma * Q^(s', a').

The defaults are CleanRL's `dqn.py` classic-control setting (MLP 120-84, Adam 2.5e-4, buffer 10k,
batch 128, target copied every 500 steps, epsilon 1 -> 0.05 over half the run, a gradient step every 10
env steps after 10k steps, MSE loss). Deviations, each on purpose:
- None about truncation: as in CleanRL's `dqn.py` (which stores `terminations` with the real final observation),
  a time-limit truncation is not a termination, and the target bootstraps from the true final observation.
- `loss`: "mse" (CleanRL's default) or "huber" (the Nature paper clips the TD error to [-1, 1], which is
  the Huber loss with delta 1). `gradient_steps` > 1 takes several steps per update (RL Zoo's tuned setting).
- Evaluation acts greedily on classic control; `eval_epsilon` sets the Atari protocols' 0.05.
Image observations get the CNN torso of `algorithms.common.torsos` (Nature CNN, 512 units, for Atari; MinAtar's
one-conv network, 128 units) and a replay memory that keeps frames as uint8, each frame once
(`FrameReplayBuffer`). CleanRL's `dqn_atari.py` settings (buffer 1M, lr 1e-4, batch 32, target every 1000 steps,
epsilon 1 -> 0.01 over 10% of the run, learning from 80k steps, an update every 4 steps) and Young & Tian's
MinAtar ones are the suites' `[algo.dqn.atari]` and `[algo.dqn.minatar]` overrides. Double DQN keeps every other
part of DQN (network, schedule, target period), as the paper does; its registered name lets suites and reports put
"double_dqn" next to "dqn".
`compile=True` wraps the update and acting functions in torch.compile.
`train_seeds` trains K seeds of one config in one process (algorithms.common.packing): every tensor carries a
leading seed axis, noted in the shapes below; `train` is the pack of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.frame_replay import FrameReplayBuffer
from algorithms.common.networks import soft_update
from algorithms.common.packing import (
    OptimizerSlice,
    SeedPack,
    SeedStack,
    clip_grad_norm_per_seed,
    lone,
    same_run_but_seed,
    seeded_members,
)
from algorithms.common.replay import ReplayBuffer, sample_seeds
from algorithms.common.run import RunState
from algorithms.common.torsos import ImageTorso, image_kind
from envs import make_vec_env

SMOKE = {
    "total_timesteps": 1200,
    "learning_starts": 300,
    "buffer_size": 1000,
    "batch_size": 32,
    "train_frequency": 4,
    "target_network_frequency": 100,
    "eval_every": 600,
    "eval_episodes": 2,
}
"""Tiny settings for the contract tests."""
ACTION_SPACES = ("discrete",)
OBSERVATIONS = ("vector", "image")  # image: the CNN torsos of algorithms.common.torsos
VARIANTS = {"double_dqn": {"double_q": True}}
"""Registered names of Config variants (suites and run directories use them): name -> Config values."""


@dataclass(frozen=True)
class Config(RunConfig):
    env_id: str = "CartPole-v1"
    """gymnasium environment id (Discrete actions)"""
    total_timesteps: int = 500_000
    """environment steps, summed over env copies"""
    num_envs: int = 1
    """parallel env copies"""
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    buffer_size: int = 10_000
    """replay capacity in transitions"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 1.0
    """target update: Q^ <- tau Q + (1 - tau) Q^ every target_network_frequency steps (1.0: a copy, as the paper)"""
    target_network_frequency: int = 500
    """environment steps between target updates (C in Algorithm 1)"""
    batch_size: int = 128
    """transitions per gradient step"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: float = 0.05
    """exploration epsilon at the end of the schedule"""
    exploration_fraction: float = 0.5
    """fraction of total_timesteps over which epsilon falls linearly from start_e to end_e"""
    learning_starts: int = 10_000
    """environment steps of random acting before learning"""
    train_frequency: int = 10
    """environment steps between updates"""
    gradient_steps: int = 1
    """gradient steps per update"""
    double_q: bool = False
    """Double DQN target: the online network selects a', the target network evaluates it"""
    loss: str = "mse"
    """TD loss: mse (CleanRL) or huber (the Nature paper's error clipping)"""
    hidden_size_1: int = 120
    """width of the first hidden layer"""
    hidden_size_2: int = 84
    """width of the second hidden layer"""
    max_grad_norm: float | None = None
    """clip the gradient norm (None: no clipping, as CleanRL)"""
    eval_epsilon: float = 0.0
    """epsilon of evaluation episodes (0: greedy; the Atari protocols' 0.05)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            min(
                self.num_envs,
                self.buffer_size,
                self.batch_size,
                self.train_frequency,
                self.target_network_frequency,
                self.gradient_steps,
                self.hidden_size_1,
                self.hidden_size_2,
            )
            < 1
        ):
            raise ValueError(
                "num_envs, buffer_size, batch_size, train_frequency, "
                "target_network_frequency, gradient_steps and hidden sizes must be >= 1"
            )
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.learning_rate <= 0:
            raise ValueError(
                f"need 0 < gamma <= 1, 0 < tau <= 1, learning_rate > 0; got {self.gamma}, {self.tau}, {self.learning_rate}"
            )
        if not 0 <= self.end_e <= self.start_e <= 1 or not 0 < self.exploration_fraction <= 1:
            raise ValueError("need 0 <= end_e <= start_e <= 1 and 0 < exploration_fraction <= 1")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {self.loss!r}")
        if self.learning_starts < 0:
            raise ValueError("learning_starts must be >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm must be > 0 or None")
        if not 0 <= self.eval_epsilon <= 1:
            raise ValueError(f"eval_epsilon must be in [0, 1], got {self.eval_epsilon}")


# --- networks ----------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """Q(s, .): an MLP from vector observations to one value per action; for image observations the CNN torso
    (Nature CNN on Atari frames, MinAtar's small CNN on grids) and one linear output layer."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        if image_kind(obs_shape) is None:
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(int(np.prod(obs_shape)), hidden[0]),
                nn.ReLU(),
                nn.Linear(hidden[0], hidden[1]),
                nn.ReLU(),
                nn.Linear(hidden[1], n_actions),
            )
        else:
            torso = ImageTorso(obs_shape)
            self.net = nn.Sequential(torso, nn.Linear(torso.out_features, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


# --- pure maths --------------------------------------------------------------------------------------
def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """Falls linearly from `start` at t=0 to `end` at t=duration, then stays at `end` (end <= start)."""
    return max(end, start + (end - start) * t / duration)


def q_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """The TD target y (..., B) from next-state values (..., B, n_actions) (a seed pack's leading axis).

    DQN: y = r + gamma (1 - terminated) max_a' Q^(s', a'). Double DQN (`next_q_online` given):
    y = r + gamma (1 - terminated) Q^(s', argmax_a' Q(s', a')). Truncated transitions bootstrap."""
    if next_q_online is None:
        next_value = next_q_target.max(dim=-1).values
    else:
        next_value = next_q_target.gather(-1, next_q_online.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return rewards + gamma * (1.0 - terminated) * next_value


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
        # 1. Online and target networks, optimizer, replay memory D (Algorithm 1, lines 1-3), per seed.
        if envs[0].is_continuous:
            raise ValueError(f"DQN needs Discrete actions; {cfg.env_id} has {envs[0].single_action_space}")
        obs_shape, n_actions = envs[0].single_observation_space.shape, envs[0].action_dim
        hidden = (cfg.hidden_size_1, cfg.hidden_size_2)

        def networks() -> tuple[nn.Module, nn.Module]:
            q_network, target_network = QNetwork(obs_shape, n_actions, hidden), QNetwork(obs_shape, n_actions, hidden)
            target_network.load_state_dict(q_network.state_dict())
            return q_network, target_network

        # Stacked frames: each frame stored once (uint8), sampled on the CPU; MinAtar grids (0/1) as uint8; vectors
        # as float32. A seed's stream lives where its replay memory draws.
        kind = image_kind(obs_shape)
        streams_on = torch.device("cpu") if kind == "frames" else device
        members, streams = seeded_members([c.seed for c in cfgs], networks, streams_on, cfg.torch_deterministic)
        q_network, target_network = (SeedStack(nets).to(device) for nets in zip(*members))
        optimizer = torch.optim.Adam(q_network.parameters(), lr=cfg.learning_rate, fused=device.type in ("cpu", "cuda"))
        if kind == "frames":
            buffers = [FrameReplayBuffer(cfg.buffer_size, N, obs_shape, (), torch.long, device) for _ in cfgs]
        else:
            obs_dtype = torch.float32 if kind is None else torch.uint8
            buffers = [ReplayBuffer(cfg.buffer_size, obs_shape, (), torch.long, device, obs_dtype=obs_dtype) for _ in cfgs]
        action_rngs = [np.random.default_rng(c.seed) for c in cfgs]  # exploration draws (epsilon test, random actions)
        eval_rngs = [np.random.default_rng([c.seed, 1]) for c in cfgs]  # the evaluation protocol's epsilon draws

        def greedy(obs: torch.Tensor) -> torch.Tensor:
            return q_network(obs).argmax(dim=-1)  # (K, N)

        def update(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, torch.Tensor]:
            """One gradient step on the TD loss of every seed: obs (K, B, *O), actions, rewards, terminated (K, B).
            Returns (losses (K,), mean Q of the taken actions (K,))."""
            with torch.no_grad():
                online_next = q_network(next_obs) if cfg.double_q else None
                target = q_target(rewards, terminated, target_network(next_obs), cfg.gamma, online_next)
            q_taken = q_network(obs).gather(-1, actions[..., None]).squeeze(-1)  # (K, B)
            td_loss = F.mse_loss if cfg.loss == "mse" else F.smooth_l1_loss
            loss = td_loss(q_taken, target, reduction="none").mean(-1)  # (K,)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # each seed's network gets its own loss's gradient
            if cfg.max_grad_norm is not None:
                clip_grad_norm_per_seed(list(q_network.parameters()), cfg.max_grad_norm)
            optimizer.step()
            return loss.detach(), q_taken.detach().mean(-1)

        greedy, update = compiled(greedy, cfg), compiled(update, cfg)

        def evaluation_policy(k: int) -> Callable[[np.ndarray], np.ndarray]:
            """Seed k's: greedy, or epsilon-greedy with the evaluation protocol's eval_epsilon (Atari: 0.05)."""
            q_values = q_network.member(k)

            def policy(obs: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    chosen = q_values(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
                if cfg.eval_epsilon == 0:
                    return chosen
                explore = eval_rngs[k].random(len(chosen)) < cfg.eval_epsilon
                return np.where(explore, eval_rngs[k].integers(0, n_actions, len(chosen)), chosen)

            return policy

        policies = [evaluation_policy(k) for k in range(K)]

        # 2. State: fresh, or restored from each seed's newest checkpoint (replay memory included).
        def state(k: int) -> dict[str, Any]:
            return {
                "q_network": q_network.seed(k),
                "target_network": target_network.seed(k),
                "optimizer": OptimizerSlice(optimizer, k),
                "envs": envs[k],
                "action_rng": action_rngs[k],
                "eval_rng": eval_rngs[k],
            }

        pack = SeedPack(
            RunState(c, envs[k], loggers[k], checkpoints[k], state(k), extras={"replay": buffers[k]}, stream=streams[k])
            for k, c in enumerate(cfgs)
        )
        global_step, saved = pack.restore(updates=0)
        updates = saved[0]["updates"]  # the same for every seed
        next_obs = [e.observation() for e in envs]  # a fresh game's after a resumed fast-path Atari run (envs.atari)
        while global_step < cfg.total_timesteps and pack.live:
            # 3. Act epsilon-greedily and store the transition (Algorithm 1, "select a_t ... store in D").
            global_step += N
            epsilon = linear_schedule(cfg.start_e, cfg.end_e, cfg.exploration_fraction * cfg.total_timesteps, global_step)
            explore = np.stack([rng.random(N) < epsilon for rng in action_rngs])  # (K, N)
            actions = np.stack([rng.integers(0, n_actions, N) for rng in action_rngs])
            if not explore.all():
                with torch.inference_mode():
                    chosen = greedy(torch.from_numpy(np.stack(next_obs)).to(device)).cpu().numpy()
                actions = np.where(explore, actions, chosen)
            for k in pack.live:
                obs = next_obs[k]
                next_obs[k], rewards, terminated, truncated, info = envs[k].step(actions[k])
                buffers[k].add(obs, actions[k], rewards, info["final_obs"], terminated, truncated)
                pack.record_episodes(k, info["episodes"], global_step)

            # 4. Learn from minibatches of D every train_frequency steps; copy the target every C steps.
            if global_step > cfg.learning_starts:
                if global_step % cfg.train_frequency < N:
                    for _ in range(cfg.gradient_steps):
                        loss, q_mean = update(*sample_seeds(buffers, cfg.batch_size, streams)[:5])
                    updates += 1
                    if updates % 100 == 1:  # every 100 updates (CleanRL: every 100 steps, 25 updates)
                        losses, q_means, sps = loss.tolist(), q_mean.tolist(), pack.steps_per_second(global_step)
                        rows = [
                            {"losses/td_loss": loss, "losses/q_values": q, "charts/epsilon": epsilon, "charts/SPS": sps}
                            for loss, q in zip(losses, q_means)
                        ]
                        pack.log(global_step, rows)
                if global_step % cfg.target_network_frequency < N:
                    soft_update(target_network, q_network, cfg.tau)

            # 5. Evaluate, checkpoint.
            pack.evaluate_if_due(global_step, policies)
            pack.checkpoint_if_due(global_step, updates=updates)

        return pack.finish(global_step, policies)
    finally:
        for e in envs:
            e.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
