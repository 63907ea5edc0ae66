"""Study files: an Optuna hyperparameter search over one algorithm's Config, in TOML.

    name = "quickstart-ppo"           # the study's name in its storage; default: the file name
    algorithm = "ppo"
    env_ids = ["CartPole-v1", "Acrobot-v1"]
    seeds = [1, 2]                    # every trial runs every seed on every env
    total_timesteps = 50_000          # budget per run
    eval_every = 10_000               # intermediate values (and pruning points) at every evaluation
    eval_episodes = 5
    n_trials = 12                     # finished (complete or pruned) trials the study stops at
    objective = "final"               # final: normalised return of the last evaluation; auc: mean over evaluations
    aggregate = "mean"                # over seeds x envs: mean or iqm
    normalize = { "CartPole-v1" = [0, 500], "Acrobot-v1" = [-500, -60] }  # or "human", "d4rl", "TABLE:LOW:HIGH"
    export_seeds = [11, 12, 13, 14, 15]  # seeds of the exported suite: not the ones tuned on

    [sampler]                         # tpe (multivariate, seeded), random, cmaes, gp
    name = "tpe"
    seed = 0
    n_startup_trials = 5

    [pruner]                          # median, sha (successive halving), hyperband, wilcoxon, none
    name = "median"
    n_startup_trials = 3
    n_warmup_evals = 1

    [fixed]                           # Config values shared by every trial
    num_envs = 8

    [params.learning_rate]            # the search space: Config fields only
    type = "float"                    # float, int, categorical
    low = 1e-4
    high = 3e-3
    log = true
    [params.target_kl]
    type = "float"
    low = 0.01
    high = 0.05
    when = { anneal_lr = true }       # conditional: sampled only when an earlier parameter has this value

With several envs their scores are averaged after min-max normalisation (`normalize`), so it is required.
The wilcoxon pruner (multi-instance objectives) runs each seed x env instance to the end in turn and
compares finished instances with the best trial's; the others prune between evaluations.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs import validate_env_id
from experiments.registry import config_fields, convert_value, list_algorithms, load_algorithm, make_config
from experiments.suite import resolve_named_file, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STUDIES_DIR = Path(__file__).parent / "studies"
TOP_LEVEL = {
    "name",
    "description",
    "algorithm",
    "env_ids",
    "seeds",
    "total_timesteps",
    "eval_every",
    "eval_episodes",
    "n_trials",
    "objective",
    "aggregate",
    "normalize",
    "export_seeds",
    "sampler",
    "pruner",
    "fixed",
    "params",
}
SAMPLERS = {
    "tpe": {"seed", "n_startup_trials", "multivariate", "constant_liar"},
    "random": {"seed"},
    "cmaes": {"seed", "n_startup_trials", "sigma0"},
    "gp": {"seed", "n_startup_trials"},
}
PRUNERS = {
    "median": {"n_startup_trials", "n_warmup_evals"},
    "sha": {"min_resource", "reduction_factor"},
    "hyperband": {"min_resource", "reduction_factor"},
    "wilcoxon": {"p_threshold", "n_startup_steps"},
    "none": set(),
}
RUN_FIELDS = ("env_id", "seed", "total_timesteps", "eval_every", "eval_episodes")


class StudyError(ValueError):
    """Every problem found in a study file, one per line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # float, int, categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    algorithm: str
    env_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    total_timesteps: int
    eval_every: int
    eval_episodes: int
    n_trials: int
    objective: str
    aggregate: str
    bounds: dict[str, tuple[float, float]] | None  # per-env min-max normalisation; None: raw returns (one env)
    export_seeds: tuple[int, ...]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    raw: dict[str, Any]  # the parsed file, stored with the study so every worker checks it runs the same search

    @property
    def n_evals(self) -> int:
        return self.total_timesteps // self.eval_every

    def fingerprint(self) -> str:
        """What must be the same for two workers to share a study (not n_trials, which a worker may override)."""
        same = {k: v for k, v in self.raw.items() if k not in ("n_trials", "description", "export_seeds")}
        return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config overrides of one trial's runs (without env_id and seed)."""
        return {
            **self.fixed,
            **params,
            "total_timesteps": self.total_timesteps,
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
        }


def resolve_study_path(name_or_path: str) -> Path:
    return resolve_named_file(name_or_path, STUDIES_DIR, "study", "studies")


