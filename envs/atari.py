"""Atari (ale-py) with the standard preprocessing and two named evaluation protocols.

Preprocessing (Mnih et al. 2015; Machado et al. 2018 section 5): up to 30 no-op actions at the start of a game,
the action repeated for 4 frames with the last two max-pooled (flicker), 84 x 84 grey frames, a stack of the
last 4 (uint8, shape (4, 84, 84), oldest first), and for training only: a lost life signalled as the end of an
episode (the game goes on: the next reset is a no-op step, as in OpenAI baselines' EpisodicLifeEnv), FIRE
pressed after each reset in games that need it, and rewards clipped to their sign. Every game is capped at
108,000 frames (30 minutes of play).

Protocols:
- `dqn-nature`: no sticky actions, minimal action set, no-op starts, life loss and fire reset in training:
  the `NoFrameskip-v4` setting behind most published tables (DQN, Double DQN, A2C, PPO, ACKTR papers).
- `machado2018`: sticky actions with probability 0.25 instead of no-op starts, whole games as episodes (no
  life-loss signal, no fire reset): the recommendation of Machado et al. (2018), gymnasium's `-v5` default.

The id picks the protocol unless `protocol=` is given: `<Game>NoFrameskip-v4` ids run `dqn-nature`, `ALE/<Game>-v5`
ids `machado2018` (`default_protocol`).

`info["game_end"] = (return, frames)` marks the step where a whole game ended, with its unclipped score:
episodes seen by the learner may be single lives with clipped rewards, and reported scores must not be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

MAX_FRAMES_PER_GAME = 108_000
FRAME_SKIP, SCREEN_SIZE, STACK = 4, 84, 4


@dataclass(frozen=True)
class AtariProtocol:
    repeat_action_probability: float
    noop_max: int
    episodic_life: bool  # (training only)
    fire_reset: bool


PROTOCOLS = {
    "dqn-nature": AtariProtocol(repeat_action_probability=0.0, noop_max=30, episodic_life=True, fire_reset=True),
    "machado2018": AtariProtocol(repeat_action_probability=0.25, noop_max=0, episodic_life=False, fire_reset=False),
}


class LastAction(gym.Wrapper):
    """Remembers the last action given to the emulator (innermost wrapper, so frame-skip repeats and no-ops count).
    With sticky actions the ALE repeats its previous action with probability p, and its saved state does not
    include that action: exact resume (`envs.state`) puts it back from here."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.last_action = 0  # NOOP: a reset game starts from it

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        self.last_action = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.last_action = int(action)
        return self.env.step(action)


class GameStatistics(gym.Wrapper):
    """Unclipped score and frame count of whole games, put in `info["game_end"]` when a game is over (below the
    life-loss and clipping wrappers, so neither changes what is reported)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.game_return = 0.0

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        self.game_return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_return += float(reward)
        if terminated or truncated:
            info = {**info, "game_end": (self.game_return, self.env.unwrapped.ale.getEpisodeFrameNumber())}
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """Training only: a lost life ends the learner's episode (terminated), but not the game; resetting after a
    lost life takes one no-op step instead of starting a new game."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op step itself ended the game
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE (then action 2, as baselines' FireResetEnv) after a reset, for games that wait for it."""

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                self.env.reset(**kwargs)
        return obs, info


class ClipReward(gym.RewardWrapper):
    """Training only: rewards clipped to their sign (Mnih et al. 2015), so one learning rate fits every game."""

    def reward(self, reward: float) -> float:
        return float(np.sign(reward))


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def default_protocol(env_id: str) -> str:
    """`machado2018` for gymnasium's `ALE/<Game>-v5` ids (sticky actions are their default), else `dqn-nature`."""
    return "machado2018" if env_id.endswith("-v5") else "dqn-nature"


def make_atari_env(env_id: str, protocol: str | None = None, training: bool = True, **kwargs: Any) -> gym.Env:
    """One preprocessed Atari env: observations uint8 (4, 84, 84). `protocol` defaults to the id's
    (`default_protocol`); `kwargs` go to the ALE env and override the protocol's settings there
    (e.g. `full_action_space=True`)."""
    protocol = protocol or default_protocol(env_id)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown Atari protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    import ale_py

    gym.register_envs(ale_py)
    p = PROTOCOLS[protocol]
    ale_kwargs = {"repeat_action_probability": p.repeat_action_probability, "full_action_space": False,
                  "max_num_frames_per_episode": MAX_FRAMES_PER_GAME, **kwargs}  # fmt: skip
    env = LastAction(gym.make(env_id, frameskip=1, disable_env_checker=True, **ale_kwargs))
    env = gym.wrappers.AtariPreprocessing(env, noop_max=p.noop_max, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                                          terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)  # fmt: skip
    env = GameStatistics(env)
    if training and p.episodic_life:
        env = EpisodicLife(env)
    if p.fire_reset and needs_fire(env):
        env = FireReset(env)
    if training:
        env = ClipReward(env)
    return gym.wrappers.FrameStackObservation(env, STACK)
