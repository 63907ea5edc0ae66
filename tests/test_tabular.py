"""The tabular methods against exact answers: the book's figures, linear solves of the Bellman equation, Q* and
Q^pi, and the cliff-walking finding, each through the algorithm's own `train()` and its final checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.common import Checkpointer, RecordingLogger
from algorithms.common.tabular import optimal_value, policy_value, q_from_v, uniform_policy
from envs.tabular import GRIDWORLD_4X4, GRIDWORLD_5X5, RANDOM_WALK, transition_model
from experiments.registry import load_algorithm

FIGURE_4_1 = [[0, -14, -20, -22], [-14, -18, -20, -20], [-20, -20, -18, -14], [-22, -20, -14, 0]]
"""v_pi of the equiprobable policy on the 4 x 4 gridworld (Sutton & Barto 2018, Figure 4.1, k = infinity)"""
FIGURE_3_5 = [
    [22.0, 24.4, 22.0, 19.4, 17.5],
    [19.8, 22.0, 19.8, 17.8, 16.0],
    [17.8, 19.8, 17.8, 16.0, 14.4],
    [16.0, 17.8, 16.0, 14.4, 13.0],
    [14.4, 16.0, 14.4, 13.0, 11.7],
]
"""v_* of the 5 x 5 gridworld, gamma 0.9 (Figure 3.5, middle)"""


def train(algo: str, tmp_path, **overrides) -> tuple[dict, RecordingLogger, object]:
    """Run `algo` and return its final checkpoint's state (the learned tables), its logs and its result."""
    module = load_algorithm(algo)
    logger, directory = RecordingLogger(), tmp_path / f"{algo}-{len(list(tmp_path.iterdir()))}"
    result = module.train(module.Config(**overrides), logger, Checkpointer(directory))
    state, _ = Checkpointer(directory).load()
    return state, logger, result


def logged(logger: RecordingLogger, key: str) -> list[float]:
    return [metrics[key] for _, metrics in logger.records if key in metrics]


# --- dynamic programming ----------------------------------------------------------------------------------------
def test_policy_evaluation_of_the_equiprobable_policy_gives_figure_4_1(tmp_path):
    state, logger, _ = train("policy_evaluation", tmp_path, env_id=GRIDWORLD_4X4, gamma=1.0, theta=1e-12)
    assert np.round(state["V"].reshape(4, 4), 6).tolist() == FIGURE_4_1
    assert logged(logger, "eval/value_rmse")[-1] < 1e-9


@pytest.mark.parametrize("algo", ["value_iteration", "policy_iteration"])
def test_value_and_policy_iteration_give_figure_3_5(tmp_path, algo):
    state, logger, _ = train(algo, tmp_path, env_id=GRIDWORLD_5X5, gamma=0.9, theta=1e-12)
    assert np.round(state["V"].reshape(5, 5), 1).tolist() == FIGURE_3_5
    assert logged(logger, "eval/value_rmse")[-1] < 1e-9
    assert logged(logger, "losses/bellman_residual")[-1] < 1e-12


@pytest.mark.parametrize(
    "env_id",
    ["FrozenLake-v1", "rlgrid/FrozenLakeNotSlippery-v1", "FrozenLake8x8-v1", "rlgrid/FrozenLake8x8NotSlippery-v1", "Taxi-v4"],
)
def test_value_iteration_and_policy_iteration_agree_and_their_greedy_policies_are_optimal(tmp_path, env_id):
    gamma, model = 0.99, transition_model(env_id)
    values, policies = {}, {}
    for algo in ("value_iteration", "policy_iteration"):
        state, _, result = train(algo, tmp_path, env_id=env_id, gamma=gamma, theta=1e-12, eval_episodes=3)
        assert result.global_step < 100_000, "converged before the sweep budget"
        values[algo] = state["V"]
        policies[algo] = q_from_v(model, state["V"], gamma).argmax(1)  # (policy iteration's pi is greedy w.r.t. V)
    assert np.abs(values["value_iteration"] - values["policy_iteration"]).max() < 1e-8
    best = optimal_value(model, gamma)
    for algo, actions in policies.items():
        # The Bellman equation of the greedy policy, solved directly, gives back the method's V, and it is v_*.
        exact = policy_value(model, np.eye(model.num_actions)[actions], gamma)
        assert np.abs(exact - values[algo]).max() < 1e-8, algo
        assert np.abs(exact - best).max() < 1e-8, algo


