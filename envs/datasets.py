"""Offline datasets: Minari datasets by id from the local Minari root, and D4RL HDF5 files by path, loaded into one
in-memory transition store.

Minari (the `minari` package, the `offline` extra) is the format the ecosystem shares: a dataset is a folder under
`$MINARI_DATASETS_PATH` (default `~/.minari/datasets`) named by its id (`mujoco/hopper/medium-v0`, `rlgrid/...`), with
whole episodes (observations of length T + 1, actions, rewards, terminations and truncations of length T) and
metadata, among it the env spec and the reference returns `ref_min_score` / `ref_max_score` that normalise scores.
D4RL's HDF5 files (`hopper-medium-v2.hdf5`) are flat arrays: observations, actions, rewards, terminals, timeouts and,
in most files, next_observations.

Both become `Transitions`: one row per step, with `terminals` (the episode ended in an absorbing state: no bootstrap)
and `timeouts` (it was cut by a time limit: bootstrap from the next observation) kept apart, as for online replay.
Nothing is downloaded: a dataset that is not on this machine is refused with a message saying where it was looked
for and which ones are there.

A dataset is the task of an offline run, where an online run has an env: `is_dataset_id` tells the two apart
(a Minari id has two slashes, `namespace/name/dataset-vN`; a D4RL file is a path ending .hdf5 or .h5, while a
gymnasium id has at most one slash), and `dataset_info` reads, without loading the data, the env the dataset was
collected in (where offline runs are evaluated) and its reference returns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HDF5_SUFFIXES = (".hdf5", ".h5")
CACHE = "rlgrid_transitions.npz"
"""the flat arrays of a Minari dataset, written beside its data on first load (`load_minari`)"""


class DatasetNotFound(ValueError):
    """The named dataset is not on this machine (nothing is downloaded)."""


@dataclass(frozen=True)
class Transitions:
    """A dataset as N transitions (row i: observation, action, reward, next observation and how the step ended).

    observations, next_observations (N, *obs_shape) float32; actions (N, *act_shape) float32; rewards (N,) float32;
    terminals, timeouts (N,) bool; episode_starts (N,) bool marks each episode's first step. `env_id` is the env the
    data came from (None if the file does not say), `ref_min_score` / `ref_max_score` the returns that normalise
    scores to 0 and 100 (None if the dataset has none), `source` where it was read from."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    env_id: str | None
    ref_min_score: float | None
    ref_max_score: float | None
    source: str

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.sum())

    def episode_returns(self) -> np.ndarray:
        """The undiscounted return of each episode (a trailing cut-off episode included), (episodes,) float64."""
        index = np.cumsum(self.episode_starts) - 1
        return np.bincount(index, weights=self.rewards.astype(np.float64), minlength=self.num_episodes)


D4RL_ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}
"""the gymnasium env of a D4RL file named `<task>-<dataset>-v2.hdf5` that does not say (D4RL's files hold no env id;
their mujoco-py -v2 envs have the observations and actions of the -v5 ones, Ant's 111 dimensions excepted)"""


