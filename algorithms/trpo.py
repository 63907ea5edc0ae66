"""Trust Region Policy Optimization (TRPO).

Paper: Schulman, Levine, Moritz, Jordan, Abbeel (2015), "Trust Region Policy Optimization", ICML,
arXiv:1502.05477 -- maximise the surrogate L(theta) = E[pi_theta(a|s) / pi_old(a|s) A] subject to
E_s[KL(pi_old(.|s) || pi_theta(.|s))] <= delta (eq. 14), solved as in Appendix C: the search direction
s ~= F^-1 g by conjugate gradient on Fisher-vector products (F the Hessian of the mean KL), the maximal step
beta = sqrt(2 delta / s^T F s), then a backtracking line search on beta s. Advantages by GAE (Schulman et al.
2016, arXiv:1506.02438) from a value function fitted separately.

The direction, the Fisher-vector product, CG, the value fit and the whole training loop come from
`algorithms/npg.py`: TRPO is that natural-gradient step plus the line search (`trust_region_step`, step 5 of the
loop), with NPG's Config plus the two line-search fields. The defaults are OpenAI baselines' `trpo_mpi` MuJoCo setting
(`defaults.py`: delta 0.01, 10 CG iterations, damping 0.1, gamma 0.99, lambda 0.98, value function fitted by
Adam 1e-3 for 5 epochs of 64-sample minibatches, observation normalisation, advantages normalised per batch;
its line search halves the step up to 10 times) with SB3-contrib TRPO's 2048-step batch and 64-64 tanh
networks (baselines: 1024 steps, 32-32).

Deviations from the paper, each on purpose:
- The line search is Appendix C's (maximise L(theta) - X[KL <= delta], shrinking the step by c each trial); when
  no trial improves the surrogate inside the KL ball the policy is left unchanged for that batch (as baselines).
  Other codes loosen the test (baselines accepts KL up to 1.5 delta); this one keeps the paper's KL <= delta.
- Fisher-vector products use the whole batch and the damped matrix F + damping I (baselines, SB3-contrib).
- Advantages by GAE from a neural value function fitted by Adam on the GAE returns (the GAE paper's TRPO setting,
  baselines' optimiser), normalised per batch; the 2015 paper used Monte-Carlo ("single path") estimates.
  Observations are normalised by running statistics (baselines).
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.utils import parameters_to_vector

from algorithms import npg
from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.logging import train_from_cli
from algorithms.npg import Policy, evaluate_step, natural_step, set_flat_params

SMOKE = npg.SMOKE
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = npg.ACTION_SPACES
OBSERVATIONS = npg.OBSERVATIONS


@dataclass(frozen=True)
class Config(npg.Config):
    """NPG's fields and defaults, plus the line search."""

    backtrack_iters: int = 10
    """line-search trials (fractions 1, c, c^2, ... of the maximal step)"""
    backtrack_coef: float = 0.5
    """line-search shrink factor c"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backtrack_iters < 1 or not 0.0 < self.backtrack_coef < 1.0:
            raise ValueError(f"need backtrack_iters >= 1 and 0 < backtrack_coef < 1, got {self.backtrack_iters}, "
                             f"{self.backtrack_coef}")  # fmt: skip


# --- pure maths --------------------------------------------------------------------------------------
def line_search(evaluate: Callable[[float], tuple[float, float]], max_kl: float, backtrack_coef: float,
                backtrack_iters: int) -> float:  # fmt: skip
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


def trpo_update(policy: Policy, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, max_kl: float,
                cg_iters: int, cg_damping: float, backtrack_coef: float,
                backtrack_iters: int) -> dict[str, float]:  # fmt: skip
    """One TRPO update of `policy` on a batch (obs (B, O), actions (B, A) or (B,), advantages (B,)); its diagnostics."""
    step, expected, old_dist, old_log_probs = natural_step(policy, obs, actions, advantages, max_kl, cg_iters, cg_damping)
    old_params = parameters_to_vector(policy.parameters()).detach()
    old_surrogate = advantages.mean().item()  # ratio 1 at theta_old

    def try_fraction(fraction: float) -> tuple[float, float]:
        set_flat_params(policy, old_params + fraction * step)
        new_surrogate, kl, _ = evaluate_step(policy, obs, actions, advantages, old_dist, old_log_probs)
        return new_surrogate - old_surrogate, kl

    fraction = line_search(try_fraction, max_kl, backtrack_coef, backtrack_iters)
    set_flat_params(policy, old_params + fraction * step)
    new_surrogate, kl, ent = evaluate_step(policy, obs, actions, advantages, old_dist, old_log_probs)
    return {"surrogate_improvement": new_surrogate - old_surrogate, "expected_improvement": expected.item(), "kl": kl,
            "entropy": ent, "step_norm": fraction * step.norm().item(), "step_fraction": fraction}  # fmt: skip


# --- training ----------------------------------------------------------------------------------------
def trust_region_step(policy: Policy, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
                      cfg: Config) -> dict[str, float]:  # fmt: skip
    """Step 5 of the loop: the maximal step sqrt(2 delta / s^T F s) s along s ~= F^-1 g, shrunk until the surrogate
    improves and the mean KL <= delta (or not taken)."""
    return trpo_update(policy, obs, actions, advantages, cfg.max_kl, cfg.cg_iters, cfg.cg_damping, cfg.backtrack_coef,
                       cfg.backtrack_iters)  # fmt: skip


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    """NPG's loop (1. networks, 2. state, 3. rollout, 4. GAE, 6. value fit, 7. log/evaluate/checkpoint) with the
    trust-region step as step 5."""
    return npg.train(cfg, logger, checkpoint, policy_update=trust_region_step)


if __name__ == "__main__":
    train_from_cli(Config, train)
