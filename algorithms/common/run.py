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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.common.checkpoint import Checkpointer, checkpoint_file, checkpoint_step, restore_rng_state, rng_state
from algorithms.common.config import RunConfig
from algorithms.common.logging import Logger, NullLogger, TrainResult
from envs import EVAL_STEP_LIMIT, evaluate
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


def log_due(step: int, total: int, every: int) -> bool:
    """Whether update `step` logs its losses: every `every` updates, and the last one (loops of one update a step)."""
    return step % every == 0 or step == total


def evaluation_seed(run_seed: int, index: int) -> int:
    """The seed of a run's evaluation number `index` (0, 1, ...); its episodes are seeded from it upwards (`evaluate`).
    Fixed per (run seed, evaluation index), so a resumed run, and `rlgrid eval`, play exactly the episodes that an
    uninterrupted run does."""
    return 10**6 + run_seed * 10**4 + index * 97


class CheckpointEvaluation(Checkpointer):
    """A checkpoint handle that turns `train()` into an evaluation of a run's newest checkpoint (`rlgrid eval`), or of
    the kept checkpoint at env step `step`.

    Give it to the algorithm's own `train()` with the run's Config at `total_timesteps` = the checkpoint's step: the
    algorithm builds its networks and its evaluation policy as it always does, `RunState.restore` loads them (and the
    observation-normalisation statistics of the env, which the evaluation freezes), no iteration runs, and
    `RunState.finish` evaluates `episodes` episodes seeded from `seed` upwards (None: the seed of the run's own
    evaluation at that step, `evaluation_seed`), whether or not the run already evaluated there, the first one into
    the MP4 file `video` if given. The returns are kept
    in `returns`, the seed in `seed_used`, and the evaluation policy itself (numpy observations in, deterministic
    actions out) in `policy`, for callers that act with the checkpoint's policy afterwards (`rlgrid dataset make
    medium|expert`). Nothing in the run directory is written or moved (read-only; the replay
    memory is not read), and a loop that would train anyway stops at the end of its first iteration, before any save.
    """

    def __init__(
        self,
        directory: str | Path,
        episodes: int,
        seed: int | None = None,
        video: Path | None = None,
        step: int | None = None,
    ) -> None:
        super().__init__(directory, every_seconds=None, read_only=True)
        self.episodes, self.seed, self.video = episodes, seed, video  # video: the first episode as an MP4 there
        self.step = step  # None: the newest checkpoint
        self.returns: np.ndarray | None = None
        self.seed_used: int | None = None
        self.policy: Callable[[np.ndarray], np.ndarray] | None = None

    def paths(self) -> list[Path]:
        """The checkpoint files `latest()` may read: all of them, or the one at `step`."""
        every = super().paths()
        return every if self.step is None else [p for p in every if p == checkpoint_file(self.directory, self.step)]

    def kept_steps(self) -> list[int]:
        """The env steps of every checkpoint kept in the directory, oldest first."""
        return [checkpoint_step(p) for p in super().paths()]

    def due(self, step: int) -> bool:
        raise RuntimeError(
            f"evaluating the checkpoint in {self.directory} would have trained (an iteration ended at step {step:,}): "
            "train() must be given total_timesteps = the checkpoint's step"
        )


