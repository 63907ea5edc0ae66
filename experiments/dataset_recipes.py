"""The recipes of `rlgrid dataset make`: D4RL's datasets, made from gymnasium envs and from rlgrid's own training runs,
written in the Minari format under the Minari root with their provenance (`provenance.json` beside Minari's files).

- `random`: uniformly random actions on `--env-id`, episode after episode from the env's own time limit, until the
  transition count is reached (the last episode is cut there: a truncation).
- `medium` / `expert`: the policy of a run's newest checkpoint, or of the kept one at `--step` (`--run RUN_DIR`, a
  sac, td3 or ddpg run), rebuilt the
  way `rlgrid eval` rebuilds it (the algorithm's own `train()` with the run's config, a `CheckpointEvaluation`), played
  as `random` plays, with Gaussian action noise. The name says what the run is for, nothing checks it: D4RL's medium
  policy is one trained to about a third of the expert's return, its expert one is trained to the end.
- `medium-replay`: every transition the agent saw while training up to its newest checkpoint (or the one at `--step`),
  i.e. the replay memory saved with it (refused when the memory wrapped round and dropped some: train with
  buffer_size >= total_timesteps).
- `medium-expert`: a medium and an expert dataset of one env, concatenated (`minari.combine_datasets`).

Reference returns, which normalise offline scores to 0-100: `ref_max_score` is D4RL's expert return where D4RL has one
(Hopper, HalfCheetah, Walker2d, Ant; measured on its -v2 envs), `ref_min_score` the env's random return: for `random`
the dataset's own mean episode return; for the agent recipes (whose own mean is not a random return) the mean episode
return of the `random` dataset of the same env under its default name, if it is here, so that every rlgrid dataset of
an env normalises alike as D4RL's do; otherwise the mean of 100 uniformly random episodes measured now (Minari's own
rule when it is given no random score). D4RL's REF_MIN_SCORE is not used: it was measured on the -v2 envs, and a random
return is cheap to measure on the env itself. `--ref-min-score` / `--ref-max-score` override either; as in Minari, the
dataset's metadata holds them only when there is an expert return (provenance.json always says what they were).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs import EVAL_STEP_LIMIT, env_kinds, validate_env_id
from envs.datasets import DatasetNotFound, local_minari_ids, minari_root

RECIPES = {
    "random": "uniformly random actions on an env (--env-id)",
    "medium": "the policy of a sac/td3/ddpg run's newest checkpoint (--run), with Gaussian action noise",
    "expert": "as medium: name the run trained to the end (--run)",
    "medium-replay": "every transition a sac/td3/ddpg run's agent saw up to its newest checkpoint: its replay memory (--run)",
    "medium-expert": "a medium and an expert dataset of one env, concatenated (--from MEDIUM_ID EXPERT_ID)",
}
AGENT_ALGORITHMS = ("sac", "td3", "ddpg")
"""the algorithms whose policy acts on the env's raw observations (no observation normalisation) and that keep a
replay memory in their checkpoints"""
ACTION_NOISE = 0.1
"""default std of the Gaussian action noise of medium/expert, in units of the action half-range: D4RL sampled its data
from SAC's stochastic policy, and we keep only the deterministic evaluation policy; 0.1 is the exploration noise TD3 and
DDPG train with (so the data stays close to the states the policy reaches, with the action spread a behaviour policy
has), and near the spread of a trained SAC policy. It is not D4RL's noise: its SAC policy's own, state-dependent one."""
EVAL_EPISODES = 10
"""episodes of the checkpoint's evaluation recorded in medium/expert provenance"""
RANDOM_EPISODES = 100
"""random episodes measured for an agent recipe's ref_min_score when no random dataset of the env is here"""
PROVENANCE = "provenance.json"


def default_name(env_id: str, recipe: str) -> str:
    """`rlgrid/<env name>/<recipe>-v0`, Minari's namespace/name-version form (`Hopper-v5` -> `rlgrid/hopper-v5/...`)."""
    return f"rlgrid/{env_id.replace('/', '-').lower()}/{recipe}-v0"


def d4rl_expert_return(env_id: str) -> float | None:
    """D4RL's REF_MAX_SCORE for the task, where it has one (shipped in analysis/reference)."""
    from analysis.scores import env_bounds

    try:
        return float(env_bounds([env_id], "d4rl")[env_id][1])
    except KeyError:
        return None


