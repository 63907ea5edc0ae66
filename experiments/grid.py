"""Run a grid of specs: skip finished runs, resume partial ones, retry failures, survive kills.

Each run is the task `run_to_state(spec, options)` on one of the executors of `experiments.executors` (inline, local
processes, Ray, Slurm), and its run directory is the only channel back (DONE/result.json, error.txt, DIVERGED), so a
worker killed with -9 loses nothing but the steps since its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from algorithms.common.checkpoint import newest_checkpoint_step
from algorithms.common.logging import format_duration
from experiments.execute import RunOptions, packable, run_pack_to_states, run_to_state
from experiments.executors import Executor, Task, make_executor
from experiments.runs import RUN_REFERENCE, RunDirectory, RunSpec, run_references


@dataclasses.dataclass
class GridOptions:
    executor: str = "local"
    workers: int | None = None
    retries: int = 1
    gpus_per_run: float = 0.0
    progress_interval_s: float = 10.0
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time_min: int = 240
    slurm_cluster: str | None = None  # None: Slurm when available; "local" / "debug": submitit's own, for tests


def plan(specs: list[RunSpec] | tuple[RunSpec, ...], runs_dir: Path) -> list[tuple[RunSpec, str]]:
    """Each spec with its directory's status: done, diverged, partial or new."""
    return [(spec, RunDirectory(spec.run_dir(runs_dir)).status) for spec in specs]


def packs(specs: list[RunSpec], seeds_per_process: int, runs_dir: Path) -> list[tuple[RunSpec, ...]]:
    """`specs` as the groups that train in one process each: up to `seeds_per_process` seeds of one cell (algorithm,
    env, config, suite and variant) whose algorithm trains seed packs and whose newest checkpoints stand at the same
    step (a pack resumes in lockstep: a fresh seed never joins a half-trained one); every other spec alone. Order kept:
    a group goes where its first spec was."""
    groups: dict[Any, list[RunSpec]] = {}
    for spec in specs:
        key: Any = spec
        if seeds_per_process > 1 and packable(spec):
            step = newest_checkpoint_step(RunDirectory(spec.run_dir(runs_dir)).checkpoint_dir)
            key = (spec.algo, spec.env_id, spec.overrides, spec.suite, spec.variant, step)
        groups.setdefault(key, []).append(spec)
    return [tuple(g[i : i + seeds_per_process]) for g in groups.values() for i in range(0, len(g), seeds_per_process)]


def _task(pack: tuple[RunSpec, ...], options: RunOptions) -> Task:
    """The executor's task for a group of `packs`: one run, or a seed pack."""
    first = pack[0]
    if len(pack) == 1:
        return Task(run_to_state, (first, options), f"run {first.algo}/{first.env_id}/seed{first.seed}")
    seeds = ",".join(str(spec.seed) for spec in pack)
    return Task(run_pack_to_states, (pack, options), f"pack {first.algo}/{first.env_id}/seeds{seeds}")


def _specs(task: Task) -> tuple[RunSpec, ...]:
    """The runs a task of `_task` trains."""
    return task.args[0] if isinstance(task.args[0], tuple) else (task.args[0],)


def _last_metrics(path: Path) -> dict[str, Any]:
    """Latest step and returns from the tail of a metrics.jsonl (cheap: reads at most 16 KiB)."""
    try:
        with open(path, "rb") as f:
            start = f.seek(max(0, f.seek(0, 2) - 16384))
            lines = f.read().decode(errors="replace").splitlines()[1 if start else 0 :]  # a cut first line is dropped
    except OSError:
        return {}
    latest: dict[str, Any] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest["step"] = row["step"]
        if "time" in row:
            latest["time"] = row["time"]
        for key in ("charts/episodic_return", "eval/episodic_return"):
            if key in row:
                latest[key] = row[key]
    return latest


