"""Suite files: a seeded grid of algorithms x environments x variants x seeds, in TOML.

    name = "quickstart"               # optional; default: the file name
    algorithms = ["ppo"]
    env_ids = ["CartPole-v1", "Pendulum-v1"]
    seeds = [1, 2, 3]                 # or a count: seeds = 3 means 1, 2, 3
    total_timesteps = 100_000         # these three apply to every run
    eval_every = 10_000
    eval_episodes = 10

    [algo.ppo]                        # Config overrides for one algorithm ...
    learning_rate = 3e-4
    env_ids = ["CartPole-v1"]         # ... and, optionally, the envs it runs on (a subset of env_ids; default: all)
    [algo.ppo.classic_control]        # ... and for one env family (classic_control, mujoco, atari, minatar, ...)
    num_envs = 8

    [[variants]]                      # named variants: each is a row of its own in every table
    algo = "ppo"
    name = "clip-0.1"
    clip_coef = 0.1

An algorithm with variants runs only its variants (add one with no overrides to keep the defaults);
one without runs as variant "default". Later layers win: common keys < [algo.X] < [algo.X.family] < variant.

The grid is algorithms x env_ids, except where `[algo.X] env_ids` narrows an algorithm to some of the top-level envs
(each must be one of them; every top-level env must be run by some algorithm): one suite can then hold several
comparisons, e.g. the control methods on one task and the prediction methods on another (suites/tabular.toml). The
report compares methods env by env, so a method missing from an env is simply absent there.

For the offline algorithms (bc, td3_bc, iql, cql) a task is a dataset, named in env_ids where an online algorithm's env
goes: a Minari id (`rlgrid/hopper-v5/medium-v0`) or the path of a D4RL .hdf5 file (suites/offline_mujoco.toml). Its
family, for `[algo.X.family]`, is that of the env it was collected in. A dataset must be on this machine when the suite
is loaded: one that is not is refused with the rest of the problems, before any run starts, with the
`rlgrid dataset make` command that makes it where its name is one that command gives.

A run can take another run's output as its input (learning from preferences: dpo starts from an sft run's policy). A
Config value `"@sft"` names the suite's sft run with the same env and seed (`"@sft/<variant>"` one variant of it):

    [algo.dpo]
    sft_run = "@sft"

Loading links it to that run's directory, so the input's hash is part of the consumer's (another sft setting makes
another dpo run); the grid runs inputs before the runs that take them, and a run whose input did not finish is not
started (suites/preferences.toml).
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs import ENV_FAMILIES, env_family, validate_env_id
from envs.datasets import DatasetNotFound
from experiments.registry import config_fields, convert_value, list_algorithms, load_algorithm
from experiments.runs import RUN_REFERENCE, RunSpec, run_references

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES_DIR = Path(__file__).parent / "suites"
TOP_LEVEL = {
    "name",
    "description",
    "algorithms",
    "env_ids",
    "seeds",
    "total_timesteps",
    "eval_every",
    "eval_episodes",
    "algo",
    "variants",
}
COMMON_FIELDS = ("total_timesteps", "eval_every", "eval_episodes")


class SuiteError(ValueError):
    """Every problem found in a suite file, one per line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    specs: tuple[RunSpec, ...]


