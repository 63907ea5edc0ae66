"""Suites and the grid runner, with real worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import deterministic_metrics, held_env, run_env, tiny_suite, wait_for_hold

from algorithms.common.checkpoint import newest_checkpoint_step
from experiments.cli import main
from experiments.suite import SuiteError, load_suite

REPO = Path(__file__).resolve().parents[1]


def write_suite(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def tree_snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_suite_lists_every_problem_at_once_and_starts_nothing(tmp_path, capsys):
    path = write_suite(
        tmp_path,
        """
seed = [1]
algorithms = ["ppo", "ppoo"]
env_ids = ["CartPole-v1", "CartPol-v1"]
seeds = [1, 2]
[algo.ppo]
learning_rat = 0.1
num_steps = "abc"
[algo.ppo.mujoko]
num_envs = 2
[[variants]]
algo = "ppo"
name = "a"
[[variants]]
algo = "ppo"
name = "a"
""",
        "bad",
    )
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    text = str(info.value)
    expected = [
        "seed: unknown key (did you mean 'seeds'?)",
        "algorithms[1]: unknown algorithm 'ppoo' (did you mean 'ppo'?)",
        "env_ids[1]: unknown environment id 'CartPol-v1'",
        "algo.ppo.learning_rat",
        "'learning_rate'",
        "algo.ppo.num_steps: num_steps expects an integer",
        "algo.ppo.mujoko: unknown env family (did you mean 'mujoco'?)",
        "variants[1]: duplicate variant name 'a'",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert str(path) in text and len(info.value.problems) == len(expected) - 1  # learning_rat + its suggestion: one problem
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "problem(s)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_expansion_layers_overrides_and_names_runs(tmp_path):
    path = write_suite(
        tmp_path,
        """
