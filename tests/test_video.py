"""Evaluation videos (`--capture-video`): headless rendering of classic control and MuJoCo, files that decode, the W&B
mirror, runs whose numbers do not change, and a clear error where nothing can render."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from helpers import deterministic_metrics, run_env

from envs import evaluate, make_vec_env
from experiments.execute import RunOptions, execute_run
from experiments.runs import RunSpec

TINY_PPO = {"total_timesteps": 2048, "num_envs": 2, "num_steps": 256, "eval_every": 1024, "eval_episodes": 2}


def _decoded(path: Path) -> tuple[int, tuple[int, ...]]:
    reader = imageio.get_reader(path)
    try:
        return reader.count_frames(), reader.get_data(0).shape
    finally:
        reader.close()


def test_a_run_records_its_first_and_final_evaluation_and_its_numbers_do_not_change(tmp_path):
    spec = RunSpec.create("ppo", "CartPole-v1", 1, TINY_PPO)
    plain = execute_run(spec, RunOptions(runs_dir=tmp_path / "plain", progress=False))
    filmed = execute_run(spec, RunOptions(runs_dir=tmp_path / "filmed", progress=False, capture_video=True))
    run_dir = Path(filmed["run_dir"])
    assert deterministic_metrics(run_dir) == deterministic_metrics(plain["run_dir"])
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == ["eval-step000000001024.mp4", "eval-step000000002048.mp4"]
    for video in (run_dir / "videos").iterdir():
        frames, shape = _decoded(video)
        assert frames >= 5 and shape == (400, 600, 3)  # CartPole's 600 x 400 canvas; episodes last 8+ steps
    assert not list(Path(plain["run_dir"]).glob("videos"))


def _zero_policy(envs):
    return lambda obs: np.zeros((len(obs), *envs.action_shape), np.float32)


@pytest.mark.mujoco
def test_a_mujoco_evaluation_renders_offscreen_at_real_time_speed(tmp_path):
    """EGL (software) without a display; Hopper steps at 125/s, so every 4th frame is kept (31.25 fps playback)."""
    envs, _ = make_vec_env("Hopper-v5", 1, seed=0)
    video = tmp_path / "hopper.mp4"
    plain = evaluate(envs, _zero_policy(envs), 2, seed=5)
    filmed = evaluate(envs, _zero_policy(envs), 2, seed=5, video=video)
    assert filmed.tolist() == plain.tolist()
    frames, shape = _decoded(video)
    reader = imageio.get_reader(video)
    fps = reader.get_meta_data()["fps"]
    reader.close()
    assert shape == (256, 256, 3) and frames >= 3 and fps == pytest.approx(31.25)
    assert np.asarray(imageio.get_reader(video).get_data(frames - 1)).std() > 0, "a rendered scene, not a blank frame"


@pytest.mark.wandb
def test_the_video_is_mirrored_to_wandb_offline(tmp_path):
    spec = RunSpec.create("ppo", "CartPole-v1", 2, TINY_PPO)
    options = RunOptions(runs_dir=tmp_path, progress=False, capture_video=True, track=True, wandb_mode="offline")
    run_dir = Path(execute_run(spec, options)["run_dir"])
    mirrored = list(run_dir.glob("wandb/offline-run-*/files/media/videos/eval/*.mp4"))
    assert len(mirrored) == 2
    assert sorted(_decoded(p) for p in mirrored) == sorted(_decoded(p) for p in (run_dir / "videos").iterdir())


def _train(tmp_path: Path, env_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "experiments",
        "train",
        "ppo",
        "--env-id",
        env_id,
        "--total-timesteps",
        "512",
        "--num-steps",
        "128",
    ]
    command += ["--runs-dir", str(tmp_path / "runs"), "--capture-video", "--quiet"]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.mujoco
def test_no_mujoco_rendering_backend_is_a_clear_error_before_anything_runs(tmp_path):
    """GLFW, MuJoCo's on-screen backend, on a machine without a display (none in the test's environment)."""
    env = run_env(MUJOCO_GL="glfw")
    env.pop("DISPLAY", None)
    refused = _train(tmp_path, "Hopper-v5", env)
    assert refused.returncode == 2, refused.stderr
    assert "cannot render Hopper-v5 without a display" in refused.stderr
    assert "MUJOCO_GL=egl (apt install libegl1 libgl1-mesa-dri)" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_no_pygame_is_a_clear_error_for_classic_control(tmp_path):
    blocker = tmp_path / "no_pygame"
    blocker.mkdir()
    (blocker / "pygame.py").write_text("raise ImportError('pygame is not installed here (test)')\n")
    env = run_env()
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    refused = _train(tmp_path, "CartPole-v1", env)
    assert refused.returncode == 2, refused.stderr
    assert "cannot render CartPole-v1 without a display" in refused.stderr and "pip install 'rlgrid[video]'" in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_keeps_its_videos(tmp_path):
    """The first evaluation's video, made before a pause, stays; the final one is made by the process that finishes."""
    spec = RunSpec.create("ppo", "CartPole-v1", 3, TINY_PPO)
    options = RunOptions(runs_dir=tmp_path, progress=False, capture_video=True)
    assert execute_run(spec, dataclasses.replace(options, pause_at_step=1024))["status"] == "paused"
    run_dir = spec.run_dir(tmp_path)
    assert [p.name for p in (run_dir / "videos").iterdir()] == ["eval-step000000001024.mp4"]
    execute_run(spec, options)
    assert len(list((run_dir / "videos").glob("*.mp4"))) == 2


def test_rlgrid_eval_records_a_video_outside_the_run_and_leaves_the_run_untouched(tmp_path, capsys):
    from experiments.cli import main

    spec = RunSpec.create("ppo", "CartPole-v1", 4, TINY_PPO)
    run_dir = Path(execute_run(spec, RunOptions(runs_dir=tmp_path / "runs", progress=False))["run_dir"])
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    inside = run_dir / "eval.mp4"
    assert main(["eval", str(run_dir), "--video", str(inside)]) == 2
    assert "inside the run directory" in capsys.readouterr().err and not inside.exists()
    video = tmp_path / "watch.mp4"
    assert main(["eval", str(run_dir), "--episodes", "2", "--video", str(video)]) == 0
    assert f"video of the first episode: {video}" in capsys.readouterr().out
    frames, shape = _decoded(video)
    assert frames >= 5 and shape == (400, 600, 3)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "env_id",
    [
        pytest.param("PongNoFrameskip-v4", marks=pytest.mark.atari),
        pytest.param("MinAtar/Breakout-v1", marks=pytest.mark.minatar),
    ],
)
def test_atari_and_minatar_evaluations_film_their_screens(tmp_path, env_id):
    """The ALE's colour screen (also from the C++ vector path, whose evaluation copies then play on the Python path,
    step for step the same), and MinAtar's 10 x 10 grid enlarged to 160 x 160."""
    envs, _ = make_vec_env(env_id, 1, seed=0)
    policy = lambda obs: np.zeros(len(obs), np.int64)  # noqa: E731
    video = tmp_path / "game.mp4"
    plain = evaluate(envs, policy, 1, seed=3, max_steps=120)
    filmed = evaluate(envs, policy, 1, seed=3, max_steps=120, video=video)
    assert filmed.tolist() == plain.tolist()
    frames, shape = _decoded(video)
    pong = env_id.startswith("Pong")
    assert shape == ((210, 160, 3) if pong else (160, 160, 3)) and frames >= (30 if pong else 2)
