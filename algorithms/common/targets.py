"""Bootstrap targets that several off-policy algorithms share: TD3's clipped double-Q target and its target policy
smoothing (Fujimoto et al. 2018, eq. 10 and 14), used by TD3 and DDPG, by TD3+BC (which keeps TD3's critic update
unchanged) and by CQL's target (the smaller of two target critics at a policy action)."""

from __future__ import annotations

import torch


def smoothed_target_actions(
    target_actions: torch.Tensor,
    noise: torch.Tensor,
    noise_clip: float,
    action_scale: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """Target policy smoothing (eq. 14): a' = clip(mu'(s') + clip(eps, -c, c), low, high); `noise` is eps, already
    multiplied by the policy noise std, in action half-range units (times action_scale here)."""
    clipped = noise.clamp(-noise_clip, noise_clip) * action_scale
    return torch.max(torch.min(target_actions + clipped, high), low)


def clipped_double_q_target(
    rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float
) -> torch.Tensor:
    """y = r + gamma (1 - terminated) min_k Q'_k(s', a') (eq. 10); next_q is (..., K, B) for rewards (..., B) (a seed
    pack's leading axis): with K = 1 (DDPG) the one critic's value, y = r + gamma (1 - terminated) Q'(s', a').
    Truncation bootstraps."""
    return rewards + gamma * (1.0 - terminated) * next_q.min(dim=-2).values