algorithms = ["ppo"]
env_ids = ["CartPole-v1", "Hopper-v5"]
seeds = 2
total_timesteps = 4096
[algo.ppo]
num_steps = 64
[algo.ppo.classic_control]
num_envs = 4
[[variants]]
algo = "ppo"
name = "base"
[[variants]]
algo = "ppo"
name = "two-envs"
num_envs = 2
clip_coef = 0.1
""",
        "layers",
    )
    suite = load_suite(str(path))
    assert suite.name == "layers" and len(suite.specs) == 2 * 2 * 2
    assert len({s.hash for s in suite.specs}) == 8
    by_key = {(s.env_id, s.variant, s.seed): s for s in suite.specs}
    assert by_key[("CartPole-v1", "base", 1)].config().num_envs == 4  # family layer
    assert by_key[("Hopper-v5", "base", 2)].config().num_envs == 1  # mujoco: the family layer does not apply
    cfg = by_key[("CartPole-v1", "two-envs", 2)].config()
    assert (cfg.num_envs, cfg.clip_coef, cfg.num_steps, cfg.total_timesteps, cfg.seed) == (2, 0.1, 64, 4096, 2)
    run_dir = by_key[("CartPole-v1", "two-envs", 2)].run_dir(tmp_path)
    assert run_dir.parent == tmp_path / "layers" / "ppo" / "CartPole-v1" and run_dir.name.startswith("seed2-")


def test_shipped_suites_are_valid():
    quick = load_suite("quickstart")
    assert len(quick.specs) >= 6 and {s.seed for s in quick.specs} == {1, 2, 3}
    mujoco = load_suite("mujoco_1m")
    assert {s.env_id for s in mujoco.specs} == {"Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"}
    assert {s.seed for s in mujoco.specs} == set(range(1, 11))
    assert all(s.config().total_timesteps == 1_000_000 for s in mujoco.specs)
    assert {s.algo for s in mujoco.specs} == {"td3", "ddpg", "sac", "ppo"}
    cheetah = load_suite("halfcheetah_200k")
    assert {(s.algo, s.env_id, s.seed) for s in cheetah.specs} == {
        (algo, "HalfCheetah-v5", seed) for algo in ("sac", "td3") for seed in (1, 2, 3)
    }
    assert all(s.config().total_timesteps == 200_000 and s.config().eval_every == 10_000 for s in cheetah.specs)
    pg = load_suite("pg_hopper_1m")
    assert {s.algo for s in pg.specs} == {"trpo", "a2c", "ppo_kl", "acktr", "ppo"} and len(pg.specs) == 15


def test_dry_run_shows_states(tmp_path, capsys):
    path = write_suite(tmp_path, tiny_suite('["CartPole-v1"]', "[1, 2]", 1024))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("CartPole-v1") == 2 and "2 runs: 2 new" in out
    assert not (tmp_path / "runs").exists()


def test_failing_run_is_retried_recorded_and_does_not_stop_the_grid(tmp_path, capsys):
    path = write_suite(tmp_path, tiny_suite('["CartPole-v1", "crashing_env:Crash-v0"]', "[1]", 1024))
    runs = tmp_path / "runs"
    code = main(["run", str(path), "--runs-dir", str(runs), "--workers", "2", "--retries", "1", "--progress-interval", "0.5"])
    assert code == 1
    summary = json.loads((runs / "tiny" / "summary.json").read_text())
    status = {row["env_id"]: row for row in summary["runs_detail"]}
    assert status["CartPole-v1"]["status"] == "done"
    crashed = status["crashing_env:Crash-v0"]
    assert crashed["status"] == "failed" and crashed["attempts"] == 2
    assert "simulator exploded" in crashed["error"] and "Traceback" in crashed["traceback"]
    assert "simulator exploded" in (Path(crashed["run_dir"]) / "error.txt").read_text()
    assert (Path(status["CartPole-v1"]["run_dir"]) / "DONE").exists()
    out = capsys.readouterr().out
    assert "failed: ppo/default/crashing_env:Crash-v0/seed1: RuntimeError: simulator exploded" in out
    # the progress view: grid counts and rate, then one line per running run with its steps
    assert re.search(r"tiny: \d/2 done, \d running, \d waiting, \d failed, [\d,]+ steps/s", out), out
    assert re.search(r"ppo/default/CartPole-v1/seed1: [\d,]+/1,024 steps", out), out


def _grid_command(suite: Path, runs: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments",
        "run",
        str(suite),
        "--runs-dir",
        str(runs),
        "--progress-interval",
        "60",
        "--checkpoint-every-steps",
        "1",
        *extra,
    ]


@pytest.mark.slow
def test_worker_killed_with_sigkill_is_retried_and_resumes_to_identical_metrics(tmp_path):
    path = write_suite(tmp_path, tiny_suite('["CartPole-v1"]', "[4]", 12288))
    subprocess.run(
        _grid_command(path, tmp_path / "reference", "--executor", "inline"),
        check=True,
        env=run_env(),
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    hold_dir = tmp_path / "hold"
    grid = subprocess.Popen(
        _grid_command(path, tmp_path / "runs", "--workers", "1", "--retries", "1"),
        env=held_env(hold_dir, after_saves=2),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (held,) = wait_for_hold(hold_dir, grid)  # the worker, held past its second checkpoint; its retry runs through
    os.kill(held["pid"], signal.SIGKILL)
    output, _ = grid.communicate(timeout=600)
    assert grid.returncode == 0, output
    assert "exited with -9; retry 1" in output
    (run_dir,) = (tmp_path / "runs").glob("tiny/ppo/*/seed4-*")
    (reference_dir,) = (tmp_path / "reference").glob("tiny/ppo/*/seed4-*")
    assert deterministic_metrics(run_dir) == deterministic_metrics(reference_dir)
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == held["step"] > 0
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["runs_detail"][0]["attempts"] == 2 and summary["counts"] == {"done": 1}


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_a_grid_killed_outright_leaves_no_worker_running_and_its_runs_resume(tmp_path):
    """SIGKILL to the grid process alone (the OOM killer, kill -9): its worker gets a SIGHUP (Linux), checkpoints where
    it stands and exits, instead of running on beside the grid started again; that grid resumes the run there."""
    path = write_suite(tmp_path, tiny_suite('["CartPole-v1"]', "[2]", 4096))
    runs, hold_dir = tmp_path / "runs", tmp_path / "hold"
    grid = subprocess.Popen(
        _grid_command(path, runs, "--workers", "1"), env=held_env(hold_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    (held,) = wait_for_hold(hold_dir, grid)
    grid.kill()
    grid.wait(timeout=60)
    deadline = time.monotonic() + 120
    while _running(held["pid"]):
        assert time.monotonic() < deadline, "the worker outlived its grid"
        time.sleep(0.05)
    (run_dir,) = runs.glob("tiny/ppo/*/seed2-*")
    assert newest_checkpoint_step(run_dir / "checkpoints") == held["at_step"], "the worker checkpointed where it stood"

    resumed = subprocess.run(_grid_command(path, runs), env=run_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] == held["at_step"]


@pytest.mark.slow
def test_sigint_stops_the_grid_and_the_same_command_finishes_only_what_is_left(tmp_path):
    """Ctrl-C (SIGINT to the process group) while the long run has no checkpoint at all (its interval is longer than
    the run): the signal itself makes the run save one, where it stood, and the same command resumes from it."""
    path = write_suite(
        tmp_path,
        tiny_suite('["CartPole-v1"]', "[1]", 1024)
        + """
