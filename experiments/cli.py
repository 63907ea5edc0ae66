"""The `rlgrid` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Literal

from algorithms.common import RunInterrupted, RunStopped
from algorithms.common.cli import parse_command_line
from experiments.registry import list_algorithms, load_algorithm
from experiments.runs import RunDirectoryMismatch, RunSpec, check_runs_dir
from experiments.tensorboard_logger import check_tensorboard

TRAIN_DESCRIPTION = """\
Train one run: ALGO on --env-id with --seed for --total-timesteps environment steps.

Results go to RUNS_DIR/single/ALGO/ENV/seed<k>-<hash>/ (spec.json, config.json, metrics.jsonl,
checkpoints/, result.json, DONE). Running the same command again resumes an unfinished run from its
newest checkpoint, and does nothing for a finished one. Every Config field of the algorithm is an option
(booleans: --flag / --no-flag); `rlgrid train ALGO --help` lists them with their defaults."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Where and how `rlgrid train` runs (the algorithm's Config is parsed next to it, `parse_command_line`)."""

    runs_dir: Path = Path("runs")
    """root of run directories"""
    track: bool = False
    """mirror the run to Weights & Biases"""
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    """W&B mode (None: online if an API key is configured, else offline; then `wandb sync`)"""
    wandb_project: str | None = None
    """W&B project (None: rlgrid-<suite>)"""
    threads: int = 1
    """torch CPU threads for this run"""
    checkpoint_every_steps: int | None = None
    """also checkpoint every N env steps"""
    checkpoint_every_seconds: float = 300.0
    """checkpoint every S seconds of wall time"""
    keep_checkpoints: int = 2
    """checkpoint files kept"""
    quiet: bool = False
    """no progress display"""
    tensorboard: bool = False
    """also write TensorBoard event files into <run>/tensorboard (the tensorboard extra)"""
    capture_video: bool = False
    """record the first episode of the first and the final evaluation into <run>/videos (MP4; W&B with --track)"""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.keep_checkpoints < 1:
            raise ValueError(f"--threads and --keep-checkpoints must be >= 1, got {self.threads}, {self.keep_checkpoints}")
        check_checkpoint_intervals(self.checkpoint_every_seconds, self.checkpoint_every_steps)


def check_checkpoint_intervals(every_seconds: float, every_steps: int | None) -> None:
    """ValueError unless the intervals make sense: seconds > 0 (inf: never by wall time; NaN would silently mean the
    same), steps >= 1 when given."""
    if not every_seconds > 0:  # also catches NaN
        raise ValueError(f"--checkpoint-every-seconds must be > 0 (inf: only by steps), got {every_seconds}")
    if every_steps is not None and every_steps < 1:
        raise ValueError(f"--checkpoint-every-steps must be >= 1, got {every_steps}")


