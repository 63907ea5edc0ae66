"""Environment construction and evaluation: the benchmark protocol, shared by every algorithm."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs.tabular  # noqa: F401 (registers the book's small worlds)
from envs.datasets import dataset_info, is_dataset_id
from envs.preferences import SYNTHETIC_TASKS, is_text_task, read_preferences
from envs.vector import EnvSpec, RunningMeanStd, VecEnv, is_discrete_tuple
from envs.video import VIDEO_FPS, RenderingUnavailable, rendering_hint, write_video
from envs.video import frame_skip as video_frame_skip

__all__ = [
    "EnvSpec",
    "RunningMeanStd",
    "VecEnv",
    "check_env_support",
    "check_rendering",
    "dataset_env_id",
    "env_family",
    "env_kinds",
    "evaluate",
    "make_vec_env",
    "validate_env_id",
]

MINATAR_STEP_LIMIT = 10_000
"""MinAtar's games have no time limit (a good Breakout player can go on for ever); this cap, a truncation that
targets bootstrap through, keeps every episode and evaluation finite"""
EVAL_STEP_LIMIT = 108_000
"""steps after which an evaluation episode that has not ended is cut (an env without a time limit of its own), as
Atari's 30-minute cap (108,000 frames)"""
ENV_FAMILIES = ("classic_control", "mujoco", "box2d", "toy_text", "atari", "minatar", "text", "other")


def _register_optional(env_id: str) -> None:
    """Atari's ids (`ALE/Pong-v5`, `PongNoFrameskip-v4`) and MinAtar's (`MinAtar/Breakout-v1`: minimal action set,
    as the MinAtar paper) exist once ale-py or MinAtar's gym module registers them; do that on first use, when
    the package (the atari or minatar extra) is installed."""
    if env_id in gym.registry:
        return
    try:
        if env_id.startswith("MinAtar/"):
            importlib.import_module("minatar.gym").register_envs()
            for minatar_id in [i for i in gym.registry if i.startswith("MinAtar/")]:
                gym.registry[minatar_id] = dataclasses.replace(gym.registry[minatar_id], max_episode_steps=MINATAR_STEP_LIMIT)
        else:
            gym.register_envs(importlib.import_module("ale_py"))
    except ImportError:
        pass  # the lookup fails with the closest ids


def is_atari(env_id: str) -> bool:
    """Whether a registered id is an ALE game (`module:EnvId` ids register on make and are looked up by EnvId)."""
    registered = gym.registry.get(env_id.split(":", 1)[-1])
    return registered is not None and str(registered.entry_point).startswith("ale_py")


def _spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """gym.spec that also accepts gymnasium's `module:EnvId` form (the module registers the env on import)."""
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        importlib.import_module(module)
    _register_optional(env_id)
    return gym.spec(env_id)


def dataset_env_id(dataset: str) -> str:
    """The env an offline dataset was collected in, where its runs are evaluated; ValueError if it is not on this
    machine or does not say (a D4RL file outside D4RL's names: give it an `env_id` attribute)."""
    env_id = dataset_info(dataset).env_id
    if env_id is None:
        raise ValueError(
            f"dataset {dataset!r} does not say which env it was collected in: a D4RL HDF5 file needs its D4RL name "
            "(hopper-medium-v2.hdf5) or an `env_id` attribute"
        )
    return env_id


def env_family(env_id: str) -> str:
    """The family of a registered env id (suites set overrides per family), from its entry point; a dataset's is its
    env's; a text task's (learning from preferences) is "text"."""
    if is_text_task(env_id):
        return "text"
    if is_dataset_id(env_id):
        env_id = dataset_env_id(env_id)
    entry = str(_spec(env_id).entry_point)
    if entry.startswith("envs.tabular"):  # the book's small worlds sit with gymnasium's toy text
        return "toy_text"
    for family in ("classic_control", "mujoco", "box2d", "toy_text"):
        if f"gymnasium.envs.{family}" in entry:
            return family
    if entry.startswith("ale_py"):
        return "atari"
    return "minatar" if "minatar" in entry.lower() else "other"


