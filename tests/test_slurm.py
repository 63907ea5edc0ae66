"""The Slurm executor through submitit's local executor: a grid runs, and a job interrupted (the signal
Slurm sends before a timeout or preemption) while held mid-run (tests/hold) is requeued and resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import deterministic_metrics, held_env, tiny_suite

from experiments.execute import RunOptions
from experiments.grid import GridOptions, GridRunner
from experiments.suite import load_suite

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
pytest.importorskip("submitit")


def test_slurm_grid_with_local_submitit(tmp_path):
    (tmp_path / "tiny.toml").write_text(tiny_suite(seeds="[1, 2]"))
    suite = load_suite(str(tmp_path / "tiny.toml"))
    grid = GridOptions(executor="slurm", slurm_cluster="local", slurm_time_min=10, workers=2)
    summary = GridRunner(suite.name, list(suite.specs), RunOptions(runs_dir=tmp_path / "runs", progress=False), grid).run()
    assert summary["counts"] == {"done": 2}
    assert all((spec.run_dir(tmp_path / "runs") / "DONE").exists() for spec in suite.specs)


def test_interrupted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """The job is held past its first checkpoint, with work done since (tests/hold), until the test sends it SIGUSR2,
    the signal Slurm sends before a time limit or preemption: submitit requeues it, and the next attempt resumes from
    the newest checkpoint written before the signal and ends with the uninterrupted run's numbers."""
    import submitit

    from experiments.execute import run_to_state
    from experiments.executors import Requeueable

    (tmp_path / "tiny.toml").write_text(tiny_suite(seeds="[3]", steps=4096))
    (spec,) = load_suite(str(tmp_path / "tiny.toml")).specs
    reference = RunOptions(runs_dir=tmp_path / "reference", progress=False, checkpoint_every_steps=1)
    GridRunner("tiny", [spec], reference, GridOptions(executor="inline")).run()

    # The job is a fresh interpreter: the hold reaches it through PYTHONPATH and RLGRID_HOLD_*. Its time limit (30 min)
    # plays no part: the only signal is the test's.
    hold = tmp_path / "hold"
    for key, value in held_env(hold).items():
        if key == "PYTHONPATH" or key.startswith("RLGRID_HOLD"):
            monkeypatch.setenv(key, value)
    options = RunOptions(runs_dir=tmp_path / "runs", progress=False, checkpoint_every_steps=1)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=30)
    job = executor.submit(Requeueable(), run_to_state, (spec, options))
    log = lambda: "".join(p.read_text() for p in (tmp_path / "submitit").rglob("*.out"))[-3000:]  # noqa: E731
    deadline = time.monotonic() + 600
    while not (held := list(hold.glob("held-*.json"))):
        assert not job.done() and time.monotonic() < deadline, f"the job was never held: {log()}"
        time.sleep(0.05)
    record = json.loads(held[0].read_text())
    assert record["step"] > 0, record
    os.kill(record["pid"], signal.SIGUSR2)

    assert job.result() == "done", log()
    assert "Requeued job" in log(), log()
    run_dir = spec.run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == record["step"]
    assert deterministic_metrics(run_dir) == deterministic_metrics(spec.run_dir(tmp_path / "reference"))
