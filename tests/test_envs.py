"""Environments: SAME_STEP semantics, truncation vs termination, seeding, state capture, evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import evaluate, make_vec_env, validate_env_id
from envs.state import get_env_state, set_env_state


def _random_actions(space: gym.Space, n: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize(
    "env_id",
    ["CartPole-v1", "Pendulum-v1", "rlgrid-test/Count-v0", pytest.param("MinAtar/Breakout-v1", marks=pytest.mark.minatar)],
)
def test_matches_gymnasium_same_step_vector_env(env_id):
    """Our vector env without normalisation equals gymnasium's SyncVectorEnv in SAME_STEP mode."""
    num_envs = 3
    ours, obs = make_vec_env(env_id, num_envs, seed=7, clip_actions=False)
    ref = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    ref_obs, _ = ref.reset(seed=[7 + i for i in range(num_envs)])
    np.testing.assert_array_equal(obs, ref_obs)
    ended = 0
    for action in _random_actions(ref.action_space, 300, seed=1):
        obs, reward, terminated, truncated, info = ours.step(action)
        ref_obs, ref_reward, ref_terminated, ref_truncated, ref_info = ref.step(action)
        np.testing.assert_allclose(obs, ref_obs, rtol=1e-6)
        np.testing.assert_allclose(reward, ref_reward, rtol=1e-6)
        np.testing.assert_array_equal(terminated, ref_terminated)
        np.testing.assert_array_equal(truncated, ref_truncated)
        for i in np.flatnonzero(terminated | truncated):
            ended += 1
            np.testing.assert_allclose(info["final_obs"][i], ref_info["final_obs"][i], rtol=1e-6)
        not_ended = ~(terminated | truncated)
        np.testing.assert_array_equal(info["final_obs"][not_ended], obs[not_ended])
    assert ended > 0
    ours.close()
    ref.close()


def test_truncation_keeps_true_final_observation_and_is_not_termination():
    truncating, _ = make_vec_env("rlgrid-test/Count-v0", 1, seed=0)  # TimeLimit 3
    terminating, _ = make_vec_env("rlgrid-test/Count-v0", 1, seed=0, env_kwargs={"terminate_at": 3, "max_episode_steps": 10})
    for envs, term, trunc in ((truncating, False, True), (terminating, True, False)):
        for _ in range(2):
            envs.step(np.zeros(1, np.int64))
        obs, reward, terminated, truncated, info = envs.step(np.zeros(1, np.int64))
        assert (terminated[0], truncated[0]) == (term, trunc)
        assert obs[0, 0] == 0.0, "the returned observation starts the next episode"
        assert info["final_obs"][0, 0] == 3.0, "final_obs is the observation the step led to"
        assert info["episodes"] == [(0, 3.0, 3)]


def test_seeding_is_reproducible_and_per_copy():
    a, obs_a = make_vec_env("CartPole-v1", 2, seed=5)
    b, obs_b = make_vec_env("CartPole-v1", 2, seed=5)
    c, obs_c = make_vec_env("CartPole-v1", 2, seed=6)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(obs_a[0], obs_a[1]), "copies must get different seeds"
    assert not np.array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(obs_c[0], obs_a[1]), "copy i is seeded seed + i"


