"""Final scores by a named protocol, and normalisation against reference tables.

Protocols (each states what a published number means, so comparisons are like for like):
- `eval-last`: per run, the mean of its last `n` deterministic evaluations (`eval/episodic_return`).
- `train-last100`: per run, the mean of its last 100 training episodes (`charts/episodic_return`): CleanRL's.
- `eval-max`: per (algo, variant, env), the maximum over evaluation steps of the seed-average: TD3 Table 1's
  (optimistic). It gives one score per cell, not per seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE_DIR = Path(__file__).parent / "reference"
RUN_KEYS = ["suite", "algo", "variant", "env_id", "seed", "run_id"]
CELL_KEYS = ["suite", "algo", "variant", "env_id"]
PROTOCOLS = ("eval-last", "train-last100", "eval-max")


def final_scores(frame: pd.DataFrame, protocol: str = "eval-last", n: int = 10) -> pd.DataFrame:
    """Per-run scores (`eval-last`, `train-last100`) or per-cell scores (`eval-max`), column `score`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    metric = "charts/episodic_return" if protocol == "train-last100" else "eval/episodic_return"
    rows = frame[frame["metric"] == metric].sort_values([*RUN_KEYS, "step"], kind="stable")
    if rows.empty:
        raise ValueError(f"no {metric!r} values in the frame: protocol {protocol} needs them")
    if protocol == "eval-max":
        curves = rows.groupby([*CELL_KEYS, "step"], as_index=False).agg(mean=("value", "mean"), n_seeds=("seed", "nunique"))
        best = curves.loc[curves.groupby(CELL_KEYS)["mean"].idxmax()]
        return best.rename(columns={"mean": "score", "step": "best_step"}).reset_index(drop=True)
    last = 100 if protocol == "train-last100" else n
    scores = rows.groupby(RUN_KEYS).tail(last).groupby(RUN_KEYS, as_index=False)["value"].mean()
    return scores.rename(columns={"value": "score"})


SEEDS_NOT_GIVEN = {"", "n/a", "na", "none", "-", "?", "not stated", "not given", "unknown"}


