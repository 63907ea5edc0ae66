"""Proximal Policy Optimization with the adaptive KL penalty (PPO-KL, "PPO-penalty").

Paper: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization Algorithms",
arXiv:1707.06347 -- section 4: maximise L^KLPEN = E_t[r_t(theta) A_t - beta KL[pi_old(.|s_t), pi(.|s_t)]]
(eq. 8) for K epochs of minibatches, then compute d = E_t[KL[pi_old, pi]] and halve beta if d < d_targ / 1.5,
double it if d > d_targ * 1.5; the new beta is used in the next policy update. Advantages by GAE
(Schulman et al. 2016, arXiv:1506.02438, eq. 16), as in Algorithm 1.

Everything but the policy objective is `algorithms/ppo.py` (its networks, GAE, Gaussian log-prob and value
loss are imported from there), so a run of the two differs in the surrogate alone: the MuJoCo setting of the
paper's Table 3 as CleanRL writes it (2048 steps x 1 env, 10 epochs, 32 minibatches of 64, lr 3e-4 annealed),
plus CleanRL's details (orthogonal init, state-independent log-std, observation normalisation and reward
scaling, per-minibatch advantage normalisation, value-loss clipping at 0.2, gradient-norm clip 0.5, Adam eps
1e-5). PPO-KL's own defaults: d_targ = 0.01, the best of the adaptive-KL settings in the paper's Table 1
(d_targ in {0.003, 0.01, 0.03}, section 6.1); initial beta = 1, our choice: the paper gives no value we could
find and calls it "not important in practice because the algorithm quickly adjusts it" (section 4); 1 is one
of Table 1's fixed-beta values (0.3, 1, 3, 10).

Choices the paper leaves open, and deviations, each on purpose:
- The KL in the loss and in d is the exact KL between the old and new action distributions at each sampled
  state (diagonal Gaussians or categoricals, in closed form), not a sample estimate from the log-ratio.
- ppo.py's details stay: advantages normalised per minibatch (so beta weighs a unit-scale surrogate), the value
  loss clipped around the old values, the learning rate annealed (late in a run the KL falls below
  d_targ / 1.5 and beta halves every update; that is the rule, and beta has no bounds in the paper either).
- No early stop of the epochs on KL (ppo.py's target_kl): the adaptive penalty is this variant's KL control.
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation).
- Logged: `charts/kl_beta` (the beta an update used), `losses/kl` (its d, over the whole rollout).
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
from algorithms.ppo import Agent, compute_gae, gaussian_entropy, gaussian_log_prob, value_loss
from envs import make_vec_env

SMOKE = {"total_timesteps": 1024, "num_envs": 2, "num_steps": 128, "update_epochs": 2, "num_minibatches": 4,
         "eval_every": 512, "eval_episodes": 2}  # fmt: skip
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector",)


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
    kl_target: float = 0.01
    """d_targ: the mean KL[pi_old, pi] per policy update that beta is adapted towards (nats)"""
    kl_coef: float = 1.0
    """initial KL penalty coefficient beta (per nat of KL, against unit-scale advantages)"""
    adaptive_kl: bool = True
    """adapt beta after every update (False: the paper's fixed-beta variant, beta = kl_coef throughout)"""
    clip_vloss: bool = True
    """clip the value loss around the old values"""
    vf_clip_coef: float = 0.2
    """value-loss clipping epsilon (ppo.py's clip_coef; the policy is not clipped here)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    normalize_obs: bool = True
    """normalise observations by running mean/std"""
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
        if self.learning_rate <= 0 or self.vf_clip_coef <= 0 or self.max_grad_norm <= 0 or self.kl_target <= 0:
            raise ValueError("learning_rate, vf_clip_coef, max_grad_norm and kl_target must be > 0")
        if self.ent_coef < 0 or self.vf_coef < 0 or self.kl_coef < 0:
            raise ValueError("ent_coef, vf_coef and kl_coef must be >= 0")
        if self.adaptive_kl and self.kl_coef == 0:
            raise ValueError("adaptive_kl needs kl_coef > 0 (halving and doubling 0 leaves it at 0)")
        if self.batch_size % self.num_minibatches:
            raise ValueError(f"num_envs * num_steps = {self.batch_size} is not divisible by num_minibatches = "
                             f"{self.num_minibatches}")  # fmt: skip
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- pure maths --------------------------------------------------------------------------------------
def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL[p || q] of two diagonal Gaussians, summed over action dims: (B, A) (log-stds broadcast) -> (B,).
    Per dim: log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + mean_term - 1.0)).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL[p || q] = sum_a p(a) (log p(a) - log q(a)) of two categoricals given by logits: (B, n) -> (B,)."""
    log_p, log_q = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_penalty_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: torch.Tensor | float
) -> torch.Tensor:
    """-L^KLPEN (eq. 8): mean of -r_t A_t + beta KL_t, all (B,)."""
    return (-advantages * ratio).mean() + beta * kl.mean()


