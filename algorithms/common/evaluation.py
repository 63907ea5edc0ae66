"""Episode statistics, deterministic evaluation during training and the end of a run: part of the benchmark
protocol, so every algorithm shares it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from algorithms.common.logging import Logger, TrainResult
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


def record_episodes(episodes: list[tuple[int, float, int]], recent_returns: deque[float], logger: Logger, step: int) -> None:
    """Log each finished training episode (`info["episodes"]` of a vector env step: env index, return, length) and
    keep its return in `recent_returns` (the window behind `TrainResult.last_episodic_returns`)."""
    for _, episodic_return, length in episodes:
        recent_returns.append(episodic_return)
        logger.log(step, {"charts/episodic_return": episodic_return, "charts/episodic_length": length})


def finish_run(envs: VecEnv, policy: Callable[[np.ndarray], np.ndarray], episodes: int, run_seed: int,
               history: list[tuple[int, float]], logger: Logger, step: int, start_step: int, start_time: float,
               recent_returns: Iterable[float]) -> TrainResult:  # fmt: skip
    """The end of every `train()`: a final evaluation at `step` (unless the last one ran there) and the result.
    Steps per second count only this process's steps (`start_step` is where a resumed run picked up)."""
    if not history or history[-1][0] != step:
        evaluate_and_log(envs, policy, episodes, run_seed, history, logger, step)
    elapsed = time.perf_counter() - start_time
    return TrainResult(global_step=step, wall_time_s=elapsed,
                       steps_per_second=(step - start_step) / elapsed if elapsed > 0 else 0.0,
                       final_eval_return=history[-1][1], eval_returns=history,
                       last_episodic_returns=list(recent_returns))  # fmt: skip
