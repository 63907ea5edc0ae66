"""SAC maths: the squashed Gaussian's log-density against a numerical change of variables, the soft target."""

from __future__ import annotations

import math

import torch

from algorithms import sac
from algorithms.common.distributions import squashed_gaussian_log_prob


def test_squashed_log_prob_matches_a_numerical_change_of_variables():
    torch.manual_seed(0)
    mean, log_std = torch.randn(3, 2), torch.randn(3, 2) * 0.5
    scale, bias = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 1.0])
    pre_squash = mean + log_std.exp() * torch.randn(3, 2) * 2.0
    ours = squashed_gaussian_log_prob(pre_squash, mean, log_std, scale)
    for i in range(3):
        # log pi(a) = log N(u; mean, std) - log |det da/du|, with the Jacobian of a(u) = tanh(u) * scale + bias by autograd
        jacobian = torch.autograd.functional.jacobian(lambda u: torch.tanh(u) * scale + bias, pre_squash[i].double())
        gaussian = torch.distributions.Normal(mean[i].double(), log_std[i].double().exp()).log_prob(pre_squash[i].double())
        expected = gaussian.sum() - torch.linalg.slogdet(jacobian).logabsdet
        assert math.isclose(ours[i].item(), expected.item(), rel_tol=1e-5, abs_tol=1e-5)


def test_squashed_log_prob_is_finite_far_in_the_tails():
    u = torch.tensor([[30.0, -30.0]])
    value = squashed_gaussian_log_prob(u, torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(2))
    assert torch.isfinite(value).all()  # log(1 - tanh(30)^2) underflows when computed naively


def test_soft_target_subtracts_the_entropy_term_and_stops_at_termination():
    rewards, terminated = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[3.0, 7.0], [2.0, 9.0]])  # (2 critics, B): min = [2, 7]
    next_log_prob = torch.tensor([-1.0, 0.5])
    y = sac.soft_q_target(rewards, terminated, next_q, next_log_prob, alpha=0.2, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (2.0 + 0.2), 1.0]))
