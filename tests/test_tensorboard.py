"""`--tensorboard`: real event files, read back with TensorBoard's own EventAccumulator, hold exactly what metrics.jsonl
holds (tags, steps, values as float32), through pauses, resumes and a resume that logs steps again."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from experiments.cli import main  # noqa: E402
from experiments.execute import RunOptions, execute_run  # noqa: E402
from experiments.registry import load_algorithm  # noqa: E402
from experiments.runs import RunSpec  # noqa: E402
from experiments.tensorboard_logger import TensorBoardLogger, event_files  # noqa: E402
from tests.helpers import deterministic_metrics, held_env, run_env, wait_for_hold  # noqa: E402

PPO = {**load_algorithm("ppo").SMOKE, "total_timesteps": 2048}  # 8 iterations of 256 steps; evaluations at 512, 1024...
OPTIONS = RunOptions(progress=False, tensorboard=True, checkpoint_every_seconds=1e9)


def _value(value: float) -> float | str:
    return "nan" if math.isnan(value) else float(np.float32(value))  # TensorBoard keeps float32; NaN != NaN


def tensorboard_scalars(directory: Path, purge: bool = True) -> dict[str, list[tuple[int, float | str]]]:
    """Every scalar series as TensorBoard shows it (its files in name order; `purge`: points a later file's START
    event hides are dropped, as TensorBoard does)."""
    accumulator = event_accumulator.EventAccumulator(
        str(directory), size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=purge
    )
    accumulator.Reload()
    return {tag: [(e.step, _value(e.value)) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def jsonl_scalars(run_dir: Path) -> dict[str, list[tuple[int, float | str]]]:
    series: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("step", "time"):
                series.setdefault(key, []).append((row["step"], _value(value)))
    return series


def assert_same_as_metrics(run_dir: Path) -> None:
    shown, logged = tensorboard_scalars(run_dir / "tensorboard"), jsonl_scalars(run_dir)
    assert sorted(shown) == sorted(logged)
    assert {"charts/episodic_return", "losses/policy_loss", "eval/episodic_return"} <= set(shown)
    for tag in logged:
        assert shown[tag] == logged[tag], tag


def test_event_files_hold_the_metrics_under_their_names(tmp_path):
    outcome = execute_run(RunSpec.create("ppo", "CartPole-v1", 1, PPO), dataclasses.replace(OPTIONS, runs_dir=tmp_path))
    run_dir = Path(outcome["run_dir"])
    assert len(event_files(run_dir / "tensorboard")) == 1
    assert_same_as_metrics(run_dir)


def test_a_paused_and_resumed_run_shows_every_step_once(tmp_path):
    spec = RunSpec.create("ppo", "CartPole-v1", 1, PPO)
    options = dataclasses.replace(OPTIONS, runs_dir=tmp_path / "paused")
    for boundary in (512, 1280):
        assert execute_run(spec, dataclasses.replace(options, pause_at_step=boundary))["status"] == "paused"
    assert execute_run(spec, options)["status"] == "done"
    run_dir = spec.run_dir(options.runs_dir)
    files = event_files(run_dir / "tensorboard")
    assert len(files) == 3 and files == sorted(files, key=lambda p: p.stat().st_mtime_ns), "read in the order written"
    assert_same_as_metrics(run_dir)
    whole = execute_run(spec, dataclasses.replace(OPTIONS, runs_dir=tmp_path / "whole"))
    assert deterministic_metrics(run_dir) == deterministic_metrics(whole["run_dir"])


def test_steps_logged_after_the_checkpoint_show_once_after_the_resume(tmp_path):
    # A process that logged up to step 768 and died before its checkpoint there: its checkpoints at 256 and 512 are
    # on disk and its event file holds steps up to 768 (this one paused at 768; the checkpoint it wrote there is
    # removed). The resume starts from 512 and logs 513..768 again; metrics.jsonl drops its lines after 512.
    spec = RunSpec.create("ppo", "CartPole-v1", 1, PPO)
    options = dataclasses.replace(OPTIONS, runs_dir=tmp_path, checkpoint_every_steps=1, keep_checkpoints=3)
    assert execute_run(spec, dataclasses.replace(options, pause_at_step=768))["status"] == "paused"
    run_dir = spec.run_dir(tmp_path)
    (run_dir / "checkpoints" / f"ckpt-{768:012d}.pt").unlink()
    first = tensorboard_scalars(run_dir / "tensorboard")
    assert max(step for step, _ in first["losses/policy_loss"]) == 768

    outcome = execute_run(spec, options)

    assert outcome["status"] == "done" and outcome["result"]["resumed_from_step"] == 512
    assert_same_as_metrics(run_dir)
    unpurged = tensorboard_scalars(run_dir / "tensorboard", purge=False)
    steps = [step for step, _ in unpurged["losses/policy_loss"]]
    assert steps.count(768) == 2, "both files hold step 768: the purge is what keeps it once"


def test_a_killed_and_resumed_run_shows_every_step_once(tmp_path):
    # A real SIGKILL past the newest checkpoint (held there: tests/hold), then the same command again.
    command = [
        *(sys.executable, "-m", "experiments", "train", "ppo", "--env-id", "CartPole-v1", "--seed", "5", "--quiet"),
        *("--runs-dir", str(tmp_path / "runs"), "--total-timesteps", "2048", "--num-envs", "2", "--num-steps", "128"),
        *("--eval-every", "512", "--eval-episodes", "2", "--checkpoint-every-steps", "1", "--tensorboard"),
    ]
    hold_dir = tmp_path / "hold"
    process = subprocess.Popen(
        command, env=held_env(hold_dir, after_saves=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    (held,) = wait_for_hold(hold_dir, process)
    process.kill()
    process.wait(timeout=60)
    resumed = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    (run_dir,) = (tmp_path / "runs").glob("single/ppo/CartPole-v1/seed5-*")
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == held["step"] > 0
    assert len(event_files(run_dir / "tensorboard")) == 2
    assert_same_as_metrics(run_dir)


def test_tensorboard_first_given_to_a_resumed_run_gets_its_earlier_metrics(tmp_path):
    spec = RunSpec.create("ppo", "CartPole-v1", 1, PPO)
    paused = dataclasses.replace(OPTIONS, runs_dir=tmp_path, tensorboard=False, pause_at_step=1024)
    assert execute_run(spec, paused)["status"] == "paused"
    assert not (spec.run_dir(tmp_path) / "tensorboard").exists()
    assert execute_run(spec, dataclasses.replace(OPTIONS, runs_dir=tmp_path))["status"] == "done"
    assert_same_as_metrics(spec.run_dir(tmp_path))


def test_a_new_event_file_sorts_after_the_newest_one_there(tmp_path):
    # Another process's file made in the coming second (a resume within the second a run stopped): TensorBoard reads
    # by name, so the new file must wait for a later second to come after it.
    ahead = tmp_path / f"events.out.tfevents.{int(time.time()) + 1:010d}.zzz-other-host.99999.0"
    ahead.write_bytes(b"")
    logger = TensorBoardLogger(tmp_path, resume_step=10)
    logger.log(11, {"charts/episodic_return": 1.0})
    logger.close()
    files = event_files(tmp_path)
    assert len(files) == 2 and files[0] == ahead
    assert tensorboard_scalars(tmp_path) == {"charts/episodic_return": [(11, 1.0)]}


def test_the_commands_take_the_option(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--env-id", "CartPole-v1", "--total-timesteps", "512", "--num-envs", "2", "--num-steps", "128"]
    assert main(["train", "ppo", *args, "--eval-every", "256", "--runs-dir", str(runs), "--quiet", "--tensorboard"]) == 0
    (run_dir,) = runs.glob("single/ppo/CartPole-v1/*")
    assert_same_as_metrics(run_dir)

    suite = tmp_path / "suite.toml"
    suite.write_text(
        """
