"""Run a grid of specs: skip finished runs, resume partial ones, retry failures, survive kills.

Executors share one contract: each run is `execute_run(spec, options)` somewhere, and its run directory
is the only channel back (DONE/result.json, error.txt, DIVERGED), so a worker killed with -9 loses nothing
but the steps since its last checkpoint.
- `inline`: one after another in this process (debugging).
- `local` (default): a spawned process per run, at most `workers` at once, torch threads per run chosen so
  the cores are used but not oversubscribed, runs packed onto GPUs by slots (CUDA_VISIBLE_DEVICES).
- `ray`: one Ray task per run on an existing cluster (`ray_address`, or "auto"; none starts a local one),
  `num_cpus` = threads per run and fractional `num_gpus`, retried on worker death and on exceptions.
  Every node must see the runs directory at the same path (a shared filesystem).
- `slurm`: submitit job arrays (time limit, partition, GPUs per job); a job preempted or timed out is
  requeued and resumes from its newest checkpoint. `slurm_cluster="local"` runs the same on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from algorithms.common.checkpoint import newest_checkpoint_step
from algorithms.common.logging import format_duration
from experiments.execute import RunOptions
from experiments.runs import RunDirectory, RunSpec

EXIT_FAILED, EXIT_DIVERGED, EXIT_INTERRUPTED = 3, 4, 130


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


def _worker(spec: RunSpec, options: RunOptions, gpu: int | None) -> None:
    """Entry point of a spawned run process; its exit code tells the grid what happened."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        state = run_to_state(spec, options)
    except BaseException:
        traceback.print_exc()
        sys.exit(EXIT_FAILED)
    sys.exit({"done": 0, "interrupted": EXIT_INTERRUPTED, "diverged": EXIT_DIVERGED}[state])


def run_to_state(spec: RunSpec, options: RunOptions) -> str:
    """Run one spec on a remote worker (Ray task, Slurm job); returns its final state, exceptions propagate."""
    from algorithms.common import RunInterrupted
    from experiments.execute import RunDiverged, execute_run

    try:
        execute_run(spec, options)
    except RunInterrupted:
        return "interrupted"
    except RunDiverged:
        return "diverged"
    return "done"


