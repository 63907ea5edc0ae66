"""Kill and resume: a run really killed (SIGKILL, in a subprocess) past its newest checkpoint and then resumed from
that checkpoint logs exactly the numbers of an uninterrupted run with the same seed (CPU), for every registered
algorithm. The kill lands where the test wants it on any machine speed: the run is held there (tests/hold)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import deterministic_metrics, held_env, run_env, smoke_sft_run, wait_for_hold

from algorithms.common.checkpoint import newest_checkpoint_step
from experiments.execute import RunOptions, execute_run
from experiments.registry import list_algorithms
from experiments.runs import RunSpec

ON_POLICY = "--num-envs 4 --num-steps 256 --eval-every 4096 --eval-episodes 3 --checkpoint-every-steps 1"
CASES = {
    "ppo": ("CartPole-v1", f"--total-timesteps 16384 {ON_POLICY} --num-minibatches 8 --update-epochs 4"),
    "npg": ("CartPole-v1", f"--total-timesteps 16384 {ON_POLICY} --vf-epochs 2"),
    "trpo": ("CartPole-v1", f"--total-timesteps 16384 {ON_POLICY} --vf-epochs 2"),
    # PPO-KL: beta (adapted after every update) is restored. With this small d_targ beta is 2-8 after the first
    # update (never its start value 1), so a resume that lost it would log other numbers.
    "ppo_kl": ("CartPole-v1", f"--total-timesteps 16384 {ON_POLICY} --num-minibatches 8 --update-epochs 4 --kl-target 0.0005"),
    "a2c": (
        "CartPole-v1",
        "--total-timesteps 24000 --num-envs 4 --num-steps 5 --eval-every 6000 --eval-episodes 3 --checkpoint-every-steps 2000",
    ),
    # ACKTR: the K-FAC running factors, their eigenbases and the momentum are restored with the optimizer.
    "acktr": (
        "CartPole-v1",
        "--total-timesteps 24000 --num-envs 4 --num-steps 10 --eval-every 6000 --eval-episodes 3 "
        "--checkpoint-every-steps 2000",
    ),
    # REINFORCE: whole episodes per batch; the kill lands between batches, inside the episodes of the next one.
    "reinforce": (
        "CartPole-v1",
        "--total-timesteps 12000 --num-envs 2 --episodes-per-batch 4 --eval-every 3000 "
        "--eval-episodes 3 --checkpoint-every-steps 1",
    ),
    # Off-policy: the replay memory (wrapped around: capacity < total steps) is restored from its file.
    "dqn": (
        "CartPole-v1",
        "--total-timesteps 12000 --learning-starts 1000 --buffer-size 3000 --train-frequency 4 "
        "--target-network-frequency 200 --eval-every 3000 --eval-episodes 3 --checkpoint-every-steps 2000",
    ),
    "double_dqn": (
        "CartPole-v1",
        "--total-timesteps 6000 --learning-starts 1000 --buffer-size 2000 --train-frequency 4 "
        "--target-network-frequency 200 --eval-every 3000 --eval-episodes 3 --checkpoint-every-steps 1500",
    ),
    "td3": (
        "Pendulum-v1",
        "--total-timesteps 2400 --learning-starts 400 --buffer-size 1500 --batch-size 64 "
        "--eval-every 800 --eval-episodes 2 --checkpoint-every-steps 700",
    ),
    "ddpg": (
        "Pendulum-v1",
        "--total-timesteps 2400 --learning-starts 400 --buffer-size 1500 --batch-size 64 "
        "--eval-every 800 --eval-episodes 2 --checkpoint-every-steps 700",
    ),
    "sac": (
        "Pendulum-v1",
        "--total-timesteps 2400 --learning-starts 400 --buffer-size 1500 --batch-size 64 "
        "--eval-every 800 --eval-episodes 2 --checkpoint-every-steps 700",
    ),
    # Offline: networks, optimizers (IQL's learning-rate schedule, CQL's temperatures) and torch's generator, which
    # draws the batches; a step is a gradient update on the smoke dataset (tests/conftest.py).
    **{
        algo: (
            "rlgrid/pendulum-v1/smoke-v0",
            "--total-timesteps 500 --batch-size 32 --eval-every 250 --eval-episodes 2 --checkpoint-every-steps 150",
        )
        for algo in ("bc", "td3_bc", "iql", "cql")
    },
    # Learning from preferences: the model, Adam's moments and the generators that draw the language's batches and
    # the pairs; dpo and ipo start from the session's smoke sft run.
    "sft": (
        "SyntheticSentiment-v0",
        "--total-timesteps 60 --batch-size 8 --n-embd 16 --n-layer 1 --n-head 1 --eval-every 30 --eval-episodes 16 "
        "--checkpoint-every-steps 20",
    ),
    **{
        algo: (
            "SyntheticSentiment-v0",
            f"--sft-run {smoke_sft_run()} --total-timesteps 60 --batch-size 8 --num-pairs 64 --eval-every 30 "
            "--eval-episodes 16 --checkpoint-every-steps 20",
        )
        for algo in ("dpo", "ipo", "reward_model")
    },
    # RLHF-PPO with the true reward (a reward model would need a finished reward_model run too): the policy with its
    # value head, Adam, the prompts' generator and torch's, which draws the completions and the minibatches.
    **{
        algo: (
            "SyntheticSentiment-v0",
            f"--sft-run {smoke_sft_run()} --reward true --total-timesteps 48 --rollout-prompts 16 --num-minibatches 2 "
            "--update-epochs 2 --eval-every 16 --eval-episodes 16 --checkpoint-every-steps 8",
        )
        for algo in ("rlhf_ppo", "ppo_gt")
    },
    # Tabular: the tables (visit counts where the step size decays), the env's state (toy text's `s`, Blackjack's cards
    # behind the tuple-to-index wrapper, the book's worlds) and Python's RNG, which draws the epsilon-greedy actions.
    # Dynamic programming: V, the policy and policy iteration's progress; a step is a sweep.
    "policy_evaluation": (
        "rlgrid/GridWorld4x4-v0",
        "--total-timesteps 300 --eval-every 100 --eval-episodes 3 --checkpoint-every-steps 40",
    ),
    "policy_iteration": (
        "FrozenLake-v1",
        "--gamma 0.95 --total-timesteps 900 --eval-every 300 --eval-episodes 3 --checkpoint-every-steps 100",
    ),
    "value_iteration": (
        "FrozenLake8x8-v1",
        "--gamma 0.99 --total-timesteps 600 --eval-every 200 --eval-episodes 3 --checkpoint-every-steps 100",
    ),
    "mc_control": (
        "Blackjack-v1",
        "--total-timesteps 6000 --eval-every 2000 --eval-episodes 20 --checkpoint-every-steps 1000",
    ),
    "mc_prediction": (
        "rlgrid/RandomWalk-v0",
        "--total-timesteps 3000 --eval-every 500 --eval-episodes 3 --checkpoint-every-steps 500",
    ),
    "td0": ("rlgrid/RandomWalk-v0", "--total-timesteps 3000 --eval-every 500 --eval-episodes 3 --checkpoint-every-steps 500"),
    "sarsa": ("CliffWalking-v1", "--total-timesteps 6000 --eval-every 2000 --eval-episodes 3 --checkpoint-every-steps 1000"),
    "expected_sarsa": ("Taxi-v4", "--total-timesteps 6000 --eval-every 2000 --eval-episodes 3 --checkpoint-every-steps 1000"),
    "q_learning": (
        "FrozenLake8x8-v1",
        "--total-timesteps 8000 --final-epsilon 0.01 --step-size-decay 0.8 --step-size 1 --eval-every 2000 "
        "--eval-episodes 3 --checkpoint-every-steps 1000",
    ),
}
"""one kill-and-resume case per registered algorithm (test_every_algorithm_has_a_kill_and_resume_case)"""
ENV_CASES = [
    pytest.param(
        "ppo",
        "Hopper-v5",
        "--total-timesteps 8192 --num-steps 512 --num-minibatches 8 --update-epochs 2 --eval-every 2048 "
        "--eval-episodes 2 --checkpoint-every-steps 1",
        marks=pytest.mark.mujoco,
        id="ppo-Hopper-v5",
    ),
    # Atari: the frame replay memory (wrapped around), the emulator with its RNG, frame stack, life counter and the
    # evaluation's epsilon draws.
    pytest.param(
        "dqn",
        "PongNoFrameskip-v4",
        "--total-timesteps 3000 --learning-starts 500 --buffer-size 1500 --batch-size 32 "
        "--train-frequency 4 --target-network-frequency 250 --eval-every 1500 --eval-episodes 1 --eval-epsilon 0.05 "
        "--checkpoint-every-steps 900",
        marks=pytest.mark.atari,
        id="dqn-PongNoFrameskip-v4",
    ),
    # MinAtar with sticky actions (the game object's RNG) under PPO's shared CNN torso.
    pytest.param(
        "ppo",
        "MinAtar/Breakout-v1",
        "--total-timesteps 8192 --num-envs 4 --num-steps 128 --num-minibatches 4 "
        "--update-epochs 2 --eval-every 2048 --eval-episodes 3 --checkpoint-every-steps 1",
        marks=pytest.mark.minatar,
        id="ppo-MinAtar-Breakout-v1",
    ),
]
"""the env families whose simulator state is saved its own way (MuJoCo, the Atari emulator, MinAtar's game)"""


def _command(runs_dir: Path, algo: str, env_id: str, extra: str) -> list[str]:
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
        *extra.split(),
    ]


