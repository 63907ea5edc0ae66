"""Log-probabilities, entropies, KL divergences and sampling of the policies several algorithms share: diagonal
Gaussians with a state-independent log-std (Box actions), tanh-squashed Gaussians (SAC's and CQL's policy) and
categoricals over logits (Discrete actions).
Written out instead of built through torch.distributions: the same numbers with less overhead per call."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mean, diag(exp(log_std))^2) summed over action dims: (B, A) -> (B,)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over dims, broadcast to (B,)."""
    return (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1).expand(batch)


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


def categorical_sample(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: for logits (N, n) and uniform draws (N, 1), the first action whose cumulative probability
    exceeds the draw, (N,). Drawing the uniforms beforehand lets a rollout draw all its randomness in one call."""
    cdf = torch.softmax(logits, -1).cumsum(-1)
    return torch.searchsorted(cdf, uniform[:, :1]).clamp(max=logits.shape[-1] - 1).squeeze(-1)


def squashed_gaussian_log_prob(
    pre_squash: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """log pi(a|s) for a = tanh(u) * scale + bias, u ~ N(mean, std^2), summed over action dims: (B, A) -> (B,).

    Change of variables (2018a, eq. 21): log pi(a) = log N(u) - sum_i log(scale_i (1 - tanh(u_i)^2)).
    log(1 - tanh(u)^2) is computed as 2 (log 2 - u - softplus(-2u)), exact and stable for large |u|
    (CleanRL adds 1e-6 inside the log instead)."""
    gaussian = (-0.5 * ((pre_squash - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_det = (2.0 * (math.log(2.0) - pre_squash - F.softplus(-2.0 * pre_squash)) + torch.log(scale)).sum(-1)
    return gaussian - log_det