[[variants]]
algo = "ppo"
name = "short"
[[variants]]
algo = "ppo"
name = "long"
total_timesteps = 50000
""",
    )
    (long_spec,) = [spec for spec in load_suite(str(path)).specs if spec.variant == "long"]
    runs, hold_dir = tmp_path / "runs", tmp_path / "hold"
    never = ("--checkpoint-every-steps", "1000000000", "--checkpoint-every-seconds", "1000000")
    grid = subprocess.Popen(
        _grid_command(path, runs, "--workers", "1", *never),
        env=held_env(hold_dir, after_saves=0, only=long_spec.hash),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    (held,) = wait_for_hold(hold_dir, grid)  # the long run, at the end of its first iteration
    long_dir = long_spec.run_dir(runs)
    assert not list((long_dir / "checkpoints").glob("ckpt-*.pt"))
    os.killpg(grid.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
    output, _ = grid.communicate(timeout=120)
    assert grid.returncode == 130, output
    assert "1 runs left; run the same command again to continue." in output
    (short_dir,) = [p.parent for p in runs.glob("tiny/ppo/*/*/DONE")]
    assert short_dir != long_dir and not (long_dir / "DONE").exists()
    assert [p.name for p in (long_dir / "checkpoints").glob("ckpt-*.pt")] == [f"ckpt-{held['at_step']:012d}.pt"]
    before = tree_snapshot(short_dir)

    resumed = subprocess.run(
        _grid_command(path, runs, "--workers", "1"), env=run_env(), capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 already done" in resumed.stdout
    assert tree_snapshot(short_dir) == before
    assert json.loads((long_dir / "result.json").read_text())["resumed_from_step"] == held["at_step"]


def test_diverging_run_is_recorded_with_its_step_not_retried_and_skipped_later(tmp_path, capsys):
    path = write_suite(tmp_path, tiny_suite('["crashing_env:NaNReward-v0"]', "[1]", 1024))
    runs = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs), "--workers", "1", "--retries", "2"]) == 1
    (row,) = json.loads((runs / "tiny" / "summary.json").read_text())["runs_detail"]
    assert row["status"] == "diverged" and row["attempts"] == 1
    assert "non-finite training episode return nan at step 120" in row["error"]
    assert (Path(row["run_dir"]) / "DIVERGED").exists() and not (Path(row["run_dir"]) / "DONE").exists()
    capsys.readouterr()
    assert main(["run", str(path), "--runs-dir", str(runs), "--dry-run"]) == 0
    assert "1 diverged" in capsys.readouterr().out


def test_grid_resumes_an_off_policy_run_whose_checkpoints_carry_a_replay_file(tmp_path, capsys):
    # Off-policy checkpoints write the replay memory beside them (ckpt-<step>.replay.pt); the grid reads the
    # newest checkpoint's step from the file names and must not mistake the replay file for a checkpoint.
    path = write_suite(
        tmp_path,
        """
