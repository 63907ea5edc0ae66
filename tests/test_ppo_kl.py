"""PPO-KL: the adaptive-beta rule, the closed-form KLs against torch.distributions and hand-computed values,
the rule's wiring in the training loop, and learning on CartPole-v1 and InvertedPendulum-v5.

Learning calibration (2-core machine shared with a background grid, so wall times are 2-3x uncontended ones):
  CartPole-v1, RL Zoo's tuned classic-control PPO setting (as tests/test_learning.py: 8 envs x 32 steps,
  1 minibatch, 20 epochs, gamma 0.98, lambda 0.8, lr 1e-3 annealed, no normalisation) with ppo_kl's defaults
  d_targ = 0.01, beta_0 = 1; final evaluation (10 episodes) after 100k steps:
    seeds 1-6: 500.0, 500.0, 500.0, 500.0, 500.0, 500.0 (24-45 s each); at 50k steps: 500, 124, 118, 500, 500, 184.
  InvertedPendulum-v5, ppo_kl's defaults (the paper's MuJoCo setting) for 24,576 steps (12 updates):
    seeds 1-5: 1000.0 each (27-30 s each). At 20,480 steps seeds 1-3 gave 534.8, 1000.0, 1000.0; after the
    first 4,096 steps 66-82; the untrained policy scores 21.7, 23.4, 21.6 (seeds 1-3).
The tests run two seeds each (about a minute of CI together, uncontended). "Clearly improves" on InvertedPendulum
is >= 500 for every seed run: over 20x the untrained policy, half the maximum, and below every calibrated seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import PPO_CARTPOLE

from algorithms.common import NullLogger, RecordingLogger
from algorithms.common.distributions import categorical_kl, gaussian_kl
from algorithms.ppo import adapt_beta, kl_penalty_loss
from experiments.registry import load_algorithm

ppo_kl = load_algorithm("ppo_kl")  # ppo.py with objective="kl"

TARGET = 0.01


def test_beta_halves_below_the_band_doubles_above_it_and_stays_inside_it():
    assert adapt_beta(1.0, 0.001, TARGET) == 0.5
    assert adapt_beta(1.0, 0.0066, TARGET) == 0.5  # just under d_targ / 1.5 = 0.00667
    assert adapt_beta(1.0, 0.05, TARGET) == 2.0
    assert adapt_beta(1.0, 0.0151, TARGET) == 2.0  # just over d_targ * 1.5 = 0.015
    for inside in (TARGET / 1.5, 0.008, TARGET, 0.014, TARGET * 1.5):  # the rule's inequalities are strict
        assert adapt_beta(0.3, inside, TARGET) == 0.3


def test_beta_settles_where_the_penalised_kl_falls_inside_the_band():
    """A constructed update whose KL falls as the penalty grows, d = 0.001 / beta: from beta = 1 (d = 0.001,
    too small) beta halves to 0.125 (d = 0.008); from beta = 0.001 (d = 1, too large) it doubles to 0.128
    (d = 0.0078). Both then stay put."""
    for beta, settled, moves in ((1.0, 0.125, 3), (0.001, 0.128, 7)):
        history = [beta]
        for _ in range(20):
            history.append(adapt_beta(history[-1], 0.001 / history[-1], TARGET))
        assert history[moves] == pytest.approx(settled) and history[moves - 1] != pytest.approx(settled)
        assert all(b == history[moves] for b in history[moves:])
        assert TARGET / 1.5 <= 0.001 / settled <= TARGET * 1.5


def test_gaussian_kl_matches_the_closed_form_and_torch_distributions():
    # KL[N(0, 1) || N(1, 2^2)] = log 2 + (1 + 1) / 8 - 1/2; the other direction log(1/2) + (4 + 1) / 2 - 1/2.
    zero, one, log2 = torch.zeros(1, 1), torch.ones(1, 1), torch.full((1, 1), math.log(2.0))
    assert gaussian_kl(zero, zero, one, log2).item() == pytest.approx(math.log(2.0) - 0.25, rel=1e-6)
    assert gaussian_kl(one, log2, zero, zero).item() == pytest.approx(2.0 - math.log(2.0), rel=1e-6)

    g = torch.Generator().manual_seed(0)
    mean_p, mean_q = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    log_std_p, log_std_q = 0.5 * torch.randn(1, 3, generator=g), 0.5 * torch.randn(1, 3, generator=g)  # state-independent
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean_p, log_std_p.exp()), torch.distributions.Normal(mean_q, log_std_q.exp())
    ).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), expected)

    # Zero at pi = pi_old, with zero gradient there: the penalty is second order around the old policy.
    mean_q = mean_p.clone().requires_grad_(True)
    log_std_q = log_std_p.clone().requires_grad_(True)
    kl = gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    torch.testing.assert_close(kl, torch.zeros(6))
    kl.sum().backward()
    torch.testing.assert_close(mean_q.grad, torch.zeros(6, 3))
    torch.testing.assert_close(log_std_q.grad, torch.zeros(1, 3))


def test_categorical_kl_matches_the_closed_form_and_torch_distributions():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL[p || q] = 1/2 log 2 + 1/2 log(2/3); logits are shift-invariant.
    p, q = torch.log(torch.tensor([[0.5, 0.5]])) + 3.0, torch.log(torch.tensor([[0.25, 0.75]]))
    assert categorical_kl(p, q).item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), rel=1e-6)
    assert categorical_kl(q, p).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)

    g = torch.Generator().manual_seed(1)
    logits_p, logits_q = 2 * torch.randn(7, 4, generator=g), 2 * torch.randn(7, 4, generator=g)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=logits_p), torch.distributions.Categorical(logits=logits_q)
    )
    torch.testing.assert_close(categorical_kl(logits_p, logits_q), expected)
    torch.testing.assert_close(categorical_kl(logits_p, logits_p + 5.0), torch.zeros(7))


def test_kl_penalty_loss_by_hand():
    ratio, adv, kl = torch.tensor([0.5, 1.5]), torch.tensor([1.0, -2.0]), torch.tensor([0.1, 0.3])
    # -mean(r A) + beta mean(KL) = -(0.5 - 3) / 2 + 2 * 0.2
    assert kl_penalty_loss(ratio, adv, kl, 2.0).item() == pytest.approx(1.25 + 0.4, rel=1e-6)
    assert kl_penalty_loss(ratio, adv, kl, 0.0).item() == pytest.approx(1.25, rel=1e-6)


TINY = {
    "total_timesteps": 1024,
    "num_envs": 2,
    "num_steps": 64,
    "update_epochs": 4,
    "num_minibatches": 2,
    "eval_every": 0,
    "eval_episodes": 1,
}


def _betas_and_kls(logger: RecordingLogger) -> tuple[list[float], list[float]]:
    rows = [m for _, m in logger.records if "charts/kl_beta" in m]
    return [m["charts/kl_beta"] for m in rows], [m["losses/kl"] for m in rows]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_training_applies_the_rule_after_every_update(env_id):
    """The beta each update used is the rule applied to the previous beta and the previous update's d."""
    logger = RecordingLogger()
    ppo_kl.train(ppo_kl.Config(env_id=env_id, **TINY), logger)
    betas, kls = _betas_and_kls(logger)
    assert len(betas) == 1024 // 128 and betas[0] == 1.0
    assert all(kl > 0 for kl in kls)
    assert betas[1:] == [adapt_beta(b, kl, 0.01) for b, kl in zip(betas[:-1], kls[:-1])]
    assert len(set(betas)) > 1, f"beta never moved: KLs {kls}"