def test_observation_and_reward_normalisation():
    """A normalised observation is the raw one (a twin env without normalisation, same seed and actions) standardised by
    the running mean and variance of every raw observation so far, itself included, then clipped to +-10."""
    envs, first = make_vec_env("Pendulum-v1", 2, seed=0, normalize_obs=True, normalize_reward=True)
    raw, raw_first = make_vec_env("Pendulum-v1", 2, seed=0)
    seen, normalised, rewards, raw_rewards = [raw_first], [first], [], []
    for action in _random_actions(gym.spaces.Box(-2, 2, (2, 1)), 2000, seed=0):
        obs, reward, *_ = envs.step(action)
        raw_obs, raw_reward, *_ = raw.step(action)
        seen.append(raw_obs)
        normalised.append(obs)
        rewards.append(reward)
        raw_rewards.append(raw_reward)
        expected = np.clip((raw_obs - envs.obs_rms.mean) / np.sqrt(envs.obs_rms.var + 1e-8), -10.0, 10.0)
        np.testing.assert_allclose(obs, expected, rtol=1e-5, atol=1e-6)
    seen = np.concatenate(seen)
    assert envs.obs_rms.count == pytest.approx(len(seen), abs=1e-3)
    np.testing.assert_allclose(envs.obs_rms.mean, seen.mean(axis=0), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(envs.obs_rms.var, seen.var(axis=0), rtol=1e-3)

    def standardised(x: np.ndarray) -> bool:
        return bool(np.all(np.abs(x.mean(axis=0)) < 0.5) and np.all(np.abs(x.std(axis=0) - 1.0) < 0.3))

    # Once the statistics have settled (second half) the observations are standardised; raw Pendulum ones are not
    # (cos hangs near -1 with a small spread, the angular velocity spans +-8).
    assert standardised(np.concatenate(normalised[1000:])) and not standardised(seen[2000:])
    # Reward scaling divides by the std of the discounted return: same sign, much smaller scale.
    rewards, raw_rewards = np.array(rewards), np.array(raw_rewards)
    assert np.all(np.sign(rewards) == np.sign(raw_rewards))
    assert np.abs(rewards).mean() < 0.2 * np.abs(raw_rewards).mean()


@pytest.mark.parametrize("env_id", ["CartPole-v1", pytest.param("Hopper-v5", marks=pytest.mark.mujoco)])
def test_state_capture_restores_mid_episode_exactly(env_id):
    pytest.importorskip("mujoco") if env_id.startswith("Hopper") else None
    envs, _ = make_vec_env(env_id, 2, seed=3, normalize_obs=True, normalize_reward=True)
    actions = _random_actions(gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * 2).action_space, 400, seed=2)
    for action in actions[:150]:
        envs.step(action)
    state = envs.state_dict()
    expected = [envs.step(a) for a in actions[150:]]
    twin, _ = make_vec_env(env_id, 2, seed=999, normalize_obs=True, normalize_reward=True)
    twin.load_state_dict(state)
    for a, (obs, reward, terminated, truncated, info) in zip(actions[150:], expected):
        obs2, reward2, terminated2, truncated2, info2 = twin.step(a)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(reward, reward2)
        np.testing.assert_array_equal(terminated | truncated, terminated2 | truncated2)
        assert info["episodes"] == info2["episodes"]


def test_env_state_roundtrip_single_env():
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    for _ in range(5):
        env.step(1)
    state = get_env_state(env)
    after = env.step(0)[0]
    other = gym.make("CartPole-v1")
    other.reset(seed=123)
    set_env_state(other, state)
    np.testing.assert_array_equal(other.step(0)[0], after)


