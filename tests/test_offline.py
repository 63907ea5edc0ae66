"""Offline RL maths on hand-computed batches (IQL's expectile loss and advantage weights, CQL's importance-sampled
penalty and its Lagrange step, TD3+BC's lambda), the dataset plumbing (standardisation, reward scale), and the
refusals of bad input before any update."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from algorithms import bc, cql, iql, td3_bc
from algorithms.common.offline import OfflineData, return_range_reward_scale
from envs import validate_env_id
from envs.datasets import DatasetNotFound, Transitions
from experiments.registry import load_algorithm

SMOKE_DATASET = "rlgrid/pendulum-v1/smoke-v0"


def test_expectile_loss_weights_positive_and_negative_errors_asymmetrically():
    diff = torch.tensor([2.0, -1.0, 0.5])  # u = Q - V
    # tau 0.7: 0.7 u^2 where u >= 0, 0.3 u^2 where u < 0
    assert iql.expectile_loss(diff, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 1 + 0.7 * 0.25) / 3)
    # tau 0.5 is half the mean squared error
    assert iql.expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25) / 3)


def test_advantage_weights_are_exp_beta_a_clipped():
    weights = iql.advantage_weights(torch.tensor([0.0, 1.0, -2.0, 2.0]), temperature=3.0, max_weight=100.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, math.exp(3.0), math.exp(-6.0), 100.0]))  # e^6 = 403 > 100


def test_cql_penalty_is_the_importance_sampled_logsumexp_minus_the_data_q():
    # one critic, one state, one sample of each kind; actions in [-1, 1]^2: uniform density 1/4
    random_log_density = math.log(0.25)
    q_data = torch.tensor([[1.0]])
    q_random, q_current, q_next = torch.tensor([[[2.0]]]), torch.tensor([[[3.0]]]), torch.tensor([[[0.0]]])
    log_prob_current, log_prob_next = torch.tensor([[0.5]]), torch.tensor([[-0.5]])
    terms = [2.0 - math.log(0.25), 3.0 - 0.5, 0.0 + 0.5]
    for temperature in (1.0, 2.0):
        expected = temperature * math.log(sum(math.exp(t / temperature) for t in terms)) - 1.0
        penalty = cql.cql_penalty(
            q_data, q_random, q_current, q_next, random_log_density, log_prob_current, log_prob_next, temperature
        )
        assert penalty.shape == (1,) and penalty.item() == pytest.approx(expected, rel=1e-6)


def test_cql_penalty_averages_over_the_batch_per_critic():
    q_data = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # (K=2, B=2)
    zeros = torch.zeros(2, 2, 1)
    log_probs = torch.zeros(2, 1)
    penalty = cql.cql_penalty(q_data, zeros, zeros, zeros, 0.0, log_probs, log_probs, 1.0)
    lse = math.log(3.0)  # three samples of Q = 0 with log-density 0
    torch.testing.assert_close(penalty, torch.tensor([lse - 0.5, lse - 1.0]))


@pytest.mark.parametrize(("penalty", "rises"), [(8.0, True), (3.0, False)])
def test_the_lagrange_step_raises_alpha_prime_while_the_penalty_exceeds_the_gap(penalty, rises):
    log_alpha_prime = torch.zeros((), requires_grad=True)
    cql.lagrange_loss(log_alpha_prime, torch.tensor([penalty, penalty]), cql_alpha=5.0, gap=5.0).backward()
    # d/d log a' of -a' * 5 * (penalty - 5) at a' = 1
    assert log_alpha_prime.grad.item() == pytest.approx(-5.0 * (penalty - 5.0))
    optimizer = torch.optim.SGD([log_alpha_prime], lr=0.01)
    optimizer.step()
    assert (log_alpha_prime.item() > 0) == rises


def test_td3_bc_lambda_normalises_the_q_term_and_is_not_differentiated():
    q = torch.tensor([1.0, -3.0], requires_grad=True)
    policy_actions = torch.tensor([[0.5], [0.0]], requires_grad=True)
    data_actions = torch.tensor([[0.0], [0.0]])
    loss, lam = td3_bc.td3_bc_actor_loss(q, policy_actions, data_actions, alpha=2.5)
    assert lam.item() == pytest.approx(2.5 / 2.0)  # alpha / mean |Q|
    assert loss.item() == pytest.approx(-1.25 * (-1.0) + 0.25 / 2)
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([-1.25 / 2, -1.25 / 2]))  # lambda itself passes no gradient
    torch.testing.assert_close(policy_actions.grad, torch.tensor([[0.5], [0.0]]))  # d/dpi mean((pi - a)^2)


def test_bc_loss_is_the_mean_squared_action_error():
    assert bc.bc_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(0.5)


def _transitions(observations: np.ndarray, rewards: np.ndarray, starts: np.ndarray) -> Transitions:
    n = len(rewards)
    return Transitions(
        observations=observations.astype(np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=rewards.astype(np.float32),
        next_observations=observations.astype(np.float32) + 1,
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
        episode_starts=starts,
        env_id="Pendulum-v1",
        ref_min_score=-100.0,
        ref_max_score=100.0,
        source="test",
    )


def test_offline_data_standardises_with_the_datasets_statistics_and_the_policy_does_the_same():
    observations = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    data = OfflineData(_transitions(observations, np.ones(3), np.array([True, False, False])), torch.device("cpu"), True)
    std = np.sqrt(8 / 3) + 1e-3  # population std of 0, 2, 4, plus the epsilon; the constant dimension's std is 0
    torch.testing.assert_close(data.obs[:, 0], torch.tensor([-2.0, 0.0, 2.0]) / std)
    torch.testing.assert_close(data.obs[:, 1], torch.zeros(3))
    torch.testing.assert_close(data.next_obs[:, 0], torch.tensor([-1.0, 1.0, 3.0]) / std)
    seen = []
    data.policy(lambda obs: seen.append(obs) or torch.zeros(obs.shape[0], 1))(np.array([[4.0, 5.0]], np.float32))
    torch.testing.assert_close(seen[0], data.obs[2:3])
    assert data.normalized_score(0.0) == pytest.approx(50.0) and data.normalized_score(100.0) == pytest.approx(100.0)


def test_iql_reward_scale_makes_the_return_range_span_1000():
    # two episodes: returns 1 + 2 = 3 and 4 + 6 = 10
    data = _transitions(np.zeros((4, 1)), np.array([1.0, 2.0, 4.0, 6.0]), np.array([True, False, True, False]))
    assert return_range_reward_scale(data) == pytest.approx(1000 / 7)


# --- bad input, refused before any update ----------------------------------------------------------
@pytest.mark.parametrize("algo", ["bc", "td3_bc", "iql", "cql"])
def test_an_offline_algorithm_refuses_an_env_for_a_task(algo):
    with pytest.raises(ValueError, match="offline algorithm: its task is a dataset"):
        load_algorithm(algo).check_env("Pendulum-v1")


@pytest.mark.parametrize("algo", ["td3", "sac", "ppo"])
def test_an_online_algorithm_refuses_a_dataset(algo):
    with pytest.raises(ValueError, match="is an offline dataset and .* learns online"):
        load_algorithm(algo).check_env(SMOKE_DATASET)


def test_a_missing_dataset_is_refused_saying_how_to_make_one():
    with pytest.raises(DatasetNotFound, match="rlgrid dataset make"):
        validate_env_id("rlgrid/hopper-v5/nothing-v0")


def test_a_dataset_that_does_not_fit_its_env_is_refused_before_any_update(tmp_path):
    # D4RL names say the env: hopper -> Hopper-v5 (11-dim observations, 3-dim actions); these rows have 4 and 1
    path = tmp_path / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as file:
        file["observations"] = np.zeros((10, 4), np.float32)
        file["next_observations"] = np.zeros((10, 4), np.float32)
        file["actions"] = np.zeros((10, 1), np.float32)
        file["rewards"] = np.zeros(10, np.float32)
        file["terminals"] = np.zeros(10, bool)
    module = load_algorithm("td3_bc")
    with pytest.raises(ValueError, match="does not fit its env Hopper-v5: 4-dim observations and 1-dim actions"):
        module.train(module.Config(**{**module.SMOKE, "env_id": str(path)}))


def test_the_command_line_refuses_an_env_for_an_offline_algorithm_in_one_line(tmp_path, capsys):
    from experiments.cli import main

    assert main(["train", "iql", "--env-id", "Pendulum-v1", "--runs-dir", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: iql is an offline algorithm")
    assert not (tmp_path / "runs" / "single").exists()