class GridRunner:
    def __init__(self, suite_name: str, specs: list[RunSpec], run_options: RunOptions, grid: GridOptions) -> None:
        self.suite_name = suite_name
        self.specs = list(specs)
        self.run_options = run_options
        self.grid = grid
        self.outcomes: dict[RunSpec, dict[str, Any]] = {}
        self._totals = {spec: spec.config().total_timesteps for spec in self.specs}
        # Per run: the first (metrics time, step) logged while this grid watched it, for its rate. Rates come from the
        # metrics' own times, so a run that logs seldom (an offline one: every 1,000 updates) still shows one.
        self._rate_marks: dict[RunSpec, tuple[float | None, int]] = {}
        self._drawn_lines = 0

    # --- bookkeeping ------------------------------------------------------------------------------
    def _record(self, spec: RunSpec, status: str, attempts: int, error: str | None = None) -> None:
        run_dir = RunDirectory(spec.run_dir(self.run_options.runs_dir))
        entry: dict[str, Any] = {"status": status, "attempts": attempts, "run_dir": str(run_dir.path)}
        if status == "done" and run_dir.result_file.exists():
            result = json.loads(run_dir.result_file.read_text())
            entry["global_step"], entry["final_eval_return"] = result["global_step"], result["final_eval_return"]
        if error is None and run_dir.error_file.exists():
            error = run_dir.error_file.read_text()
        if status in ("failed", "diverged") and error:
            entry["error"] = error.strip().splitlines()[-1] if error.strip() else error
            entry["traceback"] = error
        self.outcomes[spec] = entry

    def _checkpoint_dir(self, spec: RunSpec) -> Path:
        return RunDirectory(spec.run_dir(self.run_options.runs_dir)).checkpoint_dir

    def summary(self, start: float, steps_before: dict[RunSpec, int]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for entry in self.outcomes.values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        new_steps = 0
        for spec, entry in self.outcomes.items():
            if entry.get("skipped"):
                continue
            reached = entry.get("global_step", 0)
            if entry["status"] != "done":  # an interrupted run's progress is its checkpoint at the interrupt
                reached = newest_checkpoint_step(self._checkpoint_dir(spec))
            new_steps += max(0, reached - steps_before.get(spec, 0))
        wall = time.time() - start
        return {
            "suite": self.suite_name,
            "runs": len(self.specs),
            "counts": counts,
            "wall_time_s": round(wall, 2),
            "env_steps_this_invocation": new_steps,
            "aggregate_steps_per_second": round(new_steps / wall, 1) if wall > 0 else 0.0,
            "runs_detail": [{**spec.to_dict(), **self.outcomes.get(spec, {"status": "not started"})} for spec in self.specs],
        }

    # --- execution --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        start = time.time()
        steps_before = {}
        todo = []
        for spec, status in plan(self.specs, self.run_options.runs_dir):
            if status in ("done", "diverged"):
                self._record(spec, status, 0)
                self.outcomes[spec]["skipped"] = True
            else:
                todo.append(spec)
                steps_before[spec] = newest_checkpoint_step(self._checkpoint_dir(spec))
        executor = self._executor()
        # A run's own console progress only where its output is ours; elsewhere the grid's progress view stands for it.
        options = dataclasses.replace(self.run_options, progress=self.run_options.progress and executor.in_process)
        interval = min(self.grid.progress_interval_s, 2.0) if sys.stdout.isatty() else self.grid.progress_interval_s
        # Runs that take other runs' outputs (a pipeline's stages) start once those have finished: wave by wave.
        for wave in self._waves(todo):
            if executor.stopping:
                break
            ready = []
            for spec in wave:
                unfinished = [
                    i for i in self._inputs(spec) if RunDirectory(i.run_dir(self.run_options.runs_dir)).status != "done"
                ]
                if unfinished:
                    where = unfinished[0].run_dir(self.run_options.runs_dir)
                    self._record(spec, "failed", 0, f"not started: its input run {where} did not finish")
                else:
                    ready.append(spec)
            groups = packs(ready, self.run_options.seeds_per_process, Path(self.run_options.runs_dir))
            tasks = [_task(group, options) for group in groups]
            for finished in executor.submit(tasks, self.grid.retries, self._print_progress, interval):
                interrupted = "interrupted" in (finished.value if isinstance(finished.value, list) else [finished.value])
                for spec in _specs(finished.task):
                    state = RunDirectory(spec.run_dir(self.run_options.runs_dir)).status  # the directory is the truth
                    if state in ("done", "diverged"):  # even if a signal hit the worker while it was exiting
                        self._record(spec, state, finished.attempts)
                    elif interrupted or executor.stopping:
                        self._record(spec, "interrupted", finished.attempts)
                        if executor.in_process:  # the run caught this process's Ctrl-C / SIGTERM: start no other
                            executor.stop()
                    else:
                        self._record(spec, "failed", finished.attempts, finished.error)
        result = self.summary(start, steps_before)
        out = Path(self.run_options.runs_dir) / self.suite_name / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def _inputs(self, spec: RunSpec) -> list[RunSpec]:
        """The runs of this grid whose outputs `spec` takes (its linked `@...` values, experiments/suite.py)."""
        names = set(run_references(spec).values())
        return [
            other for other in self.specs if RUN_REFERENCE + other.run_dir(".").relative_to(other.suite).as_posix() in names
        ]

    def _waves(self, todo: list[RunSpec]) -> list[list[RunSpec]]:
        """`todo` in waves, each after the ones holding its inputs (order kept within a wave); one wave without any."""
        pending, depth = set(todo), {}

        def depth_of(spec: RunSpec) -> int:
            if spec not in depth:
                depth[spec] = 1 + max((depth_of(i) for i in self._inputs(spec) if i in pending), default=-1)
            return depth[spec]

        waves: list[list[RunSpec]] = [[] for _ in range(1 + max((depth_of(s) for s in todo), default=0))]
        for spec in todo:
            waves[depth_of(spec)].append(spec)
        return waves

    def _executor(self) -> Executor:
        return make_executor(
            self.grid.executor,
            workers=self.grid.workers,
            threads=self.run_options.threads,
            gpus_per_task=self.grid.gpus_per_run,
            ray_address=self.grid.ray_address,
            slurm_folder=Path(self.run_options.runs_dir) / self.suite_name / ".submitit",
            slurm_cluster=self.grid.slurm_cluster,
            slurm_time_min=self.grid.slurm_time_min,
            slurm_partition=self.grid.slurm_partition,
        )

    def _print_progress(self, running: list[tuple[Task, int]], waiting: int) -> None:
        """Per-run state, steps, steps/s and latest return; grid counts, aggregate steps/s and ETA.

        On a terminal the block is redrawn in place; otherwise it is appended (one block per interval)."""
        done = [s for s, e in self.outcomes.items() if e["status"] == "done"]
        failed = sum(1 for e in self.outcomes.values() if e["status"] in ("failed", "diverged"))
        run_lines, steps_now, rate_total = [], 0, 0.0
        runs = [(spec, attempt) for task, attempt in running for spec in _specs(task)]  # a pack's seeds each
        for spec, attempt in runs:
            latest = _last_metrics(RunDirectory(spec.run_dir(self.run_options.runs_dir)).metrics_file)
            step, logged_at = latest.get("step", 0), latest.get("time")
            if spec not in self._rate_marks:  # a run seen before its first line counts from now, at step 0 (short runs
                # that log a few lines in all get a rate); one seen with lines from before we looked waits for its next
                self._rate_marks[spec] = (time.time(), 0) if not latest else (None, step)
            mark_time, mark_step = self._rate_marks[spec]
            if step < mark_step or (mark_time is None and step != mark_step):  # a retry from its checkpoint, or a new line
                self._rate_marks[spec] = mark_time, mark_step = logged_at, step
            rate = (step - mark_step) / (logged_at - mark_time) if mark_time and logged_at and logged_at > mark_time else 0.0
            steps_now, rate_total = steps_now + step, rate_total + rate
            line = f"    {spec.algo}/{spec.variant}/{spec.env_id}/seed{spec.seed}: {step:,}/{self._totals[spec]:,} steps"
            line += f", {rate:,.0f} steps/s" if rate else ""
            ret = latest.get("charts/episodic_return")
            line += f", return {ret:.1f}" if ret is not None else ""
            run_lines.append(line + (f" (attempt {attempt})" if attempt > 1 else ""))
        remaining = sum(self._totals[s] for s in self.specs if s not in self.outcomes) - steps_now
        eta = f", ETA {format_duration(remaining / rate_total)}" if rate_total > 0 and remaining > 0 else ""
        header = f"[{time.strftime('%H:%M:%S')}] {self.suite_name}: {len(done)}/{len(self.specs)} done, {len(runs)} running, "
        header += f"{waiting} waiting, {failed} failed, {rate_total:,.0f} steps/s{eta}"
        block = [header, *run_lines]
        if sys.stdout.isatty() and self._drawn_lines:
            sys.stdout.write(f"\033[{self._drawn_lines}F\033[J")  # back to the previous block, clear it
        print("\n".join(block), flush=True)
        self._drawn_lines = len(block) if sys.stdout.isatty() else 0