def test_evaluate_uses_frozen_training_statistics_and_raw_returns():
    envs, _ = make_vec_env("CartPole-v1", 1, seed=0, normalize_obs=True, normalize_reward=True)
    for _ in range(200):
        envs.step(np.array([1]))
    mean_before = envs.obs_rms.mean.copy()
    seen = []

    def policy(obs):
        seen.append(obs.copy())
        return np.zeros(len(obs), np.int64)

    returns = evaluate(envs, policy, episodes=3, seed=10)
    assert returns.shape == (3,)
    # Always pushing left ends CartPole in about 10 steps; a raw return is the episode length (reward 1/step).
    assert np.all((returns >= 8) & (returns <= 12)) and np.all(returns == np.round(returns))
    np.testing.assert_array_equal(envs.obs_rms.mean, mean_before)
    # The first observation the policy saw was normalised with the training statistics.
    raw_first, _ = gym.make("CartPole-v1").reset(seed=10)
    expected = np.clip((raw_first - mean_before) / np.sqrt(envs.obs_rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(seen[0][0], expected, rtol=1e-5)
    assert np.array_equal(returns, evaluate(envs, policy, episodes=3, seed=10)), "evaluation is reproducible"


def test_validate_env_id_suggests_close_ids():
    with pytest.raises(ValueError, match="CartPole-v1"):
        validate_env_id("CartPol-v1")
    validate_env_id("CartPole-v1")


@pytest.mark.minatar
def test_minatar_ids_register_on_first_use():
    """MinAtar's five games, by the ids of its gym module, with their family and observation shape (10, 10, C)."""
    from envs import env_family

    for game, channels in (("Asterix", 4), ("Breakout", 4), ("Freeway", 7), ("Seaquest", 10), ("SpaceInvaders", 6)):
        env_id = f"MinAtar/{game}-v1"
        validate_env_id(env_id)
        assert env_family(env_id) == "minatar"
        envs, obs = make_vec_env(env_id, 2, seed=0)
        assert obs.shape == (2, 10, 10, channels) and obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
        envs.close()


@pytest.mark.parametrize(
    "env_id",
    [
        pytest.param("BreakoutNoFrameskip-v4", marks=pytest.mark.atari),
        pytest.param("ALE/Breakout-v5", marks=pytest.mark.atari),
        pytest.param("MinAtar/Breakout-v1", marks=pytest.mark.minatar),
    ],
)
def test_state_capture_restores_games_exactly(env_id, monkeypatch):
    """Emulator (with its RNG: sticky actions under -v5's machado2018), no-op draws, frame stack, life counter and
    game score of Atari on its Python path (life loss under NoFrameskip-v4's dqn-nature); MinAtar's game object."""
    monkeypatch.setenv("RLGRID_ATARI_BACKEND", "python")
    envs, _ = make_vec_env(env_id, 2, seed=3)
    actions = np.random.default_rng(2).integers(0, envs.single_action_space.n, (700, 2))
    for action in actions[:300]:
        envs.step(action)
    state = envs.state_dict()
    expected = [envs.step(a) for a in actions[300:]]
    twin, _ = make_vec_env(env_id, 2, seed=999)
    twin.load_state_dict(state)
    ended = 0
    for a, (obs, reward, terminated, truncated, info) in zip(actions[300:], expected):
        obs2, reward2, terminated2, truncated2, info2 = twin.step(a)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(reward, reward2)
        np.testing.assert_array_equal(terminated | truncated, terminated2 | truncated2)
        assert info["episodes"] == info2["episodes"]
        ended += int((terminated | truncated).sum())
    assert ended > 0  # the comparison went through episode ends (and, for Atari, lives lost)


@pytest.mark.atari
def test_atari_vector_env_keeps_frames_and_reports_whole_games():
    """uint8 frames; in training a lost life ends the learner's episode and rewards are clipped, but the episodes
    reported (and evaluated) are whole games."""
    envs, obs = make_vec_env("BreakoutNoFrameskip-v4", 2, seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    learner_episode_ends, games = 0, []
    for _ in range(2500):
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 2))
        assert obs.dtype == np.uint8 and set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        learner_episode_ends += int((terminated | truncated).sum())
        games += info["episodes"]
    assert games and learner_episode_ends >= 5 * len(games)  # Breakout: five lives per game
    returns = evaluate(envs, lambda o: np.ones(len(o), np.int64), episodes=2, seed=0)  # always FIRE
    assert returns.shape == (2,) and np.all(returns >= 0)
    normalized, first = make_vec_env("BreakoutNoFrameskip-v4", 1, seed=0, normalize_obs=True)
    plain, plain_first = make_vec_env("BreakoutNoFrameskip-v4", 1, seed=0)
    assert normalized.obs_rms is None and np.array_equal(first, plain_first)  # frames are left to the CNN's scaling
    normalized.close(), plain.close()


@pytest.mark.atari
def test_atari_fast_path_resumes_with_fresh_games(monkeypatch):
    """The C++ vector env cannot save its games: a restored one keeps the statistics and starts new games (seeded
    from the run's seed and step count, so not the run's first games) whose first observation is what to act on."""
    monkeypatch.setenv("RLGRID_ATARI_BACKEND", "vector")
    envs, first = make_vec_env("BreakoutNoFrameskip-v4", 2, seed=3)
    for action in np.random.default_rng(0).integers(0, 4, (200, 2)):
        envs.step(action)
    state = envs.state_dict()
    assert "envs" not in state and state["atari_vector"]["steps"] == 200
    twin, _ = make_vec_env("BreakoutNoFrameskip-v4", 2, seed=3)
    twin.load_state_dict(state)
    resumed = twin.observation()
    assert resumed.shape == first.shape and not np.array_equal(resumed, envs.observation())
    assert np.count_nonzero(resumed[:, :-1]) == 0  # a new game's stack: zeros before its first frame
    obs, *_ = twin.step(np.ones(2, np.int64))
    np.testing.assert_array_equal(obs[:, -2], resumed[:, -1])
    monkeypatch.setenv("RLGRID_ATARI_BACKEND", "python")
    with pytest.raises(ValueError, match="RLGRID_ATARI_BACKEND=vector"):  # a fast-path checkpoint on the Python path
        make_vec_env("BreakoutNoFrameskip-v4", 2, seed=3)[0].load_state_dict(state)
