"""Where work runs: one executor layer for grids (`experiments.grid`) and tuning workers (`experiments.tune_cli`).

A `Task` is a module-level function and its (picklable) arguments: `run_to_state(spec, options)` for a grid run,
`optuna_worker(...)` for a tuning worker. Every executor has the same two methods: `submit(tasks, retries, on_wait)`
starts them (at most `workers` at once) and yields each one as it ends, as a `Finished` with the function's return
value or its error (a traceback, or how a worker process died), after up to `retries` retries of failures; `stop()`
asks the running tasks to checkpoint and stop, and starts no more. `in_process` is true only for `inline`, whose tasks
share this process's signals and console. A run's own files stay the truth about it: a task that was killed has left
its checkpoints behind, and running it again resumes from them.

- `inline`: one after another in this process (debugging; a tuning study's single local worker).
- `local` (default): a spawned process per task, `CUDA_VISIBLE_DEVICES` set in the child to pack tasks onto GPU slots
  (`gpus_per_task` 0.25: four per device). Each Ctrl-C or SIGTERM during `submit` is forwarded to the children as
  one SIGTERM (they run in sessions of their own, so a terminal's Ctrl-C reaches them only this way): at the first,
  runs checkpoint and stop; at a second, they stop at once. On Linux a worker also gets a SIGHUP (checkpoint and stop)
  when this process dies, however it dies. A worker killed outright (SIGKILL, OOM) is a failure, retried.
- `ray`: a Ray task per task on an existing cluster (`address`, or "auto") or a local one: `num_cpus` = threads,
  fractional `num_gpus`, retried by Ray on worker death (`max_retries`) and on exceptions (`retry_exceptions`);
  Ctrl-C cancels the tasks (SIGINT in the task: it checkpoints and stops). Every node must see the same files.
- `slurm`: a submitit job array (time limit, partition, whole GPUs, array parallelism); a job that is preempted or
  reaches its time limit is requeued by submitit (`Requeueable`) and resumes from its checkpoint; failed jobs are
  resubmitted as a new array. `cluster="local"` or `"debug"` runs submitit's own backends, here.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from algorithms.common import RunInterrupted

EXECUTORS = ("inline", "local", "ray", "slurm")


@dataclasses.dataclass(frozen=True)
class Task:
    fn: Callable[..., Any]  # a module-level function: pickled by reference
    args: tuple[Any, ...]
    name: str  # in progress lines, retry messages and job names


@dataclasses.dataclass
class Finished:
    task: Task
    attempts: int
    value: Any = None  # what `fn` returned
    error: str | None = None  # set when the last attempt failed: its traceback, or how its worker died


OnWait = Callable[[list[tuple[Task, int]], int], None]
"""on_wait(running tasks with their attempt number, number waiting): called every `wait_interval_s` while waiting"""


class Executor:
    in_process = False
    """Tasks run in this process: a signal that interrupts a task was sent to this process, and the task's console
    output is this process's."""

    def __init__(self, workers: int | None = None, threads: int = 1, gpus_per_task: float = 0.0) -> None:
        self.workers, self.threads, self.gpus_per_task = workers, threads, gpus_per_task
        self.stopping = False

    def submit(
        self, tasks: Sequence[Task], retries: int = 0, on_wait: OnWait | None = None, wait_interval_s: float = 10.0
    ) -> Iterator[Finished]:
        raise NotImplementedError

    def stop(self) -> None:
        """Running tasks checkpoint and stop (they still end, and are yielded); nothing new starts."""
        self.stopping = True


class InlineExecutor(Executor):
    """One task after another in this process. A task's RunInterrupted (Ctrl-C in an optuna worker between runs) is a
    stop request, not a failure: it propagates."""

    in_process = True

    def submit(
        self, tasks: Sequence[Task], retries: int = 0, on_wait: OnWait | None = None, wait_interval_s: float = 10.0
    ) -> Iterator[Finished]:
        for task in tasks:
            for attempt in range(1, retries + 2):
                if self.stopping:
                    return
                try:
                    value = task.fn(*task.args)
                except RunInterrupted:
                    raise
                except Exception:
                    error = traceback.format_exc()
                    if attempt <= retries:
                        print(f"{task.name} failed ({error.strip().splitlines()[-1]}); retry {attempt}", flush=True)
                        continue
                    yield Finished(task, attempt, error=error)
                else:
                    yield Finished(task, attempt, value=value)
                break


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGHUP this worker when the process that started it dies, even by SIGKILL (PR_SET_PDEATHSIG), so no
    worker outlives its grid and runs beside the same grid started again; its run checkpoints and stops. SIGHUP, not
    SIGTERM: the kernel may send it more than once (once per thread of the dying parent), and a second SIGTERM would
    stop the run at once, without its checkpoint (`checkpoint.handle_stop_signals`)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGHUP)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the line above
            os.kill(os.getpid(), signal.SIGHUP)


