"""Final scores by a named protocol, and normalisation against reference tables.

Protocols (each states what a published number means, so comparisons are like for like):
- `eval-last`: per run, the mean of its last `n` deterministic evaluations (`eval/episodic_return`).
- `train-last100`: per run, the mean of its last 100 training episodes (`charts/episodic_return`): CleanRL's.
- `eval-max`: per (algo, variant, env), the maximum over evaluation steps of the seed-average: TD3 Table 1's
  (optimistic). It gives one score per cell, not per seed.
"""

from __future__ import annotations

import re
from pathlib import Path

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


def load_reference(name: str) -> pd.DataFrame:
    """A reference table shipped in analysis/reference/ (file stem), or any CSV path in the same format."""
    path = Path(name)
    if not path.is_file():
        path = REFERENCE_DIR / f"{name.removesuffix('.csv')}.csv"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in REFERENCE_DIR.glob("*.csv")))
        raise FileNotFoundError(f"no reference table {name!r}; shipped: {known}")
    return pd.read_csv(path)


def atari_game(env_id: str) -> str:
    """`ALE/MontezumaRevenge-v5`, `MontezumaRevengeNoFrameskip-v4` -> `montezuma_revenge` (the table's key)."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def minmax_normalize(scores: pd.Series, low: pd.Series | float, high: pd.Series | float) -> pd.Series:
    """(score - low) / (high - low): 0 at the low reference, 1 at the high one."""
    return (scores - low) / (high - low)


def human_normalized(scores: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.Series:
    """Atari human-normalised scores (score - random) / (human - random), from the Atari-57 table."""
    table = load_reference("atari_human_random_57") if table is None else table
    ref = table.pivot_table(index="env_id", columns="algorithm", values="value", aggfunc="first")
    games = scores["env_id"].map(atari_game)
    missing = sorted(set(games) - set(ref.index))
    if missing:
        raise KeyError(f"no human/random reference for {', '.join(missing)}")
    return minmax_normalize(scores["score"], games.map(ref["Random"]).to_numpy(), games.map(ref["Human"]).to_numpy())


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


__all__ = ["PROTOCOLS", "atari_game", "d4rl_normalized", "final_scores", "human_normalized", "load_reference",
           "minmax_normalize", "normalize_by_bounds"]  # fmt: skip
