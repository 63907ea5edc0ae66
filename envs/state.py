"""Capture and restore the full state of one gymnasium env, for exact resume.

Pickling a gymnasium env does not keep its state (EzPickle rebuilds it from constructor arguments), so
we copy what the simulation depends on: MuJoCo's `MjData`, an Atari game's own capture (`envs.atari.AtariGame`:
emulator with its RNG, no-op draws, frames, counters), the MinAtar game object, the env's own attributes
(classic-control `state`, counters) with its RNG, and the bookkeeping of wrappers (TimeLimit's step counter).
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

# Attributes that are rendering handles, static descriptions, or handled separately below.
_SKIP = {
    "model",
    "data",
    "mujoco_renderer",
    "viewer",
    "screen",
    "clock",
    "render_mode",
    "spec",
    "metadata",
    "action_space",
    "observation_space",
    "_action_space",
    "_observation_space",
    "_np_random",
    "np_random",
}
_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic, list, tuple)
# Wrapper attributes that describe the wrapper rather than its state.
_WRAPPER_SKIP = {"env", "_saved_kwargs", "_cached_spec", "_metadata", "_action_space", "_observation_space"}


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def get_env_state(env: gym.Env) -> dict[str, Any]:
    base = env.unwrapped
    own_capture = hasattr(base, "capture_state")  # envs.atari.AtariGame: emulator, no-op RNG, frames, counters
    state: dict[str, Any] = {
        "attrs": {}
        if own_capture
        else {k: copy.deepcopy(v) for k, v in vars(base).items() if k not in _SKIP and isinstance(v, _PLAIN)},
        "np_random": base.np_random.bit_generator.state if base._np_random is not None else None,
        "wrappers": [
            {k: copy.deepcopy(v) for k, v in vars(w).items() if k not in _WRAPPER_SKIP and isinstance(v, (*_PLAIN, deque))}
            for w in _wrapper_chain(env)
        ],
    }
    if hasattr(base, "data") and type(base.data).__name__ == "MjData":
        state["mjdata"] = copy.copy(base.data)
    if own_capture:
        state["game"] = base.capture_state()
    if type(getattr(base, "game", None)).__module__.startswith("minatar"):
        state["minatar_game"] = copy.deepcopy(base.game)
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    base = env.unwrapped
    for key, value in state["attrs"].items():
        setattr(base, key, copy.deepcopy(value))
    if state["np_random"] is not None:
        base.np_random.bit_generator.state = state["np_random"]
    chain = _wrapper_chain(env)
    if len(chain) != len(state["wrappers"]):
        raise ValueError("env state was captured from a different wrapper stack")
    for wrapper, attrs in zip(chain, state["wrappers"]):
        for key, value in attrs.items():
            setattr(wrapper, key, copy.deepcopy(value))
    if "game" in state:
        base.restore_state(state["game"])
    if "minatar_game" in state:
        base.game = copy.deepcopy(state["minatar_game"])
    if "mjdata" in state:
        import mujoco

        mujoco.mj_copyData(base.data, base.model, state["mjdata"])