def env_kinds(env_id: str) -> tuple[str, str]:
    """(action kind, observation kind) of an env, from one build of it: "discrete" or "continuous", and "image"
    (3-D observations: Atari frames, MinAtar grids), "discrete" (a finite set of states: toy-text's Discrete, or a Tuple
    of them as Blackjack's) or "vector". What an algorithm's ACTION_SPACES and OBSERVATIONS are checked against before
    a run starts. A dataset (the task of an offline run) has the action kind of its env and observation kind "dataset";
    a text task (learning from preferences: a synthetic task or a preference file) discrete actions (tokens) and "text"."""
    if is_text_task(env_id):
        return "discrete", "text"
    if is_dataset_id(env_id):
        return env_kinds(dataset_env_id(env_id))[0], "dataset"
    _register_optional(env_id)
    env = gym.make(env_id, disable_env_checker=True)
    try:
        actions = "continuous" if isinstance(env.action_space, gym.spaces.Box) else "discrete"
        space = env.observation_space
        if isinstance(space, gym.spaces.Discrete) or is_discrete_tuple(space):
            return actions, "discrete"
        return actions, "image" if len(space.shape or ()) == 3 else "vector"
    finally:
        env.close()


def check_env_support(env_id: str, algo: str, action_spaces: tuple[str, ...], observations: tuple[str, ...]) -> None:
    """ValueError, before any compute is spent, when an algorithm that acts in `action_spaces` and has networks for
    `observations` (its ACTION_SPACES and OBSERVATIONS) cannot run on `env_id`: DQN on continuous actions, an
    MLP-only algorithm on Atari frames (its float replay memory alone would exhaust the machine's memory)."""
    kind, observation = env_kinds(env_id)
    if observation == "text" and "text" not in observations:
        raise ValueError(
            f"{env_id} is a text task (learning from preferences) and {algo} learns in an env: use sft, reward_model, dpo, "
            "ipo, rlhf_ppo or best_of_n"
        )
    if "text" in observations and observation != "text":
        raise ValueError(
            f"{algo} learns from preferences: its task is a text task ({', '.join(SYNTHETIC_TASKS)}, or the path of a "
            f"prompt/chosen/rejected .jsonl file), not {env_id}"
        )
    if observation == "dataset" and "dataset" not in observations:
        raise ValueError(
            f"{env_id} is an offline dataset and {algo} learns online in an env: give it an env id, or use an offline "
            "algorithm (bc, td3_bc, iql, cql)"
        )
    if "dataset" in observations and observation != "dataset":
        raise ValueError(
            f"{algo} is an offline algorithm: its task is a dataset (a Minari id such as rlgrid/hopper-v5/medium-v0, "
            f"or the path of a D4RL .hdf5 file; `rlgrid dataset list` shows those here), not the env {env_id}"
        )
    if kind not in action_spaces:
        raise ValueError(f"{algo} needs {' or '.join(action_spaces)} actions; {env_id} has {kind} actions")
    if observation not in observations:
        if observations == ("discrete",):
            raise ValueError(
                f"{algo} is a tabular method: it needs a finite state set (FrozenLake-v1, CliffWalking-v1, Taxi-v4, "
                f"Blackjack-v1, rlgrid/...), and {env_id} has {observation} observations"
            )
        if observation == "image":
            raise ValueError(
                f"{algo} has no CNN for the image observations of {env_id} "
                "(dqn, double_dqn, ppo, ppo_kl, a2c and acktr have one)"
            )
        if observation == "discrete":
            raise ValueError(
                f"{algo} has no network for the finite state set of {env_id} (a state number, not features): use a tabular "
                "method (sarsa, q_learning, expected_sarsa, mc_control, td0, mc_prediction, value_iteration, ...)"
            )
        raise ValueError(f"{algo} has no network for the {observation} observations of {env_id}")


def validate_env_id(env_id: str) -> None:
    """Raise ValueError (with the closest registered ids) unless `env_id` can be built here; a dataset must be on this
    machine and its env buildable; a text task registered, or a readable preference file."""
    if is_text_task(env_id):
        if env_id.endswith(".jsonl"):
            read_preferences(env_id)  # ValueError with the line of the first bad pair
        return
    if is_dataset_id(env_id):
        env_id = dataset_env_id(env_id)  # DatasetNotFound (a ValueError) says where it was looked for
    try:
        _spec(env_id)
    except (gym.error.Error, ImportError) as exc:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown environment id {env_id!r} ({exc}).{hint}") from None
    try:
        gym.make(env_id, disable_env_checker=True).close()
    except Exception as exc:  # a missing optional dependency (mujoco, ale-py) shows up here
        raise ValueError(f"environment {env_id!r} is registered but cannot be built: {exc}") from None


