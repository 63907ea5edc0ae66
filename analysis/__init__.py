"""Run directories -> tidy frame -> final scores -> rliable statistics, figures, reference verdicts, reports."""

from analysis.load import find_run_dirs, history_to_frame, load_run_dir, load_runs, load_wandb
from analysis.scores import (
    PROTOCOLS,
    atari_game,
    d4rl_normalized,
    final_scores,
    human_normalized,
    load_reference,
    minmax_normalize,
    normalize_by_bounds,
)

__all__ = [
    "PROTOCOLS",
    "atari_game",
    "d4rl_normalized",
    "final_scores",
    "find_run_dirs",
    "history_to_frame",
    "human_normalized",
    "load_reference",
    "load_run_dir",
    "load_runs",
    "load_wandb",
    "minmax_normalize",
    "normalize_by_bounds",
]
