"""Atari preprocessing and protocols on the real ALE: observation shape and dtype, frame-stack order, max-pooling
against a frame-by-frame replay, no-op starts, reward clipping in training only, life loss per protocol, the
unclipped whole-game score, and the C++ vector path against the Python path."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

from envs import make_vec_env
from envs.atari import PROTOCOLS, make_atari_env

pytestmark = pytest.mark.atari


def play(env: gym.Env, actions: np.ndarray, seed: int):
    """Reset with `seed` and step through `actions` (stopping at the first episode end); yields each step."""
    obs, _ = env.reset(seed=seed)
    for action in actions:
        next_obs, reward, terminated, truncated, info = env.step(int(action))
        yield obs, next_obs, reward, terminated, truncated, info
        if terminated or truncated:
            return
        obs = next_obs


def test_observations_are_uint8_stacks_of_four_84x84_frames_oldest_first():
    env = make_atari_env("BreakoutNoFrameskip-v4")
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 50)
    steps = list(play(env, actions, seed=1))
    assert steps and env.observation_space.shape == (4, 84, 84)
    for obs, next_obs, *_ in steps:
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        np.testing.assert_array_equal(next_obs[:-1], obs[1:])  # shifted by one, newest last
    env.close()


def test_newest_frame_is_the_max_of_the_last_two_frames_of_the_skip_resized():
    """Replay the same seed frame by frame on the bare ALE env (machado2018 has no no-op starts; sticky actions
    switched off on both)."""
    import ale_py

    gym.register_envs(ale_py)
    env = make_atari_env("ALE/SpaceInvaders-v5", protocol="machado2018", training=False, repeat_action_probability=0.0)
    bare = gym.make("ALE/SpaceInvaders-v5", frameskip=1, repeat_action_probability=0.0, disable_env_checker=True)
    actions = np.random.default_rng(2).integers(0, env.action_space.n, 40)
    env.reset(seed=3)
    bare.reset(seed=3)
    ale = bare.unwrapped.ale
    for action in actions:
        obs, *_ = env.step(int(action))
        screens = []
        for _ in range(4):
            bare.step(int(action))
            screens.append(ale.getScreenGrayscale())
        pooled = np.maximum(screens[-2], screens[-1])
        expected = cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(obs[-1], expected)
    env.close()
    bare.close()


def test_noop_starts_vary_the_first_frame_number_by_seed():
    env = make_atari_env("PongNoFrameskip-v4", training=False)
    frames = set()
    for seed in range(8):
        env.reset(seed=seed)
        frames.add(env.ale.getEpisodeFrameNumber())
    # dqn-nature: FIRE (Pong has it) for one frame, then 0-29 single-frame no-ops in all: a spread of start frames.
    assert len(frames) >= 4 and min(frames) >= 1 and max(frames) <= 30
    env.close()


def test_rewards_are_clipped_in_training_only_and_the_game_score_is_unclipped():
    """Same seed, same actions: the training env's rewards are the signs of the evaluation env's."""
    actions = np.random.default_rng(4).integers(0, 6, 600)
    train = list(
        play(make_atari_env("ALE/SpaceInvaders-v5", protocol="machado2018", repeat_action_probability=0.0), actions, seed=5)
    )
    evaluation = list(
        play(
            make_atari_env("ALE/SpaceInvaders-v5", protocol="machado2018", training=False, repeat_action_probability=0.0),
            actions,
            seed=5,
        )
    )
    raw = np.array([step[2] for step in evaluation])
    clipped = np.array([step[2] for step in train])
    assert len(raw) == len(clipped) and raw.max() > 1  # SpaceInvaders scores 5-30 per alien
    np.testing.assert_array_equal(clipped, np.sign(raw))


def test_life_loss_ends_training_episodes_under_dqn_nature_only():
    actions = np.random.default_rng(6).integers(0, 4, 3000)
    env = make_atari_env("ALE/Breakout-v5", protocol="dqn-nature")
    steps = list(play(env, actions, seed=7))
    lives = env.ale.lives()
    assert steps[-1][3] and "episode_return" not in steps[-1][5] and lives == 4  # one life lost: the game goes on
    obs, _ = env.reset()  # continues the same game: no new game, no no-op, the same frames
    assert env.ale.lives() == 4 and np.array_equal(obs, steps[-1][1])

    for protocol, training in (("dqn-nature", False), ("machado2018", True)):
        env = make_atari_env("ALE/Breakout-v5", protocol=protocol, training=training, repeat_action_probability=0.0)
        steps = list(play(env, actions, seed=7))
        assert steps[-1][3] or steps[-1][4]
        score = steps[-1][5]["episode_return"]  # a whole game: all five lives
        assert env.ale.lives() == 0 and env.ale.getEpisodeFrameNumber() > 4 * (len(steps) - 1)  # the last skip may stop early
        rewards = sum(step[2] for step in steps)
        assert score == rewards if not training else score >= rewards  # Breakout's raw rewards are 1, 4 or 7


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="machado2018"):
        make_atari_env("ALE/Pong-v5", protocol="nature")
    assert set(PROTOCOLS) == {"dqn-nature", "machado2018"}


def test_the_id_picks_the_protocol():
    """NoFrameskip-v4 ids: dqn-nature (life loss in training, no sticky actions); -v5 ids: machado2018 (sticky
    actions, whole games); an explicit protocol wins."""
    from envs.atari import default_protocol

    assert default_protocol("PongNoFrameskip-v4") == "dqn-nature" and default_protocol("ALE/Pong-v5") == "machado2018"
    for env_id, protocol, life_loss, sticky in (
        ("BreakoutNoFrameskip-v4", None, True, 0.0),
        ("ALE/Breakout-v5", None, False, 0.25),
        ("ALE/Breakout-v5", "dqn-nature", True, 0.0),
    ):
        env = make_atari_env(env_id, protocol=protocol)
        assert env.settings.life_loss == life_loss, env_id
        assert env.ale.getFloat("repeat_action_probability") == pytest.approx(sticky), env_id
        env.close()


def _play_vector(backend: str, env_id: str, num_envs: int, steps: int, monkeypatch, evaluation: bool = False) -> list:
    monkeypatch.setenv("RLGRID_ATARI_BACKEND", backend)
    envs, obs = make_vec_env(env_id, num_envs, seed=3)
    assert type(envs).__name__ == ("AtariVecEnv" if backend == "vector" else "AtariPythonVecEnv")
    if evaluation:
        train, envs = envs, envs.frozen_copy(num_envs)
        train.close()
        obs = envs.reset(seed=3)
    actions = np.random.default_rng(0).integers(0, envs.single_action_space.n, (steps, num_envs))
    record = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = envs.step(action)
        record.append((obs, reward, terminated, truncated, info["final_obs"], info["episodes"]))
    envs.close()
    return record


@pytest.mark.parametrize(
    "env_id, steps, evaluation, min_games",
    [
        ("BreakoutNoFrameskip-v4", 1500, False, 20),  # dqn-nature: no-op starts, FIRE, lives lost, clipped rewards
        ("ALE/Pong-v5", 1500, False, 4),  # machado2018: sticky actions (the emulator's RNG)
        ("SpaceInvadersNoFrameskip-v4", 900, True, 2),  # an evaluation copy: unclipped rewards (5-30), no life loss
    ],
)
def test_vector_path_equals_python_path(env_id, steps, evaluation, min_games, monkeypatch):
    """ale-py's C++ AtariVectorEnv and AtariGame, same seeds and actions: every observation, reward, termination,
    truncation, true final observation and reported game, step by step, through episode and game ends."""
    fast = _play_vector("vector", env_id, 4, steps, monkeypatch, evaluation)
    python = _play_vector("python", env_id, 4, steps, monkeypatch, evaluation)
    np.testing.assert_array_equal(fast[0], python[0])
    ends, games = 0, 0
    for t, (a, b) in enumerate(zip(fast[1:], python[1:])):
        for name, x, y in zip(("obs", "reward", "terminated", "truncated", "final_obs"), a, b):
            np.testing.assert_array_equal(x, y, err_msg=f"{name} differs at step {t}")
        assert a[5] == b[5], f"games reported differ at step {t}"
        ends, games = ends + int(a[2].sum() + a[3].sum()), games + len(a[5])
    assert games >= min_games and ends >= games  # the comparison went through whole games (and lives lost)
    rewards = np.concatenate([step[1] for step in fast[1:]])
    assert (rewards.max() > 1) == evaluation  # clipped in training only


@pytest.mark.parametrize(
    "algo, settings",
    [
        (
            "dqn",
            {
                "total_timesteps": 1200,
                "learning_starts": 400,
                "buffer_size": 1000,
                "batch_size": 32,
                "train_frequency": 4,
                "target_network_frequency": 200,
            },
        ),
        (
            "ppo",
            {
                "total_timesteps": 1024,
                "num_envs": 8,
                "num_steps": 64,
                "num_minibatches": 4,
                "update_epochs": 1,
                "normalize_obs": False,
                "normalize_reward": False,
            },
        ),
    ],
)
def test_image_agents_train_and_evaluate_on_the_fast_path(algo, settings, monkeypatch):
    """DQN (one env copy, frame replay) and PPO (8 copies) through the C++ vector env, with an evaluation of whole
    games (capped here by a short run: evaluation plays each game to its end, so a random Pong agent's score)."""
    import importlib

    from algorithms.common import RecordingLogger

    monkeypatch.setenv("RLGRID_ATARI_BACKEND", "vector")
    module = importlib.import_module(f"algorithms.{algo}")
    logger = RecordingLogger()
    result = module.train(
        module.Config(env_id="PongNoFrameskip-v4", seed=1, eval_every=0, eval_episodes=2, **settings), logger
    )
    ((step, score),) = logger.series("eval/episodic_return")
    ((_, spread),) = logger.series("eval/episodic_return_std")
    assert step == settings["total_timesteps"]
    # Two whole games: a game of Pong ends when one side has 21 points, so its score is an integer in [-21, -1] or
    # [1, 21] (a game cut short could score anything, 0 included); mean +- std (ddof=0) of two values are the values.
    games = [score - spread, score + spread]
    assert all(game == round(game) and 1 <= abs(game) <= 21 for game in games), games
    assert result.global_step == step and result.final_eval_return == score and result.eval_returns == [(step, score)]
    losses = [v for _, m in logger.records for k, v in m.items() if k.startswith("losses/") and "explained" not in k]
    assert losses and all(np.isfinite(losses)), "the agent trained on the frames"
