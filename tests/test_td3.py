"""TD3 and DDPG maths on hand-computed batches, and DDPG as TD3's ablation (the critics: tests/test_networks.py)."""

from __future__ import annotations

import torch

from algorithms import td3
from algorithms.common import targets


def test_target_policy_smoothing_with_fixed_noise():
    # action box [-2, 2] (scale 2): noise clipped to +-0.5 half-ranges, then the action clipped to the box
    target_actions = torch.tensor([[0.9], [-0.2], [1.5]])
    noise = torch.tensor([[0.7], [-0.1], [0.4]])
    scale, low, high = torch.tensor([2.0]), torch.tensor([-2.0]), torch.tensor([2.0])
    smoothed = targets.smoothed_target_actions(target_actions, noise, 0.5, scale, low, high)
    torch.testing.assert_close(smoothed, torch.tensor([[1.9], [-0.4], [2.0]]))


def test_clipped_double_q_target_takes_the_smaller_critic_and_stops_at_termination():
    rewards, terminated = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[3.0, 5.0, -1.0], [4.0, 2.0, -3.0]])  # (2 critics, B)
    y = targets.clipped_double_q_target(rewards, terminated, next_q, 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 3.0, 1.0, 0.5 - 0.9 * 3.0]))


def test_ddpg_target_bootstraps_from_the_single_target_critic():
    y = targets.clipped_double_q_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([[4.0, 9.0]]), 0.5)
    torch.testing.assert_close(y, torch.tensor([3.0, 1.0]))


def test_ddpg_is_td3_without_clipped_double_q_and_target_smoothing():
    from experiments.registry import load_algorithm

    ddpg, td3_config = load_algorithm("ddpg").Config(), td3.Config()
    assert (ddpg.twin_critics, ddpg.policy_noise) == (False, 0.0) and (td3_config.twin_critics, td3_config.policy_noise) == (
        True,
        0.2,
    )
    differ = {k for k, v in vars(ddpg).items() if v != getattr(td3_config, k)}
    assert differ == {"twin_critics", "policy_noise"}, "DDPG keeps TD3's architecture and hyperparameters (AHE + DP)"