def _positive_int(data: dict[str, Any], key: str, problems: list[str], default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f"{key}: need a positive integer, got {value!r}")
        return 1
    return value


def _parse_params(algo: str, table: Any, fixed: dict[str, Any], problems: list[str]) -> list[Param]:
    if not isinstance(table, dict) or not table:
        problems.append("params: need at least one [params.<Config field>] table")
        return []
    fields = config_fields(load_algorithm(algo).Config)
    params: list[Param] = []
    for name, spec in table.items():
        where = f"params.{name}"
        if name not in fields:
            problems.append(f"{where}: {algo} has no Config field {name!r}{suggest(name, list(fields))}")
            continue
        if name in RUN_FIELDS or name in fixed:
            problems.append(
                f"{where}: {name} is set by the study ({'fixed' if name in fixed else 'top level'}); not searchable"
            )
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: need a table with a type")
            continue
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        kind = spec.get("type")
        when = spec.get("when", {})
        if not isinstance(when, dict):
            problems.append(f"{where}.when: need a table {{earlier_param = value}}")
            when = {}
        earlier = {p.name: p for p in params}
        for other, value in when.items():
            if other not in earlier:
                problems.append(f"{where}.when: {other!r} is not a parameter defined before {name!r}")
            elif earlier[other].type == "categorical" and value not in earlier[other].choices:
                problems.append(f"{where}.when: {other} = {value!r} is not one of its choices {list(earlier[other].choices)}")
        try:
            if kind in ("float", "int"):
                low, high = convert_value(fields[name], spec.get("low")), convert_value(fields[name], spec.get("high"))
                if not isinstance(low, int | float) or isinstance(low, bool) or low >= high:
                    raise ValueError(f"need low < high (numbers of the field's type), got {low!r}, {high!r}")
                if kind == "int" and not isinstance(low, int):
                    raise ValueError(f"type int, but {name} is a {fields[name].type}")
                log = bool(spec.get("log", False))
                if log and low <= 0:
                    raise ValueError("log scale needs low > 0")
                if log and spec.get("step") is not None:
                    raise ValueError("step and log cannot be combined")
                params.append(Param(name, kind, low, high, log, spec.get("step"), when=when))
            elif kind == "categorical":
                choices = spec.get("choices")
                if not isinstance(choices, list) or not choices:
                    raise ValueError("need a non-empty list of choices")
                params.append(Param(name, kind, choices=tuple(convert_value(fields[name], c) for c in choices), when=when))
            else:
                raise ValueError(f"unknown type {kind!r}; use float, int or categorical")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return params


def _parse_bounds(value: Any, env_ids: list[str], problems: list[str]) -> dict[str, tuple[float, float]] | None:
    if value is None:
        if len(env_ids) > 1:
            problems.append(
                "normalize: several envs need min-max bounds to average their scores "
                '({env = [low, high]}, "human", "d4rl" or "TABLE:LOW_ALGO:HIGH_ALGO")'
            )
        return None
    if isinstance(value, str):
        from analysis.scores import env_bounds

        try:
            return env_bounds(env_ids, value)
        except (KeyError, ValueError, FileNotFoundError) as exc:
            problems.append(f"normalize: {exc.args[0]}")
            return None
    if not isinstance(value, dict):
        problems.append("normalize: need {env_id = [low, high], ...} or a named normalisation")
        return None
    bounds = {}
    for env_id in env_ids:
        pair = value.get(env_id)
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int | float) for x in pair) and pair[0] < pair[1]
        ):
            problems.append(f"normalize.{env_id}: need [low, high] with low < high, got {pair!r}")
        else:
            bounds[env_id] = (float(pair[0]), float(pair[1]))
    for extra in set(value) - set(env_ids):
        problems.append(f"normalize.{extra}: not one of the study's env_ids")
    return bounds


def _parse_options(kind: str, table: Any, known: dict[str, set[str]], default: str, problems: list[str]) -> dict[str, Any]:
    table = dict(table) if isinstance(table, dict) else {}
    name = table.pop("name", default)
    if name not in known:
        problems.append(f"{kind}.name: unknown {kind} {name!r}; choose one of {', '.join(known)}")
        return {"name": default}
    for key in set(table) - known[name]:
        problems.append(
            f"{kind}.{key}: not an option of the {name} {kind} (options: {', '.join(sorted(known[name])) or 'none'})"
        )
    return {"name": name, **table}


