"""Run one spec to completion in its run directory: create or resume, train, record the result.

The single-run command and every grid executor call `execute_run`; it is safe to call again on the same
spec at any time (a finished run is skipped, an unfinished one resumes from its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from algorithms.common import Checkpointer, ConsoleLogger, RunInterrupted, RunPaused, RunStopped
from algorithms.common.checkpoint import STOP_SIGNALS, handle_stop_signals, newest_checkpoint_step
from algorithms.common.packing import same_run_but_seed
from envs import check_rendering, validate_env_id
from experiments.registry import load_algorithm
from experiments.runs import JsonlLogger, RunDirectory, RunSpec, resolve_run_references


class RunDiverged(Exception):
    """The run's losses, weights, or training or evaluation returns became NaN/inf (a FloatingPointError from
    `RunState`); recorded in DIVERGED and not retried (it would diverge again)."""


@dataclasses.dataclass
class RunOptions:
    runs_dir: Path = Path("runs")
    track: bool = False
    wandb_mode: str | None = None
    wandb_project: str | None = None
    threads: int = 1
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = 300.0
    keep_checkpoints: int = 2
    progress: bool = True
    quiet_tracking: bool = False  # grid workers: no W&B console output (the grid prints one sync hint)
    pause_at_step: int | None = None  # stop (checkpointed) at the first safe point at or after this step
    wandb_group: str | None = None  # default: <suite>/<algo>/<env>
    wandb_job_type: str = "train"
    tensorboard: bool = False  # also write TensorBoard event files into <run>/tensorboard
    capture_video: bool = False  # the first and the final evaluation record an episode into <run>/videos (W&B too)
    seeds_per_process: int = 1  # grid and tuner: up to this many seeds of one cell train as one pack (execute_pack)


class MultiLogger:
    def __init__(self, *loggers: Any, video_dir: Path | None = None) -> None:
        self.loggers = [lg for lg in loggers if lg is not None]
        self.video_dir = video_dir  # where RunState records evaluation videos (None: no videos)

    def log_video(self, step: int, path: Path) -> None:
        for logger in self.loggers:
            if hasattr(logger, "log_video"):
                logger.log_video(step, path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def validate_spec(spec: RunSpec, capture_video: bool = False) -> Any:
    """Everything that can be checked before compute is spent; returns the resolved Config."""
    algorithm = load_algorithm(spec.algo)
    config = spec.config()
    validate_env_id(spec.env_id)
    algorithm.check_env(spec.env_id)
    if capture_video:
        check_rendering(spec.env_id)  # RenderingUnavailable (a ValueError) says what to install
    return config


def execute_run(spec: RunSpec, options: RunOptions) -> dict[str, Any]:
    """Returns {"status": "done" | "skipped", "run_dir": ..., "result": ...}, or {"status": "paused", "run_dir": ...,
    "step": ...} when `options.pause_at_step` was reached; raises on failure or interrupt (after writing error.txt
    for failures; checkpoints make the next call resume), RunDiverged for a run that diverged (now or before)."""
    (outcome,) = execute_pack([spec], options)
    if outcome["status"] == "diverged":
        raise RunDiverged(outcome["error"])
    return outcome


def packable(spec: RunSpec) -> bool:
    """Whether `spec`'s seeds can train in packs: its algorithm's file has a `train_seeds` (algorithms.common.packing)
    and, where the file has a `packs(config)`, that accepts the run's config (PPO's target_kl stops seeds apart)."""
    module = load_algorithm(spec.algo).module
    return hasattr(module, "train_seeds") and getattr(module, "packs", lambda config: True)(spec.config())


@dataclasses.dataclass
class _OpenRun:
    """A run directory made ready for training: its checkpointer, loggers and the time already spent on it."""

    spec: RunSpec
    config: Any
    run_dir: RunDirectory
    checkpointer: Checkpointer
    logger: Any
    latest: dict[str, Any] | None
    earlier_wall_time: float


def execute_pack(specs: list[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
    """`execute_run` for seeds of one cell trained in one process (their algorithm's `train_seeds`; one spec: its
    `train`): each seed's outcome, as execute_run's, or {"status": "diverged", "run_dir": ..., "error": ...}. A seed
    that diverges is recorded (DIVERGED) while the others go on. A failure or an interrupt raises for the whole pack
    (error.txt is written in each unfinished seed's directory for a failure)."""
    algorithm = load_algorithm(specs[0].algo)
    if len(specs) > 1 and not packable(specs[0]):
        raise ValueError(f"{specs[0].algo} with this config does not train seed packs; run its seeds apart")
    configs = []
    for spec in specs:
        config = resolve_run_references(spec, validate_spec(spec, options.capture_video), options.runs_dir)
        algorithm.check_inputs(config)  # the runs it takes as inputs, before its directory is made
        configs.append(config)
    if len(specs) > 1:
        same_run_but_seed(configs)
    outcomes: dict[int, dict[str, Any]] = {}
    run_dirs = []
    for i, (spec, config) in enumerate(zip(specs, configs)):
        run_dir = RunDirectory(spec.run_dir(options.runs_dir))
        run_dir.create_or_check(spec, config)  # refuses a directory of another config before anything is written
        run_dirs.append(run_dir)
        path = str(run_dir.path)
        if run_dir.status == "diverged":
            outcomes[i] = {"status": "diverged", "run_dir": path, "error": run_dir.diverged_file.read_text().strip()}
        elif run_dir.status == "done":
            outcomes[i] = {"status": "skipped", "run_dir": path, "result": json.loads(run_dir.result_file.read_text())}
    todo = [i for i in range(len(specs)) if i not in outcomes]
    if not todo:
        return [outcomes[i] for i in range(len(specs))]

    previous_threads = torch.get_num_threads()
    previous_handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    torch.set_num_threads(options.threads)
    # Wall time is accumulated across the run's processes through the checkpoints: a resumed run's result reports
    # the training time of every step it kept (time after the last checkpoint of a killed process is redone, and
    # counted once, in the process that redoes it).
    attempt_start = time.perf_counter()
    runs: list[_OpenRun] = []
    try:
        for position, i in enumerate(todo):
            runs.append(_open(specs[i], configs[i], run_dirs[i], options, attempt_start, console=position == 0))
        handle_stop_signals([run.checkpointer for run in runs])
        try:
            if len(runs) == 1:
                try:
                    results: list[Any] = [algorithm.train(runs[0].config, runs[0].logger, runs[0].checkpointer)]
                except FloatingPointError as exc:
                    results = [exc]
            else:
                trained = [run.config for run in runs], [run.logger for run in runs], [run.checkpointer for run in runs]
                results = algorithm.module.train_seeds(*trained)
        except RunPaused:
            for i, run in zip(todo, runs):
                step = newest_checkpoint_step(run.run_dir.checkpoint_dir)
                outcomes[i] = {"status": "paused", "run_dir": str(run.run_dir.path), "step": step}
            return [outcomes[i] for i in range(len(specs))]
        except (RunInterrupted, RunStopped):  # checkpointed on request, or stopped at once: it resumes, nothing failed
            raise
        except BaseException:
            for run in runs:
                run.run_dir.error_file.write_text(traceback.format_exc())
            raise
    finally:
        for run in runs:
            run.logger.close()
        torch.set_num_threads(previous_threads)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    for i, run, result in zip(todo, runs, results):
        path = str(run.run_dir.path)
        if isinstance(result, FloatingPointError):
            run.run_dir.error_file.write_text("".join(traceback.format_exception(result)))
            run.run_dir.diverged_file.write_text(f"{result}\n")
            outcomes[i] = {"status": "diverged", "run_dir": path, "error": str(result)}
            continue
        result = result.to_dict()
        result["resumed_from_step"] = run.latest["step"] if run.latest else 0
        result["total_wall_time_s"] = run.earlier_wall_time + time.perf_counter() - attempt_start
        run.run_dir.finish(result)
        outcomes[i] = {"status": "done", "run_dir": path, "result": result}
    return [outcomes[i] for i in range(len(specs))]


def _open(
    spec: RunSpec, config: Any, run_dir: RunDirectory, options: RunOptions, attempt_start: float, console: bool
) -> _OpenRun:
    """The checkpointer and loggers of one run (metrics cut back to its newest checkpoint). `console`: this run prints
    its progress (a pack prints its first seed's)."""
    jsonl = None
    tensorboard = None

    def metrics_offset() -> int:
        """How far metrics.jsonl has got, for the checkpoint; the TensorBoard events so far are put on disk with it."""
        if tensorboard is not None:
            tensorboard.flush()
        return jsonl.offset()

    earlier_wall_time = 0.0
    checkpointer = Checkpointer(
        run_dir.checkpoint_dir,
        keep_last=options.keep_checkpoints,
        every_steps=options.checkpoint_every_steps,
        every_seconds=options.checkpoint_every_seconds,
        metadata_fn=lambda: {
            "metrics_offset": metrics_offset(),
            "wall_time_s": earlier_wall_time + time.perf_counter() - attempt_start,
        },
        pause_at_step=options.pause_at_step,
    )
    latest = checkpointer.latest()
    earlier_wall_time = latest["metadata"].get("wall_time_s", 0.0) if latest else 0.0
    run_dir.truncate_metrics(latest["metadata"]["metrics_offset"] if latest else 0)
    jsonl = JsonlLogger(run_dir.metrics_file)
    loggers: list[Any] = [jsonl]
    if options.progress:
        resumed = f" (resuming from step {latest['step']:,})" if latest else ""
        print(f"{spec.algo} on {spec.env_id}, seed {spec.seed} -> {run_dir.path}{resumed}", flush=True)
        if console:
            loggers.append(ConsoleLogger(total_steps=getattr(config, "total_timesteps", None)))
    if options.track:
        from experiments.tracking import WandbLogger, resolve_wandb_mode

        mode = resolve_wandb_mode(options.wandb_mode)
        loggers.append(
            WandbLogger(
                spec,
                config,
                run_dir.path,
                mode,
                options.wandb_project,
                job_type=options.wandb_job_type,
                group=options.wandb_group,
                quiet=options.quiet_tracking,
            )
        )
    if options.tensorboard:
        from experiments.tensorboard_logger import TensorBoardLogger

        tensorboard = TensorBoardLogger(run_dir.path / "tensorboard", latest["step"] if latest else None, run_dir.metrics_file)
        loggers.append(tensorboard)
    logger = MultiLogger(*loggers, video_dir=run_dir.path / "videos" if options.capture_video else None)
    return _OpenRun(spec, config, run_dir, checkpointer, logger, latest, earlier_wall_time)


def run_to_state(spec: RunSpec, options: RunOptions) -> str:
    """`execute_run` as a task for any executor (a local worker process, a Ray task, a Slurm job): the run's final state,
    "done", "interrupted" (checkpointed on request or stopped by a second signal, to be resumed) or "diverged"; a failure
    raises. (The pack of one of `run_pack_to_states`.)"""
    return run_pack_to_states((spec,), options)[0]


def run_pack_to_states(specs: tuple[RunSpec, ...], options: RunOptions) -> list[str]:
    """`execute_pack` as a task: each seed's final state ("done", "diverged"; all "interrupted" when the pack was
    stopped); a failure raises."""
    try:
        outcomes = execute_pack(list(specs), options)
    except (RunInterrupted, RunStopped):
        return ["interrupted"] * len(specs)
    return ["diverged" if o["status"] == "diverged" else "done" for o in outcomes]
