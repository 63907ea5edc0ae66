"""Kill and resume: a run really killed (SIGKILL, in a subprocess) after a checkpoint and then resumed
logs exactly the numbers of an uninterrupted run with the same seed (CPU)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import deterministic_metrics

from experiments.execute import RunOptions, execute_run
from experiments.runs import RunSpec

REPO = Path(__file__).resolve().parents[1]


def _command(runs_dir: Path, algo: str, env_id: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments",
        "train",
        algo,
        "--env-id",
        env_id,
        "--seed",
        "5",
        "--runs-dir",
        str(runs_dir),
        "--quiet",
        "--threads",
        "1",
        *extra,
    ]


def _metrics(runs_dir: Path, algo: str) -> list[dict]:
    (run_dir,) = runs_dir.glob(f"single/{algo}/*/seed5-*")
    assert (run_dir / "DONE").exists()
    return deterministic_metrics(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, env_id, extra",
    [
        (
            "ppo",
            "CartPole-v1",
            [
                "--total-timesteps",
                "16384",
                "--num-envs",
                "4",
                "--num-steps",
                "256",
                "--num-minibatches",
                "8",
                "--update-epochs",
                "4",
                "--eval-every",
                "4096",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "1",
            ],
        ),
        pytest.param(
            "ppo",
            "Hopper-v5",
            [
                "--total-timesteps",
                "8192",
                "--num-steps",
                "512",
                "--num-minibatches",
                "8",
                "--update-epochs",
                "2",
                "--eval-every",
                "2048",
                "--eval-episodes",
                "2",
                "--checkpoint-every-steps",
                "1",
            ],
            marks=pytest.mark.mujoco,
        ),
        (
            "npg",
            "CartPole-v1",
            [
                "--total-timesteps",
                "16384",
                "--num-envs",
                "4",
                "--num-steps",
                "256",
                "--vf-epochs",
                "2",
                "--eval-every",
                "4096",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "1",
            ],
        ),
        (
            "trpo",
            "CartPole-v1",
            [
                "--total-timesteps",
                "16384",
                "--num-envs",
                "4",
                "--num-steps",
                "256",
                "--vf-epochs",
                "2",
                "--eval-every",
                "4096",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "1",
            ],
        ),
        # PPO-KL: beta (adapted after every update) is restored. With this small d_targ beta is 2-8 after the
        # first update (never its start value 1), so a resume that lost it would log other numbers.
        (
            "ppo_kl",
            "CartPole-v1",
            [
                "--total-timesteps",
                "16384",
                "--num-envs",
                "4",
                "--num-steps",
                "256",
                "--num-minibatches",
                "8",
                "--update-epochs",
                "4",
                "--kl-target",
                "0.0005",
                "--eval-every",
                "4096",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "1",
            ],
        ),
        (
            "a2c",
            "CartPole-v1",
            [
                "--total-timesteps",
                "24000",
                "--num-envs",
                "4",
                "--num-steps",
                "5",
                "--eval-every",
                "6000",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "2000",
            ],
        ),
        # ACKTR: the K-FAC running factors, their eigenbases and the momentum are restored with the optimizer.
        (
            "acktr",
            "CartPole-v1",
            [
                "--total-timesteps",
                "24000",
                "--num-envs",
                "4",
                "--num-steps",
                "10",
                "--eval-every",
                "6000",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "2000",
            ],
        ),
        # Off-policy: the replay memory (wrapped around: capacity 3000 < 12000 steps) is restored from its file.
        (
            "dqn",
            "CartPole-v1",
            [
                "--total-timesteps",
                "12000",
                "--learning-starts",
                "1000",
                "--buffer-size",
                "3000",
                "--train-frequency",
                "4",
                "--target-network-frequency",
                "200",
                "--eval-every",
                "3000",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "2000",
            ],
        ),
        # Atari: the frame replay memory (wrapped around), the emulator with its RNG, frame stack, life counter and
        # the evaluation's epsilon draws.
        pytest.param(
            "dqn",
            "PongNoFrameskip-v4",
            [
                "--total-timesteps",
                "3000",
                "--learning-starts",
                "500",
                "--buffer-size",
                "1500",
                "--batch-size",
                "32",
                "--train-frequency",
                "4",
                "--target-network-frequency",
                "250",
                "--eval-every",
                "1500",
                "--eval-episodes",
                "1",
                "--eval-epsilon",
                "0.05",
                "--checkpoint-every-steps",
                "900",
            ],
            marks=pytest.mark.atari,
        ),
        # MinAtar with sticky actions (the game object's RNG) under PPO's shared CNN torso.
        pytest.param(
            "ppo",
            "MinAtar/Breakout-v1",
            [
                "--total-timesteps",
                "8192",
                "--num-envs",
                "4",
                "--num-steps",
                "128",
                "--num-minibatches",
                "4",
                "--update-epochs",
                "2",
                "--eval-every",
                "2048",
                "--eval-episodes",
                "3",
                "--checkpoint-every-steps",
                "1",
            ],
            marks=pytest.mark.minatar,
        ),
        (
            "td3",
            "Pendulum-v1",
            [
                "--total-timesteps",
                "2400",
                "--learning-starts",
                "400",
                "--buffer-size",
                "1500",
                "--batch-size",
                "64",
                "--eval-every",
                "800",
                "--eval-episodes",
                "2",
                "--checkpoint-every-steps",
                "700",
            ],
        ),
        (
            "sac",
            "Pendulum-v1",
            [
                "--total-timesteps",
                "2400",
                "--learning-starts",
                "400",
                "--buffer-size",
                "1500",
                "--batch-size",
                "64",
                "--eval-every",
                "800",
                "--eval-episodes",
                "2",
                "--checkpoint-every-steps",
                "700",
            ],
        ),
    ],
)
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, algo, env_id, extra):
    # Atari on its Python path: the C++ vector env (the default) cannot save its games, so its resumes start new ones.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RLGRID_ATARI_BACKEND": "python"}
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_command(reference_dir, algo, env_id, extra), check=True, env=env, cwd=tmp_path, timeout=600)

    process = subprocess.Popen(
        _command(killed_dir, algo, env_id, extra), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(killed_dir.glob(f"single/{algo}/*/*/checkpoints/ckpt-*[0-9].pt")):
        assert process.poll() is None, f"run ended before its first checkpoint: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # let it run on past the checkpoint, so there is work to lose and redo
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    (run_dir,) = killed_dir.glob(f"single/{algo}/*/seed5-*")
    assert not (run_dir / "DONE").exists(), "the run finished before it was killed; make it longer"
    partial_lines = len((run_dir / "metrics.jsonl").read_text().splitlines())

    resumed = subprocess.run(
        _command(killed_dir, algo, env_id, extra), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    reference, result = _metrics(reference_dir, algo), _metrics(killed_dir, algo)
    assert 0 < partial_lines < len(reference)
    assert len(result) == len(reference)
    assert result == reference


def test_a_resumed_runs_result_counts_the_wall_time_of_every_process(tmp_path):
    """result.json keeps this process's `wall_time_s` and adds `total_wall_time_s` over all of the run's processes
    (carried in the checkpoints) and the step it resumed from."""
    spec = RunSpec.create(
        "ppo",
        "CartPole-v1",
        3,
        {"total_timesteps": 2048, "num_envs": 4, "num_steps": 64, "eval_every": 1024, "eval_episodes": 2},
    )
    options = RunOptions(runs_dir=tmp_path, progress=False)
    started = time.perf_counter()
    assert execute_run(spec, dataclasses.replace(options, pause_at_step=1024))["status"] == "paused"
    first_process = time.perf_counter() - started
    time.sleep(1.0)  # time between processes is not training time
    result = execute_run(spec, options)["result"]
    total = time.perf_counter() - started
    assert result["resumed_from_step"] == 1024 and result["global_step"] == 2048
    assert result["total_wall_time_s"] > result["wall_time_s"] + 0.5 * first_process
    assert result["total_wall_time_s"] < total - 1.0
