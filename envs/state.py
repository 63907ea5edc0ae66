"""Capture and restore the full state of one gymnasium env, for exact resume, as plain data.

Pickling a gymnasium env does not keep its state (EzPickle rebuilds it from constructor arguments), so
we copy what the simulation depends on: MuJoCo's integration state (`mj_getState`), an Atari game's own capture
(`envs.atari.AtariGame`: emulator with its RNG, no-op draws, frames, counters), the MinAtar game's attributes, the
env's own attributes (classic-control `state`, counters) with its RNG, and the bookkeeping of wrappers (TimeLimit's
step counter).

The result holds only numpy arrays, python scalars, strings, bytes and containers of them: checkpoints are read with
`torch.load(weights_only=True)` (`algorithms.common.checkpoint`), which refuses any other type.
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
_SCALARS = (bool, int, float, str, bytes, type(None), np.ndarray, np.generic)
# Wrapper attributes that describe the wrapper rather than its state.
_WRAPPER_SKIP = {"env", "_saved_kwargs", "_cached_spec", "_metadata", "_action_space", "_observation_space"}
_DEQUE, _RANDOM_STATE = "__deque__", "__random_state__"


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    return isinstance(value, _SCALARS)


def _plain_attrs(obj: Any, skip: set[str] = frozenset()) -> dict[str, Any]:
    """An object's attributes that are plain data (deques tagged, so they come back as deques)."""
    attrs: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if key in skip:
            continue
        if isinstance(value, deque) and _is_plain(list(value)):
            attrs[key] = {_DEQUE: copy.deepcopy(list(value)), "maxlen": value.maxlen}
        elif _is_plain(value):
            attrs[key] = copy.deepcopy(value)
    return attrs


def _set_plain_attrs(obj: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if isinstance(value, dict) and _DEQUE in value:
            value = deque(value[_DEQUE], maxlen=value["maxlen"])
        setattr(obj, key, copy.deepcopy(value))


def _object_tree(obj: Any) -> dict[str, Any]:
    """A MinAtar game (an `Environment` holding its game `Env`) as nested attribute dicts; numpy RandomStates as their
    `get_state()` tuples. Restored into the live objects by `_load_object_tree`."""
    tree: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if isinstance(value, np.random.RandomState):
            tree[key] = {_RANDOM_STATE: value.get_state()}
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("minatar"):
            tree[key] = _object_tree(value)
        elif _is_plain(value) or isinstance(value, dict):
            tree[key] = copy.deepcopy(value)
    return tree


def _load_object_tree(obj: Any, tree: dict[str, Any]) -> None:
    for key, value in tree.items():
        current = getattr(obj, key, None)
        if isinstance(value, dict) and _RANDOM_STATE in value:
            current.set_state(value[_RANDOM_STATE])
        elif isinstance(value, dict) and hasattr(current, "__dict__") and type(current).__module__.startswith("minatar"):
            _load_object_tree(current, value)
        else:
            setattr(obj, key, copy.deepcopy(value))


def get_env_state(env: gym.Env) -> dict[str, Any]:
    base = env.unwrapped
    own_capture = hasattr(base, "capture_state")  # envs.atari.AtariGame: emulator, no-op RNG, frames, counters
    state: dict[str, Any] = {
        "attrs": {} if own_capture else _plain_attrs(base, _SKIP),
        "np_random": base.np_random.bit_generator.state if base._np_random is not None else None,
        "wrappers": [_plain_attrs(w, _WRAPPER_SKIP) for w in _wrapper_chain(env)],
    }
    if hasattr(base, "data") and type(base.data).__name__ == "MjData":
        import mujoco

        # mjSTATE_INTEGRATION: everything mj_step reads (time, qpos, qvel, act, warm start, controls, mocap, ...).
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state["mjstate"] = np.empty(mujoco.mj_stateSize(base.model, spec), np.float64)
        mujoco.mj_getState(base.model, base.data, state["mjstate"], spec)
    if own_capture:
        state["game"] = base.capture_state()
    if type(getattr(base, "game", None)).__module__.startswith("minatar"):
        state["minatar_game"] = _object_tree(base.game)
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    base = env.unwrapped
    _set_plain_attrs(base, state["attrs"])
    if state["np_random"] is not None:
        base.np_random.bit_generator.state = state["np_random"]
    chain = _wrapper_chain(env)
    if len(chain) != len(state["wrappers"]):
        raise ValueError("env state was captured from a different wrapper stack")
    for wrapper, attrs in zip(chain, state["wrappers"]):
        _set_plain_attrs(wrapper, attrs)
    if "game" in state:
        base.restore_state(state["game"])
    if "minatar_game" in state:
        _load_object_tree(base.game, state["minatar_game"])
    if "mjstate" in state:
        import mujoco

        mujoco.mj_setState(base.model, base.data, state["mjstate"], mujoco.mjtState.mjSTATE_INTEGRATION)
