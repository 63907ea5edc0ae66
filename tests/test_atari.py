"""Atari preprocessing and protocols on the real ALE: observation shape and dtype, frame-stack order, max-pooling
against a frame-by-frame replay, no-op starts, reward clipping in training only, life loss per protocol, and the
unclipped whole-game score."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

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
        frames.add(env.unwrapped.ale.getEpisodeFrameNumber())
    # dqn-nature: 1-30 no-ops of 4 frames each, then FIRE and action 2 (Pong has FIRE): a spread of start frames.
    assert len(frames) >= 4 and max(frames) <= 4 * (30 + 2)
    env.close()


def test_rewards_are_clipped_in_training_only_and_the_game_score_is_unclipped():
    """Same seed, same actions: the training env's rewards are the signs of the evaluation env's."""
    actions = np.random.default_rng(4).integers(0, 6, 600)
    train = list(play(make_atari_env("ALE/SpaceInvaders-v5", protocol="machado2018", repeat_action_probability=0.0),
                      actions, seed=5))  # fmt: skip
    evaluation = list(play(make_atari_env("ALE/SpaceInvaders-v5", protocol="machado2018", training=False,
                                          repeat_action_probability=0.0), actions, seed=5))  # fmt: skip
    raw = np.array([step[2] for step in evaluation])
    clipped = np.array([step[2] for step in train])
    assert len(raw) == len(clipped) and raw.max() > 1  # SpaceInvaders scores 5-30 per alien
    np.testing.assert_array_equal(clipped, np.sign(raw))


def test_life_loss_ends_training_episodes_under_dqn_nature_only():
    actions = np.random.default_rng(6).integers(0, 4, 3000)
    env = make_atari_env("ALE/Breakout-v5", protocol="dqn-nature")
    steps = list(play(env, actions, seed=7))
    lives = env.unwrapped.ale.lives()
    assert steps[-1][3] and "game_end" not in steps[-1][5] and lives == 4  # one life lost: the game goes on
    obs, _ = env.reset()  # continues the same game (no new game, no no-ops): still 4 lives
    assert env.unwrapped.ale.lives() == 4

    for protocol, training in (("dqn-nature", False), ("machado2018", True)):
        env = make_atari_env("ALE/Breakout-v5", protocol=protocol, training=training, repeat_action_probability=0.0)
        steps = list(play(env, actions, seed=7))
        assert steps[-1][3] or steps[-1][4]
        score, frames = steps[-1][5]["game_end"]  # a whole game: all five lives
        assert env.unwrapped.ale.lives() == 0 and frames > 4 * (len(steps) - 1)  # the last skip may stop early
        rewards = sum(step[2] for step in steps)
        assert score == rewards if not training else score >= rewards  # Breakout's raw rewards are 1, 4 or 7


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="machado2018"):
        make_atari_env("ALE/Pong-v5", protocol="nature")
    assert set(PROTOCOLS) == {"dqn-nature", "machado2018"}


def test_the_id_picks_the_protocol():
    """NoFrameskip-v4 ids: dqn-nature (life loss in training, no sticky actions); -v5 ids: machado2018 (sticky
    actions, whole games); an explicit protocol wins."""
    from envs.atari import EpisodicLife, default_protocol

    assert default_protocol("PongNoFrameskip-v4") == "dqn-nature" and default_protocol("ALE/Pong-v5") == "machado2018"

    def wrappers(env):
        found = []
        while hasattr(env, "env"):
            found.append(type(env))
            env = env.env
        return found, env.unwrapped.ale.getFloat("repeat_action_probability")

    for env_id, protocol, life_loss, sticky in (("BreakoutNoFrameskip-v4", None, True, 0.0),
                                                 ("ALE/Breakout-v5", None, False, 0.25),
                                                 ("ALE/Breakout-v5", "dqn-nature", True, 0.0)):  # fmt: skip
        env = make_atari_env(env_id, protocol=protocol)
        found, repeat = wrappers(env)
        assert (EpisodicLife in found) == life_loss and repeat == pytest.approx(sticky), env_id
        env.close()
