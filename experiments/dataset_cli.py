"""`rlgrid dataset`: make offline datasets in the Minari format, list them, describe one.

    rlgrid dataset make random --env-id Hopper-v5 [--transitions 1000000] [--seed 0] [--name ID]
    rlgrid dataset make medium --run RUN_DIR [--transitions 1000000] [--seed 0] [--action-noise 0.1] [--name ID]
    rlgrid dataset make expert --run RUN_DIR [...as medium]
    rlgrid dataset make medium-replay --run RUN_DIR [--name ID]
    rlgrid dataset make medium-expert --from MEDIUM_ID EXPERT_ID [--name ID]
    rlgrid dataset list
    rlgrid dataset info rlgrid/hopper-v5/random-v0

Datasets go under the Minari root ($MINARI_DATASETS_PATH, else ~/.minari/datasets), where `minari` and every tool
built on it finds them, and where `envs.datasets.load_dataset` reads them, named rlgrid/<env>/<recipe>-v0 unless
--name says otherwise. They are data: never commit them.

Recipes (D4RL's names; experiments/dataset_recipes.py has the details):
  random         uniformly random actions, episode after episode from the env's own time limit, until the
                 transition count is reached (the last episode is cut there, a truncation)
  medium         the deterministic policy of a sac/td3/ddpg run's newest checkpoint (rebuilt as `rlgrid eval` does,
                 and evaluated first) plus Gaussian action noise (--action-noise, std in units of the action half-range,
                 default 0.1; D4RL sampled SAC's stochastic policy instead), played as random is
  expert         the same for a run trained to the end (medium: D4RL's is a policy at about a third of the expert's
                 return); nothing checks which the run is
  medium-replay  every transition the run's agent saw up to its newest checkpoint: the replay memory saved with it
                 (a memory that wrapped round and dropped transitions is refused: train with buffer_size >=
                 total_timesteps)
  medium-expert  a medium and an expert dataset of one env, concatenated

Reference returns, which normalise offline scores to 0-100: ref_max_score is D4RL's expert return for the task where
D4RL has one (Hopper, HalfCheetah, Walker2d, Ant; measured on its -v2 envs); ref_min_score is the env's random return:
random's own mean episode return, and for the agent recipes that of the env's random dataset (its default name) if it
is here, else the mean of 100 random episodes measured now. --ref-min-score / --ref-max-score override them. Every
dataset carries its provenance (provenance.json beside Minari's files: recipe, env, run, checkpoint step and its
evaluation return, seed, noise, counts, versions, the command).
"""

from __future__ import annotations

import argparse
import json
import sys

from envs.datasets import DatasetNotFound, load_minari, local_minari_ids, minari_root
from experiments.dataset_recipes import (  # noqa: F401 (random_episodes, default_name: this module's names before the split)
    ACTION_NOISE,
    EVAL_EPISODES,
    PROVENANCE,
    RECIPES,
    default_name,
    make_combined,
    make_from_policy,
    make_from_replay,
    make_random,
    random_episodes,
)

DETAILS = {
    "random": "Uniformly random actions on --env-id, episode after episode from the env's own time limit (episode i reset "
    "with SEED + i), until --transitions is reached; the last episode is cut there (a truncation). ref_min_score is the "
    "dataset's own mean episode return. Envs with continuous (Box) actions only, as D4RL's.",
    "medium": "The deterministic policy of the newest checkpoint of a sac, td3 or ddpg run (--run RUN_DIR: rlgrid train "
    "sac|td3|ddpg --env-id ... --runs-dir ...), rebuilt as rlgrid eval rebuilds it and evaluated first (--eval-episodes, "
    "the run's own evaluation seeds; the mean goes into provenance.json), then played as random plays with Gaussian "
    "action noise (--action-noise, std in units of the action half-range, clipped to the box). D4RL sampled SAC's "
    "stochastic policy instead; 0.1 is the exploration noise TD3 trains with. D4RL's medium policy is one trained to "
    "about a third of the expert's return: name a run trained that far (fewer total_timesteps), or --step a checkpoint "
    "the run kept on the way (rlgrid train ... --checkpoint-every-steps N --keep-checkpoints K; rlgrid eval RUN --step "
    "finds the one at a third).",
    "expert": "As medium, for a run trained to the end (nothing checks which the run is: the name is yours).",
    "medium-replay": "Every transition the run's agent saw while training up to its newest checkpoint (or the one at "
    "--step: the medium policy's, as D4RL's): the replay memory saved with that checkpoint, split into episodes where "
    "they terminated or were truncated (the unfinished last one cut). A memory that wrapped round has dropped the "
    "oldest transitions and is refused: train with buffer_size >= total_timesteps.",
    "medium-expert": "Two datasets of one env (a medium and an expert one), their episodes one after the other "
    "(minari.combine_datasets); datasets of different envs are refused.",
}
REFERENCES_HELP = (
    "ref_min_score defaults to the env's random return: random's own mean episode return; for the other recipes that of "
    "the env's random dataset under its default name, if it is here, else the mean of 100 random episodes measured now. "
    "ref_max_score defaults to D4RL's expert return where D4RL has one."
)