def test_a_model_based_method_refuses_an_env_without_a_model_before_it_starts(tmp_path):
    with pytest.raises(ValueError, match="Blackjack-v1 has no transition model"):
        train("value_iteration", tmp_path, env_id="Blackjack-v1")
    assert not any(tmp_path.iterdir()) or not any(p.iterdir() for p in tmp_path.iterdir())


def test_policy_iteration_that_would_loop_for_ever_undiscounted_is_stopped_as_diverged(tmp_path):
    # Undiscounted, with the equiprobable policy evaluated only roughly (theta 10): the greedy policy then walks into
    # a wall in 10 states and stays there, so its iterative evaluation would never converge.
    with pytest.raises(FloatingPointError, match="never ends its episodes from 10 states"):
        train("policy_iteration", tmp_path, env_id="CliffWalking-v1", gamma=1.0, theta=10.0)
    # Evaluated to theta 0.1 the same method finds the optimal path.
    _, _, result = train("policy_iteration", tmp_path, env_id="CliffWalking-v1", gamma=1.0, theta=0.1, eval_episodes=1)
    assert result.final_eval_return == -13.0


# --- Monte Carlo and TD prediction on the random walk ------------------------------------------------------------
@pytest.mark.parametrize(
    "algo, overrides",
    [
        ("td0", {"step_size": 1.0, "step_size_decay": 0.7}),
        ("mc_prediction", {"step_size": 1.0, "step_size_decay": 1.0, "first_visit": True}),
    ],
)
def test_td0_and_monte_carlo_approach_the_random_walks_true_values(tmp_path, algo, overrides):
    """About 2,000 episodes each; the largest error over 10 seeds was 0.026 when calibrated."""
    truth = np.arange(1, 6) / 6
    for seed in range(1, 6):
        state, logger, _ = train(
            algo, tmp_path, env_id=RANDOM_WALK, seed=seed, total_timesteps=20_000, eval_every=5_000, **overrides
        )
        assert np.abs(state["values"]["values"][1:6, 0] - truth).max() < 0.05, seed
        assert logged(logger, "eval/value_rmse")[-1] < 0.03


# --- control ---------------------------------------------------------------------------------------------------
def test_q_learning_reaches_q_star_exactly_on_a_deterministic_mdp(tmp_path):
    """alpha = 1 on deterministic transitions: each update is an exact asynchronous value-iteration backup."""
    model = transition_model(GRIDWORLD_4X4)
    q_star = q_from_v(model, optimal_value(model, 1.0), 1.0)
    for seed in (1, 2):
        state, _, _ = train(
            "q_learning", tmp_path, env_id=GRIDWORLD_4X4, seed=seed, step_size=1.0, epsilon=0.5, total_timesteps=20_000
        )
        assert np.abs(state["values"]["values"] - q_star)[model.live].max() < 1e-9


@pytest.mark.parametrize(
    "algo, overrides, tolerance",
    [("expected_sarsa", {"step_size": 1.0}, 1e-9), ("sarsa", {"step_size": 1.0, "step_size_decay": 0.8}, 0.15)],
)
def test_sarsa_and_expected_sarsa_reach_the_values_of_their_epsilon_greedy_policy(tmp_path, algo, overrides, tolerance):
    """SARSA's target samples A', so it gets there only as its step sizes fall (calibrated: within 0.09 on 3 seeds);
    Expected SARSA with alpha = 1 on deterministic transitions backs up exactly. Q^pi and Q* differ by far more."""
    gamma, epsilon, model = 0.9, 0.2, transition_model(GRIDWORLD_4X4)
    for seed in (1, 2):
        state, _, _ = train(
            algo, tmp_path, env_id=GRIDWORLD_4X4, gamma=gamma, seed=seed, epsilon=epsilon, total_timesteps=100_000, **overrides
        )
        q = state["values"]["values"]
        pi = np.full(q.shape, epsilon / model.num_actions)
        pi[np.arange(len(q)), q.argmax(1)] += 1 - epsilon
        q_pi = q_from_v(model, policy_value(model, pi, gamma), gamma)
        assert np.abs(q - q_pi)[model.live].max() < tolerance, seed
        q_star = q_from_v(model, optimal_value(model, gamma), gamma)
        assert np.abs(q_pi - q_star)[model.live].max() > 2 * tolerance


