"""Trust Region Policy Optimization (TRPO), and the natural policy gradient (NPG) it extends (`npg`).

Papers: Schulman, Levine, Moritz, Jordan, Abbeel (2015), "Trust Region Policy Optimization", ICML, arXiv:1502.05477
-- maximise the surrogate L(theta) = E[pi_theta(a|s) / pi_old(a|s) A] subject to E_s[KL(pi_old(.|s) || pi_theta(.|s))]
<= delta (eq. 14), solved as in Appendix C: the search direction s ~= F^-1 g by conjugate gradient on Fisher-vector
products (F the Hessian of the mean KL), the maximal step beta = sqrt(2 delta / s^T F s), then a backtracking line
search on beta s. Kakade (2001), "A Natural Policy Gradient", NIPS 14 -- the steepest-ascent direction under the
Fisher metric is F^-1 grad eta. `line_search=False` (registered as `npg`) takes the maximal step whatever it does: the
truncated natural gradient of TRPO's Appendix C ("TNPG" in Duan et al. 2016, arXiv:1604.06778), NPG with its step
normalised to the KL radius (TRPO section 7; Rajeswaran et al. 2017, arXiv:1703.02660) instead of Kakade's fixed
learning rate, so delta means the same for both. Advantages by GAE (Schulman et al. 2016, arXiv:1506.02438) from a
value function fitted separately.

Defaults: OpenAI baselines' `trpo_mpi` MuJoCo setting (`defaults.py`: delta 0.01, 10 CG iterations, damping 0.1,
gamma 0.99, lambda 0.98, value function fitted by Adam 1e-3 for 5 epochs of 64-sample minibatches, observation
normalisation, advantages normalised per batch; its line search halves the step up to 10 times) with SB3-contrib
TRPO's 2048-step batch and 64-64 tanh networks (baselines: 1024 steps, 32-32).

Deviations from the papers, each on purpose:
- The line search is Appendix C's (maximise L(theta) - X[KL <= delta], shrinking the step by c each trial); when
  no trial improves the surrogate inside the KL ball the policy is left unchanged for that batch (as baselines).
  Other codes loosen the test (baselines accepts KL up to 1.5 delta); this one keeps the paper's KL <= delta.
- F^-1 g is not formed exactly: `cg_iters` CG iterations on (F + damping I) v over the whole batch, the
  Fisher-vector product taken by double back-propagation through the closed-form mean KL (Appendix C; the damped
  matrix as baselines and SB3-contrib).
- Advantages by GAE from a neural value function fitted by Adam on the GAE returns (the GAE paper's TRPO setting,
  baselines' optimiser), normalised per batch; the 2015 paper used Monte-Carlo ("single path") estimates.
  Observations are normalised by running statistics (baselines).
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation).
`compile=True` wraps acting and the value loss in torch.compile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parameters_to_vector

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.distributions import (
    categorical_kl,
    categorical_sample,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
)
from algorithms.common.networks import tanh_mlp
from algorithms.common.policy_gradient import compute_gae
from algorithms.common.rollout import RolloutStorage
from algorithms.common.run import RunState, numpy_policy
from envs import make_vec_env

SMOKE = {"total_timesteps": 1024, "num_envs": 2, "num_steps": 128, "vf_epochs": 2, "eval_every": 512, "eval_episodes": 2}
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector",)
VARIANTS = {"npg": {"line_search": False}}
"""Registered names of the method without the paper's contribution (suites and run directories use them)."""


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 1
    """parallel env copies"""
    num_steps: int = 2048
    """steps per env copy in each rollout (one policy update per rollout)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.98
    """GAE lambda"""
    max_kl: float = 0.01
    """KL radius delta: the maximal step's quadratic model of the mean KL equals it (nats)"""
    cg_iters: int = 10
    """conjugate-gradient iterations for F^-1 g"""
    cg_damping: float = 0.1
    """damping lambda added to the Fisher matrix, (F + lambda I) v"""
    line_search: bool = True
    """backtrack until the surrogate improves inside the KL radius (False: NPG, the maximal step taken as it is)"""
    backtrack_iters: int = 10
    """line-search trials (fractions 1, c, c^2, ... of the maximal step)"""
    backtrack_coef: float = 0.5
    """line-search shrink factor c"""
    norm_adv: bool = True
    """normalise advantages over each batch"""
    vf_learning_rate: float = 1e-3
    """Adam learning rate of the value function"""
    vf_epochs: int = 5
    """passes over each rollout when fitting the value function"""
    vf_minibatch_size: int = 64
    """samples per Adam step of the value function"""
    normalize_obs: bool = True
    """normalise observations by running mean/std"""
    normalize_reward: bool = False
    """scale rewards by the running std of the discounted return"""
    hidden_size: int = 64
    """units in each of the two hidden layers (policy and value function)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "num_steps", "cg_iters", "backtrack_iters", "vf_epochs", "vf_minibatch_size", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if self.max_kl <= 0 or self.vf_learning_rate <= 0:
            raise ValueError(f"max_kl and vf_learning_rate must be > 0, got {self.max_kl}, {self.vf_learning_rate}")
        if self.cg_damping < 0 or not 0.0 < self.backtrack_coef < 1.0:
            raise ValueError(f"need cg_damping >= 0 and 0 < backtrack_coef < 1, got {self.cg_damping}, {self.backtrack_coef}")
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- networks ----------------------------------------------------------------------------------------
class Policy(nn.Module):
    """pi_theta(a|s): a tanh MLP giving categorical logits (Discrete) or the Gaussian mean (Box), with a learned
    state-independent log-std. `forward` returns the distribution's parameters as one (B, D) tensor: the
    log-probabilities (D = A) or [mean, log_std] (D = 2A), so the maths below are functions of plain tensors."""

    def __init__(self, obs_dim: int, action_dim: int, continuous: bool, hidden: int) -> None:
        super().__init__()
        self.continuous = continuous
        self.net = tanh_mlp(obs_dim, hidden, action_dim, out_std=0.01)
        self.log_std = nn.Parameter(torch.zeros(1, action_dim)) if continuous else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.continuous:
            return torch.cat([out, self.log_std.expand_as(out)], -1)
        return torch.log_softmax(out, -1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions (N, *A) with pre-drawn noise: (N, A) standard normal (Box) or (N, 1) uniform (Discrete)."""
        if self.continuous:
            return self.net(obs) + torch.exp(self.log_std) * noise
        return categorical_sample(self.net(obs), noise)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        return out if self.continuous else out.argmax(-1)