def test_fixed_beta_variant_keeps_beta():
    logger = RecordingLogger()
    ppo_kl.train(ppo_kl.Config(env_id="CartPole-v1", adaptive_kl=False, kl_coef=3.0, **TINY), logger)
    betas, kls = _betas_and_kls(logger)
    assert betas == [3.0] * 8 and all(kl > 0 for kl in kls)


CARTPOLE = {**PPO_CARTPOLE, "eval_every": 0, "eval_episodes": 10}


@pytest.mark.slow
def test_ppo_kl_solves_cartpole_within_100k_steps():
    finals = [ppo_kl.train(ppo_kl.Config(**CARTPOLE, seed=seed), NullLogger()).final_eval_return for seed in (1, 2)]
    assert np.mean(finals) >= 475, f"final evaluation returns {finals}"


@pytest.mark.slow
@pytest.mark.mujoco
@pytest.mark.parametrize("seed", [1, 2])
def test_ppo_kl_balances_inverted_pendulum_within_25k_steps(seed):
    pytest.importorskip("mujoco")
    cfg = ppo_kl.Config(env_id="InvertedPendulum-v5", total_timesteps=24_576, eval_every=0, eval_episodes=10, seed=seed)
    result = ppo_kl.train(cfg, NullLogger())
    assert result.global_step == 24_576
    assert result.final_eval_return >= 500, f"seed {seed}: {result.final_eval_return:.1f} after 24,576 steps"