def is_dataset_id(task: str) -> bool:
    """Whether a run's task names a dataset (a Minari id or a D4RL HDF5 path) rather than a gymnasium env id."""
    return task.endswith(HDF5_SUFFIXES) or task.count("/") >= 2


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset says about itself without its data: the env it was collected in (None if it does not say) and
    the returns that normalise scores to 0 and 100 (None where it has none)."""

    env_id: str | None
    ref_min_score: float | None
    ref_max_score: float | None


def dataset_info(name: str) -> DatasetInfo:
    """The env and reference returns of a Minari dataset (its metadata.json) or a D4RL HDF5 file (its attributes, else
    the env of its D4RL name, `D4RL_ENVS`). DatasetNotFound if it is not on this machine."""
    if name.endswith(HDF5_SUFFIXES):
        path = Path(name)
        if not path.is_file():
            raise DatasetNotFound(f"no D4RL HDF5 file at {path} (nothing is downloaded: give the path of a local copy)")
        import h5py

        with h5py.File(path, "r") as file:
            attrs = dict(file.attrs)
        env_id = attrs.get("env_id") or attrs.get("env_name") or D4RL_ENVS.get(path.name.split("-")[0].lower())
        return DatasetInfo(
            None if env_id is None else str(env_id),
            _optional_float(attrs.get("ref_min_score")),
            _optional_float(attrs.get("ref_max_score")),
        )
    _check_minari_id(name)
    metadata = json.loads((minari_root() / name / "data" / "metadata.json").read_text())
    env_spec = metadata.get("env_spec")
    env_id = json.loads(env_spec)["id"] if isinstance(env_spec, str) and env_spec else None
    return DatasetInfo(env_id, _optional_float(metadata.get("ref_min_score")), _optional_float(metadata.get("ref_max_score")))


def minari_root() -> Path:
    """Where Minari keeps local datasets: $MINARI_DATASETS_PATH, else ~/.minari/datasets (Minari's own rule)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def local_minari_ids() -> list[str]:
    """Ids of the datasets under the Minari root (folders holding a `data` directory)."""
    root = minari_root()
    if not root.is_dir():
        return []
    return sorted(str(path.parent.relative_to(root)) for path in root.rglob("data") if path.is_dir())


def load_dataset(name: str) -> Transitions:
    """A Minari dataset id, or the path of a D4RL HDF5 file (ending .hdf5 or .h5)."""
    if name.endswith(HDF5_SUFFIXES):
        return load_d4rl_hdf5(Path(name))
    return load_minari(name)


def load_minari(dataset_id: str) -> Transitions:
    """A local Minari dataset, all its episodes in order, as transitions.

    Minari keeps every episode as its own HDF5 group, five reads each: 45k short episodes (a random Hopper dataset of
    1M steps) take about 37 s. The first load therefore writes the flat arrays beside the data (`CACHE`, an
    uncompressed .npz, tagged with the data file's size and modification time) and later loads read that in about a
    second; a stale or unreadable cache is rebuilt, and a read-only dataset folder is simply read the slow way."""
    _check_minari_id(dataset_id)
    data_file = minari_root() / dataset_id / "data" / "main_data.hdf5"
    cache = minari_root() / dataset_id / CACHE
    tag = _file_tag(data_file)
    cached = _read_cache(cache, tag)
    if cached is not None:
        return cached
    transitions = _read_minari(dataset_id)
    try:
        _write_cache(cache, tag, transitions)
    except OSError:
        pass  # a read-only dataset folder: no cache, the next load reads the episodes again
    return transitions


def _check_minari_id(dataset_id: str) -> None:
    known = local_minari_ids()
    if dataset_id not in known:
        there = f"; the datasets there: {', '.join(known)}" if known else " (none there)"
        raise DatasetNotFound(
            f"no Minari dataset {dataset_id!r} under {minari_root()} (set MINARI_DATASETS_PATH to the folder that holds "
            f"it; nothing is downloaded){there}. Make one with `rlgrid dataset make`, copy a dataset's folder there, or "
            "write one with minari.create_dataset_from_buffers"
        )


def _read_minari(dataset_id: str) -> Transitions:
    import minari

    dataset = minari.load_dataset(dataset_id)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("obs", "act", "rew", "next", "term", "trunc", "start")}
    for episode in dataset.iterate_episodes():
        steps = len(episode.rewards)
        observations = np.asarray(episode.observations, np.float32)  # (T + 1, *obs_shape)
        parts["obs"].append(observations[:-1])
        parts["next"].append(observations[1:])
        parts["act"].append(np.asarray(episode.actions, np.float32).reshape(steps, -1))
        parts["rew"].append(np.asarray(episode.rewards, np.float32))
        parts["term"].append(np.asarray(episode.terminations, bool))
        parts["trunc"].append(np.asarray(episode.truncations, bool) & ~np.asarray(episode.terminations, bool))
        parts["start"].append(np.arange(steps) == 0)
    metadata = dataset.storage.metadata
    env_spec = metadata.get("env_spec")
    env_id = json.loads(env_spec)["id"] if isinstance(env_spec, str) and env_spec else None
    joined = {key: np.concatenate(values) for key, values in parts.items()}
    return Transitions(
        observations=joined["obs"],
        actions=joined["act"],
        rewards=joined["rew"],
        next_observations=joined["next"],
        terminals=joined["term"],
        timeouts=joined["trunc"],
        episode_starts=joined["start"],
        env_id=env_id,
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        source=f"minari:{dataset_id}",
    )


