"""Deterministic evaluation during training: part of the benchmark protocol, so every algorithm shares it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from algorithms.common.logging import Logger
from envs import evaluate
from envs.vector import VecEnv


def evaluate_and_log(envs: VecEnv, policy: Callable[[np.ndarray], np.ndarray], episodes: int, run_seed: int,
                     history: list[tuple[int, float]], logger: Logger, step: int) -> None:  # fmt: skip
    """Evaluate `policy` on fresh copies of the training env, append (step, mean return) to `history` and log
    `eval/episodic_return` (and its std). The episodes' seeds are fixed per (run seed, evaluation index), so a
    resumed run evaluates on exactly the episodes an uninterrupted one would."""
    index = len(history)
    returns = evaluate(envs, policy, episodes, seed=10**6 + run_seed * 10**4 + index * 97)
    history.append((step, float(returns.mean())))
    logger.log(step, {"eval/episodic_return": float(returns.mean()), "eval/episodic_return_std": float(returns.std())})