def _run_in_child(connection: Any, fn: Callable[..., Any], args: tuple[Any, ...], gpu: int | None, parent: int) -> None:
    """Entry point of a local worker process: send ("ok", value) or ("error", traceback) back, then exit."""
    # A session of its own: a Ctrl-C in the terminal reaches only the parent, which passes on one SIGTERM per signal it
    # gets (`stop()`): the first asks the task to checkpoint and stop, a second stops it at once.
    os.setsid()
    _stop_with_parent(parent)
    if gpu is not None:  # before anything touches CUDA in this fresh (spawned) interpreter
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        message = ("ok", fn(*args))
    except BaseException:
        message = ("error", traceback.format_exc())
    connection.send(message)
    connection.close()


class LocalExecutor(Executor):
    def __init__(self, **resources: Any) -> None:
        super().__init__(**resources)
        self._active: dict[Any, tuple[Task, int, int | None, Any]] = {}  # process -> (task, attempt, gpu, pipe end)

    def _gpu_slots(self) -> list[int]:
        if self.gpus_per_task <= 0:
            return []
        import torch

        per_device = max(1, int(1.0 / self.gpus_per_task))
        slots = [device for device in range(torch.cuda.device_count()) for _ in range(per_device)]
        if not slots:
            raise ValueError("GPUs per run were asked for (--gpus-per-run) but no CUDA device is visible")
        return slots

    def submit(
        self, tasks: Sequence[Task], retries: int = 0, on_wait: OnWait | None = None, wait_interval_s: float = 10.0
    ) -> Iterator[Finished]:
        context = mp.get_context("spawn")  # a clean interpreter per task: no inherited torch threads or CUDA state
        free_gpus = self._gpu_slots()
        workers = self.workers or max(1, (os.cpu_count() or 1) // self.threads)
        if free_gpus:
            workers = min(workers, len(free_gpus))
        pending = deque((task, 1) for task in tasks)
        active = self._active = {}  # the running workers, which stop() signals
        messages: dict[Any, tuple[str, Any]] = {}

        def request_stop(signum: int, frame: Any) -> None:
            self.stop()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        last_wait = 0.0
        try:
            while (pending and not self.stopping) or active:
                while pending and len(active) < workers and not self.stopping:
                    task, attempt = pending.popleft()
                    gpu = free_gpus.pop(0) if free_gpus else None
                    receiver, sender = context.Pipe(duplex=False)
                    process = context.Process(
                        target=_run_in_child, args=(sender, task.fn, task.args, gpu, os.getpid()), name=task.name
                    )
                    process.start()
                    sender.close()
                    active[process] = (task, attempt, gpu, receiver)
                for process, (task, attempt, gpu, receiver) in list(active.items()):
                    # Liveness first: a worker found dead has written all it will, so the read below cannot miss a
                    # result sent between the two checks. Read before the exit too: a large value fills the pipe.
                    alive = process.is_alive()
                    if process not in messages and receiver.poll():
                        try:
                            messages[process] = receiver.recv()
                        except EOFError:  # the worker died without a result: its exit code says how
                            messages[process] = ("died", None)
                    if alive:
                        continue
                    process.join()
                    del active[process]
                    receiver.close()
                    if gpu is not None:
                        free_gpus.append(gpu)
                    kind, payload = messages.pop(process, (None, None))
                    if kind == "ok":
                        yield Finished(task, attempt, value=payload)
                        continue
                    code = process.exitcode
                    died = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                    error = payload if kind == "error" else f"worker {died}"
                    if attempt <= retries and not self.stopping:
                        # A task that raised has exited normally: its error says more than its exit status.
                        why = f"failed ({error.strip().splitlines()[-1]})" if kind == "error" else f"exited with {code}"
                        print(f"{task.name} {why}; retry {attempt}", flush=True)
                        pending.append((task, attempt + 1))
                    else:
                        yield Finished(task, attempt, error=error)
                if on_wait is not None and time.monotonic() - last_wait >= wait_interval_s:
                    last_wait = time.monotonic()
                    on_wait([(task, attempt) for task, attempt, _, _ in active.values()], len(pending))
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        super().stop()
        for process in list(self._active):
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


class RayExecutor(Executor):
    def __init__(self, address: str | None = None, log_to_driver: bool = False, **resources: Any) -> None:
        super().__init__(**resources)
        self.address, self.log_to_driver = address, log_to_driver

    def submit(
        self, tasks: Sequence[Task], retries: int = 0, on_wait: OnWait | None = None, wait_interval_s: float = 10.0
    ) -> Iterator[Finished]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=self.log_to_driver)
        remote = ray.remote(_call).options(
            num_cpus=self.threads,
            num_gpus=self.gpus_per_task,
            max_retries=retries,  # worker or node death
            retry_exceptions=retries > 0,  # exceptions raised by the task
        )
        refs = {remote.remote(task.fn, task.args): task for task in tasks}

        def result(ref: Any, timeout: float | None = None) -> Finished:
            task = refs.pop(ref)
            try:
                return Finished(task, 1, value=ray.get(ref, timeout=timeout))
            except Exception as exc:  # RayTaskError, WorkerCrashedError, TaskCancelledError, timeouts
                return Finished(task, retries + 1, error=str(exc))

        try:
            try:
                while refs:
                    ready, _ = ray.wait(list(refs), num_returns=1, timeout=wait_interval_s)
                    for ref in ready:
                        yield result(ref)
                    if not ready and on_wait is not None:
                        on_wait([(task, 1) for task in refs.values()], 0)
            except KeyboardInterrupt:
                self.stop()
                for ref in refs:
                    ray.cancel(ref)  # SIGINT in the task: the run checkpoints and stops
                for ref in list(refs):
                    yield result(ref, timeout=120)
        finally:
            if started_here:
                ray.shutdown()


