"""`rlgrid dataset`: make offline datasets in the Minari format, list them, describe one.

    rlgrid dataset make random --env-id Hopper-v5 [--transitions 1000000] [--seed 0] [--name rlgrid/hopper/random-v0]
    rlgrid dataset list
    rlgrid dataset info rlgrid/hopper/random-v0

Datasets go under the Minari root ($MINARI_DATASETS_PATH, else ~/.minari/datasets), where `minari` and every tool
built on it finds them, and where `envs.datasets.load_dataset` reads them. They are data: never commit them.

Recipes (D4RL's names): `random` plays uniformly random actions from the env's own time limit, episode after episode,
until the transition count is reached (the last episode is cut there, a truncation). Its reference returns, which
normalise offline scores to 0-100 (`ref_min_score`, `ref_max_score`), are the dataset's own mean episode return and
D4RL's expert return for the task where D4RL has one (Hopper, HalfCheetah, Walker2d, Ant; measured on its -v2 envs),
or `--ref-max-score`. Every dataset carries its provenance (`provenance.json` beside Minari's files: recipe, env id,
seed, counts, versions, the command). The recipes from our agents' checkpoints (medium, expert, medium-replay,
medium-expert) are not written yet.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from importlib import metadata

import gymnasium as gym
import numpy as np

from envs import validate_env_id
from envs.datasets import DatasetNotFound, load_minari, local_minari_ids, minari_root

RECIPES = ("random",)
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


def random_episodes(env_id: str, transitions: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Episodes of uniformly random actions, `transitions` steps in all (the last one cut there, truncated); episode i is
    reset with seed + i and the action space is seeded with `seed`."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    episodes, total = [], 0
    while total < transitions:
        obs, _ = env.reset(seed=seed + len(episodes))
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        while True:
            action = env.action_space.sample()
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
        episodes.append(
            {
                "observations": np.asarray(observations),
                "actions": np.asarray(actions),
                "rewards": np.asarray(rewards, np.float64),
                "terminations": np.asarray(terminations),
                "truncations": np.asarray(truncations),
            }
        )
    env.close()
    return episodes


def make_dataset(
    recipe: str, env_id: str, transitions: int, seed: int, name: str | None = None, ref_max_score: float | None = None
) -> tuple[str, dict]:
    """Write a dataset under the Minari root; returns its id and provenance. ValueError for bad input, before any step."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: rlgrid makes {', '.join(RECIPES)} (the agent recipes come later)")
    validate_env_id(env_id)
    if transitions < 1:
        raise ValueError(f"--transitions must be >= 1, got {transitions}")
    name = name or default_name(env_id, recipe)
    from minari.dataset.minari_dataset import parse_dataset_id

    parse_dataset_id(name)  # ValueError for an id Minari cannot store, before any step
    if name in local_minari_ids():
        raise ValueError(f"a dataset {name!r} exists under {minari_root()}: give another --name, or delete it first")
    expert = ref_max_score if ref_max_score is not None else d4rl_expert_return(env_id)
    import minari
    from minari.data_collector import EpisodeBuffer

    start = time.perf_counter()
    episodes = random_episodes(env_id, transitions, seed)
    returns = [float(e["rewards"].sum()) for e in episodes]
    random_return = float(np.mean(returns))
    buffers = [EpisodeBuffer(id=i, seed=seed + i, **episode) for i, episode in enumerate(episodes)]
    with warnings.catch_warnings():  # Minari's advice to name an author e-mail and a code URL: we have neither
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            name,
            buffers,
            env=gym.make(env_id),
            eval_env=env_id,
            algorithm_name=f"rlgrid dataset make {recipe}",
            author="rlgrid",
            code_permalink="rlgrid: experiments/dataset_cli.py",
            ref_min_score=random_return,
            ref_max_score=expert,
            description=f"{recipe}: uniformly random actions on {env_id}, {transitions:,} transitions, seed {seed}",
        )
    provenance = {
        "dataset_id": name,
        "recipe": recipe,
        "env_id": env_id,
        "seed": seed,
        "transitions": transitions,
        "episodes": len(episodes),
        "mean_episode_return": random_return,
        "ref_min_score": random_return,
        "ref_min_score_source": "this dataset's mean episode return (the random policy's)",
        "ref_max_score": expert,
        "ref_max_score_source": "--ref-max-score"
        if ref_max_score is not None
        else ("D4RL REF_MAX_SCORE (its -v2 envs)" if expert is not None else None),
        "versions": {package: _version(package) for package in ("gymnasium", "mujoco", "minari", "numpy")},
        "python": platform.python_version(),
        "command": " ".join(["rlgrid", "dataset", *sys.argv[2:]]) if sys.argv[1:2] == ["dataset"] else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (minari_root() / name / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return name, provenance


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(name: str) -> str:
    """A dataset's size, returns, reference scores and provenance, in lines."""
    data = load_minari(name)
    returns = data.episode_returns()
    lines = [
        f"{name} ({data.source})",
        f"  env {data.env_id}; {len(data):,} transitions in {data.num_episodes:,} episodes "
        f"({int(data.terminals.sum()):,} terminal, {int(data.timeouts.sum()):,} cut by a time limit)",
        f"  episode return mean {returns.mean():.1f}, min {returns.min():.1f}, max {returns.max():.1f}",
        f"  reference returns: random {data.ref_min_score}, expert {data.ref_max_score}",
    ]
    provenance = minari_root() / name / PROVENANCE
    if provenance.is_file():
        lines.append(f"  provenance: {json.dumps(json.loads(provenance.read_text()))}")
    else:
        lines.append("  provenance: none (not made by rlgrid dataset make)")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rlgrid dataset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write a dataset under the Minari root")
    make.add_argument("recipe", choices=RECIPES, help="D4RL recipe")
    make.add_argument("--env-id", required=True, help="gymnasium env id")
    make.add_argument("--transitions", type=int, default=1_000_000, help="transitions in the dataset (default 1,000,000)")
    make.add_argument("--seed", type=int, default=0, help="seed of the env resets and the actions (default 0)")
    make.add_argument("--name", help="dataset id (default rlgrid/<env>/<recipe>-v0)")
    make.add_argument("--ref-max-score", type=float, help="expert return for normalisation (default: D4RL's, if any)")
    commands.add_parser("list", help="the datasets under the Minari root")
    info = commands.add_parser("info", help="one dataset's size, returns, reference scores and provenance")
    info.add_argument("name", help="dataset id")
    return parser.parse_args(argv)


def cmd_dataset(argv: list[str]) -> int:
    try:
        import minari  # noqa: F401
    except ImportError:
        print("error: datasets need Minari: pip install -e '.[offline]'", file=sys.stderr)
        return 2
    args = parse_args(argv)
    try:
        if args.command == "make":
            name, provenance = make_dataset(
                args.recipe, args.env_id, args.transitions, args.seed, args.name, args.ref_max_score
            )
            print(
                f"wrote {name} under {minari_root()}: {provenance['transitions']:,} transitions, "
                f"{provenance['episodes']:,} episodes in {provenance['seconds']} s"
            )
            print(describe(name))
        elif args.command == "list":
            names = local_minari_ids()
            print(f"{len(names)} dataset(s) under {minari_root()}" + "".join(f"\n  {name}" for name in names))
        else:
            print(describe(args.name))
    except (ValueError, DatasetNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
