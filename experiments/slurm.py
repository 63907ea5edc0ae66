"""Slurm through submitit: one array job per batch of runs, requeued on preemption or timeout.

Slurm (through submitit) signals a job shortly before its time limit or on preemption; `SlurmRun` is
Checkpointable, so submitit requeues it with the same arguments, and `execute_run` resumes the run from its
newest checkpoint (at most `checkpoint_every_seconds` of work is redone).
"""

from __future__ import annotations

from pathlib import Path

import submitit

from experiments.execute import RunOptions
from experiments.grid import run_to_state
from experiments.runs import RunSpec


class SlurmRun(submitit.helpers.Checkpointable):
    def __call__(self, spec: RunSpec, options: RunOptions) -> str:
        return run_to_state(spec, options)


def submit_runs(
    specs: list[RunSpec],
    options: RunOptions,
    folder: Path,
    *,
    cluster: str | None = None,
    timeout_min: int = 240,
    partition: str | None = None,
    gpus_per_run: float = 0.0,
    parallelism: int | None = None,
    **cluster_parameters: object,
) -> list[submitit.Job]:
    """Submit one array job; `cluster_parameters` are submitit's prefixed ones (e.g. `slurm_qos`)."""
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    parameters = {"timeout_min": timeout_min, "cpus_per_task": options.threads, "name": "rlgrid"}
    if gpus_per_run > 0:
        parameters["gpus_per_node"] = max(1, round(gpus_per_run))  # Slurm allocates whole GPUs per job
    if partition:
        parameters["slurm_partition"] = partition
    if parallelism:
        parameters["slurm_array_parallelism"] = parallelism
    executor.update_parameters(**parameters, **cluster_parameters)
    return executor.map_array(SlurmRun(), specs, [options] * len(specs))