# --- playing episodes -------------------------------------------------------------------------------------------
def rollout(
    env_id: str, transitions: int, seed: int, act: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[dict[str, np.ndarray]]:
    """Episodes of `act(observation) -> action` (None: uniformly random actions, the action space seeded with `seed`),
    `transitions` steps in all, the last episode cut there (truncated); episode i is reset with seed + i."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    act = act or (lambda obs: env.action_space.sample())
    episodes, total = [], 0
    while total < transitions:
        obs, _ = env.reset(seed=seed + len(episodes))
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        while True:
            action = act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += 1
            truncated = truncated or (total >= transitions and not terminated)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        episodes.append(_episode(observations, actions, rewards, terminations, truncations))
    env.close()
    return episodes


def random_episodes(env_id: str, transitions: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`random`'s episodes: uniformly random actions (`rollout` with no policy)."""
    return rollout(env_id, transitions, seed)


def noisy_policy(
    policy: Callable[[np.ndarray], np.ndarray], space: gym.spaces.Box, noise: float, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """One observation in, one action out: policy(obs) + N(0, (noise * half-range)^2), clipped to the box. The policy
    sees float32 observations, as in training (rlgrid's vector envs hand out float32)."""
    rng = np.random.default_rng(seed)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    half_range = (high - low) / 2

    def act(obs: np.ndarray) -> np.ndarray:
        action = np.asarray(policy(np.asarray(obs, np.float32)[None])[0], np.float64)
        if noise > 0:
            action = action + rng.normal(0.0, noise, action.shape) * half_range
        return np.clip(action, low, high).astype(space.dtype)

    return act


def random_return(env_id: str, episodes: int = RANDOM_EPISODES, seed: int = 0) -> float:
    """The mean return of `episodes` uniformly random episodes (reset seeds seed + i; an episode still running after
    EVAL_STEP_LIMIT steps, in an env without a time limit, counts with its return so far)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        total = 0.0
        for _ in range(EVAL_STEP_LIMIT):
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            if terminated or truncated:
                break
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def replay_episodes(replay: dict[str, Any], num_envs: int) -> list[dict[str, np.ndarray]]:
    """A replay memory's rows (`ReplayBuffer.state_dict()`, not wrapped) as whole episodes. Row r is step r // num_envs
    of env copy r % num_envs; each copy's rows split after every terminated or truncated step, and a copy's trailing
    unfinished episode is cut (truncated). An episode's observations are its rows' `obs` plus its last row's `next_obs`
    (the observation the step really led to). Episodes come in the order they started. ValueError when a row's
    `next_obs` is not the next row's `obs` inside an episode (not a memory written step by step)."""
    arrays = {name: np.asarray(replay[name]) for name in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")}
    size = len(arrays["rewards"])
    if size % num_envs:
        raise ValueError(f"a replay memory of {size} rows cannot hold whole steps of {num_envs} env copies")
    started = []
    for copy in range(num_envs):
        rows = np.arange(copy, size, num_envs)
        ends = (arrays["terminated"][rows] > 0) | (arrays["truncated"][rows] > 0)
        for part in np.split(rows, np.flatnonzero(ends) + 1):
            if len(part) == 0:  # after a last row that ended an episode
                continue
            if not np.array_equal(arrays["next_obs"][part[:-1]], arrays["obs"][part[1:]]):
                raise ValueError("the replay memory's rows are not consecutive steps of its env copies")
            terminations = arrays["terminated"][part] > 0
            truncations = (arrays["truncated"][part] > 0) & ~terminations
            truncations[-1] = not terminations[-1]  # a trailing unfinished episode: cut where training stopped
            observations = np.concatenate([arrays["obs"][part], arrays["next_obs"][part[-1:]]])
            episode = _episode(observations, arrays["actions"][part], arrays["rewards"][part], terminations, truncations)
            started.append((part[0], episode))
    return [episode for _, episode in sorted(started, key=lambda item: item[0])]


def _episode(observations, actions, rewards, terminations, truncations) -> dict[str, np.ndarray]:
    return {
        "observations": np.asarray(observations),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards, np.float64),
        "terminations": np.asarray(terminations, bool),
        "truncations": np.asarray(truncations, bool),
    }


# --- checks before any step ---------------------------------------------------------------------------------------
def check_name(name: str) -> None:
    """ValueError unless Minari can store `name` and no dataset has it yet."""
    from minari.dataset.minari_dataset import parse_dataset_id

    parse_dataset_id(name)  # ValueError for an id Minari cannot store
    if name in local_minari_ids() or (minari_root() / name).exists():
        raise ValueError(f"a dataset {name!r} exists under {minari_root()}: give another --name, or delete it first")


def open_agent_run(run_dir: str | Path, recipe: str, device: str | None = "cpu", episodes: int = 1, step: int | None = None):
    """`rlgrid eval`'s checks of a run (a run directory with a readable checkpoint, the newest or the one at `step`, its
    config valid here), then that its algorithm is one of AGENT_ALGORITHMS: (algorithm, config at the checkpoint's step,
    handle, spec)."""
    from experiments.evaluate_run import open_run

    algorithm, config, handle, spec = open_run(run_dir, episodes=episodes, device=device, step=step)
    if algorithm.name not in AGENT_ALGORITHMS or getattr(config, "normalize_obs", False):
        raise ValueError(
            f"{run_dir} is a {algorithm.name} run: {recipe} is made from {', '.join(AGENT_ALGORITHMS)} runs only (continuous "
            "actions, a policy of the raw observations, a replay memory in the checkpoints)"
        )
    return algorithm, config, handle, spec


def _check_counts(transitions: int, **nonnegative: float) -> None:
    if transitions < 1:
        raise ValueError(f"--transitions must be >= 1, got {transitions}")
    for option, value in nonnegative.items():
        if value < 0:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 0, got {value}")


# --- reference returns ----------------------------------------------------------------------------------------------
def references(
    env_id: str, ref_min_score: float | None, ref_max_score: float | None, own_random_return: float | None = None
) -> dict[str, Any]:
    """ref_min_score and ref_max_score with where they came from (the rule in the module docstring). `own_random_return`:
    the dataset is itself a random one, with this mean return."""
    if ref_min_score is not None:
        low, low_source = ref_min_score, "--ref-min-score"
    elif own_random_return is not None:
        low, low_source = own_random_return, "this dataset's mean episode return (the random policy's)"
    elif (found := _random_dataset_return(env_id)) is not None:
        low, low_source = found, f"mean episode return of the random dataset {default_name(env_id, 'random')}"
    else:
        low, low_source = random_return(env_id), f"mean return of {RANDOM_EPISODES} uniformly random episodes (seeds 0..)"
    high = ref_max_score if ref_max_score is not None else d4rl_expert_return(env_id)
    if ref_max_score is not None:
        high_source = "--ref-max-score"
    else:
        high_source = "D4RL REF_MAX_SCORE (its -v2 envs)" if high is not None else None
    return {
        "ref_min_score": low,
        "ref_min_score_source": low_source,
        "ref_max_score": high,
        "ref_max_score_source": high_source,
    }


def _random_dataset_return(env_id: str) -> float | None:
    path = minari_root() / default_name(env_id, "random") / PROVENANCE
    try:
        provenance = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if provenance.get("recipe") != "random" or provenance.get("env_id") != env_id:
        return None
    return float(provenance["mean_episode_return"])


# --- writing ----------------------------------------------------------------------------------------------------
def write_dataset(
    name: str, recipe: str, env_id: str, episodes: list[dict[str, np.ndarray]], refs: dict, description: str, seeds: list
) -> None:
    """Episodes into a new Minari dataset (removed again if the write fails, so a failure leaves no half dataset)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, seed=seed, **episode) for i, (episode, seed) in enumerate(zip(episodes, seeds))]
    with _removed_on_failure(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari's advice to name an author e-mail: we have none
        minari.create_dataset_from_buffers(
            name,
            buffers,
            env=gym.make(env_id),
            eval_env=env_id,
            algorithm_name=f"rlgrid dataset make {recipe}",
            author="rlgrid",
            code_permalink="rlgrid: experiments/dataset_recipes.py",
            ref_min_score=refs["ref_min_score"],
            ref_max_score=refs["ref_max_score"],
            description=description,
        )


@contextmanager
def _removed_on_failure(name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:  # an interrupted write too: the name stays free for the next try
        shutil.rmtree(minari_root() / name, ignore_errors=True)
        raise


def finish(name: str, recipe: str, env_id: str, episodes: list, refs: dict, start: float, **details: Any) -> dict:
    """Write and return the provenance of a dataset just written."""
    returns = [float(e["rewards"].sum()) for e in episodes]
    provenance = {
        "dataset_id": name,
        "recipe": recipe,
        "env_id": env_id,
        "max_episode_steps": gym.spec(env_id).max_episode_steps,
        **details,
        "transitions": int(sum(len(e["rewards"]) for e in episodes)),
        "episodes": len(episodes),
        "mean_episode_return": float(np.mean(returns)),
        **refs,
        "versions": {p: _version(p) for p in ("rlgrid", "gymnasium", "mujoco", "minari", "numpy", "torch")},
        "python": platform.python_version(),
        "command": " ".join(["rlgrid", "dataset", *sys.argv[2:]]) if sys.argv[1:2] == ["dataset"] else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (minari_root() / name / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --- the recipes ----------------------------------------------------------------------------------------------------
def make_random(
    env_id: str,
    transitions: int = 1_000_000,
    seed: int = 0,
    name: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
) -> tuple[str, dict]:
    """`random`; returns the dataset id and its provenance. ValueError for bad input, before any step."""
    validate_env_id(env_id)
    if env_kinds(env_id)[0] != "continuous":
        raise ValueError(f"{env_id} has discrete actions: rlgrid's datasets are D4RL's, of continuous (Box) actions")
    _check_counts(transitions)
    name = name or default_name(env_id, "random")
    check_name(name)
    start = time.perf_counter()
    episodes = random_episodes(env_id, transitions, seed)
    own = float(np.mean([e["rewards"].sum() for e in episodes]))
    refs = references(env_id, ref_min_score, ref_max_score, own_random_return=own)
    about = f"random: uniformly random actions on {env_id}, {transitions:,} transitions, seed {seed}"
    write_dataset(name, "random", env_id, episodes, refs, about, [seed + i for i in range(len(episodes))])
    return name, finish(name, "random", env_id, episodes, refs, start, seed=seed)


def make_from_policy(
    recipe: str,
    run_dir: str | Path,
    transitions: int = 1_000_000,
    seed: int = 0,
    action_noise: float = ACTION_NOISE,
    eval_episodes: int = EVAL_EPISODES,
    name: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    device: str = "cpu",
    step: int | None = None,
) -> tuple[str, dict]:
    """`medium` or `expert`: the policy of the newest checkpoint (or the kept one at `step`), evaluated first as
    `rlgrid eval` does (`eval_episodes` episodes, the run's own evaluation seeds), then played with `action_noise` (see
    ACTION_NOISE)."""
    import torch

    if recipe not in ("medium", "expert"):
        raise ValueError(f"make_from_policy makes medium or expert, not {recipe!r}")
    _check_counts(transitions, action_noise=action_noise)
    if eval_episodes < 1:
        raise ValueError(f"--eval-episodes must be >= 1, got {eval_episodes}")
    algorithm, config, handle, spec = open_agent_run(run_dir, recipe, device, eval_episodes, step)
    name = name or default_name(config.env_id, recipe)
    check_name(name)
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)  # one observation at a time through a small MLP: more threads only add overhead
    try:
        algorithm.train(config, None, handle)  # restores the checkpoint, evaluates it, keeps its policy
        env = gym.make(config.env_id)
        act = noisy_policy(handle.policy, env.action_space, action_noise, seed)
        env.close()
        episodes = rollout(config.env_id, transitions, seed, act)
    finally:
        torch.set_num_threads(threads)
    refs = references(config.env_id, ref_min_score, ref_max_score)
    about = (
        f"{recipe}: the policy of {algorithm.name} run {Path(run_dir).name} at step {config.total_timesteps:,} on "
        f"{config.env_id} with Gaussian action noise {action_noise} (of the action half-range), {transitions:,} "
        f"transitions, seed {seed}"
    )
    write_dataset(name, recipe, config.env_id, episodes, refs, about, [seed + i for i in range(len(episodes))])
    details = _run_details(run_dir, algorithm.name, config, spec)
    details.update(
        checkpoint_eval_return=float(np.mean(handle.returns)),
        checkpoint_eval_episodes=len(handle.returns),
        checkpoint_eval_seed=int(handle.seed_used),
        seed=seed,
        action_noise=action_noise,
        action_noise_about="Gaussian, std in units of the action half-range, clipped to the box, added to the "
        "deterministic evaluation policy (D4RL sampled SAC's stochastic policy instead)",
        device=device,
    )
    return name, finish(name, recipe, config.env_id, episodes, refs, start, **details)


def make_from_replay(
    run_dir: str | Path,
    name: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    step: int | None = None,
) -> tuple[str, dict]:
    """`medium-replay`: the replay memory saved with the run's newest checkpoint (or the kept one at `step`), as
    episodes (`replay_episodes`)."""
    from algorithms.common.checkpoint import CheckpointDamaged

    algorithm, config, handle, spec = open_agent_run(run_dir, "medium-replay", step=step)
    step = config.total_timesteps  # the checkpoint's: every transition the agent saw went into the memory
    if config.buffer_size < step:
        raise ValueError(
            f"{run_dir}: its replay memory (buffer_size {config.buffer_size:,}) wrapped round before the checkpoint at step "
            f"{step:,} and dropped the oldest {step - config.buffer_size:,} transitions; medium-replay needs every one: "
            "train with buffer_size >= total_timesteps"
        )
    name = name or default_name(config.env_id, "medium-replay")
    check_name(name)
    start = time.perf_counter()
    try:
        replay = handle.read_extra(step, "replay")  # plain data only, as every checkpoint file
    except FileNotFoundError as exc:
        raise ValueError(f"{run_dir}: {exc}") from None
    except CheckpointDamaged as exc:
        raise ValueError(f"{run_dir}: the replay memory of its checkpoint at step {step:,} is damaged ({exc})") from None
    if int(replay["size"]) != step:
        raise ValueError(
            f"{run_dir}: the replay memory at step {step:,} holds {int(replay['size']):,} transitions, not {step:,}"
        )
    episodes = replay_episodes(replay, config.num_envs)
    refs = references(config.env_id, ref_min_score, ref_max_score)
    about = (
        f"medium-replay: every transition {algorithm.name} run {Path(run_dir).name} saw on {config.env_id} up to step "
        f"{step:,} (its replay memory)"
    )
    write_dataset(name, "medium-replay", config.env_id, episodes, refs, about, [None] * len(episodes))
    details = _run_details(run_dir, algorithm.name, config, spec)
    history = handle.latest()["state"].get("eval_history") or []
    details["run_last_evaluation"] = {"step": history[-1][0], "return": history[-1][1]} if history else None
    return name, finish(name, "medium-replay", config.env_id, episodes, refs, start, **details)


def make_combined(
    dataset_ids: list[str], name: str | None = None, ref_min_score: float | None = None, ref_max_score: float | None = None
) -> tuple[str, dict]:
    """`medium-expert`: the datasets' episodes one after the other (`minari.combine_datasets`), reference returns by the
    agent recipes' rule. ValueError for a missing dataset or datasets of different envs."""
    import minari

    if len(dataset_ids) != 2 or dataset_ids[0] == dataset_ids[1]:
        raise ValueError(f"medium-expert combines two datasets, a medium and an expert one; got {dataset_ids}")
    known = local_minari_ids()
    for dataset_id in dataset_ids:
        if dataset_id not in known:
            raise DatasetNotFound(f"no Minari dataset {dataset_id!r} under {minari_root()}")
    sources = [minari.load_dataset(dataset_id) for dataset_id in dataset_ids]
    env_ids = [source.spec.env_spec.id if source.spec.env_spec is not None else None for source in sources]
    if None in env_ids or env_ids[0] != env_ids[1]:
        raise ValueError(f"{' and '.join(dataset_ids)} are datasets of different envs ({' and '.join(map(str, env_ids))})")
    env_id = env_ids[0]
    name = name or default_name(env_id, "medium-expert")
    check_name(name)
    start = time.perf_counter()
    refs = references(env_id, ref_min_score, ref_max_score)
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    namespace = parse_dataset_id(name)[0]
    with _removed_on_failure(name):
        if namespace is not None and namespace not in list_local_namespaces():
            create_namespace(namespace)  # as minari.create_dataset_from_buffers does; combine_datasets does not
        combined = minari.combine_datasets(sources, name)
        extra = {
            "algorithm_name": "rlgrid dataset make medium-expert",
            "code_permalink": "rlgrid: experiments/dataset_recipes.py",
            "description": f"medium-expert: {' then '.join(dataset_ids)}, concatenated",
        }
        if refs["ref_max_score"] is not None:  # Minari's rule: reference scores only with an expert score
            extra.update(ref_min_score=refs["ref_min_score"], ref_max_score=refs["ref_max_score"])
        combined.storage.update_metadata(extra)
    episodes = [{"rewards": np.asarray(e.rewards, np.float64)} for e in combined.iterate_episodes()]
    return name, finish(name, "medium-expert", env_id, episodes, refs, start, sources=dataset_ids)


def _run_details(run_dir: str | Path, algo: str, config: Any, spec: dict) -> dict[str, Any]:
    return {
        "run_dir": str(Path(run_dir).resolve()),
        "run_spec": spec,
        "algorithm": algo,
        "run_seed": config.seed,
        "checkpoint_step": config.total_timesteps,
    }