class Requeueable:
    """A task as a submitit job that is requeued with the same arguments when Slurm preempts it or its time runs out
    (submitit's `Checkpointable`; the task's own checkpoints make the next attempt resume)."""

    def __call__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(*args)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmExecutor(Executor):
    def __init__(
        self,
        folder: Path,
        cluster: str | None = None,
        timeout_min: int = 240,
        partition: str | None = None,
        **resources: Any,
    ) -> None:
        super().__init__(**resources)
        self.folder, self.cluster, self.timeout_min, self.partition = Path(folder), cluster, timeout_min, partition

    def _executor(self) -> Any:
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        parameters: dict[str, Any] = {"timeout_min": self.timeout_min, "cpus_per_task": self.threads, "name": "rlgrid"}
        if self.gpus_per_task > 0:
            parameters["gpus_per_node"] = max(1, round(self.gpus_per_task))  # Slurm allocates whole GPUs per job
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.workers:
            parameters["slurm_array_parallelism"] = self.workers
        executor.update_parameters(**parameters)
        return executor

    def submit(
        self, tasks: Sequence[Task], retries: int = 0, on_wait: OnWait | None = None, wait_interval_s: float = 10.0
    ) -> Iterator[Finished]:
        todo, attempt = list(tasks), 1
        while todo and not self.stopping:
            jobs = self._executor().map_array(Requeueable(), [t.fn for t in todo], [t.args for t in todo])
            print(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0]}); logs in {self.folder}", flush=True)
            retry = []
            for task, job in zip(todo, jobs):
                try:
                    value = job.result()
                except KeyboardInterrupt:
                    self.stop()
                    for other in jobs:
                        other.cancel(check=False)
                    return
                except Exception as exc:  # the job failed (after its requeues)
                    if attempt <= retries:
                        retry.append(task)
                    else:
                        yield Finished(task, attempt, error=str(exc))
                else:
                    yield Finished(task, attempt, value=value)
            todo, attempt = retry, attempt + 1


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    threads: int = 1,
    gpus_per_task: float = 0.0,
    ray_address: str | None = None,
    ray_log_to_driver: bool = False,
    slurm_folder: Path | None = None,
    slurm_cluster: str | None = None,
    slurm_time_min: int = 240,
    slurm_partition: str | None = None,
) -> Executor:
    resources = {"workers": workers, "threads": threads, "gpus_per_task": gpus_per_task}
    if name == "inline":
        return InlineExecutor(**resources)
    if name == "local":
        return LocalExecutor(**resources)
    if name == "ray":
        return RayExecutor(address=ray_address, log_to_driver=ray_log_to_driver, **resources)
    if name == "slurm":
        if slurm_folder is None:
            raise ValueError("the slurm executor needs a folder for its job files")
        return SlurmExecutor(slurm_folder, slurm_cluster, slurm_time_min, slurm_partition, **resources)
    raise ValueError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
