"""Proximal Policy Optimization (PPO) with the clipped surrogate objective.

Paper: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization Algorithms",
arXiv:1707.06347 -- Algorithm 1, the clipped objective L^CLIP (eq. 7) and the combined loss (eq. 9);
advantages by GAE (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

The defaults are CleanRL's `ppo_continuous_action.py` MuJoCo setting (2048 steps x 1 env, 10 epochs,
32 minibatches, lr 3e-4 annealed, clip 0.2). Like CleanRL (and the OpenAI baselines the paper used) it
adds details the paper leaves out: orthogonal init, a state-independent log-std, observation
normalisation and reward scaling, per-minibatch advantage normalisation, value-loss clipping, global
gradient-norm clipping, Adam eps 1e-5, linear learning-rate annealing.

Deviations from CleanRL, each on purpose:
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation);
  CleanRL treats every episode end as terminal.
- Reward scaling resets its discounted return at every episode end (gymnasium's resets on termination only).
- The Gaussian log-probability and entropy are written out instead of built through torch.distributions,
  and acting runs under inference_mode: the same numbers, less overhead per step.
Image observations (Atari frames, MinAtar grids) get a shared CNN torso with linear actor and critic heads
(see `Agent`); observation normalisation then does nothing. CleanRL's `ppo_atari.py` settings (8 envs x 128
steps, 4 minibatches, 4 epochs, lr 2.5e-4, clip 0.1, entropy 0.01, no normalisation: Atari rewards are
clipped) are the suites' `[algo.ppo.atari]` overrides.
`compile=True` wraps acting and the loss in torch.compile.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms.common import Checkpointer, Logger, NullLogger, TrainResult, restore_rng_state, rng_state, seed_everything
from algorithms.common.config import RunConfig
from algorithms.common.evaluation import evaluate_and_log, finish_run
from algorithms.common.logging import train_from_cli
from algorithms.common.rollout import RolloutStorage
from algorithms.common.torsos import ImageTorso, image_kind
from envs import make_vec_env

SMOKE = {"total_timesteps": 1024, "num_envs": 2, "num_steps": 128, "update_epochs": 2, "num_minibatches": 4,
         "eval_every": 512, "eval_episodes": 2}  # fmt: skip
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector", "image")  # image: the CNN torsos of algorithms.common.torsos


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 1
    """parallel env copies"""
    num_steps: int = 2048
    """steps per env copy in each rollout"""
    learning_rate: float = 3e-4
    """Adam learning rate (start value when annealed)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over training"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 32
    """minibatches per epoch"""
    update_epochs: int = 10
    """passes over each rollout (K in the paper)"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """surrogate clipping epsilon"""
    clip_vloss: bool = True
    """clip the value loss around the old values"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    target_kl: float | None = None
    """stop the epochs of an update early once approx. KL exceeds this (None: never)"""
    normalize_obs: bool = True
    """normalise vector observations by running mean/std (images are left as they are)"""
    normalize_reward: bool = True
    """scale rewards by the running std of the discounted return"""
    hidden_size: int = 64
    """units in each of the two hidden layers (actor and critic)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if self.learning_rate <= 0 or self.clip_coef <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate, clip_coef and max_grad_norm must be > 0")
        if self.ent_coef < 0 or self.vf_coef < 0:
            raise ValueError("ent_coef and vf_coef must be >= 0")
        if self.batch_size % self.num_minibatches:
            raise ValueError(f"num_envs * num_steps = {self.batch_size} is not divisible by num_minibatches = "
                             f"{self.num_minibatches}")  # fmt: skip
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or None, got {self.target_kl}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- networks ----------------------------------------------------------------------------------------
def layer_init(layer: nn.Linear | nn.Conv2d, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear | nn.Conv2d:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, hidden: int, out_dim: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, out_dim), std=out_std),
    )  # fmt: skip


class Agent(nn.Module):
    """Separate actor and critic MLPs; Gaussian policy with a learned state-independent log-std (Box) or
    a categorical policy over logits (Discrete). Image observations (Atari frames, MinAtar grids): actor and
    critic are linear heads on one shared CNN torso (`algorithms.common.torsos`, orthogonal init as CleanRL's
    ppo_atari), and `actor_and_value` runs the torso once for both."""

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, continuous: bool, hidden: int) -> None:
        super().__init__()
        self.continuous = continuous
        if image_kind(obs_shape) is None:
            obs_dim = int(np.prod(obs_shape))
            self.torso = None
            self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
            self.actor = mlp(obs_dim, hidden, action_dim, out_std=0.01)
        else:
            self.torso = ImageTorso(obs_shape)
            for layer in self.torso.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer_init(layer)
            self.actor = nn.Sequential(self.torso, layer_init(nn.Linear(self.torso.out_features, action_dim), std=0.01))
            self.critic = nn.Sequential(self.torso, layer_init(nn.Linear(self.torso.out_features, 1), std=1.0))
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim)) if continuous else None

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def actor_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actor output (B, A), V(s) (B,)) with a shared torso evaluated once."""
        if self.torso is None:
            return self.actor(obs), self.value(obs)
        features = self.torso(obs)
        return self.actor[1](features), self.critic[1](features).squeeze(-1)