def load_d4rl_hdf5(path: Path) -> Transitions:
    """A D4RL HDF5 file. Without `next_observations`, the next row's observation is used inside an episode, and an
    episode's last step, whose next observation the file does not hold, is dropped where it was cut by a timeout
    (D4RL's own `qlearning_dataset` does the same); a terminal step keeps it (its next observation is never used)."""
    if not path.is_file():
        raise DatasetNotFound(f"no D4RL HDF5 file at {path} (nothing is downloaded: give the path of a local copy)")
    import h5py

    with h5py.File(path, "r") as file:
        missing = [key for key in ("observations", "actions", "rewards", "terminals") if key not in file]
        if missing:
            raise ValueError(f"{path} is not a D4RL dataset file: it lacks {', '.join(missing)}")
        observations = np.asarray(file["observations"], np.float32)
        actions = np.asarray(file["actions"], np.float32)
        rewards = np.asarray(file["rewards"], np.float32).reshape(-1)
        terminals = np.asarray(file["terminals"], bool).reshape(-1)
        timeouts = np.asarray(file["timeouts"], bool).reshape(-1) if "timeouts" in file else np.zeros_like(terminals)
        next_observations = np.asarray(file["next_observations"], np.float32) if "next_observations" in file else None
        attrs = dict(file.attrs)
    timeouts &= ~terminals
    ends = terminals | timeouts
    episode_starts = np.r_[True, ends[:-1]]
    keep = np.ones(len(rewards), bool)
    if next_observations is None:
        next_observations = np.r_[observations[1:], observations[-1:]]
        keep[timeouts] = False  # the next row starts a new episode: this step's next observation is unknown
        keep[-1] = bool(terminals[-1])  # the file's last step: no next row
        # A dropped first step of an episode would lose its start mark: move it to the episode's next kept step.
        episode_starts = _carry_starts(episode_starts, keep)
    env_id = attrs.get("env_id") or attrs.get("env_name") or D4RL_ENVS.get(path.name.split("-")[0].lower())
    return Transitions(
        observations=observations[keep],
        actions=actions[keep].reshape(int(keep.sum()), -1),
        rewards=rewards[keep],
        next_observations=next_observations[keep],
        terminals=terminals[keep],
        timeouts=timeouts[keep],
        episode_starts=episode_starts[keep],
        env_id=str(env_id) if env_id is not None else None,
        ref_min_score=_optional_float(attrs.get("ref_min_score")),
        ref_max_score=_optional_float(attrs.get("ref_max_score")),
        source=f"d4rl:{path}",
    )


def _carry_starts(starts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Episode start marks moved forward past dropped rows (a one-step episode that was dropped has none left)."""
    starts = starts.copy()
    for i in np.flatnonzero(starts & ~keep):
        if i + 1 < len(starts) and not starts[i + 1]:
            starts[i + 1] = True
    return starts


ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts")


def _file_tag(path: Path) -> str:
    stat = path.stat() if path.is_file() else None
    return f"{stat.st_size}:{stat.st_mtime_ns}" if stat is not None else ""


def _read_cache(path: Path, tag: str) -> Transitions | None:
    """The cached transitions if the cache was written from the data file as it is now, else None."""
    if not path.is_file() or not tag:
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["tag"]) != tag:
                return None
            meta = json.loads(str(cache["meta"]))
            return Transitions(**{name: cache[name] for name in ARRAYS}, **meta)
    except (OSError, ValueError, KeyError):  # a damaged or foreign file: rebuilt from the data
        return None


def _write_cache(path: Path, tag: str, transitions: Transitions) -> None:
    meta = {key: getattr(transitions, key) for key in ("env_id", "ref_min_score", "ref_max_score", "source")}
    partial = path.with_name(path.name + ".tmp.npz")
    np.savez(partial, tag=np.array(tag), meta=np.array(json.dumps(meta)), **{n: getattr(transitions, n) for n in ARRAYS})
    os.replace(partial, path)  # whole or not at all: a killed load leaves no half-written cache


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)