def cmd_train(argv: list[str]) -> int:
    from experiments.execute import RunDiverged, RunOptions, execute_run, validate_spec

    if not argv or argv[0].startswith("-"):
        print(f"usage: rlgrid train ALGO [OPTIONS]\n\n{TRAIN_DESCRIPTION}\n\nalgorithms: {', '.join(list_algorithms())}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    algo = argv[0]
    try:
        algorithm = load_algorithm(algo)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        parsed = parse_command_line(
            argv[1:], f"rlgrid train {algo}", TRAIN_DESCRIPTION, runner=TrainOptions, config=algorithm.Config
        )
    except SystemExit as exc:  # tyro has printed the problem, or the help
        return int(exc.code or 0)
    runner, config = parsed["runner"], parsed["config"]
    try:
        # RunSpec.create keeps the values that differ from the algorithm's defaults: those name the run.
        spec = RunSpec.create(algo, config.env_id, config.seed, dataclasses.asdict(config))
        validate_spec(spec, runner.capture_video)  # bad input is reported before the runs directory is made
        if runner.tensorboard:
            check_tensorboard()
        check_runs_dir(runner.runs_dir)
        options = RunOptions(
            runs_dir=runner.runs_dir,
            track=runner.track,
            wandb_mode=runner.wandb_mode,
            wandb_project=runner.wandb_project,
            threads=runner.threads,
            checkpoint_every_steps=runner.checkpoint_every_steps,
            checkpoint_every_seconds=runner.checkpoint_every_seconds,
            keep_checkpoints=runner.keep_checkpoints,
            progress=not runner.quiet,
            tensorboard=runner.tensorboard,
            capture_video=runner.capture_video,
        )
        outcome = execute_run(spec, options)
    except (ValueError, RunDirectoryMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"\n{exc}; run the same command again to resume.", file=sys.stderr)
        return 130
    except RunStopped as exc:
        print(f"\n{exc}; run the same command again to resume from the newest checkpoint.", file=sys.stderr)
        return 130
    except RunDiverged as exc:
        print(f"diverged: {exc}\n  recorded in the run directory (DIVERGED); it is not resumed or retried.", file=sys.stderr)
        return 1
    result = outcome["result"]
    verb = "already finished, nothing to do" if outcome["status"] == "skipped" else "finished"
    print(f"{verb}: {outcome['run_dir']}")
    print(
        f"  final eval return {result['final_eval_return']:.2f} at step {result['global_step']:,}"
        f" ({result['steps_per_second']:,.0f} steps/s)"
    )
    if result.get("resumed_from_step"):
        print(
            f"  resumed from step {result['resumed_from_step']:,}; {result['total_wall_time_s']:,.0f} s of training"
            " over all of the run's processes"
        )
    return 0


RUN_DESCRIPTION = """\
Run a suite: every algorithm x env x variant x seed of a TOML suite file (a path, or the name of a suite
shipped in experiments/suites/). The whole suite is validated before anything starts. Finished runs are
skipped, unfinished ones resume from their newest checkpoint, failures are retried --retries times and
then recorded. Ctrl-C checkpoints and stops every run; the same command later continues. The summary is
written to RUNS_DIR/<suite>/summary.json.
"""


def cmd_run(argv: list[str]) -> int:
    import os

    from experiments.execute import RunOptions
    from experiments.grid import GridOptions, GridRunner, packs, plan
    from experiments.suite import SuiteError, load_suite

    parser = argparse.ArgumentParser(
        prog="rlgrid run",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("suite", help="suite file or shipped suite name (e.g. quickstart, mujoco_1m)")
    parser.add_argument(
        "--executor",
        choices=["local", "inline", "ray", "slurm"],
        default="local",
        help="local: a process per run, N at once (default); inline: one by one in this process; "
        "ray: a task per run on a Ray cluster; slurm: submitit job arrays",
    )
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition")
    parser.add_argument("--slurm-time-min", type=int, default=240, help="time limit per job, minutes (requeued after)")
    parser.add_argument(
        "--slurm-cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="submitit backend (default: Slurm when available; local/debug run here)",
    )
    parser.add_argument("--ray-address", default=None, help="Ray cluster address or 'auto' (default: start a local one)")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: cores / threads per run)")
    parser.add_argument("--threads-per-run", type=int, default=1, help="torch threads per run (default: 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="GPU fraction per run, e.g. 0.25 packs 4 per GPU")
    parser.add_argument(
        "--seeds-per-process",
        type=int,
        default=1,
        help="train up to K seeds of one cell in one process, their networks stacked (td3, ddpg, sac, dqn, "
        "double_dqn, ppo, ppo_kl; other algorithms, and ppo with target_kl, run their seeds apart); each seed still "
        "writes its own run directory. Pays on a GPU; on a CPU --workers already fills the cores (default: 1)",
    )
    parser.add_argument("--retries", type=int, default=1, help="retries of a failed run (default: 1)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run directories (default: ./runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their state; run nothing")
    parser.add_argument("--track", action="store_true", help="mirror every run to Weights & Biases")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files into each run")
    parser.add_argument(
        "--capture-video", action="store_true", help="record the first and the final evaluation's first episode (MP4)"
    )
    parser.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None)
    parser.add_argument("--checkpoint-every-seconds", type=float, default=300.0, help="checkpoint interval (default: 300)")
    parser.add_argument("--checkpoint-every-steps", type=int, default=None, help="also checkpoint every N env steps")
    parser.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress reports")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        suite = load_suite(args.suite)
        if min(args.threads_per_run, args.seeds_per_process, args.workers or 1) < 1 or args.retries < 0:
            raise ValueError("--threads-per-run, --workers and --seeds-per-process must be >= 1, --retries >= 0")
        check_checkpoint_intervals(args.checkpoint_every_seconds, args.checkpoint_every_steps)
        if args.tensorboard:
            check_tensorboard()
        if args.capture_video:
            from envs import check_rendering

            for env_id in sorted({spec.env_id for spec in suite.specs}):
                check_rendering(env_id)
        if not args.dry_run:  # a dry run only reads
            check_runs_dir(args.runs_dir)
    except (SuiteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = plan(suite.specs, args.runs_dir)
    if args.dry_run:
        # Which process trains each unfinished run: a pack number (runs sharing one train together), or "-".
        todo = [spec for spec, state in rows if state in ("new", "partial")]
        group_of = {spec: n for n, group in enumerate(packs(todo, args.seeds_per_process, args.runs_dir), 1) for spec in group}
        print(f"{'algo':<10} {'variant':<12} {'env':<22} {'seed':>4}  {'hash':<8}  {'state':<8}  process")
        for spec, state in rows:
            where = f"{spec.algo:<10} {spec.variant:<12} {spec.env_id:<22} {spec.seed:>4}  {spec.hash:<8}"
            print(f"{where}  {state:<8}  {group_of.get(spec, '-')}")
        counts = {s: sum(1 for _, st in rows if st == s) for s in ("done", "partial", "new", "diverged")}
        states = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        print(f"{len(rows)} runs: {states}; {len(set(group_of.values()))} processes to run")
        return 0
    # Local runs default to filling the cores; elsewhere (Ray, Slurm) no limit unless asked.
    workers = args.workers or (max(1, (os.cpu_count() or 1) // args.threads_per_run) if args.executor == "local" else None)
    run_options = RunOptions(
        runs_dir=args.runs_dir,
        track=args.track,
        wandb_mode=args.wandb_mode,
        threads=args.threads_per_run,
        checkpoint_every_seconds=args.checkpoint_every_seconds,
        checkpoint_every_steps=args.checkpoint_every_steps,
        progress=args.executor == "inline",
        quiet_tracking=args.executor != "inline",
        tensorboard=args.tensorboard,
        capture_video=args.capture_video,
        seeds_per_process=args.seeds_per_process,
    )
    grid = GridOptions(
        executor=args.executor,
        workers=workers,
        retries=args.retries,
        gpus_per_run=args.gpus_per_run,
        progress_interval_s=args.progress_interval,
        ray_address=args.ray_address,
        slurm_partition=args.slurm_partition,
        slurm_time_min=args.slurm_time_min,
        slurm_cluster=args.slurm_cluster,
    )
    at_once = workers or "as many as the cluster takes"
    print(
        f"{suite.name}: {len(rows)} runs ({sum(1 for _, s in rows if s == 'done')} already done), {at_once} at once, "
        f"{args.threads_per_run} thread(s) each -> {args.runs_dir / suite.name}",
        flush=True,
    )
    if args.track:
        from experiments.tracking import resolve_wandb_mode

        if resolve_wandb_mode(args.wandb_mode) == "offline":
            print(f"W&B is offline; upload later with: wandb sync {args.runs_dir / suite.name}/*/*/*/wandb/offline-run-*")
    try:
        summary = GridRunner(suite.name, list(suite.specs), run_options, grid).run()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    print(
        f"\n{suite.name}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f" in {summary['wall_time_s']:.0f} s, {summary['env_steps_this_invocation']:,} env steps"
        f" ({summary['aggregate_steps_per_second']:,.0f} steps/s)"
    )
    for row in summary["runs_detail"]:
        if row["status"] in ("failed", "diverged"):
            print(
                f"  {row['status']}: {row['algo']}/{row['variant']}/{row['env_id']}/seed{row['seed']}: {row.get('error', '')}"
            )
    left = [r for r in summary["runs_detail"] if r["status"] in ("interrupted", "not started")]
    if left:
        print(f"  {len(left)} runs left; run the same command again to continue.")
        return 130
    return 0 if all(s == "done" for s in counts) else 1


def cmd_report(argv: list[str]) -> int:
    try:
        from analysis.report import main as report_main
    except ImportError as exc:
        print(f"error: {exc}; reports need the analysis extra: pip install -e '.[analysis]'", file=sys.stderr)
        return 2
    try:
        return report_main(argv)
    except SystemExit as exc:  # argparse has printed the problem or the help
        return int(exc.code or 0)


EVAL_DESCRIPTION = """\
Evaluate the newest checkpoint of a run (RUN_DIR: a run directory, RUNS_DIR/<suite>/<algo>/<env>/seed<k>-<hash>/,
finished or not), or with --step the kept checkpoint at that env step, under the run's own evaluation protocol: its
deterministic policy, the observation-normalisation statistics saved with the checkpoint (frozen), unclipped returns.
Prints the mean return with a 95% Student-t interval and every episode's return.

By default the episodes are the run's own: its eval_episodes, seeded as the run's evaluation at the checkpoint's step
was, so a finished run whose newest checkpoint is at its final step gives its final_eval_return again. --episodes and
--seed ask for others. Nothing in RUN_DIR is written, moved or touched (a damaged newest checkpoint is skipped, not set
aside). A directory that is not a run, or a run without a checkpoint, is refused (exit 2)."""


def cmd_eval(argv: list[str]) -> int:
    from algorithms.common.run import CheckpointMismatch
    from experiments.evaluate_run import NotEvaluable, describe, evaluate_run

    parser = argparse.ArgumentParser(
        prog="rlgrid eval",
        description=EVAL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    parser.add_argument("--episodes", type=int, default=None, help="episodes to play (default: the run's eval_episodes)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first episode, episode i gets SEED + i (default: the seed of the run's own evaluation at the "
        "checkpoint's step)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the run's; cpu for a run trained on a GPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument(
        "--video", type=Path, default=None, metavar="FILE.mp4", help="also record the first episode there (outside the run)"
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="evaluate the kept checkpoint at this env step instead of the newest (--keep-checkpoints keeps more)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    try:
        evaluation = evaluate_run(args.run_dir, args.episodes, args.seed, args.device, args.threads, args.video, args.step)
    except (NotEvaluable, CheckpointMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(describe(evaluation))
    if args.video is not None:
        print(f"video of the first episode: {args.video}")
    return 0


def _needs_tuning(command: Any) -> Any:
    def run(argv: list[str]) -> int:
        try:
            import optuna  # noqa: F401
        except ImportError:
            print("error: tuning needs Optuna: pip install -e '.[tuning]'", file=sys.stderr)
            return 2
        return command(argv)

    return run


def cmd_tune(argv: list[str]) -> int:
    from experiments.tune_cli import cmd_tune as tune

    return _needs_tuning(tune)(argv)


def cmd_tune_report(argv: list[str]) -> int:
    from experiments.tune_report import cmd_tune_report as tune_report

    return _needs_tuning(tune_report)(argv)


def cmd_dataset(argv: list[str]) -> int:
    from experiments.dataset_cli import cmd_dataset as dataset

    return dataset(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "train": cmd_train,
        "run": cmd_run,
        "eval": cmd_eval,
        "report": cmd_report,
        "tune": cmd_tune,
        "tune-report": cmd_tune_report,
        "dataset": cmd_dataset,
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(
            "usage: rlgrid COMMAND ...\n\ncommands:\n  train   train one run (rlgrid train --help)"
            "\n  run     run a suite: a seeded grid (rlgrid run --help)"
            "\n  eval    evaluate a run's newest checkpoint, with a confidence interval (rlgrid eval --help)"
            "\n  report  tables, figures, reference verdicts and report.html from runs (rlgrid report --help)"
            "\n  tune    Optuna search over a study file, any number of workers (rlgrid tune --help)"
            "\n  tune-report  best trials, search figures, best config as a suite (rlgrid tune-report --help)"
            "\n  dataset  make offline datasets in the Minari format, list them, describe one (rlgrid dataset --help)"
        )
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
