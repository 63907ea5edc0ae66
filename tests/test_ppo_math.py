"""PPO's pure maths against slow references, and truncation vs termination in the bootstrap target."""

from __future__ import annotations

import math

import numpy as np
import torch

from algorithms.common.distributions import gaussian_entropy, gaussian_log_prob
from algorithms.common.policy_gradient import clipped_surrogate_loss, compute_gae, value_loss
from envs import make_vec_env


def gae_reference(rewards, values, next_values, terminated, ends, gamma, lam):
    """One env at a time, one step at a time, episodes split explicitly."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                delta = rewards[k, n] + gamma * (0.0 if terminated[k, n] else next_values[k, n]) - values[k, n]
                total += discount * delta
                if ends[k, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_matches_reference_with_terminations_and_truncations():
    g = torch.Generator().manual_seed(0)
    T, N = 40, 3
    rewards, values, next_values = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated = torch.rand(T, N, generator=g) < 0.1
    truncated = (torch.rand(T, N, generator=g) < 0.1) & ~terminated
    ends = terminated | truncated
    assert terminated.any() and truncated.any()
    adv, ret = compute_gae(rewards, values, next_values, terminated, ends, 0.99, 0.95)
    expected = gae_reference(
        rewards.numpy(), values.numpy(), next_values.numpy(), terminated.numpy(), ends.numpy(), 0.99, 0.95
    )
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), expected + values.numpy(), rtol=1e-5, atol=1e-5)


def test_bootstrap_uses_true_final_observation_on_truncation_only():
    """Roll the Count env (obs = steps so far) with V(obs) = 10 * obs; the step that ends the episode must
    bootstrap from V(final obs) = 30 when truncated and from nothing when terminated."""
    gamma = 0.9
    for env_kwargs, ended_value in (({}, 30.0), ({"terminate_at": 3, "max_episode_steps": 10}, 0.0)):
        envs, obs = make_vec_env("rlgrid-test/Count-v0", 1, seed=0, env_kwargs=env_kwargs)
        rows = []
        for _ in range(3):
            _, reward, terminated, truncated, info = envs.step(np.zeros(1, np.int64))
            rows.append((obs[0, 0], reward[0], terminated[0], terminated[0] or truncated[0], info["final_obs"][0, 0]))
            obs = _
        s, r, term, end, s_next = (torch.tensor([[row[i] for row in rows]], dtype=torch.float32).T for i in range(5))
        adv, _ = compute_gae(r, 10 * s, 10 * s_next, term.bool(), end.bool(), gamma, 1.0)
        # last step: r + gamma * V(s_final) * (1 - terminated) - V(s_2)
        assert math.isclose(adv[2, 0].item(), 1.0 + gamma * ended_value - 20.0, rel_tol=1e-6)
        assert s_next[2, 0].item() == 3.0


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean, actions = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    log_std = torch.randn(1, 3, generator=g) * 0.3
    dist = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(actions, mean, log_std), dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std, 5), dist.entropy().sum(-1))


def test_clipped_surrogate_and_value_loss_by_hand():
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.5])
    adv = torch.tensor([1.0, 2.0, 1.0, -1.0])
    # per sample max(-A r, -A clip(r)): [-0.5 vs -0.8 -> -0.5], [-2], [-1.5 vs -1.2 -> -1.2], [1.5 vs 1.2 -> 1.5]
    assert math.isclose(clipped_surrogate_loss(ratio, adv, 0.2).mean().item(), (-0.5 - 2.0 - 1.2 + 1.5) / 4, rel_tol=1e-6)
    new, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0])
    assert value_loss(new, old, ret, None).mean().item() == 2.0
    assert value_loss(new, old, ret, 0.5).mean().item() == 2.0  # max(unclipped 4, clipped 0.25) / 2
    assert (
        value_loss(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([1.0]), 0.5).mean().item() == 0.5
    )  # max(1, 0.25) / 2