def test_on_the_cliff_q_learning_finds_the_13_step_path_and_sarsa_earns_more_while_learning(tmp_path):
    """Sutton & Barto Example 6.6 (Figure 6.4): epsilon 0.1, alpha 0.5, 500 episodes. Q-learning learns the optimal
    path along the cliff (greedy return -13) but, exploring, falls off it; SARSA learns the safer path and earns more
    per episode online. Over 8 seeds each, episodes 100-500 (calibrated on 20 seeds: Q-learning -60 to -42, SARSA
    -40 to -24, SARSA ahead on every seed, by 22 on average; the book's curves: about -50 and -25)."""
    online = {}
    for algo in ("q_learning", "sarsa"):
        means = []
        for seed in range(1, 9):
            _, logger, result = train(
                algo, tmp_path, env_id="CliffWalking-v1", seed=seed, total_episodes=500, eval_every=0, eval_episodes=1
            )
            returns = logged(logger, "charts/episodic_return")
            assert len(returns) == 500
            means.append(np.mean(returns[100:]))
            if algo == "q_learning":
                assert result.final_eval_return == -13.0, seed
        online[algo] = np.array(means)
    assert online["sarsa"].mean() > online["q_learning"].mean() + 10, online
    assert (online["sarsa"] > online["q_learning"]).mean() >= 0.75, online


def test_monte_carlo_control_with_exploring_starts_finds_the_gridworlds_shortest_paths(tmp_path):
    model = transition_model(GRIDWORLD_4X4)
    state, _, result = train("mc_control", tmp_path, env_id=GRIDWORLD_4X4, exploring_starts=True, total_timesteps=50_000)
    greedy = state["values"]["values"].argmax(1)
    exact = policy_value(model, np.eye(model.num_actions)[greedy], 1.0)
    assert np.abs(exact - optimal_value(model, 1.0))[model.live].max() < 1e-9
    assert result.final_eval_return > -3.0  # about -2 steps from a uniform start


def test_exploring_starts_are_refused_where_the_env_cannot_start_anywhere(tmp_path):
    with pytest.raises(ValueError, match="exploring_starts needs an env that can start in any state; Blackjack-v1"):
        train("mc_control", tmp_path, env_id="Blackjack-v1", exploring_starts=True)


def test_blackjack_mc_control_beats_the_equiprobable_policy(tmp_path):
    """Blackjack's (player sum, dealer card, usable ace) tuple is one state index; MC control with sample averages
    learns a policy that loses far less than random play (about -0.4 per game): -0.18 to -0.01 over 8 seeds when
    calibrated, and 1,000 evaluation games have a standard error of about 0.03."""
    _, logger, result = train("mc_control", tmp_path, env_id="Blackjack-v1", total_timesteps=60_000, eval_episodes=1000)
    assert result.final_eval_return > -0.28
    assert "eval/value_rmse" not in {k for _, m in logger.records for k in m}  # no model, no exact values


def test_the_equiprobable_policy_values_match_the_book_random_walk():
    model = transition_model(RANDOM_WALK)
    values = policy_value(model, uniform_policy(model), 1.0)
    assert np.allclose(values, [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 0])
    assert model.live.tolist() == [False, True, True, True, True, True, False]


def test_blackjacks_tuple_observation_is_one_state_index_in_the_vector_env():
    from envs import make_vec_env

    envs, obs = make_vec_env("Blackjack-v1", 1, seed=3)
    raw = envs.envs[0].unwrapped._get_obs()  # (player sum 4-31, dealer card 1-10, usable ace 0/1)
    assert envs.single_observation_space.n == 32 * 11 * 2
    assert obs[0] == (raw[0] * 11 + raw[1]) * 2 + raw[2]
    envs.close()


def test_the_books_worlds_render_their_grid_for_videos():
    import gymnasium as gym

    from envs import check_rendering

    env = gym.make(GRIDWORLD_4X4, render_mode="rgb_array")
    state, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    row, col = divmod(state, 4)
    assert frame[row * 32 + 16, col * 32 + 16].tolist() == [200, 40, 40]  # the agent
    assert frame[16, 16].tolist() == [90, 90, 90]  # terminal corner
    check_rendering(RANDOM_WALK)  # raises RenderingUnavailable if a frame cannot be made and encoded
