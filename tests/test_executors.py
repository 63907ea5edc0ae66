"""The executor layer on its own: each executor returns a task's value, retries a failing task and then reports its
error, and (local processes) tells a worker that died from one that raised. Grids and tuning through it are tested in
test_grid.py, test_ray.py, test_slurm.py and test_tune.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from experiments.executors import Task, make_executor


def square(x: int) -> int:
    return x * x


def explode(attempts_file: str, message: str) -> None:
    """Fails every time, leaving a line per attempt: the retries are counted where they ran, not inferred."""
    with open(attempts_file, "a") as f:
        f.write("attempt\n")
    raise RuntimeError(message)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def stop_on_sigterm(ready_file: str) -> str:
    """Says it is ready once SIGTERM would be caught, then works until it arrives, as a run checkpoints and stops
    (or gives up after 5 minutes, so a signal that never comes fails the test instead of hanging it)."""
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    Path(ready_file).touch()
    deadline = time.monotonic() + 300
    while not stop and time.monotonic() < deadline:
        time.sleep(0.05)
    return "stopped" if stop else "never stopped"


@pytest.fixture(
    params=[
        "inline",
        "local",
        pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow]),
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    ]
)
def executor_name(request, monkeypatch):
    """Each executor's name, with what its workers need. Ray workers and submitit jobs are fresh interpreters that
    unpickle this module's functions by importing it by name; Ray is started here, on loopback (checked), and the
    executor uses it instead of starting its own."""
    name = request.param
    if name in ("ray", "slurm"):
        pytest.importorskip("ray" if name == "ray" else "submitit")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    if name != "ray":
        yield name
        return
    import ray

    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", "conftest.py sets Ray's loopback switch"
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        addresses = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        if addresses != {"127.0.0.1"}:
            pytest.skip(f"Ray did not stay on loopback: {addresses}")
        yield name
    finally:
        ray.shutdown()


def test_values_come_back_and_a_failure_is_retried_then_reported(executor_name, tmp_path, capsys):
    executor = make_executor(
        executor_name, workers=2, slurm_folder=tmp_path / "submitit", slurm_cluster="local", slurm_time_min=5
    )
    attempts = tmp_path / "attempts"
    boom = Task(explode, (str(attempts), "simulator exploded"), "boom")
    tasks = [Task(square, (3,), "three"), boom, Task(square, (4,), "four")]
    finished = {f.task.name: f for f in executor.submit(tasks, retries=1)}
    assert set(finished) == {"three", "boom", "four"}
    assert (finished["three"].value, finished["four"].value) == (9, 16)
    assert finished["three"].error is None and finished["three"].attempts == 1
    failed = finished["boom"]
    assert failed.value is None and failed.attempts == 2 and attempts.read_text() == "attempt\n" * 2
    assert "RuntimeError: simulator exploded" in failed.error, failed.error  # Ray's and submitit's own wording around it
    if executor_name in ("inline", "local"):  # Ray and Slurm retry on their side; these two say so
        assert "Traceback" in failed.error
        assert "boom failed (RuntimeError: simulator exploded); retry 1" in capsys.readouterr().out


def test_a_local_worker_that_dies_is_retried_and_reported_as_killed():
    (finished,) = make_executor("local", workers=1).submit([Task(die, (), "doomed")], retries=1)
    assert finished.attempts == 2 and finished.error == "worker killed by signal 9"


def test_a_stop_signal_to_the_local_executor_reaches_its_workers_and_nothing_new_starts(tmp_path):
    # SIGTERM to this process only (not its process group, unlike a terminal's Ctrl-C): the executor forwards it.
    executor, ready = make_executor("local", workers=1), tmp_path / "ready"
    before = signal.getsignal(signal.SIGTERM)

    def on_wait(running: list, waiting: int) -> None:
        if ready.exists() and not executor.stopping:
            os.kill(os.getpid(), signal.SIGTERM)

    tasks = [Task(stop_on_sigterm, (str(ready),), "first"), Task(square, (2,), "second")]
    finished = list(executor.submit(tasks, on_wait=on_wait, wait_interval_s=0.0))
    assert [(f.task.name, f.value, f.error) for f in finished] == [("first", "stopped", None)]
    assert executor.stopping and signal.getsignal(signal.SIGTERM) is before


def test_an_unknown_executor_and_gpus_without_cuda_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="unknown executor 'cloud'"):
        make_executor("cloud")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            list(make_executor("local", gpus_per_task=0.5).submit([Task(square, (1,), "one")]))