def resolve_named_file(name_or_path: str, directory: Path, kind: str, kinds: str) -> Path:
    """A path to a TOML file, or the name of one shipped in `directory` (suites, studies)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = directory / f"{name_or_path.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in directory.glob("*.toml"))
    raise ValueError(f"no {kind} file {name_or_path!r}; shipped {kinds}: {', '.join(known)}")


def resolve_suite_path(name_or_path: str) -> Path:
    return resolve_named_file(name_or_path, SUITES_DIR, "suite", "suites")


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def make_dataset_hint(task: str) -> str:
    """For a dataset that is not here and has a name `rlgrid dataset make` gives (`rlgrid/<env>/<recipe>-vN`), a sentence
    with the command that makes it (and the run it is made from); '' for any other name."""
    from analysis.scores import dataset_env_guess
    from experiments.dataset_recipes import AGENT_ALGORITHMS, RECIPES, default_name

    parts = task.split("/")
    recipe = re.sub(r"-v\d+$", "", parts[-1])
    if len(parts) != 3 or parts[0] != "rlgrid" or recipe not in RECIPES:
        return ""
    env_id = dataset_env_guess(task)
    env = env_id or "ENV_ID"
    name = "" if env_id is not None and task == default_name(env_id, recipe) else f" --name {task}"
    agents = "/".join(AGENT_ALGORITHMS)
    train = f"`rlgrid train sac --env-id {env} --total-timesteps N`"
    if recipe == "random":
        how = f"`rlgrid dataset make random --env-id {env}{name}`"
    elif recipe == "medium-expert":
        medium, expert = (f"rlgrid/{parts[1]}/{kind}-v0" for kind in ("medium", "expert"))
        how = f"`rlgrid dataset make medium-expert --from {medium} {expert}{name}` (make those two first)"
    else:
        run = {
            "medium": f"a {agents} run of {env} stopped at about a third of the expert's return ({train}, N well short of "
            "1M; check its eval/episodic_return)",
            "expert": f"a {agents} run of {env} trained to the end ({train}, e.g. N = 1000000)",
            "medium-replay": "the run the medium dataset is made from (its replay memory: train it with buffer_size >= "
            "total_timesteps)",
        }[recipe]
        how = f"`rlgrid dataset make {recipe} --run RUN_DIR{name}`, RUN_DIR {run}"
    return f". To make it: {how}"


def check_algo_envs(algo: str, value: Any, env_ids: list[Any], valid_envs: list[str], problems: list[str]) -> list[str]:
    """`[algo.X] env_ids`: a non-empty list of distinct env ids, each one of the top-level env_ids. Returns the valid ones
    in the top-level order (the grid's order); adds a line to `problems` for each that is not."""
    where = f"algo.{algo}.env_ids"
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: need a non-empty list of environment ids, some of the top-level env_ids")
        return []
    chosen = set()
    for i, env_id in enumerate(value):
        if not isinstance(env_id, str):
            problems.append(f"{where}[{i}]: need an environment id (a string), got {env_id!r}")
        elif env_id in chosen:
            problems.append(f"{where}[{i}]: {env_id!r} is listed twice")
        elif env_id not in env_ids:
            try:
                validate_env_id(env_id)
                what = f"{env_id!r} is not one of the top-level env_ids"
            except DatasetNotFound:
                what = f"no dataset {env_id!r} on this machine, and not one of the top-level env_ids"
            except ValueError:
                what = f"unknown environment id {env_id!r}, and not one of the top-level env_ids"
            listed = ", ".join(map(str, env_ids))
            problems.append(f"{where}[{i}]: {what}{suggest(env_id, [str(e) for e in env_ids])}: {listed}")
        else:
            chosen.add(env_id)
    return [env_id for env_id in valid_envs if env_id in chosen]


def link_run_references(specs: list[RunSpec], problems: list[str]) -> list[RunSpec]:
    """Each `@<algo>` (or `@<algo>/<variant>`) value becomes `@<algo>/<env-slug>/seed<k>-<hash8>`: the directory, under
    the suite's, of the suite's one run of that algorithm (variant) with the same env and seed. An input is linked
    before the runs that take it, so the hash of a pipeline's last stage covers every stage before it. A reference that
    matches no run or several, or a circle of them, is a problem."""
    linked: dict[RunSpec, RunSpec] = {}
    pending = list(specs)
    while pending:
        progress, waiting = False, []
        for spec in pending:
            references = run_references(spec)
            targets, unresolved = {}, False
            for name, value in references.items():
                algo, _, variant = value[len(RUN_REFERENCE) :].partition("/")
                matches = [
                    other
                    for other in specs
                    if other.algo == algo
                    and other.env_id == spec.env_id
                    and other.seed == spec.seed
                    and other is not spec
                    and (not variant or other.variant == variant)
                ]
                where = f"{spec.algo} x {spec.env_id} x {spec.variant}: {name} = {value!r}"
                if len(matches) != 1:
                    found = (
                        "no run" if not matches else f"{len(matches)} runs (variants {', '.join(m.variant for m in matches)})"
                    )
                    problems.append(f"{where} matches {found} of this suite with the same env and seed")
                    targets = None
                    break
                if matches[0] not in linked:
                    unresolved = True
                    break
                target = linked[matches[0]]
                targets[name] = RUN_REFERENCE + target.run_dir(".").relative_to(target.suite).as_posix()
            if targets is None:
                continue  # reported
            if unresolved:
                waiting.append(spec)
                continue
            overrides = {**dict(spec.overrides), **targets}
            linked[spec] = RunSpec.create(spec.algo, spec.env_id, spec.seed, overrides, suite=spec.suite, variant=spec.variant)
            progress = True
        if not progress and waiting:
            names = sorted({f"{spec.algo}/{spec.variant}" for spec in waiting})
            problems.append(f"run references go round in a circle (or wait on a refused run): {', '.join(names)}")
            break
        pending = waiting
    return [linked.get(spec, spec) for spec in specs]


def load_suite(name_or_path: str) -> Suite:
    """Parse, validate completely and expand a suite; raises SuiteError listing every problem at once."""
    path = resolve_suite_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(path, [f"not valid TOML: {exc}"]) from None
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(f"{key}: unknown key{suggest(key, sorted(TOP_LEVEL))}")

    known_algos = list(list_algorithms())
    algos = data.get("algorithms", [])
    if not isinstance(algos, list) or not algos:
        problems.append("algorithms: need a non-empty list of algorithm names")
        algos = []
    for i, algo in enumerate(algos):
        if algo not in known_algos:
            problems.append(
                f"algorithms[{i}]: unknown algorithm {algo!r}{suggest(str(algo), known_algos)}; "
                f"known: {', '.join(known_algos)}"
            )
    algos = [a for a in algos if a in known_algos]

    env_ids = data.get("env_ids", [])
    if not isinstance(env_ids, list) or not env_ids:
        problems.append("env_ids: need a non-empty list of environment ids")
        env_ids = []
    valid_envs = []
    for i, env_id in enumerate(env_ids):
        try:
            validate_env_id(str(env_id))
            valid_envs.append(env_id)
        except DatasetNotFound as exc:  # nothing is downloaded: say how to make it
            problems.append(f"env_ids[{i}]: {exc}{make_dataset_hint(str(env_id))}")
        except ValueError as exc:
            problems.append(f"env_ids[{i}]: {exc}")

    seeds = data.get("seeds", [])
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        seeds = list(range(1, seeds + 1))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        problems.append("seeds: need a list of integers or a positive count")
        seeds = []
    elif len(set(seeds)) != len(seeds):
        problems.append("seeds: duplicate seeds")

    def check_fields(algo: str, table: dict[str, Any], where: str) -> dict[str, Any]:
        fields = config_fields(load_algorithm(algo).Config)
        clean = {}
        for key, value in table.items():
            if key not in fields:
                problems.append(f"{where}.{key}: {algo} has no Config field {key!r}{suggest(key, list(fields))}")
            elif key in ("env_id", "seed"):
                problems.append(f"{where}.{key}: set env ids and seeds with the top-level env_ids and seeds")
            else:
                try:
                    clean[key] = convert_value(fields[key], value)
                except ValueError as exc:
                    problems.append(f"{where}.{key}: {exc}")
        return clean

    common = {key: data[key] for key in COMMON_FIELDS if key in data}
    per_algo: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    envs_of: dict[str, list[str]] = {}  # [algo.X] env_ids: the envs an algorithm is narrowed to
    algo_tables = data.get("algo", {})
    for algo_name, table in algo_tables.items() if isinstance(algo_tables, dict) else []:
        if algo_name not in algos:
            problems.append(f"algo.{algo_name}: not one of the suite's algorithms {algos}")
            continue
        flat = {k: v for k, v in table.items() if not isinstance(v, dict) and k != "env_ids"}
        if "env_ids" in table:
            envs_of[algo_name] = check_algo_envs(algo_name, table["env_ids"], env_ids, valid_envs, problems)
        families = {}
        for family, sub in ((k, v) for k, v in table.items() if isinstance(v, dict)):
            if family not in ENV_FAMILIES:
                problems.append(f"algo.{algo_name}.{family}: unknown env family{suggest(family, list(ENV_FAMILIES))}")
            else:
                families[family] = check_fields(algo_name, sub, f"algo.{algo_name}.{family}")
        per_algo[algo_name] = (check_fields(algo_name, flat, f"algo.{algo_name}"), families)

    variants: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for i, variant in enumerate(data.get("variants", [])):
        where = f"variants[{i}]"
        algo, name = variant.get("algo"), variant.get("name")
        if algo not in algos or not isinstance(name, str) or not name:
            problems.append(f"{where}: needs algo (one of {algos}) and a non-empty name")
            continue
        if any(name == existing for existing, _ in variants.get(algo, [])):
            problems.append(f"{where}: duplicate variant name {name!r} for {algo}")
            continue
        overrides = {k: v for k, v in variant.items() if k not in ("algo", "name")}
        variants.setdefault(algo, []).append((name, check_fields(algo, overrides, f"{where}")))

    specs: list[RunSpec] = []
    suite_name = str(data.get("name", path.stem))
    for algo in algos:
        common_clean = check_fields(algo, common, "(top level)")
        algo_flat, algo_families = per_algo.get(algo, ({}, {}))
        for env_id in envs_of.get(algo, valid_envs):
            family = env_family(env_id)
            for variant_name, variant_overrides in variants.get(algo, [("default", {})]):
                overrides = {**common_clean, **algo_flat, **algo_families.get(family, {}), **variant_overrides}
                try:  # Config.__post_init__ checks ranges and combinations, once per grid cell
                    RunSpec.create(algo, env_id, seeds[0] if seeds else 1, overrides).config()
                    load_algorithm(algo).check_env(env_id)
                except ValueError as exc:
                    problems.append(f"{algo} x {env_id} x {variant_name}: {exc}")
                    continue
                specs.extend(RunSpec.create(algo, env_id, s, overrides, suite=suite_name, variant=variant_name) for s in seeds)
    if envs_of:
        for env_id in valid_envs:
            if not any(env_id in envs_of.get(algo, valid_envs) for algo in algos):
                problems.append(
                    f"env_ids[{env_ids.index(env_id)}]: no algorithm runs {env_id!r} (every [algo.X] env_ids leaves it out)"
                )
    specs = link_run_references(specs, problems)
    if problems:
        raise SuiteError(path, sorted(set(problems), key=problems.index))
    # Seed-major order (a stable sort keeps algorithm, env and variant order within a seed): a grid stopped
    # part-way has every cell at its first seeds, rather than some algorithms finished and others not started.
    specs.sort(key=lambda spec: seeds.index(spec.seed))
    return Suite(name=suite_name, path=path, specs=tuple(specs))