algorithms = ["ppo", "a2c"]
env_ids = ["CartPole-v1"]
seeds = [1]
total_timesteps = 1000
eval_every = 500
eval_episodes = 2
[algo.ppo]
num_envs = 2
num_steps = 100
num_minibatches = 4
[algo.a2c]
num_envs = 2
num_steps = 5
"""
    )
    assert main(["run", str(suite), "--executor", "inline", "--runs-dir", str(runs), "--tensorboard"]) == 0
    run_dirs = sorted(p.parent for p in (runs / "suite").rglob("spec.json"))
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert_same_as_metrics(run_dir)
    assert main(["run", str(suite), "--runs-dir", str(runs), "--tensorboard", "--dry-run"]) == 0
    capsys.readouterr()


@pytest.mark.tuning
def test_tuning_trials_write_event_files(tmp_path):
    # A trial's runs go in segments between evaluations (paused and resumed): one event file per segment.
    pytest.importorskip("optuna")
    study = tmp_path / "tb.toml"
    study.write_text(
        """
name = "tb"
algorithm = "ppo"
env_ids = ["CartPole-v1"]
seeds = [1]
total_timesteps = 1024
eval_every = 512
eval_episodes = 2
n_trials = 1
export_seeds = [2]
[sampler]
name = "random"
seed = 0
[pruner]
name = "none"
[fixed]
num_envs = 2
num_steps = 128
[params.learning_rate]
type = "float"
low = 3e-4
high = 3e-3
log = true
"""
    )
    assert main(["tune", str(study), "--runs-dir", str(tmp_path / "runs"), "--tensorboard"]) == 0
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("spec.json")]
    assert len(event_files(run_dir / "tensorboard")) == 2
    assert_same_as_metrics(run_dir)