algorithms = ["td3"]
env_ids = ["Pendulum-v1"]
seeds = [1]
total_timesteps = 600
eval_every = 300
eval_episodes = 2
[algo.td3]
learning_starts = 200
buffer_size = 1000
batch_size = 32
""",
    )
    args = ["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--executor", "inline", "--checkpoint-every-steps", "200"]
    assert main(args) == 0
    (run_dir,) = (tmp_path / "runs" / "tiny" / "td3" / "Pendulum-v1").iterdir()
    assert list((run_dir / "checkpoints").glob("ckpt-*.replay.pt")), "the replay memory is saved beside checkpoints"
    (run_dir / "DONE").unlink()  # as if the process died after its last checkpoint, before marking the run done
    capsys.readouterr()
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["counts"] == {"done": 1} and (run_dir / "DONE").exists()


def test_progress_rates_come_from_the_metrics_own_times_so_a_run_that_logs_seldom_shows_one(tmp_path, capsys):
    from experiments.execute import RunOptions
    from experiments.executors import Task
    from experiments.grid import GridOptions, GridRunner
    from experiments.runs import RunDirectory, RunSpec

    spec = RunSpec.create("ppo", "CartPole-v1", 1, {"total_timesteps": 10_000})
    runner = GridRunner("tiny", [spec], RunOptions(runs_dir=tmp_path), GridOptions())
    metrics = RunDirectory(spec.run_dir(tmp_path)).metrics_file
    metrics.parent.mkdir(parents=True)

    def log(step: int, at: float) -> str:
        with open(metrics, "a") as f:
            f.write(json.dumps({"step": step, "time": at}) + "\n")
        runner._print_progress([(Task(print, (spec,), "run"), 1)], 0)
        return capsys.readouterr().out

    # A line from before the grid looked (a resumed run, hours earlier), then the run's first line since: no rate yet.
    assert "0 steps/s" in log(3_000, 1_000.0) and "0 steps/s" in log(4_000, 9_000.0)
    # 1,000 steps 100 s later: 10 steps/s, and it stays so between lines (no "0 steps/s" while the run works on).
    out = log(5_000, 9_100.0)
    assert "seed1: 5,000/10,000 steps, 10 steps/s" in out and ", 10 steps/s, ETA" in out
    runner._print_progress([(Task(print, (spec,), "run"), 1)], 0)
    assert "seed1: 5,000/10,000 steps, 10 steps/s" in capsys.readouterr().out
    # A retry from an older checkpoint starts the count again.
    assert "0 steps/s" in log(3_500, 9_200.0)

    # A fresh run seen before its first line counts from that moment: its first line, 2 s on, has a rate.
    fresh = RunSpec.create("ppo", "CartPole-v1", 2, {"total_timesteps": 10_000})
    fresh_metrics = RunDirectory(fresh.run_dir(tmp_path)).metrics_file
    runner = GridRunner("tiny", [fresh], RunOptions(runs_dir=tmp_path), GridOptions())
    runner._print_progress([(Task(print, (fresh,), "run"), 1)], 0)
    assert "seed2: 0/10,000 steps\n" in capsys.readouterr().out + "\n"
    fresh_metrics.parent.mkdir(parents=True)
    first_seen, _ = runner._rate_marks[fresh]  # when the grid first saw it (a time, whatever this machine's speed)
    fresh_metrics.write_text(json.dumps({"step": 1_000, "time": first_seen + 2.0}) + "\n")
    runner._print_progress([(Task(print, (fresh,), "run"), 1)], 0)
    assert "seed2: 1,000/10,000 steps, 500 steps/s" in capsys.readouterr().out
