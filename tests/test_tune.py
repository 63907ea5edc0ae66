"""Tuning with real storage and real processes: journal file and PostgreSQL on loopback, workers killed and
restarted, pruning mid-run, the exported suite run by `rlgrid run`."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from barrier_env import BARRIER, pids_at  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from experiments.cli import main  # noqa: E402
from experiments.execute import RunOptions, execute_pack, execute_run  # noqa: E402
from experiments.runs import RunSpec  # noqa: E402
from experiments.study import load_study  # noqa: E402
from experiments.tune import counted, fail_dead_trials, load_or_create_study  # noqa: E402
from tests.helpers import deterministic_metrics  # noqa: E402

pytestmark = pytest.mark.tuning

STUDY = """
name = "{name}"
algorithm = "ppo"
env_ids = ["{env_id}"]
seeds = {seeds}
total_timesteps = {steps}
eval_every = {every}
eval_episodes = 3
n_trials = {n_trials}
export_seeds = [21, 22]
[sampler]
name = "{sampler}"
seed = 0
[pruner]
name = "{pruner}"
{pruner_options}
[fixed]
num_envs = 8
num_steps = 32
num_minibatches = 1
update_epochs = 20
gamma = 0.98
gae_lambda = 0.8
normalize_obs = false
normalize_reward = false
[params.learning_rate]
type = "{lr_type}"
{lr_space}
"""


def write_study(
    tmp_path: Path,
    name: str = "tiny",
    seeds: str = "[1]",
    steps: int = 2048,
    every: int = 1024,
    n_trials: int = 4,
    sampler: str = "random",
    pruner: str = "none",
    pruner_options: str = "",
    lr_type: str = "float",
    lr_space: str = "low = 3e-4\nhigh = 3e-3\nlog = true",
    env_id: str = "CartPole-v1",
) -> Path:
    path = tmp_path / f"{name}.toml"
    text = STUDY.format(
        name=name,
        seeds=seeds,
        steps=steps,
        every=every,
        n_trials=n_trials,
        sampler=sampler,
        pruner=pruner,
        pruner_options=pruner_options,
        lr_type=lr_type,
        lr_space=lr_space,
        env_id=env_id,
    )
    path.write_text(text)
    return path


TWO_WORKERS_ENV = "barrier_env:BarrierCartPole-v1"
"""CartPole whose first reset in a process waits until a second process has reached its own (tests/barrier_env.py)"""


@pytest.fixture()
def barrier(tmp_path, monkeypatch) -> Path:
    """Studies on TWO_WORKERS_ENV started from here hold each worker's first trial until another worker has started one:
    two workers run trials by construction. Workers import the env from tests/ (PYTHONPATH); returns the barrier's
    directory, where each worker that reached it left its pid."""
    directory = tmp_path / "barrier"
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(BARRIER, str(directory))
    return directory


def rlgrid(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", *args], capture_output=True, text=True, timeout=timeout)


def test_a_run_paused_at_each_evaluation_matches_an_uninterrupted_one(tmp_path):
    overrides = {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "eval_every": 512, "eval_episodes": 2}
    spec = RunSpec.create("ppo", "CartPole-v1", 3, overrides)
    whole = execute_run(spec, RunOptions(runs_dir=tmp_path / "whole", progress=False))
    options = RunOptions(runs_dir=tmp_path / "paused", progress=False)
    for boundary in (512, 1024, 1536):
        outcome = execute_run(spec, dataclasses.replace(options, pause_at_step=boundary))
        assert outcome["status"] == "paused" and outcome["step"] == boundary
    assert execute_run(spec, options)["status"] == "done"
    assert deterministic_metrics(spec.run_dir(tmp_path / "paused")) == deterministic_metrics(whole["run_dir"])


def test_two_worker_processes_share_a_journal_study_and_the_best_config_exports_as_a_suite(tmp_path, barrier, monkeypatch):
    study_file = write_study(tmp_path, n_trials=6, env_id=TWO_WORKERS_ENV)
    runs = tmp_path / "runs"
    result = rlgrid("tune", str(study_file), "--workers", "2", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    journal = study_file.with_suffix(".journal")
    assert journal.exists(), "default storage: a journal file next to the study"
    study_obj = load_or_create_study(load_study(str(study_file)), str(journal))
    trials = study_obj.get_trials()
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted(study_obj, include_running=False)) == 6 and len(finished) == 6, [t.state for t in trials]
    assert len({t.number for t in trials}) == len(trials) and not [t for t in trials if t.state == TrialState.RUNNING]
    pids = {t.user_attrs["pid"] for t in finished}
    assert len(pids) == 2 and pids == pids_at(barrier), "both workers ran trials (and only they passed the barrier)"
    for trial in finished:  # no lost results: every trial's score matches its run directory
        (run_dir,) = Path(trial.user_attrs["run_dir"]).rglob("DONE")
        evals = [json.loads(line) for line in (run_dir.parent / "metrics.jsonl").read_text().splitlines()]
        last = [row["eval/episodic_return"] for row in evals if "eval/episodic_return" in row][-1]
        assert trial.user_attrs["scores"] == {f"{TWO_WORKERS_ENV}/seed1": last} and trial.value == last
    surplus = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"].startswith("surplus") for t in surplus)

    out = tmp_path / "report"
    result = rlgrid("tune-report", str(study_file), "--out", str(out), "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    for name in ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate", "slice"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000, name
    assert "Best trials" in (out / "report.html").read_text()
    exported = out / "tuned-tiny.toml"
    assert f"learning_rate = {study_obj.best_trial.params['learning_rate']!r}" in exported.read_text()
    monkeypatch.delenv(BARRIER)  # the exported suite's runs need no second worker
    result = rlgrid("run", str(exported), "--runs-dir", str(tmp_path / "check"))
    assert result.returncode == 0, result.stderr
    done = sorted(json.loads((p.parent / "spec.json").read_text())["seed"] for p in (tmp_path / "check").rglob("DONE"))
    assert done == [21, 22], "the exported suite measures the seeds the search did not use"


def test_pruning_stops_a_bad_configuration_before_its_budget_ends(tmp_path):
    # Trial 0 has a good learning rate, trial 1 one 100x too large; the median pruner stops trial 1 after
    # its first evaluation (CartPole: 346 vs 99 at 4,096 steps, seed 1).
    study_file = write_study(
        tmp_path,
        steps=16384,
        every=4096,
        n_trials=2,
        pruner="median",
        pruner_options="n_startup_trials = 1\nn_warmup_evals = 0",
        lr_type="categorical",
        lr_space="choices = [1e-3, 1e-1]",
    )
    storage = str(tmp_path / "study.journal")
    study_obj = load_or_create_study(load_study(str(study_file)), storage)
    study_obj.enqueue_trial({"learning_rate": 1e-3})
    study_obj.enqueue_trial({"learning_rate": 1e-1})
    assert main(["tune", str(study_file), "--storage", storage, "--runs-dir", str(tmp_path / "runs")]) == 0
    good, bad = load_or_create_study(load_study(str(study_file)), storage).get_trials()
    assert good.state == TrialState.COMPLETE and list(good.intermediate_values) == [1, 2, 3]
    assert bad.state == TrialState.PRUNED and list(bad.intermediate_values) == [1]
    assert bad.intermediate_values[1] < good.intermediate_values[1]
    (run_dir,) = [p.parent for p in Path(bad.user_attrs["run_dir"]).rglob("spec.json")]
    assert not (run_dir / "DONE").exists()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) < 16384 / 3, "the pruned trial stopped long before its budget"


def test_a_trials_seeds_train_as_one_pack_paused_at_each_evaluation(tmp_path):
    """--seeds-per-process 2: the trial's two seeds advance as one pack from evaluation to evaluation, and each seed's
    metrics equal those of the same pack trained without pauses."""
    study_file = write_study(
        tmp_path, seeds="[1, 2]", n_trials=1, pruner="median", lr_type="categorical", lr_space="choices = [1e-3]"
    )
    runs = tmp_path / "runs"
    assert main(["tune", str(study_file), "--runs-dir", str(runs), "--seeds-per-process", "2"]) == 0
    (trial,) = load_or_create_study(load_study(str(study_file)), str(study_file.with_suffix(".journal"))).get_trials()
    assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [1]
    run_dirs = sorted(p.parent for p in Path(trial.user_attrs["run_dir"]).rglob("spec.json"))
    specs = []
    for run_dir in run_dirs:
        saved = json.loads((run_dir / "spec.json").read_text())
        specs.append(RunSpec(saved["algo"], saved["env_id"], saved["seed"], tuple(sorted(saved["overrides"].items()))))
    whole = execute_pack(specs, RunOptions(runs_dir=tmp_path / "whole", progress=False))
    for run_dir, outcome in zip(run_dirs, whole):
        assert (run_dir / "DONE").is_file() and deterministic_metrics(run_dir) == deterministic_metrics(outcome["run_dir"])


def test_wilcoxon_pruner_reports_each_finished_instance(tmp_path):
    study_file = write_study(tmp_path, seeds="[1, 2, 3]", n_trials=1, pruner="wilcoxon")
    assert main(["tune", str(study_file), "--runs-dir", str(tmp_path / "runs")]) == 0
    (trial,) = load_or_create_study(load_study(str(study_file)), str(study_file.with_suffix(".journal"))).get_trials()
    assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [0, 1, 2]
    scores = trial.user_attrs["scores"]
    assert sorted(scores) == ["CartPole-v1/seed1", "CartPole-v1/seed2", "CartPole-v1/seed3"]
    assert trial.value == pytest.approx(sum(scores.values()) / 3)


def test_a_study_name_cannot_be_reused_for_another_search(tmp_path):
    storage = str(tmp_path / "shared.journal")
    load_or_create_study(load_study(str(write_study(tmp_path))), storage)
    (tmp_path / "other").mkdir()
    other = write_study(tmp_path / "other", steps=4096)  # same name, another search
    assert main(["tune", str(other), "--storage", storage]) == 2


def test_running_trials_of_dead_or_silent_workers_are_failed(tmp_path):
    study_obj = load_or_create_study(load_study(str(write_study(tmp_path))), str(tmp_path / "s.journal"))
    finished = subprocess.Popen(["true"])
    finished.wait()
    cases = {
        "dead": {"host": socket.gethostname(), "pid": finished.pid, "heartbeat": time.time()},
        "silent": {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600},
        "alive": {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()},
        "remote": {"host": "elsewhere", "pid": 1, "heartbeat": time.time()},
    }
    trials = {}
    for name, attrs in cases.items():
        trials[name] = study_obj.ask()
        for key, value in attrs.items():
            trials[name].set_user_attr(key, value)
    failed = fail_dead_trials(study_obj, stale_after_s=600)
    assert sorted(failed) == sorted([trials["dead"].number, trials["silent"].number])
    states = {name: study_obj._storage.get_trial(t._trial_id).state for name, t in trials.items()}
    assert states == {
        "dead": TrialState.FAIL,
        "silent": TrialState.FAIL,
        "alive": TrialState.RUNNING,
        "remote": TrialState.RUNNING,
    }


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_workers_share_a_study_and_a_killed_worker_is_recovered(tmp_path, barrier):
    from tests.postgres import postgres_server

    study_file = write_study(tmp_path, steps=8192, every=2048, n_trials=5, env_id=TWO_WORKERS_ENV)
    runs = tmp_path / "runs"
    with postgres_server() as url:
        # 1. Start one worker and SIGKILL it in the middle of a trial (a run of that trial has checkpointed).
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments",
                "tune",
                str(study_file),
                "--storage",
                url,
                "--runs-dir",
                str(runs),
                "--n-trials",
                "5",
            ],
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != BARRIER},  # a lone worker: no barrier to wait at
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "worker.err").open("w"),
        )
        study = load_study(str(study_file))
        deadline = time.time() + 240
        while time.time() < deadline and worker.poll() is None:
            running = load_or_create_study(study, url).get_trials(states=(TrialState.RUNNING,))
            if running and list(Path(running[0].user_attrs.get("run_dir", "/nonexistent")).rglob("ckpt-*.pt")):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no trial got under way: {(tmp_path / 'worker.err').read_text()[-3000:]}")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        (victim,) = load_or_create_study(study, url).get_trials(states=(TrialState.RUNNING,))

        # 2. Two workers join the same study (one `rlgrid tune --workers 2`); the dead trial is failed first.
        result = rlgrid("tune", str(study_file), "--storage", url, "--runs-dir", str(runs), "--workers", "2")
        assert result.returncode == 0, result.stderr
        study_obj = load_or_create_study(study, url)
        trials = study_obj.get_trials()
        assert study_obj._storage.get_trial(victim._trial_id).state == TrialState.FAIL
        assert trials[victim.number].user_attrs["fail_reason"] == "worker died"
        assert len(counted(study_obj, include_running=False)) == 5 and not study_obj.get_trials(states=(TrialState.RUNNING,))
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        pids = {t.user_attrs["pid"] for t in completed}
        assert len(completed) == 5 and len(pids) == 2 and pids == pids_at(barrier), "both workers ran trials"


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_join_one_study(tmp_path, barrier):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    )
    try:
        ray.init(address=cluster.address)
        if {node["NodeManagerAddress"] for node in ray.nodes()} != {"127.0.0.1"}:
            pytest.skip("Ray did not stay on loopback")
        study_file = write_study(tmp_path, n_trials=4, env_id=TWO_WORKERS_ENV)
        args = ["tune", str(study_file), "--executor", "ray", "--workers", "2", "--runs-dir", str(tmp_path / "runs")]
        assert main(args) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    study_obj = load_or_create_study(load_study(str(study_file)), str(study_file.with_suffix(".journal")))
    complete = study_obj.get_trials(states=(TrialState.COMPLETE,))
    pids = {t.user_attrs["pid"] for t in complete}
    assert len(complete) == 4 and len(pids) == 2 and pids == pids_at(barrier), "two Ray workers ran trials"


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_job_array_workers_join_one_study(tmp_path, barrier):
    pytest.importorskip("submitit")
    study_file = write_study(tmp_path, n_trials=3, env_id=TWO_WORKERS_ENV)
    args = [
        "tune",
        str(study_file),
        "--executor",
        "slurm",
        "--slurm-cluster",
        "local",
        "--workers",
        "2",
        "--slurm-time-min",
        "10",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    assert main(args) == 0
    study_obj = load_or_create_study(load_study(str(study_file)), str(study_file.with_suffix(".journal")))
    assert len(counted(study_obj, include_running=False)) == 3
    pids = {t.user_attrs["pid"] for t in study_obj.get_trials(states=(TrialState.COMPLETE,))}
    assert len(pids) == 2 and pids == pids_at(barrier), "both jobs of the array ran trials"
