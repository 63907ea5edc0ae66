"""REINFORCE: Monte-Carlo policy gradient with reward-to-go, optionally with a learned state-value baseline.

Paper: Williams (1992), "Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
Learning", Machine Learning 8 -- the REINFORCE algorithms in their episodic form: the gradient of the
expected return is estimated from whole episodes of the current policy as
    g = 1/E sum_episodes sum_t grad log pi(a_t|s_t) (G_t - b(s_t)),
with causality (G_t is the discounted reward-to-go from t, since rewards before t do not depend on a_t;
the "reward-to-go" form of e.g. Sutton & Barto 2018, section 13.3) and a baseline b(s_t) that does not
depend on a_t, which leaves the mean of g unchanged and lowers its variance (Williams' reinforcement
baseline; the learned state value V(s_t) is Sutton & Barto's "REINFORCE with baseline", section 13.4).

Each update collects `episodes_per_batch` whole episodes with the current policy, takes one Adam step on the
policy along g, then fits V to the rewards-to-go by `value_iterations` Adam steps on the squared error.
`baseline=False` is plain REINFORCE (b = 0, no value network). Details the paper leaves open:
- Discount gamma = 0.99 (Williams' estimator is undiscounted; discounting lowers the variance on long tasks).
- Truncated episodes (time limits): with a baseline, the reward-to-go is bootstrapped at the cut with
  V(true final observation), so a time limit is not treated as the end of the task. Without a baseline there
  is no value to bootstrap from: the reward-to-go stops at the cut, i.e. plain REINFORCE optimises the
  time-limited return (which is what CartPole-v1 scores).
- The baseline of a batch is V *before* it is fitted to that batch's returns: fitted after, V(s_t) would
  depend on G_t and hence on a_t, and the estimator would no longer be unbiased.
- With num_envs > 1 every copy runs episodes_per_batch / num_envs whole episodes; copies that finish their
  share early keep stepping (a vector env cannot pause a copy) and those steps are counted but not used.
  The default of one env copy wastes nothing. Batches never straddle an update, so every episode is
  on-policy; the last, incomplete batch at the end of the budget is dropped.
- Gaussian policy (Box actions) with a state-independent learned log-std; categorical over logits otherwise.
`compile=True` wraps acting in torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.distributions import categorical_sample
from algorithms.common.networks import tanh_mlp
from algorithms.common.run import RunState, numpy_policy
from envs import make_vec_env

SMOKE = {"total_timesteps": 1200, "episodes_per_batch": 2, "num_envs": 2, "eval_every": 600, "eval_episodes": 2}
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector",)


@dataclass(frozen=True)
class Config(RunConfig):
    env_id: str = "CartPole-v1"
    """gymnasium environment id"""
    total_timesteps: int = 500_000
    """environment steps, summed over env copies"""
    num_envs: int = 1
    """parallel env copies (each runs episodes_per_batch / num_envs whole episodes per batch)"""
    episodes_per_batch: int = 8
    """whole episodes per policy update"""
    learning_rate: float = 1e-3
    """Adam learning rate of the policy"""
    gamma: float = 0.99
    """discount factor of the reward-to-go"""
    baseline: bool = True
    """subtract a learned state value V(s_t) from the reward-to-go (False: plain REINFORCE)"""
    value_learning_rate: float = 1e-3
    """Adam learning rate of the value baseline"""
    value_iterations: int = 10
    """full-batch gradient steps on the value baseline per update"""
    hidden_size: int = 64
    """units in each of the two tanh hidden layers (policy and value)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "episodes_per_batch", "value_iterations", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.episodes_per_batch % self.num_envs:
            raise ValueError(f"episodes_per_batch = {self.episodes_per_batch} is not divisible by num_envs = {self.num_envs}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1, got {self.gamma}")
        if self.learning_rate <= 0 or self.value_learning_rate <= 0:
            raise ValueError("learning rates must be > 0")


# --- networks ----------------------------------------------------------------------------------------
class Policy(nn.Module):
    """pi(a|s): categorical over the MLP's logits (Discrete), or Gaussian with the MLP's mean and a learned
    state-independent log-std (Box)."""

    def __init__(self, obs_dim: int, action_dim: int, continuous: bool, hidden: int) -> None:
        super().__init__()
        self.continuous = continuous
        self.net = tanh_mlp(obs_dim, hidden, action_dim)  # PyTorch's default initialisation
        self.log_std = nn.Parameter(torch.zeros(action_dim)) if continuous else None

    def log_prob_and_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and the policy's entropy at s, both (B,)."""
        out = self.net(obs)
        if self.continuous:
            dist = torch.distributions.Normal(out, self.log_std.exp())
            return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
        log_probs = torch.log_softmax(out, -1)
        return log_probs.gather(-1, actions[:, None]).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions (N, *A) with pre-drawn noise: (N, A) standard normal (Box) or (N, 1) uniform (Discrete)."""
        if self.continuous:
            return self.net(obs) + self.log_std.exp() * noise
        return categorical_sample(self.net(obs), noise)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        return out if self.continuous else out.argmax(-1)


# --- pure maths --------------------------------------------------------------------------------------
def rewards_to_go(rewards: torch.Tensor, episode_ends: torch.Tensor, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} inside an episode, and G_t = r_t + gamma * bootstrap_t at its last step.

    All (T, N), time first, one column per env copy. bootstrap_t is V(true final observation) where the
    episode was truncated (and a value exists), 0 where it terminated.
    """
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    ends = episode_ends.to(rewards.dtype)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * (ends[t] * bootstrap[t] + (1.0 - ends[t]) * running)
        returns[t] = running
    return returns