def parse_seed_count(text: object) -> int | None:
    """A reference row's `n_seeds_if_given` as published: '10' -> 10, '1 (single run)' -> 1, '3 (CleanRL); ...' -> 3
    (the leading integer; the rest is a comment), '' or 'n/a' or 'not stated' -> None. ValueError for anything else."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    cell = str(text).strip()
    if cell.lower() in SEEDS_NOT_GIVEN:
        return None
    try:
        number = float(cell)  # "3", and "3.0" from a table saved by pandas
    except ValueError:
        match = re.match(r"(\d+)(?![\d.,]*\d)", cell)  # a leading integer, not the start of "3.5" or "1,000"
        number = float(match.group(1)) if match else float("nan")
    if not (number >= 1 and float(number).is_integer()):
        raise ValueError(f"cannot read a seed count in {cell!r}")
    return int(number)


def load_reference(name: str) -> pd.DataFrame:
    """A reference table shipped in analysis/reference/ (file stem), or any CSV path in the same format.

    `n_seeds_if_given` becomes integers (or missing) by `parse_seed_count`; a cell that cannot be read raises a
    ValueError naming the file, row and column of every such cell: a table the report cannot read as its author meant
    is refused before any work, rather than a row of it silently dropped from the comparison."""
    path = Path(name)
    if not path.is_file():
        path = REFERENCE_DIR / f"{name.removesuffix('.csv')}.csv"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in REFERENCE_DIR.glob("*.csv")))
        raise FileNotFoundError(f"no reference table {name!r}; shipped: {known}")
    table = pd.read_csv(path, dtype={"n_seeds_if_given": str})
    if "n_seeds_if_given" in table:
        counts, problems = [], []
        for i, cell in enumerate(table["n_seeds_if_given"]):
            try:
                counts.append(parse_seed_count(cell))
            except ValueError as exc:
                counts.append(None)
                problems.append(f"{path}, row {i + 2} (the header is row 1), column n_seeds_if_given: {exc}")
        if problems:
            hint = (
                "give the number of seeds first (text after it is kept as a comment, e.g. '1 (single run)') or leave it empty"
            )
            raise ValueError("\n  ".join([f"reference table {path}: {hint}", *problems]))
        table["n_seeds_if_given"] = pd.array(counts, dtype="Int64")
    return table


def atari_game(env_id: str) -> str:
    """`ALE/MontezumaRevenge-v5`, `MontezumaRevengeNoFrameskip-v4` -> `montezuma_revenge` (the table's key)."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def minmax_normalize(scores: pd.Series, low: pd.Series | float, high: pd.Series | float) -> pd.Series:
    """(score - low) / (high - low): 0 at the low reference, 1 at the high one."""
    return (scores - low) / (high - low)


def human_normalized(scores: pd.DataFrame) -> pd.Series:
    """Atari human-normalised scores (score - random) / (human - random), from the Atari-57 table."""
    return normalize_by_bounds(scores, env_bounds(sorted(set(scores["env_id"])), "human"))


def normalize_by_bounds(scores: pd.DataFrame, bounds: dict[str, tuple[float, float]]) -> pd.Series:
    """Min-max normalisation with per-env (low, high) bounds, e.g. from a reference table or a study file."""
    missing = sorted(set(scores["env_id"]) - set(bounds))
    if missing:
        raise KeyError(f"no normalisation bounds for {', '.join(missing)}")
    low = scores["env_id"].map(lambda e: bounds[e][0]).astype(float)
    high = scores["env_id"].map(lambda e: bounds[e][1]).astype(float)
    return minmax_normalize(scores["score"].astype(float), low, high)


def d4rl_normalized(scores: pd.Series, low: float, high: float) -> pd.Series:
    """D4RL convention: 100 * (score - min) / (max - min)."""
    return 100.0 * minmax_normalize(scores, low, high)


def per_run_scores(frame: pd.DataFrame, protocol: str = "eval-last", n: int = 10) -> pd.DataFrame:
    """One score per run under any protocol (column `score`), so per-seed statistics apply to all three.

    For `eval-max` a run's score is its evaluation at its cell's best step (the step where the seed-average
    peaks): the seed-mean of these equals the protocol's cell score, and their spread is the spread TD3's
    Table 1 reports next to it."""
    if protocol != "eval-max":
        return final_scores(frame, protocol, n)
    best = final_scores(frame, "eval-max")[[*CELL_KEYS, "best_step"]]
    rows = frame[frame["metric"] == "eval/episodic_return"].merge(best, on=CELL_KEYS)
    at_best = rows[rows["step"] == rows["best_step"]]
    return at_best[[*RUN_KEYS, "value"]].rename(columns={"value": "score"}).reset_index(drop=True)


def eval_curves(frame: pd.DataFrame, cell: tuple[str, str, str, str]) -> np.ndarray:
    """(seeds, steps) evaluation returns of one (suite, algo, variant, env_id) cell, at the steps all seeds share."""
    rows = frame[frame["metric"] == "eval/episodic_return"]
    rows = rows[(rows[CELL_KEYS] == pd.Series(cell, index=CELL_KEYS)).all(axis=1)]
    return rows.pivot_table(index="run_id", columns="step", values="value").dropna(axis=1).to_numpy()


def env_key(env_id: str) -> str:
    """An env's name across versions and sources: `Hopper-v5`, `Hopper-v1` -> `hopper`; `ALE/Pong-v5`,
    `PongNoFrameskip-v4`, `Pong (ALE)` -> `pong`; `MinAtar/Breakout-v1`, `Breakout-MinAtar` -> `minatar_breakout`.
    Reference rows and our cells are matched on this key."""
    name = re.sub(r"\s*\(.*\)$", "", env_id).removeprefix("ALE/")  # "Pong (ALE)", "PongNoFrameskip-v4 (gym)"
    if name.startswith("MinAtar/") or name.endswith("-MinAtar"):  # `MinAtar/Breakout-v1`, gymnax's `Breakout-MinAtar`
        return "minatar_" + atari_game(name.removeprefix("MinAtar/").removesuffix("-MinAtar"))  # not Atari's Breakout
    return atari_game(name)


def dataset_env_guess(task: str) -> str | None:
    """The env of a dataset read from its name alone, for a dataset that is not on this machine: a Minari id's name part
    (`rlgrid/hopper-v5/medium-v0` -> `Hopper-v5`, a registered gymnasium id case aside; `mujoco/hopper/medium-v0` ->
    D4RL's env of that name, `envs.datasets.D4RL_ENVS`), a D4RL file's task (`hopper-medium-v2.hdf5` -> `Hopper-v5`);
    None where the name says none."""
    from envs.datasets import D4RL_ENVS, HDF5_SUFFIXES

    if task.endswith(HDF5_SUFFIXES):
        return D4RL_ENVS.get(Path(task).name.split("-")[0].lower())
    parts = task.split("/")
    if len(parts) < 3:
        return None
    name = parts[-2].lower()
    import gymnasium as gym

    registered = {env_id.lower(): env_id for env_id in gym.registry}
    return registered.get(name) or D4RL_ENVS.get(name)


@dataclass(frozen=True)
class TaskEnv:
    """Where a task (an env id, or a dataset: the task of an offline run) is played: `env_id` (None if unknown), and,
    for a dataset, its own reference returns and whether it was found here (else `env_id` is read from its name)."""

    env_id: str | None
    is_dataset: bool = False
    here: bool = True
    ref_min_score: float | None = None
    ref_max_score: float | None = None


def task_env(task: str) -> TaskEnv:
    """A task's env and, for a dataset, its reference returns (`envs.datasets.dataset_info`, without loading the data).
    A dataset that is not on this machine (or cannot be read here) is not an error: its env is read from its name
    (`dataset_env_guess`) and `here` is False, so that a report of its runs can still be written elsewhere."""
    from envs.datasets import dataset_info, is_dataset_id

    if not is_dataset_id(task):
        return TaskEnv(task)
    try:
        info = dataset_info(task)
    except (ValueError, OSError, ImportError):  # DatasetNotFound is a ValueError; h5py missing: ImportError
        return TaskEnv(dataset_env_guess(task), is_dataset=True, here=False)
    return TaskEnv(info.env_id or dataset_env_guess(task), True, True, info.ref_min_score, info.ref_max_score)


def env_bounds(env_ids: list[str], normalize: str, notes: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Per-env (low, high) for min-max normalisation, by name:

    - `human`: Atari-57 random and human scores;
    - `d4rl`: D4RL's random and expert reference returns (MuJoCo locomotion tasks). A task that is a dataset (the task
      of an offline run: a Minari id or a D4RL .hdf5 path) is normalised by its own reference returns
      (`ref_min_score`, `ref_max_score`) where it has both, as its runs' `eval/normalized_score` is; else by D4RL's
      row of the env it was collected in (read from its name where the dataset is not on this machine);
    - `TABLE:LOW:HIGH`: the rows of algorithms LOW and HIGH of a reference table (shipped name or CSV path),
      e.g. `mujoco_td3_paper_2018:DDPG:TD3`.
    Every env must be covered, else KeyError naming the ones that are not. `notes` (a list) receives a sentence for
    each dataset normalised otherwise than by its own reference returns."""
    if normalize == "human":
        table, low_name, high_name = load_reference("atari_human_random_57"), "Random", "Human"
    elif normalize == "d4rl":
        table = load_reference("d4rl_reference_min_max")
        table = table.assign(env_id=table["env_id"].str.split("-").str[0])
        low_name, high_name = "REF_MIN_SCORE (random policy)", "REF_MAX_SCORE (expert reference)"
    elif normalize.count(":") >= 2:
        name, low_name, high_name = normalize.rsplit(":", 2)
        table = load_reference(name)
    else:
        raise ValueError(f"unknown normalisation {normalize!r}: use none, human, d4rl or TABLE:LOW_ALGO:HIGH_ALGO")
    keyed = table.assign(key=table["env_id"].map(lambda e: env_key(str(e)).replace("_", "")))
    bounds, missing = {}, []
    for env_id in env_ids:
        lookup, why = env_id, ""
        if normalize == "d4rl" and (task := task_env(env_id)).is_dataset:
            own = (task.ref_min_score, task.ref_max_score)
            if None not in own and own[0] != own[1]:
                bounds[env_id] = (float(own[0]), float(own[1]))  # the dataset's own, as its runs' eval/normalized_score
                continue
            if task.here:
                why = f"dataset {env_id} has no reference returns of its own (ref_min_score and ref_max_score)"
            else:
                why = f"dataset {env_id} is not on this machine, so its own reference returns could not be read"
            if task.env_id is None:
                missing.append(f"{env_id} ({why}, and its env is unknown)")
                continue
            lookup = task.env_id
        rows = keyed[keyed["key"] == env_key(lookup).replace("_", "")]
        low, high = rows.loc[rows["algorithm"] == low_name, "value"], rows.loc[rows["algorithm"] == high_name, "value"]
        if low.empty or high.empty:
            missing.append(f"{env_id} ({why}, and D4RL has no row for its env {lookup})" if why else env_id)
            continue
        bounds[env_id] = (float(low.iloc[0]), float(high.iloc[0]))
        if why and notes is not None:
            where = (
                "its runs logged no eval/normalized_score"
                if task.here
                else "its env is read from its name, and its runs' eval/normalized_score (by the dataset's own reference "
                "returns) may differ"
            )
            notes.append(
                f"{why}: normalised by D4RL's row of its env {lookup} (random {bounds[env_id][0]:,.1f}, expert "
                f"{bounds[env_id][1]:,.1f}); {where}."
            )
    if missing:
        raise KeyError(f"normalisation {normalize!r} has no {low_name!r}/{high_name!r} scores for {', '.join(missing)}")
    return bounds
