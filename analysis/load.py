"""Runs -> one tidy frame: `suite, algo, variant, env_id, seed, run_id, step, metric, value` (+ `complete`).

Sources: rlgrid run directories (the source of truth) and W&B projects. The W&B side is a thin fetch
(`load_wandb`) around a pure conversion (`history_to_frame`) from a run's config and `scan_history` rows, so
runs of other libraries logged with CleanRL's metric names (`global_step`, `charts/episodic_return`) load too.
Incomplete runs are kept or dropped by an explicit flag, and dropping them always says how many.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value", "complete"]
_SKIP_KEYS = {"step", "time", "global_step", "_step", "_runtime", "_timestamp"}


def find_run_dirs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory (a folder with spec.json) at or below the given paths."""
    roots = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"no such run directory or folder: {root}")
        found.update(p.parent for p in root.rglob("spec.json"))
    return sorted(found)


def _rows_to_frame(labels: dict[str, Any], rows: Iterable[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
    records = [
        (step, key, float(value))
        for step, metrics in rows
        for key, value in metrics.items()
        if key not in _SKIP_KEYS and isinstance(value, int | float) and not isinstance(value, bool)
    ]
    frame = pd.DataFrame(records, columns=["step", "metric", "value"])
    for column in reversed(["suite", "algo", "variant", "env_id", "seed", "run_id"]):
        frame.insert(0, column, labels[column])
    frame["complete"] = labels["complete"]
    return frame.astype({"step": "int64", "seed": "int64"})


def load_run_dir(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    spec = json.loads((path / "spec.json").read_text())
    labels = {
        "suite": spec["suite"],
        "algo": spec["algo"],
        "variant": spec["variant"],
        "env_id": spec["env_id"],
        "seed": spec["seed"],
        "run_id": path.name,
        "complete": (path / "DONE").exists(),
    }
    metrics = path / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    rows = ((row["step"], row) for row in map(json.loads, filter(None, lines)))
    return _rows_to_frame(labels, rows)


def _select_complete(frame: pd.DataFrame, include_incomplete: bool, source: str) -> pd.DataFrame:
    if include_incomplete or frame.empty:
        return frame
    incomplete = frame.loc[~frame["complete"], "run_id"].unique()
    if len(incomplete):
        names = ", ".join(map(str, incomplete[:5])) + (" ..." if len(incomplete) > 5 else "")
        message = f"{len(incomplete)} incomplete run(s) in {source} left out (include_incomplete=True keeps them): {names}"
        warnings.warn(message, stacklevel=3)
    return frame[frame["complete"]].reset_index(drop=True)


def find_videos(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last evaluation video (`--capture-video`) of each (method, env) cell at or below `paths`: the one at the
    highest step, of the lowest seed among equals. {(method, env_id): {"path", "seed", "step"}}."""
    from analysis.stats import method_name

    best: dict[tuple[str, str], dict[str, Any]] = {}
    for run_dir in find_run_dirs(paths):
        videos = sorted((run_dir / "videos").glob("eval-step*.mp4"))
        if not videos:
            continue
        spec = json.loads((run_dir / "spec.json").read_text())
        step = int(videos[-1].stem.removeprefix("eval-step"))
        cell = (method_name(spec["algo"], spec["variant"]), spec["env_id"])
        found = {"path": videos[-1], "seed": int(spec["seed"]), "step": step}
        if cell not in best or (step, -found["seed"]) > (best[cell]["step"], -best[cell]["seed"]):
            best[cell] = found
    return dict(sorted(best.items()))


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], include_incomplete: bool = False) -> pd.DataFrame:
    """All rlgrid runs at or below `paths` as one tidy frame."""
    dirs = find_run_dirs(paths)
    frames = [load_run_dir(d) for d in dirs]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return _select_complete(frame, include_incomplete, "the run directories")


def history_to_frame(
    config: dict[str, Any], rows: Iterable[dict[str, Any]], run_id: str, complete: bool = True, suite: str | None = None
) -> pd.DataFrame:
    """A W&B run (its config and `scan_history()` rows) in the tidy schema.

    Labels come from the flat config keys rlgrid and CleanRL both write (`exp_name`, `env_id`, `seed`; rlgrid
    adds `suite`, `variant`). The step is `global_step` (environment steps), else W&B's `_step`.
    """
    labels = {
        "suite": suite or config.get("suite", "wandb"),
        "algo": config.get("exp_name", config.get("algo", "?")),
        "variant": config.get("variant", "default"),
        "env_id": config["env_id"],
        "seed": int(config["seed"]),
        "run_id": run_id,
        "complete": complete,
    }

    def step_of(row: dict[str, Any]) -> int:
        step = row.get("global_step")
        return int(step if step is not None and not (isinstance(step, float) and np.isnan(step)) else row["_step"])

    clean = ((step_of(row), {k: v for k, v in row.items() if v is not None}) for row in rows)
    return _rows_to_frame(labels, clean)


def load_wandb(
    project: str,
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    include_incomplete: bool = False,
) -> pd.DataFrame:
    """Runs of a W&B project (optionally one group / runs with all `tags`), full histories. Needs the network."""
    import wandb

    filters: dict[str, Any] = {}
    if group:
        filters["group"] = group
    if tags:
        filters["tags"] = {"$all": tags}
    runs = wandb.Api().runs(f"{entity}/{project}" if entity else project, filters=filters)
    frames = []
    for run in runs:
        config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in run.config.items()}
        frames.append(history_to_frame(config, run.scan_history(), run_id=run.id, complete=run.state == "finished"))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return _select_complete(frame, include_incomplete, f"W&B project {project}")
