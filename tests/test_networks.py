"""The networks algorithm files borrow from algorithms.common.networks: the Q ensemble (TD3's twin critics, DDPG's one
critic, SAC's), the target update, and the actor-critic's sampling against its own log-probabilities."""

from __future__ import annotations

import pytest
import torch

from algorithms.common.networks import ActorCritic, QEnsemble, soft_update


@pytest.mark.parametrize("members", [1, 2])
def test_ensemble_members_are_independent_plain_mlps(members):
    torch.manual_seed(0)
    qf = QEnsemble(5, 8, members)
    obs, actions = torch.randn(4, 3), torch.randn(4, 2)
    values = qf(obs, actions)
    assert values.shape == (members, 4)
    x = torch.cat([obs, actions], -1)
    for k in range(members):  # the stacked weights compute exactly a plain MLP per member
        h = torch.relu(x @ qf.weights[0][k] + qf.biases[0][k])
        h = torch.relu(h @ qf.weights[1][k] + qf.biases[1][k])
        torch.testing.assert_close(values[k], (h @ qf.weights[2][k] + qf.biases[2][k]).squeeze(-1))
    if members == 2:
        assert not torch.allclose(values[0], values[1]), "separately initialised"
        values[0].sum().backward()
        assert all(w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0 for w in qf.weights), "Q_1's loss leaves Q_2"


def test_policy_losses_reach_the_actions_but_not_the_critic_weights():
    torch.manual_seed(1)
    qf = QEnsemble(4, 8)
    obs, actions = torch.randn(5, 2), torch.randn(5, 2, requires_grad=True)
    for values, reference in (
        (qf.first(obs, actions), qf(obs, actions)[0]),
        (qf(obs, actions, frozen=True), qf(obs, actions)),
    ):
        torch.testing.assert_close(values, reference)  # Q_1 alone, or every member frozen: the same values
        actions.grad = None
        values.sum().backward()
        assert actions.grad.abs().sum() > 0 and all(p.grad is None for p in qf.parameters())


def test_soft_update_is_polyak_averaging_and_tau_one_copies():
    target, source = QEnsemble(3, 4), QEnsemble(3, 4)
    before = [p.detach().clone() for p in target.parameters()]
    soft_update(target, source, 0.005)
    for new, old, src in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * src)
    soft_update(target, source, 1.0)
    for new, src in zip(target.parameters(), source.parameters()):
        assert torch.equal(new, src)


def test_categorical_sampling_follows_the_policy_and_evaluate_actions_scores_it():
    """Inverse-CDF sampling from uniform draws reproduces the policy's probabilities, and evaluate_actions gives the
    log-probability of each sampled action under the same policy."""
    torch.manual_seed(2)
    agent = ActorCritic((3,), action_dim=4, continuous=False, hidden=16)
    obs = torch.randn(1, 3).expand(20_000, 3)
    with torch.no_grad():
        actions = agent.sample(obs, torch.rand(20_000, 1))
        probs = torch.softmax(agent.actor(obs[:1]), -1)[0]
        _, log_probs, _, _ = agent.evaluate_actions(obs, actions)
    frequencies = torch.bincount(actions, minlength=4).float() / 20_000
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    torch.testing.assert_close(log_probs, probs.log()[actions])
