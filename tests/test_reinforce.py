"""REINFORCE: rewards-to-go against a slow reference, the gradient estimator on a two-armed bandit against the
analytic policy gradient (convergence as the batch grows; a baseline keeps the mean and lowers the variance),
and learning CartPole-v1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms import reinforce
from algorithms.reinforce import reinforce_surrogate, rewards_to_go

# Two-armed bandit: softmax policy over two logits, arm rewards N(MEANS[a], 1). Offsetting the means by 5 makes
# the no-baseline estimator noisy, as large positive returns do in an episodic task.
THETA = torch.tensor([0.4, -0.3])
MEANS = torch.tensor([5.0, 6.0])


def analytic_gradient() -> torch.Tensor:
    """grad_theta J for J = sum_a pi_a MEANS[a]: d J / d theta_k = pi_k (MEANS[k] - J)."""
    pi = torch.softmax(THETA, 0)
    return pi * (MEANS - (pi * MEANS).sum())


def bandit_estimates(repeats: int, episodes: int, baseline: float, seed: int) -> torch.Tensor:
    """`repeats` independent REINFORCE estimates (repeats, 2), each from `episodes` one-step episodes."""
    g = torch.Generator().manual_seed(seed)
    theta = THETA.repeat(repeats, 1).requires_grad_()
    log_pi = torch.log_softmax(theta, -1)  # (R, 2)
    actions = torch.multinomial(log_pi.exp().detach(), episodes, replacement=True, generator=g)  # (R, E)
    rewards = MEANS[actions] + torch.randn(repeats, episodes, generator=g)
    ones = torch.ones(1, repeats * episodes, dtype=torch.bool)  # every step ends its episode (T = 1, N = R E)
    returns = rewards_to_go(rewards.reshape(1, -1), ones, torch.zeros(1, repeats * episodes), 0.99).reshape(-1)
    log_probs = log_pi.gather(1, actions).reshape(-1)
    # The surrogate sums over all repeats; each repeat's own logits only see its own episodes.
    loss = reinforce_surrogate(log_probs, returns, torch.full_like(returns, baseline), episodes)
    (grad,) = torch.autograd.grad(loss, theta)
    return -grad


def test_estimate_converges_to_the_analytic_policy_gradient_as_the_batch_grows():
    true = analytic_gradient()
    errors = []
    for episodes in (10, 100, 1000, 10000):
        estimates = bandit_estimates(200, episodes, baseline=0.0, seed=episodes)
        errors.append((estimates - true).pow(2).sum(1).mean().sqrt().item())  # RMS error over 200 repeats
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # unbiased with variance ~ 1/E: the RMS error falls by about sqrt(10) = 3.16 per tenfold batch
    assert all(2.4 < r < 4.2 for r in ratios), (errors, ratios)  # measured: 2.8, 3.2, 3.4
    assert errors[-1] < 0.15 * true.norm().item(), errors  # measured: 0.038 against |grad J| = 0.31
    largest = bandit_estimates(200, 10000, baseline=0.0, seed=7)
    assert ((largest.mean(0) - true).abs() < 4 * largest.std(0) / np.sqrt(200)).all()


def test_exact_expectation_with_and_without_a_baseline_is_the_policy_gradient():
    """E_a[grad log pi(a) (r_a - b)] summed over both arms with their probabilities, through the estimator itself."""
    pi = torch.softmax(THETA, 0)
    for b in (0.0, 5.5, -3.0):
        expectation = torch.zeros(2)
        for arm in (0, 1):
            theta = THETA.clone().requires_grad_()
            log_prob = torch.log_softmax(theta, 0)[arm : arm + 1]
            loss = reinforce_surrogate(log_prob, MEANS[arm : arm + 1], torch.tensor([b]), 1)
            expectation -= pi[arm] * torch.autograd.grad(loss, theta)[0]
        torch.testing.assert_close(expectation, analytic_gradient())


def test_baseline_keeps_the_mean_and_reduces_the_variance():
    true = analytic_gradient()
    expected_reward = float((torch.softmax(THETA, 0) * MEANS).sum())
    without = bandit_estimates(4000, 10, baseline=0.0, seed=1)
    with_baseline = bandit_estimates(4000, 10, baseline=expected_reward, seed=1)
    for estimates in (without, with_baseline):  # both unbiased: within 4 standard errors of the truth
        standard_error = estimates.std(0) / np.sqrt(len(estimates))
        assert ((estimates.mean(0) - true).abs() < 4 * standard_error).all()
    variance_without, variance_with = without.var(0).sum().item(), with_baseline.var(0).sum().item()
    assert variance_with < 0.1 * variance_without, (variance_with, variance_without)


def rtg_reference(rewards, ends, bootstrap, gamma):
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * rewards[k, n]
                discount *= gamma
                if ends[k, n]:
                    total += discount * bootstrap[k, n]
                    break
            out[t, n] = total
    return out


def test_rewards_to_go_restart_at_episode_ends_and_bootstrap_only_where_asked():
    g = torch.Generator().manual_seed(0)
    T, N = 30, 3
    rewards = torch.randn(T, N, generator=g)
    terminated = torch.rand(T, N, generator=g) < 0.1
    truncated = (torch.rand(T, N, generator=g) < 0.1) & ~terminated
    ends = terminated | truncated
    ends[-1] = True  # REINFORCE's batches hold whole episodes
    bootstrap = torch.randn(T, N, generator=g) * truncated  # V(final obs) at truncations only
    returns = rewards_to_go(rewards, ends, bootstrap, 0.9)
    expected = rtg_reference(rewards.numpy(), ends.numpy(), bootstrap.numpy(), 0.9)
    np.testing.assert_allclose(returns.numpy(), expected, rtol=1e-5, atol=1e-5)
    # no bootstrap (plain REINFORCE): the return stops at the cut
    assert torch.equal(rewards_to_go(rewards[:1], torch.ones(1, N, dtype=torch.bool), torch.zeros(1, N), 0.9), rewards[:1])


@pytest.fixture
def one_thread():
    """Tiny MLPs: one thread avoids OpenMP hand-offs that dominate (and, on a loaded machine, stall) each call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [1, 2])
def test_reinforce_with_baseline_solves_cartpole_within_150k_steps(seed):
    """Calibration (module defaults: 8 whole episodes per update, Adam 1e-3, value baseline with 10 steps per
    update, gamma 0.99, 64-64 tanh MLPs; final deterministic evaluation over 10 episodes after 150k steps),
    seeds 1-5: 495.4, 500.0, 500.0, 483.2, 500.0 (evaluations at ~100k: 477, 500, 500, 500, 500); ~35 s per
    seed on the loaded 2-core machine (1 thread). A run of 300k steps held 483-500 from 100k on (seeds 1-3)."""
    cfg = reinforce.Config(env_id="CartPole-v1", seed=seed, total_timesteps=150_000, eval_every=0, eval_episodes=10)
    result = reinforce.train(cfg)
    assert result.global_step == 150_000
    assert result.final_eval_return >= 475, f"seed {seed}: {result.final_eval_return:.1f}"