def adapt_beta(beta: float, kl: float, kl_target: float) -> float:
    """Section 4's rule, applied after each policy update with d = kl: halve beta if d < d_targ / 1.5,
    double it if d > d_targ * 1.5, else keep it."""
    if kl < kl_target / 1.5:
        return beta / 2.0
    if kl > kl_target * 1.5:
        return beta * 2.0
    return beta


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
        rollout = RolloutStorage(T, N, obs_shape, action_shape, continuous)

        def act(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            """Sample actions (N, *A) from the current policy; `noise` is (N, A) standard normal or uniform."""
            if continuous:
                return agent.actor(obs) + torch.exp(agent.actor_logstd) * noise
            # Inverse-CDF sampling from the categorical: first action whose cumulative probability exceeds u.
            cdf = torch.softmax(agent.actor(obs), -1).cumsum(-1)
            return torch.searchsorted(cdf, noise[:, :1]).clamp_(max=action_dim - 1).squeeze(-1)

        def policy_terms(obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Actor output (B, A) (Gaussian means or logits), log-probs of `actions` (B,), entropies (B,)."""
            out = agent.actor(obs)
            if continuous:
                return (
                    out,
                    gaussian_log_prob(actions, out, agent.actor_logstd),
                    gaussian_entropy(agent.actor_logstd, obs.shape[0]),
                )
            log_probs = torch.log_softmax(out, -1)
            return out, log_probs.gather(-1, actions[:, None]).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)

        def kl_from_old(old_out: torch.Tensor, old_logstd: torch.Tensor, new_out: torch.Tensor) -> torch.Tensor:
            """KL[pi_old(.|s), pi(.|s)] per state (B,), in closed form."""
            if continuous:
                return gaussian_kl(old_out, old_logstd, new_out, agent.actor_logstd)
            return categorical_kl(old_out, new_out)

        def loss_fn(obs, actions, old_out, old_logstd, old_logprobs, advantages, returns, old_values, beta):
            """Combined loss (eq. 8's penalty objective plus ppo.py's value and entropy terms, signs for
            minimisation) and diagnostics [surrogate, penalty KL, v, entropy, approx_kl]. `beta` is a 0-d tensor
            so a compiled loss is not re-traced when it changes."""
            new_out, new_logprobs, entropy = policy_terms(obs, actions)
            log_ratio = new_logprobs - old_logprobs
            ratio = log_ratio.exp()
            kl = kl_from_old(old_out, old_logstd, new_out)
            if cfg.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            pg_loss = kl_penalty_loss(ratio, advantages, kl, beta)
            v_loss = value_loss(agent.value(obs), old_values, returns, cfg.vf_clip_coef if cfg.clip_vloss else None)
            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
            with torch.no_grad():  # approx_kl: the (r - 1) - log r sample estimate, for comparison with ppo.py
                surrogate = (advantages * ratio).mean()
                stats = torch.stack([surrogate, kl.mean(), v_loss, entropy_loss, ((ratio - 1) - log_ratio).mean()])
            return loss, stats

        if cfg.compile:
            act = torch.compile(act)
            loss_fn = torch.compile(loss_fn)

        def deterministic_policy(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = agent.actor(torch.as_tensor(obs, device=device))
                return (out if continuous else out.argmax(-1)).cpu().numpy()

        # 2. State: fresh, or restored from the newest checkpoint. beta is state: it carries between updates.
        next_obs = first_obs  # (N, *obs_shape) float32, numpy
        global_step, start_iteration, beta = 0, 1, cfg.kl_coef
        eval_history: list[tuple[int, float]] = []
        recent_returns: deque[float] = deque(maxlen=100)
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:
            agent.load_state_dict(state["agent"])
            optimizer.load_state_dict(state["optimizer"])
            envs.load_state_dict(state["envs"])
            next_obs, beta = state["next_obs"], state["beta"]
            global_step, start_iteration = state["global_step"], state["iteration"] + 1
            eval_history, recent_returns = state["eval_history"], deque(state["recent_returns"], maxlen=100)
            restore_rng_state(state["rng"])

        start_time, start_step = time.perf_counter(), global_step
        for iteration in range(start_iteration, cfg.num_iterations + 1):
            # 3. Learning rate: linear annealing to 0 over the iterations.
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            # 4. Rollout: T steps in N env copies with pi_old (Algorithm 1, "run policy").
            noise = torch.randn(T, N, action_dim) if continuous else torch.rand(T, N, 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise[t].to(device)).cpu().numpy()
                next_obs = rollout.step(envs, t, next_obs, action, recent_returns, logger, global_step)

            # 5. pi_old on the rollout in one batched pass: its actor outputs (the KL's reference distribution),
            # log-probs and values; advantages by GAE, bootstrapping from V(true final obs) unless terminated.
            batch = rollout.tensors(device)
            b_obs = batch.obs.reshape(T * N, *obs_shape)
            b_actions = batch.actions.reshape(T * N, *action_shape)
            with torch.no_grad():
                b_old_out, b_logprobs, _ = policy_terms(b_obs, b_actions)  # (TN, A), (TN,)
                old_logstd = agent.actor_logstd.detach().clone() if continuous else torch.zeros(())
                values = agent.value(b_obs).reshape(T, N)
                next_values = agent.value(batch.final_obs)
            advantages, returns = compute_gae(batch.rewards, values, next_values, batch.terminated,
                                              batch.episode_ends, cfg.gamma, cfg.gae_lambda)  # fmt: skip

            # 6. Maximise L^KLPEN (eq. 8) with the current beta for K epochs of minibatches.
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            beta_t = torch.tensor(beta, dtype=torch.float32, device=device)
            for _epoch in range(cfg.update_epochs):
                permutation = torch.randperm(cfg.batch_size, device=device)
                for start in range(0, cfg.batch_size, cfg.minibatch_size):
                    mb = permutation[start : start + cfg.minibatch_size]
                    loss, stats = loss_fn(b_obs[mb], b_actions[mb], b_old_out[mb], old_logstd, b_logprobs[mb],
                                          b_advantages[mb], b_returns[mb], b_values[mb], beta_t)  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm, foreach=True)
                    optimizer.step()

            # 7. d = E_t[KL[pi_old, pi]] over the whole rollout after the update; adapt beta for the next one.
            with torch.no_grad():
                kl_mean = kl_from_old(b_old_out, old_logstd, agent.actor(b_obs)).mean().item()
            beta_used = beta
            if cfg.adaptive_kl:
                beta = adapt_beta(beta, kl_mean, cfg.kl_target)

            # 8. Log (the last minibatch's diagnostics, as ppo.py), evaluate, checkpoint.
            surrogate, mb_kl, v_loss, entropy, approx_kl = stats.tolist()
            if not np.isfinite([surrogate, mb_kl, v_loss, entropy, kl_mean]).all():
                raise FloatingPointError(f"non-finite loss at step {global_step}: surrogate {surrogate}, KL {kl_mean}, "
                                         f"value {v_loss}")  # fmt: skip
            var_returns = b_returns.var()
            explained_var = (1 - (b_returns - b_values).var() / var_returns).item() if var_returns > 0 else float("nan")
            logger.log(global_step, {
                "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/kl_beta": beta_used,
                "losses/policy_loss": -surrogate, "losses/kl": kl_mean, "losses/minibatch_kl": mb_kl,
                "losses/value_loss": v_loss, "losses/entropy": entropy, "losses/approx_kl": approx_kl,
                "losses/explained_variance": explained_var,
                "charts/SPS": (global_step - start_step) / (time.perf_counter() - start_time),
            })  # fmt: skip
            if cfg.eval_every and global_step // cfg.eval_every > (global_step - cfg.batch_size) // cfg.eval_every:
                evaluate_and_log(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step)
            if checkpoint is not None and checkpoint.due(global_step):
                checkpoint.save(global_step, {
                    "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "envs": envs.state_dict(),
                    "next_obs": next_obs, "beta": beta, "global_step": global_step, "iteration": iteration,
                    "eval_history": eval_history, "recent_returns": list(recent_returns), "rng": rng_state(),
                })  # fmt: skip

        return finish_run(envs, deterministic_policy, cfg.eval_episodes, cfg.seed, eval_history, logger, global_step,
                          start_step, start_time, recent_returns)  # fmt: skip
    finally:
        envs.close()


if __name__ == "__main__":
    train_from_cli(Config, train)
