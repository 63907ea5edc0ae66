"""The run protocol every `train()` shares: its state across a resume, when to evaluate, the end of a run.

`RunState` holds what the benchmark protocol keeps about a run (evaluation history, the last 100 training returns,
the RNG states, where this process started) and saves and restores, together with it, everything the algorithm
registers (networks, optimizers, the vector env, numpy generators, tensors, a replay memory in a file of its own).
An algorithm file then writes its loop as:

    run = RunState(cfg, envs, logger, checkpoint, {"agent": agent, "optimizer": optimizer, "envs": envs})
    global_step, saved = run.restore(updates=0)       # fresh: (0, {"updates": 0}); resumed: the checkpoint's
    next_obs = envs.observation()                      # the env's current observation, fresh or restored
    while global_step < cfg.total_timesteps:
        ...                                            # act, learn; run.record_episodes(info["episodes"], step)
        run.evaluate_if_due(global_step, policy)
        run.checkpoint_if_due(global_step, updates=updates)
    return run.finish(global_step, policy)

Checkpoint keys are the registered names plus `global_step`, `eval_history`, `recent_returns`, `rng` and the values
passed to `checkpoint_if_due`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from algorithms.common.checkpoint import Checkpointer, restore_rng_state, rng_state
from algorithms.common.config import RunConfig
from algorithms.common.logging import Logger, NullLogger, TrainResult
from envs import evaluate
from envs.vector import VecEnv


class CheckpointMismatch(ValueError):
    """The newest checkpoint cannot be loaded into this run's networks or state (another version or config)."""


RECENT_RETURNS = 100
"""training episodes kept for `TrainResult.last_episodic_returns` (CleanRL-style final scores)"""


