"""The executor layer on its own: each executor returns a task's value, retries a failing task and then reports its
error, and (local processes) tells a worker that died from one that raised. Grids and tuning through it are tested in
test_grid.py, test_ray.py, test_slurm.py and test_tune.py."""

from __future__ import annotations

import os
import signal

import pytest

from experiments.executors import Task, make_executor


def square(x: int) -> int:
    return x * x


def explode(message: str) -> None:
    raise RuntimeError(message)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("name", ["inline", "local"])
def test_values_come_back_and_a_failure_is_retried_then_reported(name, capsys):
    executor = make_executor(name, workers=2)
    tasks = [Task(square, (3,), "three"), Task(explode, ("simulator exploded",), "boom"), Task(square, (4,), "four")]
    finished = {f.task.name: f for f in executor.submit(tasks, retries=1)}
    assert set(finished) == {"three", "boom", "four"}
    assert (finished["three"].value, finished["four"].value) == (9, 16)
    assert finished["three"].error is None and finished["three"].attempts == 1
    boom = finished["boom"]
    assert boom.attempts == 2 and "RuntimeError: simulator exploded" in boom.error and "Traceback" in boom.error
    assert "retry 1" in capsys.readouterr().out


def test_a_local_worker_that_dies_is_retried_and_reported_as_killed():
    (finished,) = make_executor("local", workers=1).submit([Task(die, (), "doomed")], retries=1)
    assert finished.attempts == 2 and finished.error == "worker killed by signal 9"


def test_an_unknown_executor_and_gpus_without_cuda_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="unknown executor 'cloud'"):
        make_executor("cloud")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            list(make_executor("local", gpus_per_task=0.5).submit([Task(square, (1,), "one")]))