# --- pure maths --------------------------------------------------------------------------------------
def log_prob(dist: torch.Tensor, actions: torch.Tensor, continuous: bool) -> torch.Tensor:
    """log pi(a|s) from `Policy` outputs (B, D) and actions (B, A) or (B,): (B,)."""
    if continuous:
        mean, log_std = dist.chunk(2, -1)
        return gaussian_log_prob(actions, mean, log_std)
    return dist.gather(-1, actions[:, None]).squeeze(-1)


def entropy(dist: torch.Tensor, continuous: bool) -> torch.Tensor:
    """Entropy of each state's action distribution: (B,)."""
    if continuous:
        return gaussian_entropy(dist.chunk(2, -1)[1], dist.shape[0])
    return -(dist.exp() * dist).sum(-1)


def kl_divergence(old: torch.Tensor, new: torch.Tensor, continuous: bool) -> torch.Tensor:
    """KL(pi_old(.|s) || pi_new(.|s)) per state, in closed form, from `Policy` outputs (B, D): (B,)."""
    if continuous:
        return gaussian_kl(*old.chunk(2, -1), *new.chunk(2, -1))
    return categorical_kl(old, new)  # log-probabilities are logits too


def surrogate(
    dist: torch.Tensor, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, continuous: bool
) -> torch.Tensor:
    """L(theta) = mean_t pi_theta(a_t|s_t) / pi_old(a_t|s_t) A_t (eq. 14, sampled); its gradient at theta_old is g."""
    return (torch.exp(log_prob(dist, actions, continuous) - old_log_probs) * advantages).mean()


def flat_grad(output: torch.Tensor, params: list[torch.Tensor], **kwargs) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output, params, **kwargs)])


