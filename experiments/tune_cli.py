"""`rlgrid tune` (start or join a search with N workers on an executor) and `rlgrid tune-report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from algorithms.common import RunInterrupted
from experiments.execute import RunOptions
from experiments.executors import Finished, Task, make_executor
from experiments.runs import check_runs_dir
from experiments.tensorboard_logger import check_tensorboard

TUNE_DESCRIPTION = """\
Search a study's hyperparameters with Optuna (STUDY: a study TOML file, or a study shipped in
experiments/studies/, e.g. quickstart). The study file is validated completely before anything runs.

The study lives in a storage under its name, so workers can join at any time and from anywhere: start
`rlgrid tune` again (here, on other machines, as more Slurm jobs) and it adds workers to the same search.
Storage: a journal file next to the study file by default (in RUNS_DIR/tune-<name>/ for shipped studies);
--storage postgresql://user:pass@host/db for workers on several machines. Kill it at any moment: finished
trials stay, a trial that was running is failed on the next start and the search goes on.

Every trial's runs are rlgrid run directories in RUNS_DIR/tune-<name>/trial-<n>/ (`rlgrid report` reads
them); with --track they are W&B runs in group tune/<name>, job_type trial. Open the study live with
optuna-dashboard (pip install optuna-dashboard): optuna-dashboard <journal file or postgresql:// URL>.
"""


def launch(
    executor_name: str,
    workers: int,
    study_ref: str,
    storage: str,
    n_trials: int | None,
    runs_dir: Path,
    options: RunOptions,
    args: argparse.Namespace,
) -> list[Finished]:
    """Run `workers` optuna_worker calls on the executor (one local worker runs in this process) and wait for them."""
    from experiments.tune import optuna_worker

    if executor_name == "local" and workers == 1:
        executor_name = "inline"
    executor = make_executor(
        executor_name,
        workers=workers,
        threads=options.threads,
        ray_address=args.ray_address,
        ray_log_to_driver=True,
        slurm_folder=runs_dir / "slurm-tune",
        slurm_cluster=args.slurm_cluster,
        slurm_time_min=args.slurm_time_min,
        slurm_partition=args.slurm_partition,
    )
    tasks = [
        Task(optuna_worker, (study_ref, storage, n_trials, str(runs_dir), i, options), f"tuning worker {i}")
        for i in range(workers)
    ]
    finished = list(executor.submit(tasks))
    if executor.stopping:
        raise KeyboardInterrupt
    return finished


def cmd_tune(argv: list[str]) -> int:
    from experiments.study import StudyError, load_study
    from experiments.tune import counted, default_storage, load_or_create_study

    parser = argparse.ArgumentParser(
        prog="rlgrid tune",
        description=TUNE_DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", help="study file or shipped study name (e.g. quickstart, mujoco_ppo)")
    parser.add_argument("--storage", default=None, help="journal file path or postgresql:// URL (default: see above)")
    parser.add_argument("--workers", type=int, default=1, help="workers this command starts (default 1)")
    parser.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        default="local",
        help="local: processes here (default); ray: tasks on a Ray cluster; slurm: a job array",
    )
    parser.add_argument("--n-trials", type=int, default=None, help="trials the study stops at (default: the study file's)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run directories (default ./runs)")
    parser.add_argument("--threads-per-run", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument(
        "--seeds-per-process",
        type=int,
        default=1,
        help="train a trial's seeds of one env as packs of up to K, their networks stacked (as rlgrid run "
        "--seeds-per-process; with the wilcoxon pruner instances run one at a time, unpacked) (default 1)",
    )
    parser.add_argument("--track", action="store_true", help="mirror every trial run to W&B (group tune/<study>)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files into each run")
    parser.add_argument(
        "--capture-video", action="store_true", help="record the first and the final evaluation's first episode (MP4)"
    )
    parser.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None)
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--slurm-time-min", type=int, default=240, help="time limit per worker job, minutes")
    parser.add_argument("--slurm-cluster", default=None, choices=["slurm", "local", "debug"])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        study = load_study(args.study)
        if min(args.workers, args.threads_per_run, args.seeds_per_process, args.n_trials or 1) < 1:
            raise ValueError("--workers, --threads-per-run, --seeds-per-process and --n-trials must be >= 1")
        if args.tensorboard:
            check_tensorboard()
        if args.capture_video:
            from envs import check_rendering

            for env_id in study.env_ids:
                check_rendering(env_id)
        check_runs_dir(args.runs_dir)
        storage = args.storage or default_storage(study, args.runs_dir)
        study_obj = load_or_create_study(study, storage)  # storage reachable, same study file: checked before any run
    except (StudyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. PostgreSQL not reachable
        print(f"error: cannot open storage {storage!r}: {exc}", file=sys.stderr)
        return 2
    n_trials = args.n_trials or study.n_trials
    done = len(counted(study_obj, include_running=False))
    per_trial = f"{len(study.env_ids)} env(s) x {len(study.seeds)} seed(s) x {study.total_timesteps:,} steps per trial"
    print(
        f"study {study.name}: {done}/{n_trials} trials done; storage {storage}; {args.workers} {args.executor} "
        f"worker(s); {per_trial}",
        flush=True,
    )
    options = RunOptions(
        runs_dir=args.runs_dir,
        track=args.track,
        wandb_mode=args.wandb_mode,
        threads=args.threads_per_run,
        quiet_tracking=True,
        tensorboard=args.tensorboard,
        capture_video=args.capture_video,
        seeds_per_process=args.seeds_per_process,
    )
    try:
        finished = launch(args.executor, args.workers, str(study.path), storage, args.n_trials, args.runs_dir, options, args)
    except (KeyboardInterrupt, RunInterrupted):
        print("\ninterrupted: finished trials are kept; run the same command again to continue.", file=sys.stderr)
        return 130
    failed = [f for f in finished if f.error is not None]
    for worker in failed:
        print(f"error: {worker.task.name} failed:\n{worker.error}", file=sys.stderr)
    print(summary(load_or_create_study(study, storage), n_trials))
    print(
        f"next: rlgrid tune-report {args.study} --out reports/tune-{study.name}"
        + (f" --storage {storage}" if args.storage else "")
    )
    return 1 if failed else 0


def summary(study_obj: Any, n_trials: int) -> str:
    from optuna.trial import TrialState

    trials = study_obj.get_trials(deepcopy=False)
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    lines = [f"{study_obj.study_name}: " + ", ".join(f"{n} {s}" for s, n in states.items() if n) + f" (target {n_trials})"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        lines.append(f"best: trial {best.number}, value {best.value:.4f}, params {best.params}")
    return "\n".join(lines)