def reinforce_surrogate(
    log_probs: torch.Tensor, returns: torch.Tensor, baselines: torch.Tensor, num_episodes: int
) -> torch.Tensor:
    """A loss whose gradient is minus the REINFORCE estimate g = 1/E sum_episodes sum_t grad log pi(a_t|s_t) (G_t - b_t).

    log_probs (B,) carry the graph; returns G_t and baselines b_t (B,) are constants; B steps of E episodes.
    """
    return -(log_probs * (returns - baselines).detach()).sum() / num_episodes


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, _ = make_vec_env(cfg.env_id, cfg.num_envs, cfg.seed, gamma=cfg.gamma)
    try:
        # 1. Policy pi_theta, value baseline V_phi, one Adam optimizer each.
        obs_shape, continuous, action_dim = envs.single_observation_space.shape, envs.is_continuous, envs.action_dim
        obs_dim, N, share = int(np.prod(obs_shape)), cfg.num_envs, cfg.episodes_per_batch // cfg.num_envs
        policy = Policy(obs_dim, action_dim, continuous, cfg.hidden_size).to(device)
        value = tanh_mlp(obs_dim, cfg.hidden_size, 1).to(device)
        policy_optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        value_optimizer = torch.optim.Adam(value.parameters(), lr=cfg.value_learning_rate)

        act = compiled(policy.sample, cfg)
        deterministic_policy = numpy_policy(policy.deterministic_action, device)

        # 2. State: fresh, or restored from the newest checkpoint.
        state = {
            "policy": policy,
            "value": value,
            "policy_optimizer": policy_optimizer,
            "value_optimizer": value_optimizer,
            "envs": envs,
        }
        run = RunState(cfg, envs, logger, checkpoint, state)
        global_step, _ = run.restore()
        next_obs = envs.observation()
        while global_step < cfg.total_timesteps:
            # 3. Run the current policy for whole episodes: `share` of them in each env copy. A copy that is
            # mid-episode (it finished its share early last batch) starts over, so no episode spans two policies.
            if N > 1:
                next_obs = envs.reset()
            steps: list[tuple[np.ndarray, ...]] = []  # per vector step: obs, action, reward, term, trunc, final obs, used
            finished = np.zeros(N, np.int64)
            while (finished < share).any() and global_step < cfg.total_timesteps:
                global_step += N
                used = finished < share
                noise = torch.randn(N, action_dim) if continuous else torch.rand(N, 1)
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise.to(device)).cpu().numpy()
                obs = next_obs
                next_obs, reward, terminated, truncated, info = envs.step(action)
                steps.append((obs, action, reward, terminated, truncated, info["final_obs"], used))
                finished += used & (terminated | truncated)
                run.record_episodes(info["episodes"], global_step)
            if (finished < share).any():
                break  # the budget ran out mid-batch: no update from a partial batch

            # 4. Rewards-to-go G_t of every step (T, N), bootstrapped with V(final obs) at truncations when there is
            # a baseline; then keep the steps that belong to the batch's episodes (B of them).
            obs_b, actions_b, rewards_b, term_b, trunc_b, final_b, used_b = (np.stack(x) for x in zip(*steps))
            to_tensor = lambda x: torch.as_tensor(x, device=device)
            terminated, truncated, used = to_tensor(term_b), to_tensor(trunc_b), to_tensor(used_b)
            bootstrap = torch.zeros(terminated.shape, device=device)
            if cfg.baseline:
                with torch.no_grad():
                    bootstrap = value(to_tensor(final_b)).squeeze(-1) * truncated
            returns = rewards_to_go(to_tensor(rewards_b), terminated | truncated, bootstrap, cfg.gamma)[used]
            obs, actions = to_tensor(obs_b)[used], to_tensor(actions_b)[used]
            with torch.no_grad():  # b(s_t) from V before it is fitted to this batch (see the module docstring)
                baselines = value(obs).squeeze(-1) if cfg.baseline else torch.zeros_like(returns)

            # 5. One gradient step on the policy along the REINFORCE estimate.
            log_probs, entropy = policy.log_prob_and_entropy(obs, actions)
            policy_loss = reinforce_surrogate(log_probs, returns, baselines, cfg.episodes_per_batch)
            policy_optimizer.zero_grad(set_to_none=True)
            policy_loss.backward()
            policy_optimizer.step()

            # 6. Fit the baseline to the rewards-to-go (squared error, full batch).
            value_loss = torch.zeros(())
            for _ in range(cfg.value_iterations if cfg.baseline else 0):
                value_loss = (value(obs).squeeze(-1) - returns).pow(2).mean()
                value_optimizer.zero_grad(set_to_none=True)
                value_loss.backward()
                value_optimizer.step()

            # 7. Log, evaluate, checkpoint.
            pg_loss, v_loss = policy_loss.item(), value_loss.item()
            var_returns = returns.var()
            explained_var = (1 - (returns - baselines).var() / var_returns).item() if var_returns > 0 else float("nan")
            run.logger.log(
                global_step,
                {
                    "losses/policy_loss": pg_loss,
                    "losses/value_loss": v_loss,
                    "losses/entropy": entropy.mean().item(),
                    "losses/explained_variance": explained_var,
                    "charts/batch_steps": float(len(returns)),
                    "charts/SPS": run.steps_per_second(global_step),
                },
            )
            run.evaluate_if_due(global_step, deterministic_policy)
            run.checkpoint_if_due(global_step)

        return run.finish(global_step, deterministic_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