def set_flat_params(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat (P,) vector into the module's parameters, in `parameters()` order."""
    with torch.no_grad():
        offset = 0
        for param in module.parameters():
            param.copy_(flat[offset : offset + param.numel()].view_as(param))
            offset += param.numel()


def fisher_vector_product(
    mean_kl: torch.Tensor, params: list[torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (F + damping I) v, with F the Hessian of `mean_kl` = mean_s KL(pi_old || pi_theta) at theta = theta_old.

    At theta_old the KL and its gradient vanish and its Hessian is the Fisher information matrix (Appendix C),
    so F v = grad_theta (grad_theta KL . v): one backward pass through the graph of the KL gradient, built once."""
    kl_grad = flat_grad(mean_kl, params, create_graph=True)

    def product(vector: torch.Tensor) -> torch.Tensor:
        return flat_grad(kl_grad @ vector, params, retain_graph=True) + damping * vector

    return product


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Approximately solve A x = b for a symmetric positive-definite A given only x -> A x (Nocedal & Wright, Alg. 5.2),
    stopping after `iterations` or once the squared residual |b - A x|^2 falls below `residual_tol`."""
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    rr = residual @ residual
    for _ in range(iterations):
        if rr < residual_tol:  # also guards b = 0 (e.g. all advantages equal), where alpha would be 0 / 0
            break
        a_direction = matvec(direction)
        alpha = rr / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        rr_next = residual @ residual
        direction = residual + (rr_next / rr) * direction
        rr = rr_next
    return x


def natural_step(
    policy: Policy,
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    max_kl: float,
    cg_iters: int,
    cg_damping: float,
) -> tuple[torch.Tensor, ...]:
    """The maximal natural-gradient step at the policy's current parameters theta_old (B samples, P parameters).

    s ~= (F + damping I)^-1 g by CG, scaled by sqrt(2 delta / s^T (F + damping I) s): the damped quadratic model of
    the mean KL is delta there, the undamped one s^T F s / 2 a little less (Appendix C's maximal step).
    Returns (step (P,), expected improvement g . step, old distribution parameters (B, D), old log-probs (B,))."""
    params = list(policy.parameters())
    with torch.no_grad():
        old_dist = policy(obs)
        old_log_probs = log_prob(old_dist, actions, policy.continuous)
    dist = policy(obs)
    g = flat_grad(surrogate(dist, actions, old_log_probs, advantages, policy.continuous), params, retain_graph=True)
    fvp = fisher_vector_product(kl_divergence(old_dist, dist, policy.continuous).mean(), params, cg_damping)
    direction = conjugate_gradient(fvp, g, cg_iters)
    shs = direction @ fvp(direction)
    step = torch.sqrt(2.0 * max_kl / shs.clamp_min(1e-12)) * direction
    return step, g @ step, old_dist, old_log_probs


def evaluate_step(
    policy: Policy,
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    old_dist: torch.Tensor,
    old_log_probs: torch.Tensor,
) -> tuple[float, float, float]:
    """(surrogate L(theta), mean KL(pi_old || pi_theta), mean entropy) at the policy's current parameters."""
    with torch.no_grad():
        dist = policy(obs)
        surrogate_value = surrogate(dist, actions, old_log_probs, advantages, policy.continuous).item()
        kl = kl_divergence(old_dist, dist, policy.continuous).mean().item()
        return surrogate_value, kl, entropy(dist, policy.continuous).mean().item()


def line_search(
    evaluate: Callable[[float], tuple[float, float]], max_kl: float, backtrack_coef: float, backtrack_iters: int
) -> float:
    """Backtracking line search (Appendix C): try the fractions 1, c, c^2, ... of the maximal step in turn.

    `evaluate(fraction)` returns (surrogate improvement L(theta) - L(theta_old), mean KL(pi_old || pi_theta)) at
    theta = theta_old + fraction * full step. The first fraction whose improvement is > 0 and KL <= max_kl is
    returned; 0.0 (no step) when none of the `backtrack_iters` trials passes."""
    fraction = 1.0
    for _ in range(backtrack_iters):
        improvement, kl = evaluate(fraction)
        if math.isfinite(improvement) and math.isfinite(kl) and improvement > 0.0 and kl <= max_kl:
            return fraction
        fraction *= backtrack_coef
    return 0.0


def policy_update(
    policy: Policy, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, cfg: Config
) -> dict[str, float]:
    """One update of `policy` on a batch (obs (B, O), actions (B, A) or (B,), advantages (B,)), its diagnostics: the
    maximal step along s ~= F^-1 g, shrunk by the line search until the surrogate improves and the mean KL <= delta (or
    not taken), or with `line_search=False` (NPG) taken as it is."""
    step, expected, old_dist, old_log_probs = natural_step(
        policy, obs, actions, advantages, cfg.max_kl, cfg.cg_iters, cfg.cg_damping
    )
    old_params = parameters_to_vector(policy.parameters()).detach()
    old_surrogate = advantages.mean().item()  # ratio 1 at theta_old

    def try_fraction(fraction: float) -> tuple[float, float]:
        set_flat_params(policy, old_params + fraction * step)
        new_surrogate, kl, _ = evaluate_step(policy, obs, actions, advantages, old_dist, old_log_probs)
        return new_surrogate - old_surrogate, kl

    fraction = line_search(try_fraction, cfg.max_kl, cfg.backtrack_coef, cfg.backtrack_iters) if cfg.line_search else 1.0
    set_flat_params(policy, old_params + fraction * step)
    new_surrogate, kl, ent = evaluate_step(policy, obs, actions, advantages, old_dist, old_log_probs)
    return {
        "surrogate_improvement": new_surrogate - old_surrogate,
        "expected_improvement": expected.item(),
        "kl": kl,
        "entropy": ent,
        "step_norm": fraction * step.norm().item(),
        "step_fraction": fraction,
    }


def fit_value(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    obs: torch.Tensor,
    returns: torch.Tensor,
    epochs: int,
    minibatch_size: int,
) -> float:
    """Regress V on the returns by Adam over shuffled minibatches; the mean loss of the last epoch."""
    losses = []
    for _ in range(epochs):
        losses.clear()
        permutation = torch.randperm(obs.shape[0], device=obs.device)
        for start in range(0, obs.shape[0], minibatch_size):
            mb = permutation[start : start + minibatch_size]
            loss = loss_fn(obs[mb], returns[mb])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return torch.stack(losses).mean().item()


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, _ = make_vec_env(
        cfg.env_id,
        cfg.num_envs,
        cfg.seed,
        normalize_obs=cfg.normalize_obs,
        normalize_reward=cfg.normalize_reward,
        gamma=cfg.gamma,
    )
    try:
        # 1. Policy pi_theta and value function V_phi (separate networks; only V has an optimizer), rollout storage.
        obs_shape, continuous = envs.single_observation_space.shape, envs.is_continuous
        action_shape, action_dim = envs.action_shape, envs.action_dim
        obs_dim = int(np.prod(obs_shape))
        policy = Policy(obs_dim, action_dim, continuous, cfg.hidden_size).to(device)
        critic = tanh_mlp(obs_dim, cfg.hidden_size, 1, out_std=1.0).to(device)
        vf_optimizer = torch.optim.Adam(critic.parameters(), lr=cfg.vf_learning_rate, fused=device.type in ("cpu", "cuda"))
        T, N = cfg.num_steps, cfg.num_envs
        rollout = RolloutStorage(T, N, obs_shape, action_shape, continuous)

        def value_loss_fn(obs: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
            return 0.5 * (critic(obs).squeeze(-1) - returns).pow(2).mean()

        act = policy.sample
        act, value_loss_fn = compiled(act, cfg), compiled(value_loss_fn, cfg)
        deterministic_policy = numpy_policy(policy.deterministic_action, device)

        # 2. State: fresh, or restored from the newest checkpoint.
        modules = {"policy": policy, "critic": critic, "vf_optimizer": vf_optimizer, "envs": envs}
        run = RunState(cfg, envs, logger, checkpoint, modules)
        global_step, _ = run.restore()
        next_obs = envs.observation()  # (N, *obs_shape) float32, numpy
        for _iteration in range(global_step // cfg.batch_size + 1, cfg.num_iterations + 1):
            # 3. Rollout: T steps in N env copies with the current policy.
            noise = torch.randn(T, N, action_dim) if continuous else torch.rand(T, N, 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise[t].to(device)).cpu().numpy()
                next_obs, episodes = rollout.step(envs, t, next_obs, action)
                run.record_episodes(episodes, global_step)

            # 4. Advantages by GAE with V_phi, bootstrapping from V(s_{t+1}) with s_{t+1} the true final observation
            # where an episode ended (only termination zeroes it); normalised over the batch.
            batch = rollout.tensors(device)
            with torch.no_grad():
                values = critic(batch.obs).squeeze(-1)
                next_values = critic(batch.final_obs).squeeze(-1)
            advantages, returns = compute_gae(
                batch.rewards, values, next_values, batch.terminated, batch.episode_ends, cfg.gamma, cfg.gae_lambda
            )
            b_obs, b_actions = batch.obs.reshape(-1, *obs_shape), batch.actions.reshape(-1, *action_shape)
            b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            if cfg.norm_adv:
                b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)

            # 5. Policy step: theta += fraction * sqrt(2 delta / s^T F s) s, s ~= F^-1 g by CG; the fraction from the
            # line search (TRPO) or 1 (NPG).
            stats = policy_update(policy, b_obs, b_actions, b_advantages, cfg)

            # 6. Fit V_phi by Adam to the GAE returns A + V_old of this batch (after the policy step, as baselines).
            v_loss = fit_value(value_loss_fn, vf_optimizer, b_obs, b_returns, cfg.vf_epochs, cfg.vf_minibatch_size)

            # 7. Log, evaluate, checkpoint.
            var_returns = b_returns.var()
            explained_var = (1 - (b_returns - b_values).var() / var_returns).item() if var_returns > 0 else float("nan")
            metrics = {f"losses/{key}": value for key, value in stats.items()}
            metrics.update({"losses/value_loss": v_loss, "losses/explained_variance": explained_var})
            run.logger.log(global_step, {**metrics, "charts/SPS": run.steps_per_second(global_step)})
            run.evaluate_if_due(global_step, deterministic_policy)
            run.checkpoint_if_due(global_step)

        return run.finish(global_step, deterministic_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
