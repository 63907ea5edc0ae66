"""DQN / Double DQN maths on hand-computed batches, the replay memory, and learning on CartPole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms import dqn
from algorithms.common import NullLogger
from algorithms.common.networks import soft_update
from algorithms.common.replay import ReplayBuffer
from experiments.registry import load_algorithm

double_dqn = load_algorithm("double_dqn")  # dqn.py with double_q=True

REWARDS, TERMINATED = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0])
NEXT_Q_TARGET = torch.tensor([[1.0, 5.0], [2.0, 3.0], [4.0, 0.0]])
NEXT_Q_ONLINE = torch.tensor([[3.0, 1.0], [0.0, 1.0], [0.0, 2.0]])


def test_dqn_target_takes_the_target_networks_max():
    # y = r + 0.9 * (1 - terminated) * max_a' Q^(s', a') = [1 + 0.9*5, 2, 3 + 0.9*4]
    y = dqn.q_target(REWARDS, TERMINATED, NEXT_Q_TARGET, 0.9)
    torch.testing.assert_close(y, torch.tensor([5.5, 2.0, 6.6]))


def test_double_dqn_target_selects_with_the_online_network_and_evaluates_with_the_target():
    # argmax_a' Q(s', .) = [0, 1, 1] -> Q^(s', a') = [1, 3, 0]: y = [1 + 0.9*1, 2 (terminated), 3 + 0.9*0]
    y = dqn.q_target(REWARDS, TERMINATED, NEXT_Q_TARGET, 0.9, next_q_online=NEXT_Q_ONLINE)
    torch.testing.assert_close(y, torch.tensor([1.9, 2.0, 3.0]))
    assert not torch.allclose(y, dqn.q_target(REWARDS, TERMINATED, NEXT_Q_TARGET, 0.9)), "the split matters here"


def test_truncated_transitions_bootstrap_and_terminated_ones_do_not():
    buffer = ReplayBuffer(4, (2,), (), torch.long)
    obs, next_obs = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    buffer.add(obs, np.array([0, 1]), np.array([1.0, 1.0]), next_obs, np.array([True, False]), np.array([False, True]))
    batch = buffer.sample(64)
    y = dqn.q_target(batch.rewards, batch.terminated, torch.full((64, 2), 10.0), 0.5)
    terminal = batch.actions == 0
    assert terminal.any() and (~terminal).any()
    torch.testing.assert_close(y[terminal], torch.ones(int(terminal.sum())))  # r only
    torch.testing.assert_close(y[~terminal], torch.full((int((~terminal).sum()),), 6.0))  # r + 0.5 * 10
    assert (batch.truncated[~terminal] == 1).all() and (batch.terminated[~terminal] == 0).all()


def test_epsilon_schedule_and_target_update():
    assert dqn.linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert dqn.linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert dqn.linear_schedule(1.0, 0.05, 100, 1000) == 0.05
    target, source = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = target.weight.detach().clone()
    soft_update(target, source, 0.25)
    torch.testing.assert_close(target.weight, 0.75 * before + 0.25 * source.weight)
    soft_update(target, source, 1.0)
    torch.testing.assert_close(target.weight, source.weight)


def test_replay_memory_wraps_around_and_round_trips_through_its_state():
    buffer = ReplayBuffer(5, (3,), (2,), torch.float32)
    for step in range(4):  # 8 transitions of 2 envs into 5 slots: the oldest 3 are overwritten
        values = np.array([2 * step, 2 * step + 1], np.float32)
        buffer.add(
            np.repeat(values[:, None], 3, 1),
            np.repeat(values[:, None], 2, 1),
            values,
            np.repeat(values[:, None], 3, 1) + 0.5,
            np.zeros(2),
            np.zeros(2),
        )
    assert len(buffer) == 5 and buffer.pos == 3
    assert sorted(buffer.rewards.tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    batch = buffer.sample(100)
    assert batch.obs.shape == (100, 3) and batch.actions.shape == (100, 2)
    torch.testing.assert_close(batch.next_obs[:, 0], batch.rewards + 0.5)  # fields stay aligned
    copy = ReplayBuffer(5, (3,), (2,), torch.float32)
    copy.load_state_dict(buffer.state_dict())
    torch.manual_seed(0)
    first = buffer.sample(7)
    torch.manual_seed(0)
    second = copy.sample(7)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(2, (3,), (2,), torch.float32).load_state_dict(buffer.state_dict())


def test_double_dqn_is_dqn_with_the_double_target():
    assert double_dqn.Config().double_q and not dqn.Config().double_q
    assert {k: v for k, v in vars(double_dqn.Config()).items() if k != "double_q"} == {
        k: v for k, v in vars(dqn.Config()).items() if k != "double_q"
    }


# RL Zoo's tuned CartPole-v1 DQN setting (CleanRL's default needs 500k steps): 128 gradient steps on
# 64-transition batches every 256 env steps, target copied after each update, MSE loss as CleanRL, 60k steps.
# Calibration on this machine (evaluations of 10 episodes every 10k steps):
#   DQN seeds 1-6: final 500, 500, 500, 500, 500, 486.9; every seed reached 500.
#   Double DQN seeds 1-3: final 500, 98.8, 500; every seed reached 500 (seed 2 fell from 500 at 50k).
# At 50k, DQN seed 3 peaked at 400.7. DQN on CartPole oscillates after it solves the task, so the test asks
# what the issue asks, that every seed reaches >= 475 (the final evaluation is reported, not asserted).
# Seed 1 is tested (each of the calibrated seeds passes; with seeds 1-2 the two tests took about 5 minutes of CI).
FAST = {
    "total_timesteps": 60_000,
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "train_frequency": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "end_e": 0.04,
    "hidden_size_1": 256,
    "hidden_size_2": 256,
    "target_network_frequency": 256,
    "eval_every": 10_000,
    "eval_episodes": 10,
}


@pytest.mark.slow
@pytest.mark.parametrize("module", [dqn, double_dqn], ids=["dqn", "double_dqn"])
def test_learns_cartpole(module):
    results = [module.train(module.Config(**FAST, seed=seed), NullLogger()) for seed in (1,)]
    best = [max(value for _, value in r.eval_returns) for r in results]
    assert min(best) >= 475, (best, [r.eval_returns for r in results])