def _run_dir(runs_dir: Path, algo: str) -> Path:
    (run_dir,) = runs_dir.glob(f"single/{algo}/*/seed5-*")
    return run_dir


def test_every_algorithm_has_a_kill_and_resume_case():
    """(Except one that trains nothing, whose run has no step to be killed after: best_of_n.)"""
    from experiments.registry import load_algorithm

    learners = {algo for algo in list_algorithms() if getattr(load_algorithm(algo).module, "TRAINS", True)}
    assert set(list_algorithms()) - learners == {"best_of_n"}
    assert set(CASES) == learners, "add the new algorithm to CASES"


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, env_id, extra", [pytest.param(algo, *case, id=f"{algo}-{case[0]}") for algo, case in CASES.items()] + ENV_CASES
)
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, algo, env_id, extra):
    # Atari on its Python path: the C++ vector env (the default) cannot save its games, so its resumes start new ones.
    env = run_env(RLGRID_ATARI_BACKEND="python")
    reference_dir, killed_dir, hold_dir = tmp_path / "reference", tmp_path / "killed", tmp_path / "hold"
    subprocess.run(_command(reference_dir, algo, env_id, extra), check=True, env=env, cwd=tmp_path, timeout=600)

    # Held after its second checkpoint, at a later step: the resume must take the newer of the two it keeps.
    process = subprocess.Popen(
        _command(killed_dir, algo, env_id, extra),
        env=held_env(hold_dir, after_saves=2, RLGRID_ATARI_BACKEND="python"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (held,) = wait_for_hold(hold_dir, process)
    process.kill()
    process.wait(timeout=60)
    run_dir = _run_dir(killed_dir, algo)
    assert held["step"] > 0 and held["step"] == newest_checkpoint_step(run_dir / "checkpoints")
    assert len(list((run_dir / "checkpoints").glob("ckpt-*[0-9].pt"))) == 2
    assert not (run_dir / "DONE").exists()

    resumed = subprocess.run(
        _command(killed_dir, algo, env_id, extra), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_step"] == held["step"], "the run must continue from its newest checkpoint"
    reference = deterministic_metrics(_run_dir(reference_dir, algo))
    assert deterministic_metrics(run_dir) == reference


SHORT_PPO = "--total-timesteps 4096 --num-envs 2 --num-steps 128 --eval-every 2048 --eval-episodes 2"
NEVER = "--checkpoint-every-steps 1000000000 --checkpoint-every-seconds 1000000"
"""checkpoint intervals longer than the run: a checkpoint on disk was written because of a signal"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_checkpoints_where_the_run_stands_and_the_run_resumes_there(tmp_path, sig):
    reference_dir, stopped_dir, hold_dir = tmp_path / "reference", tmp_path / "stopped", tmp_path / "hold"
    subprocess.run(_command(reference_dir, "ppo", "CartPole-v1", SHORT_PPO), check=True, env=run_env(), timeout=600)
    process = subprocess.Popen(
        _command(stopped_dir, "ppo", "CartPole-v1", f"{SHORT_PPO} {NEVER}"),
        env=held_env(hold_dir, after_saves=0),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (held,) = wait_for_hold(hold_dir, process)  # at the end of the first iteration, no checkpoint yet
    run_dir = _run_dir(stopped_dir, "ppo")
    assert held["step"] == 0 and not list((run_dir / "checkpoints").glob("ckpt-*.pt"))
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert f"stopped on request after saving a checkpoint at step {held['at_step']:,}" in output
    assert [p.name for p in (run_dir / "checkpoints").glob("ckpt-*.pt")] == [f"ckpt-{held['at_step']:012d}.pt"]

    resumed = subprocess.run(
        _command(stopped_dir, "ppo", "CartPole-v1", f"{SHORT_PPO} {NEVER}"), env=run_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == held["at_step"]
    assert deterministic_metrics(run_dir) == deterministic_metrics(_run_dir(reference_dir, "ppo"))


def test_a_second_signal_stops_a_run_at_once_away_from_a_safe_point(tmp_path):
    """A run stuck where it never reaches a safe point (a step or an evaluation that does not end): the first Ctrl-C
    asks for a checkpoint it cannot give, the second stops it at once; the newest checkpoint is untouched and the
    same command resumes from it."""
    runs, hold_dir = tmp_path / "runs", tmp_path / "hold"
    command = _command(runs, "ppo", "CartPole-v1", f"{SHORT_PPO} --checkpoint-every-steps 1")
    process = subprocess.Popen(
        command,
        env=held_env(hold_dir, after_saves=1, ignores_stop=True),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (held,) = wait_for_hold(hold_dir, process)
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 120
    while not (hold_dir / f"stop-seen-{held['pid']}").exists():  # the first signal was handled, the run goes on
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "stopped at once by a second SIGINT" in output and "Traceback" not in output
    run_dir = _run_dir(runs, "ppo")
    assert newest_checkpoint_step(run_dir / "checkpoints") == held["step"] > 0
    assert not (run_dir / "error.txt").exists() and not (run_dir / "DONE").exists()

    resumed = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == held["step"]


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
