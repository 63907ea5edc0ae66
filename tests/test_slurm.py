"""The Slurm executor through submitit's local executor: a grid runs, and a job interrupted (the signal
Slurm sends before a timeout or preemption) after its first checkpoint is requeued and resumes exactly."""

from __future__ import annotations

import pytest
from helpers import deterministic_metrics, tiny_suite

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


def test_interrupted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    import submitit

    from experiments.execute import run_to_state
    from experiments.executors import Requeueable

    (tmp_path / "tiny.toml").write_text(tiny_suite(seeds="[3]", steps=40960))
    (spec,) = load_suite(str(tmp_path / "tiny.toml")).specs
    reference = RunOptions(runs_dir=tmp_path / "reference", progress=False, checkpoint_every_steps=1)
    GridRunner("tiny", [spec], reference, GridOptions(executor="inline")).run()

    options = RunOptions(runs_dir=tmp_path / "runs", progress=False, checkpoint_every_steps=1)
    # A 60 s limit with the pre-timeout signal 50 s early: the job is signalled ~10 s in, mid-run (the run
    # needs ~15 s of training), is requeued, and resumes from its checkpoint; submitit allows 3 timeouts by default.
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=1, signal_delay_s=50)
    job = executor.submit(Requeueable(), run_to_state, (spec, options))
    assert job.result() == "done"
    run_dir = spec.run_dir(tmp_path / "runs")
    log = "".join(p.read_text() for p in (tmp_path / "submitit").rglob("*.out"))
    assert "Requeued job" in log, log[-3000:]
    assert deterministic_metrics(run_dir) == deterministic_metrics(spec.run_dir(tmp_path / "reference"))
