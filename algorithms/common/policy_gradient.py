"""Maths of the actor-critic methods that several files borrow: GAE (PPO, A2C, ACKTR, TRPO/NPG, RLHF-PPO), the A2C loss
(A2C and ACKTR, which optimises the same objective with K-FAC), and PPO's clipped surrogate and clipped value loss
(PPO and RLHF-PPO, Schulman et al. 2017, arXiv:1707.06347)."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_ends: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, arXiv:1506.02438, eq. 16) with truncation handled. All inputs are (T, N).

    next_values[t] is V of the observation step t led to (the true final observation where the episode
    ended). delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]: no bootstrap on
    termination, bootstrap on truncation. The recursion A_t = delta_t + gamma * lambda * A_{t+1} is cut at
    every episode end, because A_{t+1} belongs to the next episode. With lambda = 1 the advantages are the
    n-step returns minus V (the sum of TD errors telescopes). Returns (advantages, returns = advantages + values).
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


def a2c_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    ent_coef: float,
    vf_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mnih et al. (2016), Algorithm S3's gradients as one loss to minimise, and its terms [policy, value, entropy].
    All inputs (B,).

    policy: -mean(log pi(a|s) A) with A = R - V(s) held constant, so its gradient is -mean(grad log pi A);
    value: mean((R - V(s))^2) with R constant; entropy: mean H(pi(s)), a bonus (subtracted).
    """
    pg_loss = -(log_probs * advantages.detach()).mean()
    v_loss = (returns.detach() - values).pow(2).mean()
    entropy_mean = entropy.mean()
    loss = pg_loss + vf_coef * v_loss - ent_coef * entropy_mean
    return loss, torch.stack([pg_loss, v_loss, entropy_mean]).detach()


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """-L^CLIP (eq. 7) per sample: max(-A r, -A clip(r, 1-eps, 1+eps)), the shape of the inputs (the caller averages:
    over a minibatch, or over each seed's of a pack)."""
    return torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef))


def value_loss(
    new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_coef: float | None
) -> torch.Tensor:
    """0.5 * squared error per sample, optionally the max with the error of values clipped around the old ones (the
    caller averages)."""
    unclipped = (new_values - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped
    clipped = (old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped)