# --- pure maths --------------------------------------------------------------------------------------
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_ends: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, eq. 16) with truncation handled. All inputs are (T, N).

    next_values[t] is V of the observation step t led to (the true final observation where the episode
    ended). delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]: no bootstrap on
    termination, bootstrap on truncation. The recursion A_t = delta_t + gamma * lambda * A_{t+1} is cut at
    every episode end, because A_{t+1} belongs to the next episode. Returns (advantages, returns).
    """
    not_terminated = 1.0 - terminated.float()
    continues = 1.0 - episode_ends.float()
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * gae_lambda * continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mean, diag(exp(log_std))^2) summed over action dims: (B, A) -> (B,)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, sum over dims, broadcast to (B,)."""
    return (log_std + 0.5 * (1.0 + np.log(2 * np.pi))).sum(-1).expand(batch)


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """-L^CLIP (eq. 7): mean of max(-A r, -A clip(r, 1-eps, 1+eps))."""
    return torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()


def value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """0.5 * squared error, optionally the max with the error of values clipped around the old ones."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped = (old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    logger = logger or NullLogger()
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, first_obs = make_vec_env(cfg.env_id, cfg.num_envs, cfg.seed, normalize_obs=cfg.normalize_obs,
                                   normalize_reward=cfg.normalize_reward, gamma=cfg.gamma)  # fmt: skip
    try:
        # 1. Networks, optimizer, rollout storage (T = num_steps, N = num_envs).
        obs_shape = envs.single_observation_space.shape
        continuous = envs.is_continuous
        action_shape = envs.single_action_space.shape if continuous else ()
        action_dim = int(np.prod(action_shape)) if continuous else int(envs.single_action_space.n)
        agent = Agent(obs_shape, action_dim, continuous, cfg.hidden_size).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=device.type in ("cpu", "cuda"))
        T, N = cfg.num_steps, cfg.num_envs
        # Host-side rollout storage, filled step by step and moved to the device once per rollout.
        rollout = RolloutStorage(T, N, obs_shape, action_shape, continuous)

        def act(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            """Sample actions (N, *A) from the current policy; `noise` is (N, A) standard normal or uniform."""
            if continuous:
                return agent.actor(obs) + torch.exp(agent.actor_logstd) * noise
            # Inverse-CDF sampling from the categorical: first action whose cumulative probability exceeds u.
            cdf = torch.softmax(agent.actor(obs), -1).cumsum(-1)
            return torch.searchsorted(cdf, noise[:, :1]).clamp_(max=action_dim - 1).squeeze(-1)

        def policy_loss_terms(obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """New log-probs, entropies and values for a minibatch, all (B,)."""
            out, values = agent.actor_and_value(obs)
            if continuous:
                return (gaussian_log_prob(actions, out, agent.actor_logstd),
                        gaussian_entropy(agent.actor_logstd, obs.shape[0]), values)  # fmt: skip
            log_probs = torch.log_softmax(out, -1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return log_probs.gather(-1, actions[:, None]).squeeze(-1), entropy, values

        def loss_fn(obs, actions, old_logprobs, advantages, returns, old_values) -> tuple[torch.Tensor, torch.Tensor]:
            """Combined loss (eq. 9, signs for minimisation) and diagnostics [pg, v, entropy, old_kl, kl, clipfrac]."""
            new_logprobs, entropy, new_values = policy_loss_terms(obs, actions)
            log_ratio = new_logprobs - old_logprobs
            ratio = log_ratio.exp()
            if cfg.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            pg_loss = clipped_surrogate_loss(ratio, advantages, cfg.clip_coef)
            v_loss = value_loss(new_values, old_values, returns, cfg.clip_coef if cfg.clip_vloss else None)
            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
            with torch.no_grad():  # "approx_kl" is the (r - 1) - log r estimator, http://joschu.net/blog/kl-approx.html
                clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                stats = torch.stack(
                    [pg_loss, v_loss, entropy_loss, (-log_ratio).mean(), ((ratio - 1) - log_ratio).mean(), clipfrac]
                )
            return loss, stats

        if cfg.compile:
            act = torch.compile(act)
            loss_fn = torch.compile(loss_fn)

        def deterministic_policy(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = agent.actor(torch.as_tensor(obs, device=device))
                return (out if continuous else out.argmax(-1)).cpu().numpy()

        # 2. State: fresh, or restored from the newest checkpoint.
        next_obs = first_obs  # (N, *obs_shape) float32, numpy
        global_step, start_iteration = 0, 1
        eval_history: list[tuple[int, float]] = []
        recent_returns: deque[float] = deque(maxlen=100)
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:
            agent.load_state_dict(state["agent"])
            optimizer.load_state_dict(state["optimizer"])
            envs.load_state_dict(state["envs"])
            next_obs = envs.observation()  # a fresh game's after a resumed fast-path Atari run (envs.atari)
            global_step, start_iteration = state["global_step"], state["iteration"] + 1
            eval_history, recent_returns = state["eval_history"], deque(state["recent_returns"], maxlen=100)
            restore_rng_state(state["rng"])

        start_time, start_step = time.perf_counter(), global_step
        for iteration in range(start_iteration, cfg.num_iterations + 1):
            # 3. Learning rate: linear annealing to 0 over the iterations.
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            # 4. Rollout: T steps in N env copies with the current policy (Algorithm 1, "run policy").
            # Only the action is computed per step; the policy is fixed during the rollout, so its
            # log-probs and values are computed afterwards in one batched pass (same quantities, fewer calls).
            noise = torch.randn(T, N, action_dim) if continuous else torch.rand(T, N, 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise[t].to(device)).cpu().numpy()
                next_obs = rollout.step(envs, t, next_obs, action, recent_returns, logger, global_step)

            # 5. Log-probs and values of the rollout; advantages by GAE, bootstrapping from V(s_{t+1}) with
            # s_{t+1} the true final observation where an episode ended (only termination zeroes it).
            batch = rollout.tensors(device)
            obs, actions = batch.obs, batch.actions
            with torch.no_grad():
                logprobs, _, values = policy_loss_terms(obs.reshape(T * N, *obs_shape), actions.reshape(T * N, *action_shape))
                logprobs, values = logprobs.reshape(T, N), values.reshape(T, N)
                next_values = agent.value(batch.final_obs)
            advantages, returns = compute_gae(batch.rewards, values, next_values, batch.terminated,
                                              batch.episode_ends, cfg.gamma, cfg.gae_lambda)  # fmt: skip

            # 6. Optimise the surrogate for K epochs of minibatches (Algorithm 1, "optimize surrogate").
            b_obs, b_actions = obs.reshape(-1, *obs_shape), actions.reshape(-1, *action_shape)
            b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
            b_returns, b_values = returns.reshape(-1), values.reshape(-1)
            for _epoch in range(cfg.update_epochs):
                permutation = torch.randperm(cfg.batch_size, device=device)
                for start in range(0, cfg.batch_size, cfg.minibatch_size):
                    mb = permutation[start : start + cfg.minibatch_size]
                    # index_select copies whole observations; b_obs[mb] would copy Atari frames byte by byte (about
                    # 4x slower on the CPU: 16 ms for 256 stacks of 4 x 84 x 84).
                    loss, stats = loss_fn(
                        b_obs.index_select(0, mb), b_actions[mb], b_logprobs[mb], b_advantages[mb], b_returns[mb], b_values[mb]
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm, foreach=True)
                    optimizer.step()
                if cfg.target_kl is not None and stats[4].item() > cfg.target_kl:
                    break

            # 7. Log (the last minibatch's diagnostics, as CleanRL), evaluate, checkpoint.
            pg_loss, v_loss, entropy, old_kl, kl, clipfrac = stats.tolist()
            if not np.isfinite([pg_loss, v_loss, entropy]).all():
                raise FloatingPointError(f"non-finite loss at step {global_step}: policy {pg_loss}, value {v_loss}")
            var_returns = b_returns.var()
            explained_var = (1 - (b_returns - b_values).var() / var_returns).item() if var_returns > 0 else float("nan")
            logger.log(global_step, {
                "charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/policy_loss": pg_loss,
                "losses/value_loss": v_loss, "losses/entropy": entropy, "losses/old_approx_kl": old_kl,
                "losses/approx_kl": kl, "losses/clipfrac": clipfrac, "losses/explained_variance": explained_var,
                "charts/SPS": (global_step - start_step) / (time.perf_counter() - start_time),
            })  # fmt: skip
            if cfg.eval_every and global_step // cfg.eval_every > (global_step - cfg.batch_size) // cfg.eval_every:
                evaluate_and_log(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step)
            if checkpoint is not None and checkpoint.due(global_step):
                checkpoint.save(global_step, {
                    "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "envs": envs.state_dict(),
                    "global_step": global_step, "iteration": iteration,
                    "eval_history": eval_history, "recent_returns": list(recent_returns), "rng": rng_state(),
                })  # fmt: skip

        return finish_run(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step,
                          start_step, start_time, recent_returns)  # fmt: skip
    finally:
        envs.close()


if __name__ == "__main__":
    train_from_cli(Config, train)