def load_study(name_or_path: str) -> Study:
    """Parse and validate a study file completely; raises StudyError listing every problem at once."""
    path = resolve_study_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(path, [f"not valid TOML: {exc}"]) from None
    problems = [f"{key}: unknown key{suggest(key, sorted(TOP_LEVEL))}" for key in data if key not in TOP_LEVEL]
    algo = data.get("algorithm")
    if algo not in list_algorithms():
        problems.append(f"algorithm: unknown algorithm {algo!r}; known: {', '.join(list_algorithms())}")
        raise StudyError(path, problems)
    env_ids = data.get("env_ids", [])
    if not isinstance(env_ids, list) or not env_ids:
        problems.append("env_ids: need a non-empty list of environment ids")
        env_ids = []
    for i, env_id in enumerate(env_ids):
        try:
            validate_env_id(str(env_id))
            load_algorithm(algo).check_env(str(env_id))
        except ValueError as exc:
            problems.append(f"env_ids[{i}]: {exc}")
    seeds, export_seeds = data.get("seeds", []), data.get("export_seeds", [])
    for key, value in (("seeds", seeds), ("export_seeds", export_seeds)):
        if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            problems.append(f"{key}: need a non-empty list of integer seeds")
        elif len(set(value)) != len(value):
            problems.append(f"{key}: duplicate seeds")
    if isinstance(seeds, list) and isinstance(export_seeds, list) and set(seeds) & set(export_seeds):
        problems.append(
            f"export_seeds: {sorted(set(seeds) & set(export_seeds))} were tuned on; the exported suite "
            "must measure other seeds"
        )
    total, every = _positive_int(data, "total_timesteps", problems), _positive_int(data, "eval_every", problems)
    if every > total:
        problems.append(f"eval_every ({every}) must be at most total_timesteps ({total})")
    objective, aggregate = data.get("objective", "final"), data.get("aggregate", "mean")
    if objective not in ("final", "auc"):
        problems.append(f"objective: {objective!r}; use final or auc")
    if aggregate not in ("mean", "iqm"):
        problems.append(f"aggregate: {aggregate!r}; use mean or iqm")
    fields = config_fields(load_algorithm(algo).Config)
    fixed_raw = data.get("fixed", {})
    fixed = {}
    for key, value in fixed_raw.items() if isinstance(fixed_raw, dict) else []:
        if key not in fields:
            problems.append(f"fixed.{key}: {algo} has no Config field {key!r}{suggest(key, list(fields))}")
        elif key in RUN_FIELDS:
            problems.append(f"fixed.{key}: set {key} at the top level of the study")
        else:
            try:
                fixed[key] = convert_value(fields[key], value)
            except ValueError as exc:
                problems.append(f"fixed.{key}: {exc}")
    params = _parse_params(algo, data.get("params"), fixed, problems)
    study = Study(
        name=str(data.get("name", path.stem)),
        path=path,
        algorithm=algo,
        env_ids=tuple(map(str, env_ids)),
        seeds=tuple(seeds) if isinstance(seeds, list) else (),
        total_timesteps=total,
        eval_every=every,
        eval_episodes=_positive_int(data, "eval_episodes", problems, default=10),
        n_trials=_positive_int(data, "n_trials", problems),
        objective=objective,
        aggregate=aggregate,
        bounds=_parse_bounds(data.get("normalize"), list(map(str, env_ids)), problems),
        export_seeds=tuple(export_seeds) if isinstance(export_seeds, list) else (),
        sampler=_parse_options("sampler", data.get("sampler"), SAMPLERS, "tpe", problems),
        pruner=_parse_options("pruner", data.get("pruner"), PRUNERS, "median", problems),
        fixed=fixed,
        params=tuple(params),
        raw=data,
    )
    if not problems:  # the fixed part of every trial's Config must be valid on its own
        try:
            make_config(algo, {**study.overrides({}), "env_id": study.env_ids[0], "seed": study.seeds[0]})
        except ValueError as exc:
            problems.append(f"fixed: {exc}")
    if problems:
        raise StudyError(path, sorted(set(problems), key=problems.index))
    return study