def _last_metrics(path: Path) -> dict[str, Any]:
    """Latest step and returns from the tail of a metrics.jsonl (cheap: reads at most 16 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 16384))
            lines = f.read().decode(errors="replace").splitlines()[1:]
    except OSError:
        return {}
    latest: dict[str, Any] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest["step"] = row["step"]
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
        self.stopping = False
        self._totals = {spec: spec.config().total_timesteps for spec in self.specs}
        self._rate_marks: dict[RunSpec, tuple[float, int]] = {}
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
        if self.grid.executor == "inline":
            self._run_inline(todo)
        elif self.grid.executor == "local":
            self._run_local(todo)
        elif self.grid.executor == "ray":
            self._run_ray(todo)
        elif self.grid.executor == "slurm":
            self._run_slurm(todo)
        else:
            raise ValueError(f"unknown executor {self.grid.executor!r}")
        result = self.summary(start, steps_before)
        out = Path(self.run_options.runs_dir) / self.suite_name / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def _run_inline(self, todo: list[RunSpec]) -> None:
        for spec in todo:
            for attempt in range(1, self.grid.retries + 2):
                try:
                    state = run_to_state(spec, self.run_options)
                except Exception:
                    self._record(spec, "failed", attempt, traceback.format_exc())
                    continue
                self._record(spec, state, attempt)
                if state == "interrupted":
                    return
                break

    def _run_ray(self, todo: list[RunSpec]) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.grid.ray_address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(run_to_state).options(
            num_cpus=self.run_options.threads,
            num_gpus=self.grid.gpus_per_run,
            max_retries=self.grid.retries,  # worker or node death
            retry_exceptions=self.grid.retries > 0,  # exceptions raised by the run
        )
        options = dataclasses.replace(self.run_options, progress=False)
        refs = {task.remote(spec, options): spec for spec in todo}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=self.grid.progress_interval_s)
                for ref in ready:
                    spec = refs.pop(ref)
                    try:
                        self._record(spec, ray.get(ref), attempts=0)
                    except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as exc:
                        self._record(spec, "failed", attempts=self.grid.retries + 1, error=str(exc))
                if not ready:
                    self._print_progress({ref: (spec, 1, None) for ref, spec in refs.items()}, [])
        except KeyboardInterrupt:
            self.stopping = True
            for ref in refs:
                ray.cancel(ref)  # SIGINT to the task: it checkpoints and stops
            for ref, spec in refs.items():
                try:
                    self._record(spec, ray.get(ref, timeout=120), attempts=1)
                except Exception:
                    self._record(spec, "interrupted", attempts=1)

    def _run_slurm(self, todo: list[RunSpec]) -> None:
        from experiments.slurm import submit_runs

        folder = Path(self.run_options.runs_dir) / self.suite_name / ".submitit"
        options = dataclasses.replace(self.run_options, progress=False)
        attempts = {spec: 0 for spec in todo}
        while todo and not self.stopping:
            jobs = submit_runs(todo, options, folder, cluster=self.grid.slurm_cluster, timeout_min=self.grid.slurm_time_min,
                               partition=self.grid.slurm_partition, gpus_per_run=self.grid.gpus_per_run,
                               parallelism=self.grid.workers)  # fmt: skip
            print(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0]}); logs in {folder}", flush=True)
            retry = []
            for spec, job in zip(todo, jobs):
                attempts[spec] += 1
                try:
                    self._record(spec, job.result(), attempts[spec])
                except KeyboardInterrupt:
                    self.stopping = True
                    for other in jobs:
                        other.cancel(check=False)
                    break
                except Exception as exc:  # the job failed (after its requeues): retry or record
                    if attempts[spec] <= self.grid.retries:
                        retry.append(spec)
                    else:
                        self._record(spec, "failed", attempts[spec], error=str(exc))
            todo = retry

    def _gpu_slots(self) -> list[int | None]:
        if self.grid.gpus_per_run <= 0:
            return []
        import torch

        per_device = max(1, int(1.0 / self.grid.gpus_per_run))
        return [d for d in range(torch.cuda.device_count()) for _ in range(per_device)]

    def _run_local(self, todo: list[RunSpec]) -> None:
        context = mp.get_context("spawn")
        workers = self.grid.workers or max(1, (os.cpu_count() or 1) // self.run_options.threads)
        gpu_slots = self._gpu_slots()
        if self.grid.gpus_per_run > 0:
            if not gpu_slots:
                raise ValueError("--gpus-per-run was given but no CUDA device is visible")
            workers = min(workers, len(gpu_slots))
        pending = [(spec, 1) for spec in todo]
        active: dict[Any, tuple[RunSpec, int, int | None]] = {}
        free_gpus = list(gpu_slots)

        def request_stop(signum: int, frame: Any) -> None:
            self.stopping = True
            for process in active:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        last_progress = 0.0
        try:
            while (pending and not self.stopping) or active:
                while pending and len(active) < workers and not self.stopping:
                    spec, attempt = pending.pop(0)
                    gpu = free_gpus.pop(0) if gpu_slots else None
                    options = dataclasses.replace(self.run_options, progress=False)
                    process = context.Process(target=_worker, args=(spec, options, gpu), name=f"rlgrid-{spec.hash}")
                    process.start()
                    active[process] = (spec, attempt, gpu)
                for process in [p for p in active if not p.is_alive()]:
                    process.join()
                    spec, attempt, gpu = active.pop(process)
                    if gpu is not None:
                        free_gpus.append(gpu)
                    code = process.exitcode
                    state = RunDirectory(spec.run_dir(self.run_options.runs_dir)).status  # the directory is the truth
                    if state in ("done", "diverged"):  # even if a signal hit the worker while it was exiting
                        self._record(spec, state, attempt)
                    elif self.stopping:
                        self._record(spec, "interrupted", attempt)
                    elif attempt <= self.grid.retries:
                        print(f"run {spec.algo}/{spec.env_id}/seed{spec.seed} exited with {code}; retry {attempt}", flush=True)
                        pending.append((spec, attempt + 1))
                    else:
                        killed = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                        self._record(spec, "failed", attempt, None if code == EXIT_FAILED else f"worker {killed}")
                interval = min(self.grid.progress_interval_s, 2.0) if sys.stdout.isatty() else self.grid.progress_interval_s
                if time.time() - last_progress >= interval:
                    last_progress = time.time()
                    self._print_progress(active, pending)
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _print_progress(self, active: dict[Any, tuple[RunSpec, int, int | None]], pending: list) -> None:
        """Per-run state, steps, steps/s and latest return; grid counts, aggregate steps/s and ETA.

        On a terminal the block is redrawn in place; otherwise it is appended (one block per interval)."""
        now = time.time()
        done = [s for s, e in self.outcomes.items() if e["status"] == "done"]
        failed = sum(1 for e in self.outcomes.values() if e["status"] in ("failed", "diverged"))
        run_lines, steps_now, rate_total = [], 0, 0.0
        for spec, attempt, _ in active.values():
            latest = _last_metrics(RunDirectory(spec.run_dir(self.run_options.runs_dir)).metrics_file)
            step = latest.get("step", 0)
            prev_time, prev_step = self._rate_marks.get(spec, (now, step))
            rate = (step - prev_step) / (now - prev_time) if now > prev_time and step >= prev_step else 0.0
            self._rate_marks[spec] = (now, step)
            steps_now, rate_total = steps_now + step, rate_total + rate
            line = f"    {spec.algo}/{spec.variant}/{spec.env_id}/seed{spec.seed}: {step:,}/{self._totals[spec]:,} steps"
            line += f", {rate:,.0f} steps/s" if rate else ""
            ret = latest.get("charts/episodic_return")
            line += f", return {ret:.1f}" if ret is not None else ""
            run_lines.append(line + (f" (attempt {attempt})" if attempt > 1 else ""))
        remaining = sum(self._totals[s] for s in self.specs if s not in self.outcomes) - steps_now
        eta = f", ETA {format_duration(remaining / rate_total)}" if rate_total > 0 and remaining > 0 else ""
        header = (
            f"[{time.strftime('%H:%M:%S')}] {self.suite_name}: {len(done)}/{len(self.specs)} done, {len(active)} running, "
        )
        header += f"{len(pending)} waiting, {failed} failed, {rate_total:,.0f} steps/s{eta}"
        block = [header, *run_lines]
        if sys.stdout.isatty() and self._drawn_lines:
            sys.stdout.write(f"\033[{self._drawn_lines}F\033[J")  # back to the previous block, clear it
        print("\n".join(block), flush=True)
        self._drawn_lines = len(block) if sys.stdout.isatty() else 0