def check_rendering(env_id: str) -> None:
    """RenderingUnavailable, before any compute, unless one frame of `env_id` (a dataset: its env) can be rendered and
    encoded here."""
    if is_dataset_id(env_id):
        env_id = dataset_env_id(env_id)
    family = env_family(env_id)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise RenderingUnavailable("--capture-video writes MP4 with imageio-ffmpeg: pip install 'rlgrid[video]'") from None
    envs, _ = make_vec_env(env_id, 1, seed=0)
    try:
        twin = envs.frozen_copy(1, render_first=True)
        try:
            twin.reset(seed=0)
            twin.frame()
        finally:
            twin.close()
    except Exception as exc:
        raise RenderingUnavailable(
            f"cannot render {env_id} without a display ({type(exc).__name__}: {exc}). {rendering_hint(family)}"
        ) from None
    finally:
        envs.close()


def make_vec_env(
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    clip_actions: bool = True,
    gamma: float = 0.99,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[VecEnv, np.ndarray]:
    """Build `num_envs` seeded copies (copy i gets seed + i) and reset them; returns (envs, first obs). Atari games
    run on ale-py's C++ vector env where available (`envs.atari`: same results, faster, no exact resume)."""
    _register_optional(env_id)
    spec = EnvSpec(
        env_id=env_id,
        normalize_obs=normalize_obs,
        normalize_reward=normalize_reward,
        clip_actions=clip_actions,
        gamma=gamma,
        env_kwargs=tuple(sorted((env_kwargs or {}).items())),
    )
    vec_env_class = VecEnv
    if is_atari(env_id):  # the protocol's preprocessing, on the C++ path or the Python one (envs.atari)
        from envs.atari import AtariPythonVecEnv, AtariVecEnv, backend

        vec_env_class = AtariVecEnv if backend() == "vector" else AtariPythonVecEnv
    envs = vec_env_class(spec, num_envs)
    return envs, envs.reset(seed=seed)


def evaluate(
    train_envs: VecEnv,
    policy: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    seed: int,
    max_steps: int = EVAL_STEP_LIMIT,
    video: Path | None = None,
) -> np.ndarray:
    """Run `episodes` full episodes with a deterministic `policy` on fresh copies of the training env.

    The copies share the training observation statistics, frozen; rewards are the env's own (not
    normalised, not clipped). One copy per episode, seeded seed + i, each stopped after its first episode,
    so long and short episodes are counted alike. An episode still running after `max_steps` steps (an env with
    no time limit of its own) counts with its return so far. Returns the episodic returns, shape (episodes,);
    a return may be NaN or infinite (the caller decides: `RunState` records the run as diverged).
    With `video`, copy 0 renders its episode into that MP4 file (`envs.video`), without changing any number.
    A policy that draws from Python's `random` (the equiprobable policy the tabular prediction methods are evaluated
    with) draws from a stream seeded with `seed`; the caller's stream is left as it was, so training never depends on
    how often, or how long, it is evaluated.
    """
    envs = train_envs.frozen_copy(episodes, render_first=video is not None)
    caller_stream = random.getstate()
    random.seed(seed)
    try:
        obs = envs.reset(seed=seed)
        returns, so_far = np.zeros(episodes), np.zeros(episodes)
        finished = np.zeros(episodes, dtype=bool)  # not a NaN marker: a NaN return must end its episode too
        frames, skip = ([envs.frame()], video_frame_skip(envs.render_fps())) if video is not None else ([], 1)
        for step in range(1, max_steps + 1):
            obs, rewards, _, _, info = envs.step(policy(obs))
            so_far += rewards
            for i, episodic_return, _ in info["episodes"]:
                if not finished[i]:
                    returns[i], finished[i] = episodic_return, True
            if video is not None and not finished[0] and step % skip == 0:
                frames.append(envs.frame())
            if finished.all():
                break
        else:
            returns[~finished] = so_far[~finished]
        if video is not None:
            write_video(video, frames, fps=(envs.render_fps() or VIDEO_FPS) / skip)
        return returns
    finally:
        random.setstate(caller_stream)
        envs.close()
