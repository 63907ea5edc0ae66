"""TD3 and DDPG maths on hand-computed batches and the twin critics' independence."""

from __future__ import annotations

import torch

from algorithms import td3


def test_target_policy_smoothing_with_fixed_noise():
    # action box [-2, 2] (scale 2): noise clipped to +-0.5 half-ranges, then the action clipped to the box
    target_actions = torch.tensor([[0.9], [-0.2], [1.5]])
    noise = torch.tensor([[0.7], [-0.1], [0.4]])
    scale, low, high = torch.tensor([2.0]), torch.tensor([-2.0]), torch.tensor([2.0])
    smoothed = td3.smoothed_target_actions(target_actions, noise, 0.5, scale, low, high)
    torch.testing.assert_close(smoothed, torch.tensor([[1.9], [-0.4], [2.0]]))


def test_clipped_double_q_target_takes_the_smaller_critic_and_stops_at_termination():
    rewards, terminated = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[3.0, 5.0, -1.0], [4.0, 2.0, -3.0]])  # (2 critics, B)
    y = td3.clipped_double_q_target(rewards, terminated, next_q, 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 3.0, 1.0, 0.5 - 0.9 * 3.0]))


def test_twin_critics_are_two_independent_networks():
    torch.manual_seed(0)
    qf = td3.TwinQ(5, 8)
    obs, actions = torch.randn(4, 3), torch.randn(4, 2)
    values = qf(obs, actions)
    assert values.shape == (2, 4) and not torch.allclose(values[0], values[1]), "separately initialised"
    x = torch.cat([obs, actions], -1)
    for critic in (0, 1):  # the stacked weights compute exactly a plain MLP per critic
        h = torch.relu(x @ qf.weights[0][critic] + qf.biases[0][critic])
        h = torch.relu(h @ qf.weights[1][critic] + qf.biases[1][critic])
        torch.testing.assert_close(values[critic], (h @ qf.weights[2][critic] + qf.biases[2][critic]).squeeze(-1))
    values[0].sum().backward()
    assert all(w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0 for w in qf.weights), "Q_1's loss leaves Q_2"


def test_soft_update_is_polyak_averaging():
    target, source = td3.TwinQ(3, 4), td3.TwinQ(3, 4)
    before = [p.detach().clone() for p in target.parameters()]
    td3.soft_update(target, source, 0.005)
    for new, old, src in zip(target.parameters(), before, source.parameters()):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * src)


def test_ddpg_target_bootstraps_from_the_single_target_critic():
    from algorithms import ddpg

    y = ddpg.q_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 9.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([3.0, 1.0]))


def test_the_actor_loss_reaches_the_actions_but_not_the_critic_weights():
    from algorithms import ddpg

    obs, actions = torch.randn(5, 2), torch.randn(5, 2, requires_grad=True)
    twin, single = td3.TwinQ(4, 8), ddpg.QNetwork(4, 8)
    for values, critic, reference in ((twin.q1(obs, actions), twin, twin(obs, actions)[0]),
                                      (single(obs, actions, frozen=True), single, single(obs, actions))):  # fmt: skip
        torch.testing.assert_close(values, reference)  # Q_1 (td3) or the frozen critic (ddpg): the same values
        actions.grad = None
        values.sum().backward()
        assert actions.grad.abs().sum() > 0 and all(p.grad is None for p in critic.parameters())