class RunState:
    """A run's protocol state and its checkpoints. `state` maps checkpoint names to what the algorithm wants saved:
        objects with `state_dict()`/`load_state_dict()` (modules, optimizers, the vector env), numpy Generators (their bit
        generator's state), or tensors and numpy arrays (copied in place). `extras` (a replay memory) go to files of their
        own. `eval_metrics()`, if given, returns more numbers that every evaluation logs with its return; `eval_max_steps`
    caps evaluation episodes (`envs.evaluate`)."""

    def __init__(
        self,
        cfg: RunConfig,
        envs: VecEnv,
        logger: Logger | None,
        checkpoint: Checkpointer | None,
        state: dict[str, Any],
        extras: dict[str, Any] | None = None,
        eval_metrics: Callable[[], dict[str, float]] | None = None,
        eval_max_steps: int = EVAL_STEP_LIMIT,
        evaluator: Callable[[Any, int, int], np.ndarray] | None = None,
        stream: torch.Generator | None = None,
    ) -> None:
        self.cfg, self.envs, self.checkpoint = cfg, envs, checkpoint
        # The torch Generator the run draws from instead of torch's global one (a seed of a pack, algorithms.common.
        # packing), saved with the RNG states; a checkpoint of a run that drew from the global CPU stream resumes it.
        self.stream = stream
        # evaluator(policy, episodes, seed) -> returns (episodes,): a task that is not an env (a text task: prompts and a
        # reward) evaluates its own way; None: `envs.evaluate` on `envs`.
        self.evaluator = evaluator
        self.eval_metrics = eval_metrics  # more numbers logged with every evaluation (a tabular value error)
        self.eval_max_steps = eval_max_steps  # an evaluation episode still running then counts with its return so far
        self.logger = DivergenceCheck(logger or NullLogger())
        # --capture-video: a runner's logger names a folder, and the first and the final evaluation record their first
        # episode there (envs.evaluate; the logger's `log_video` mirrors the file, e.g. to W&B).
        self.video_dir: Path | None = getattr(logger, "video_dir", None)
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
        if loaded is None and isinstance(self.checkpoint, CheckpointEvaluation):
            raise ValueError(f"no checkpoint to evaluate in {self.checkpoint.directory}")
        step = 0
        if loaded is not None:
            saved, saved_extras = loaded
            try:
                for name, item in self.state.items():
                    _load(item, saved[name])
                for name, item in self.extras.items():
                    if not self.checkpoint.read_only:  # a read-only view reads no replay memory (an evaluation)
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
            if self.stream is not None:
                self.stream.set_state(saved["rng"].get("stream", _global_stream_state(saved["rng"], self.stream.device)))
        self.start_step = self._checked_step = step
        self.start_time = time.perf_counter()
        return step, values

    def checkpoint_if_due(self, step: int, **values: Any) -> None:
        """Save everything registered, the protocol state and `values` when the checkpointer says a save is due (its
        interval, a stop request, a pause step). Call at the end of an iteration, where everything is consistent."""
        if self.checkpoint is not None and self.checkpoint.due(step):
            self.save(step, **values)

    def save(self, step: int, **values: Any) -> None:
        """Save everything registered, the protocol state and `values` now (`checkpoint_if_due` when due)."""
        # A diverged network is never saved: the last checkpoint stays the last good state. (Modules, and a seed's
        # slice of packed networks.)
        for name, item in self.state.items():
            if hasattr(item, "parameters") and not all(torch.isfinite(p).all() for p in item.parameters()):
                raise FloatingPointError(f"non-finite weights in {name} at step {step}")
        payload = {name: _state_of(item) for name, item in self.state.items()}
        payload.update(values, global_step=step, eval_history=self.eval_history, recent_returns=list(self.recent_returns))
        payload["rng"] = rng_state()
        if self.stream is not None:
            payload["rng"]["stream"] = self.stream.get_state()
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
            self.evaluate(step, policy, record=not self.eval_history or step >= self.cfg.total_timesteps)

    def evaluate(self, step: int, policy: Callable[[np.ndarray], np.ndarray], record: bool = False) -> None:
        """`eval_episodes` episodes of `policy` on fresh copies of the training env; logs `eval/episodic_return` (and
        its std). The episodes' seeds are fixed per (run seed, evaluation index), so a resumed run evaluates on exactly
        the episodes an uninterrupted one would. `record`: the first episode goes to `video_dir` too, if set."""
        index = len(self.eval_history)
        video = self._video_path(step) if record else None
        seed = evaluation_seed(self.cfg.seed, index)
        returns = self._play(policy, self.cfg.eval_episodes, seed, video)
        if video is not None:
            self.logger.log_video(step, video)
        if not np.isfinite(returns).all():
            raise FloatingPointError(f"non-finite evaluation return at step {step}: {returns.tolist()}")
        self.eval_history.append((step, float(returns.mean())))
        metrics = {"eval/episodic_return": float(returns.mean()), "eval/episodic_return_std": float(returns.std())}
        self.logger.log(step, {**metrics, **(self.eval_metrics() if self.eval_metrics is not None else {})})

    def finish(self, step: int, policy: Callable[[np.ndarray], np.ndarray]) -> TrainResult:
        """The end of every `train()`: a final evaluation at `step` (unless the last one ran there) and the result."""
        if isinstance(self.checkpoint, CheckpointEvaluation):
            return self._evaluate_checkpoint(step, policy)
        if not self.eval_history or self.eval_history[-1][0] != step:
            self.evaluate(step, policy, record=True)
        elif (video := self._video_path(step)) is not None and not video.exists():
            # The last evaluation was at this step but not recorded: play its first episode again for the video.
            self._play(policy, 1, evaluation_seed(self.cfg.seed, len(self.eval_history) - 1), video)
            self.logger.log_video(step, video)
        if self.checkpoint is not None:
            # The final state, whatever the interval: `rlgrid eval` evaluates it, and a run whose DONE never got
            # written resumes straight to here. (Loop values such as update counters are not needed past the end.)
            self.save(step)
        return TrainResult(
            global_step=step,
            wall_time_s=time.perf_counter() - self.start_time,
            steps_per_second=self.steps_per_second(step),
            final_eval_return=self.eval_history[-1][1],
            eval_returns=self.eval_history,
            last_episodic_returns=list(self.recent_returns),
        )

    def _play(self, policy: Any, episodes: int, seed: int, video: Path | None) -> np.ndarray:
        """The returns of `episodes` evaluation episodes from `seed` (the first recorded to `video`, for an env)."""
        if self.evaluator is not None:
            return self.evaluator(policy, episodes, seed)
        return evaluate(self.envs, policy, episodes, seed=seed, max_steps=self.eval_max_steps, video=video)

    def _video_path(self, step: int) -> Path | None:
        """Where the evaluation at `step` records its video (None: the run records none)."""
        return None if self.video_dir is None else self.video_dir / f"eval-step{step:012d}.mp4"

    def _evaluate_checkpoint(self, step: int, policy: Callable[[np.ndarray], np.ndarray]) -> TrainResult:
        """`finish` under a `CheckpointEvaluation`: its episodes, from its seed or else from the seed of the run's own
        evaluation at `step` (the last one, if the run evaluated there; else the next one its protocol would run).
        Logs nothing and raises on nothing (NaN returns are the answer)."""
        request = self.checkpoint
        assert isinstance(request, CheckpointEvaluation) and step == self.start_step
        index = len(self.eval_history) - (1 if self.eval_history and self.eval_history[-1][0] == step else 0)
        seed = request.seed if request.seed is not None else evaluation_seed(self.cfg.seed, index)
        returns = self._play(policy, request.episodes, seed, request.video)
        request.returns, request.seed_used, request.policy = returns, seed, policy
        return TrainResult(
            global_step=step,
            wall_time_s=time.perf_counter() - self.start_time,
            steps_per_second=0.0,
            final_eval_return=float(returns.mean()),
            eval_returns=[(step, float(returns.mean()))],
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

    def log_video(self, step: int, path: Path) -> None:
        if hasattr(self.inner, "log_video"):
            self.inner.log_video(step, path)

    def close(self) -> None:
        self.inner.close()


def _global_stream_state(rng: dict[str, Any], device: torch.device) -> torch.Tensor:
    """The state of torch's global generator on `device` in a checkpoint's RNG states (`rng_state()`)."""
    return rng["torch"] if device.type == "cpu" else rng["cuda"][device.index or 0]


def _state_of(item: Any) -> Any:
    if isinstance(item, np.random.Generator):
        return item.bit_generator.state
    if isinstance(item, torch.Tensor):
        return item.detach().clone()
    if isinstance(item, np.ndarray):
        return item.copy()
    return item.state_dict()


def _load(item: Any, saved: Any) -> None:
    if isinstance(item, np.random.Generator):
        item.bit_generator.state = saved
    elif isinstance(item, torch.Tensor):
        with torch.no_grad():
            item.copy_(saved)
    elif isinstance(item, np.ndarray):
        if saved.shape != item.shape:
            raise ValueError(f"saved array has shape {saved.shape}, this run's has {item.shape}")
        item[...] = saved
    else:
        item.load_state_dict(saved)