def describe(name: str) -> str:
    """A dataset's size, returns, reference scores and provenance, in lines."""
    data = load_minari(name)
    returns = data.episode_returns()
    lines = [
        f"{name} ({data.source})",
        f"  env {data.env_id}; {len(data):,} transitions in {data.num_episodes:,} episodes "
        f"({int(data.terminals.sum()):,} terminal, {int(data.timeouts.sum()):,} cut by a time limit)",
        f"  episode return mean {returns.mean():.1f}, min {returns.min():.1f}, max {returns.max():.1f}",
    ]
    path = minari_root() / name / PROVENANCE
    provenance = json.loads(path.read_text()) if path.is_file() else {}
    low = data.ref_min_score if data.ref_min_score is not None else provenance.get("ref_min_score")
    high = data.ref_max_score if data.ref_max_score is not None else provenance.get("ref_max_score")
    if low is None or high is None:
        known = f" (random {low:.1f}; Minari keeps them only with an expert return)" if low is not None else ""
        lines.append(f"  reference returns: none{known}: D4RL-normalised scores need --ref-max-score")
    else:
        normalised = round(100 * (returns.mean() - low) / (high - low), 1) + 0.0  # + 0.0: no "-0.0"
        lines.append(
            f"  reference returns: random {low:.1f}, expert {high:.1f}; the data's mean is {normalised:.1f} normalised"
        )
    if provenance:
        lines.append("  provenance:")
        lines += [
            f"    {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}"
            for key, value in provenance.items()
        ]
    else:
        lines.append("  provenance: none (not made by rlgrid dataset make)")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rlgrid dataset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser(
        "make",
        help="write a dataset under the Minari root",
        description="Write a dataset under the Minari root by one of D4RL's recipes (rlgrid dataset make RECIPE --help).",
    )
    recipes = make.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    for recipe, about in RECIPES.items():
        command = recipes.add_parser(recipe, help=about, description=f"{DETAILS[recipe]} {REFERENCES_HELP}")
        if recipe == "random":
            command.add_argument("--env-id", required=True, help="gymnasium env id")
        elif recipe == "medium-expert":
            command.add_argument(
                "--from", dest="sources", nargs=2, required=True, metavar=("MEDIUM_ID", "EXPERT_ID"), help="dataset ids"
            )
        else:
            command.add_argument("--run", required=True, metavar="RUN_DIR", help="a sac, td3 or ddpg run directory")
            command.add_argument(
                "--step", type=int, default=None, help="the run's kept checkpoint at this env step (default: its newest)"
            )
        if recipe in ("random", "medium", "expert"):
            command.add_argument(
                "--transitions", type=int, default=1_000_000, help="transitions in the dataset (default 1,000,000)"
            )
            command.add_argument("--seed", type=int, default=0, help="episode i is reset with SEED + i; seeds the actions")
        if recipe in ("medium", "expert"):
            command.add_argument(
                "--action-noise",
                type=float,
                default=ACTION_NOISE,
                help=f"std of the Gaussian noise added to the policy's actions, in units of the action half-range, clipped "
                f"to the box (default {ACTION_NOISE}: TD3's exploration noise; 0: the deterministic policy)",
            )
            command.add_argument(
                "--eval-episodes",
                type=int,
                default=EVAL_EPISODES,
                help=f"episodes of the checkpoint's evaluation, recorded in the provenance (default {EVAL_EPISODES})",
            )
            command.add_argument("--device", default="cpu", help="torch device of the policy (default cpu)")
        command.add_argument("--name", help="dataset id (default rlgrid/<env>/<recipe>-v0)")
        command.add_argument("--ref-min-score", type=float, help="random return for normalisation (default: see above)")
        command.add_argument("--ref-max-score", type=float, help="expert return for normalisation (default: D4RL's, if any)")
    commands.add_parser("list", help="the datasets under the Minari root")
    info = commands.add_parser("info", help="one dataset's size, returns, reference scores and provenance")
    info.add_argument("name", help="dataset id")
    return parser.parse_args(argv)


def make(args: argparse.Namespace) -> tuple[str, dict]:
    """Run the recipe `args` name; returns the dataset id and its provenance."""
    refs = {"name": args.name, "ref_min_score": args.ref_min_score, "ref_max_score": args.ref_max_score}
    if args.recipe == "random":
        return make_random(args.env_id, args.transitions, args.seed, **refs)
    if args.recipe in ("medium", "expert"):
        return make_from_policy(
            args.recipe,
            args.run,
            args.transitions,
            args.seed,
            args.action_noise,
            args.eval_episodes,
            device=args.device,
            step=args.step,
            **refs,
        )
    if args.recipe == "medium-replay":
        return make_from_replay(args.run, step=args.step, **refs)
    return make_combined(list(args.sources), **refs)


def cmd_dataset(argv: list[str]) -> int:
    try:
        import minari  # noqa: F401
    except ImportError:
        print("error: datasets need Minari: pip install -e '.[offline]'", file=sys.stderr)
        return 2
    args = parse_args(argv)
    try:
        if args.command == "make":
            name, provenance = make(args)
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