def numpy_policy(act: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """An evaluation policy (numpy observations in, numpy actions out) from a tensor function, run under
    inference_mode on `device`."""

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return act(torch.as_tensor(obs, device=device)).cpu().numpy()

    return policy


class RunState:
    """A run's protocol state and its checkpoints. `state` maps checkpoint names to what the algorithm wants saved:
    objects with `state_dict()`/`load_state_dict()` (modules, optimizers, the vector env), numpy Generators (their bit
    generator's state) or tensors (copied in place). `extras` (a replay memory) go to files of their own."""

    def __init__(
        self,
        cfg: RunConfig,
        envs: VecEnv,
        logger: Logger | None,
        checkpoint: Checkpointer | None,
        state: dict[str, Any],
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.envs, self.checkpoint = cfg, envs, checkpoint
        self.logger = DivergenceCheck(logger or NullLogger())
        self.state, self.extras = state, extras or {}
        self.eval_history: list[tuple[int, float]] = []
        self.recent_returns: deque[float] = deque(maxlen=RECENT_RETURNS)
        self.start_step, self.start_time = 0, time.perf_counter()
        self._checked_step = 0  # the step of the previous `evaluate_if_due`

    # --- resume -----------------------------------------------------------------------------------
    def restore(self, **values: Any) -> tuple[int, dict[str, Any]]:
        """Load everything registered from the newest checkpoint, if there is one. Returns the step to continue from
        and `values` (the defaults given here on a fresh start, the saved ones on a resume)."""
        loaded = self.checkpoint.load() if self.checkpoint is not None else None
        step = 0
        if loaded is not None:
            saved, saved_extras = loaded
            try:
                for name, item in self.state.items():
                    _load(item, saved[name])
                for name, item in self.extras.items():
                    item.load_state_dict(saved_extras[name])
                # A value a checkpoint lacks was added to the algorithm after it was written: its initial value then.
                values = {name: saved.get(name, initial) for name, initial in values.items()}
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointMismatch(
                    f"the newest checkpoint in {self.checkpoint.directory} does not fit this run ({type(exc).__name__}: "
                    f"{exc}); it was written by another version of the algorithm or another config. Move the "
                    "checkpoints away to start the run over."
                ) from exc
            step = saved["global_step"]
            self.eval_history = list(saved["eval_history"])
            self.recent_returns = deque(saved["recent_returns"], maxlen=RECENT_RETURNS)
            restore_rng_state(saved["rng"])
        self.start_step = self._checked_step = step
        self.start_time = time.perf_counter()
        return step, values

    def checkpoint_if_due(self, step: int, **values: Any) -> None:
        """Save everything registered, the protocol state and `values` when the checkpointer says a save is due (its
        interval, a stop request, a pause step). Call at the end of an iteration, where everything is consistent."""
        if self.checkpoint is None or not self.checkpoint.due(step):
            return
        # A diverged network is never saved: the last checkpoint stays the last good state.
        for name, item in self.state.items():
            if isinstance(item, torch.nn.Module) and not all(torch.isfinite(p).all() for p in item.parameters()):
                raise FloatingPointError(f"non-finite weights in {name} at step {step}")
        payload = {name: _state_of(item) for name, item in self.state.items()}
        payload.update(values, global_step=step, eval_history=self.eval_history, recent_returns=list(self.recent_returns))
        payload["rng"] = rng_state()
        self.checkpoint.save(step, payload, extras={name: item.state_dict() for name, item in self.extras.items()})

    # --- training episodes, evaluation, the end ----------------------------------------------------
    def record_episodes(self, episodes: list[tuple[int, float, int]], step: int) -> None:
        """Log each training episode that ended (`info["episodes"]` of a vector env step: env index, return, length)
        and keep its return for the result."""
        for _, episodic_return, length in episodes:
            if not math.isfinite(episodic_return):
                raise FloatingPointError(f"non-finite training episode return {episodic_return} at step {step}")
            self.recent_returns.append(episodic_return)
            self.logger.log(step, {"charts/episodic_return": episodic_return, "charts/episodic_length": length})

    def steps_per_second(self, step: int) -> float:
        """This process's environment steps per second (a resumed run counts from where it resumed)."""
        elapsed = time.perf_counter() - self.start_time
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def evaluate_if_due(self, step: int, policy: Callable[[np.ndarray], np.ndarray]) -> None:
        """Evaluate when a multiple of `eval_every` was passed since the previous call: once per interval, at the first
        step a loop reaches after it, whatever its steps per iteration (1 env step, a rollout, a batch of episodes).
        Call once per iteration."""
        every = self.cfg.eval_every
        due = every > 0 and step // every > self._checked_step // every
        self._checked_step = step
        if due:
            self.evaluate(step, policy)

    def evaluate(self, step: int, policy: Callable[[np.ndarray], np.ndarray]) -> None:
        """`eval_episodes` episodes of `policy` on fresh copies of the training env; logs `eval/episodic_return` (and
        its std). The episodes' seeds are fixed per (run seed, evaluation index), so a resumed run evaluates on exactly
        the episodes an uninterrupted one would."""
        index = len(self.eval_history)
        returns = evaluate(self.envs, policy, self.cfg.eval_episodes, seed=10**6 + self.cfg.seed * 10**4 + index * 97)
        if not np.isfinite(returns).all():
            raise FloatingPointError(f"non-finite evaluation return at step {step}: {returns.tolist()}")
        self.eval_history.append((step, float(returns.mean())))
        self.logger.log(
            step, {"eval/episodic_return": float(returns.mean()), "eval/episodic_return_std": float(returns.std())}
        )

    def finish(self, step: int, policy: Callable[[np.ndarray], np.ndarray]) -> TrainResult:
        """The end of every `train()`: a final evaluation at `step` (unless the last one ran there) and the result."""
        if not self.eval_history or self.eval_history[-1][0] != step:
            self.evaluate(step, policy)
        return TrainResult(
            global_step=step,
            wall_time_s=time.perf_counter() - self.start_time,
            steps_per_second=self.steps_per_second(step),
            final_eval_return=self.eval_history[-1][1],
            eval_returns=self.eval_history,
            last_episodic_returns=list(self.recent_returns),
        )


class DivergenceCheck:
    """The run's logger, raising FloatingPointError on a non-finite `losses/*` value: every algorithm logs its losses
    through `RunState.logger`, so a diverging run is caught by all of them alike, at its next logged update.
    (`losses/explained_variance` is NaN by definition when the returns do not vary.)"""

    EXEMPT = frozenset({"losses/explained_variance"})

    def __init__(self, logger: Logger) -> None:
        self.inner = logger

    def log(self, step: int, metrics: dict[str, float]) -> None:
        bad = {k: v for k, v in metrics.items() if k.startswith("losses/") and k not in self.EXEMPT and not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f"non-finite loss at step {step}: {', '.join(f'{k}={v}' for k, v in bad.items())}")
        self.inner.log(step, metrics)

    def close(self) -> None:
        self.inner.close()


def _state_of(item: Any) -> Any:
    if isinstance(item, np.random.Generator):
        return item.bit_generator.state
    if isinstance(item, torch.Tensor):
        return item.detach().clone()
    return item.state_dict()


def _load(item: Any, saved: Any) -> None:
    if isinstance(item, np.random.Generator):
        item.bit_generator.state = saved
    elif isinstance(item, torch.Tensor):
        with torch.no_grad():
            item.copy_(saved)
    else:
        item.load_state_dict(saved)
