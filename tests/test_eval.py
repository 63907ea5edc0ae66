"""`rlgrid eval RUN_DIR`: a run's newest checkpoint evaluated by the algorithm's own train() (restore, no step trained,
the final evaluation), for every registered algorithm: the run's own episodes give the run's own final evaluation
return, and the run directory is left byte for byte, mtime for mtime, as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import smoke_settings

from algorithms.common.checkpoint import newest_checkpoint_step
from experiments.cli import main
from experiments.evaluate_run import NotEvaluable, evaluate_run, t_interval, t_quantile
from experiments.execute import RunOptions, execute_run
from experiments.registry import list_algorithms, load_algorithm
from experiments.runs import RunSpec

SMOKE_ENVS = {"discrete": "CartPole-v1", "continuous": "Pendulum-v1"}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file's bytes and every file's and folder's mtime under `root` (a file made and removed again changes its
    folder's mtime)."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        stat = path.stat()
        state[str(path.relative_to(root))] = (stat.st_mtime_ns, path.read_bytes() if path.is_file() else None)
    return state


def tiny_run(runs_dir: Path, algo: str, env_id: str | None = None, **overrides) -> Path:
    """A finished smoke-sized run whose newest checkpoint is at its final step: checkpointed at every iteration, or
    off-policy (an iteration per vector step, a replay memory per save) only there: the first `due()` is at step
    num_envs."""
    algorithm = load_algorithm(algo)
    smoke_env = algorithm.SMOKE.get("env_id")  # the tabular methods' finite-state env
    env_id = (
        env_id or smoke_env or next(SMOKE_ENVS[kind] for kind in ("discrete", "continuous") if kind in algorithm.ACTION_SPACES)
    )
    spec = RunSpec.create(algo, env_id, 3, {**smoke_settings(algo), **overrides})
    config = spec.config()
    every = config.total_timesteps - config.num_envs if hasattr(config, "buffer_size") else 1
    options = RunOptions(runs_dir=runs_dir, checkpoint_every_steps=every, checkpoint_every_seconds=1e9, progress=False)
    outcome = execute_run(spec, options)
    assert outcome["status"] == "done"
    return Path(outcome["run_dir"])


@pytest.mark.parametrize("eval_every", ["smoke", "final only"])
@pytest.mark.parametrize("algo", list_algorithms())
def test_eval_gives_the_runs_final_evaluation_and_touches_nothing(tmp_path, algo, eval_every):
    # "smoke": the last evaluation ran at the final step, inside the loop (replayed from the run's history);
    # "final only": eval_every 0, so RunState.finish ran it after the last checkpoint (the next evaluation index).
    run_dir = tiny_run(tmp_path, algo, **({} if eval_every == "smoke" else {"eval_every": 0}))
    result = json.loads((run_dir / "result.json").read_text())
    newest = newest_checkpoint_step(run_dir / "checkpoints")
    # REINFORCE stops mid-batch when its budget runs out, and learns nothing from a partial batch: its last checkpoint
    # holds its final policy (it normalises no observations).
    assert newest == result["global_step"] or (algo == "reinforce" and newest < result["global_step"])
    before = snapshot(run_dir)

    evaluation = evaluate_run(run_dir)

    assert evaluation.step == newest, "the checkpoint's step: no step trained"
    assert evaluation.episodes == load_algorithm(algo).SMOKE["eval_episodes"] == len(evaluation.returns)
    assert evaluation.mean == result["final_eval_return"]
    assert snapshot(run_dir) == before


def test_eval_of_a_paused_run_replays_its_evaluation_at_the_checkpoint(tmp_path):
    spec = RunSpec.create("ppo", "CartPole-v1", 2, load_algorithm("ppo").SMOKE)  # evaluates at 512 and 1024
    options = RunOptions(runs_dir=tmp_path, pause_at_step=512, checkpoint_every_seconds=1e9, progress=False)
    outcome = execute_run(spec, options)
    assert outcome["status"] == "paused"
    run_dir = Path(outcome["run_dir"])
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (at_512,) = [row["eval/episodic_return"] for row in logged if "eval/episodic_return" in row]
    before = snapshot(run_dir)

    evaluation = evaluate_run(run_dir)

    assert (evaluation.status, evaluation.step, evaluation.mean) == ("partial", 512, at_512)
    assert snapshot(run_dir) == before
    more = evaluate_run(run_dir, episodes=5, seed=evaluation.seed)  # the same first episodes, and three more
    assert more.returns[:2] == evaluation.returns and len(more.returns) == 5
    other = evaluate_run(run_dir, episodes=2, seed=7)
    assert other.seed == 7 and not other.own_seed
    assert snapshot(run_dir) == before


def test_a_damaged_newest_checkpoint_is_skipped_and_left_where_it_is(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, "ppo")  # checkpoints at 768 and 1024 kept
    newest = run_dir / "checkpoints" / f"ckpt-{1024:012d}.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: the zip record's CRC-32 no longer matches
    newest.write_bytes(bytes(data))
    before = snapshot(run_dir)

    assert main(["eval", str(run_dir)]) == 0

    out, err = capsys.readouterr()
    assert f"warning: checkpoint {newest} is damaged" in err
    assert "checkpoint at step 768 (before its final step 1,024)" in out
    assert snapshot(run_dir) == before, "a read-only evaluation sets nothing aside"
    assert not (run_dir / "checkpoints" / "damaged").exists()


def test_the_command_prints_the_return_with_an_interval_and_every_episode(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, "dqn")
    result = json.loads((run_dir / "result.json").read_text())
    before = snapshot(run_dir)

    assert main(["eval", str(run_dir), "--episodes", "4"]) == 0

    out = capsys.readouterr().out
    evaluation = evaluate_run(run_dir, episodes=4)
    low, high = evaluation.interval
    assert f"mean return {evaluation.mean:.2f}, 95% CI [{low:.2f}, {high:.2f}] (Student t, 3 degrees of freedom)" in out
    assert "episode returns: " + ", ".join(f"{r:.2f}" for r in evaluation.returns) in out
    assert f"the run's final evaluation: {result['final_eval_return']:.2f} over 2 episodes" in out
    assert snapshot(run_dir) == before


def _not_a_run_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    finished = tiny_run(tmp_path / "runs", "ppo")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_checkpoint = tmp_path / "no-checkpoint"  # a run stopped before its first checkpoint
    no_checkpoint.mkdir()
    for name in ("spec.json", "config.json", "metrics.jsonl"):
        shutil.copy(finished / name, no_checkpoint / name)
    all_damaged = tmp_path / "all-damaged"
    shutil.copytree(finished, all_damaged)
    for path in (all_damaged / "checkpoints").glob("ckpt-*.pt"):
        path.write_bytes(path.read_bytes()[:100])  # truncated copies
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(finished / "config.json", only_config / "config.json")
    return {
        "missing": (tmp_path / "nowhere", "is not a run directory: no such directory"),
        "a file": (finished / "spec.json", "is not a run directory: it is a file"),
        "empty": (empty, "is not a run directory: it has no spec.json or config.json"),
        "no spec": (only_config, "is not a run directory: it has no spec.json"),
        "no checkpoint": (no_checkpoint, "has no checkpoint to evaluate: it stopped before its first checkpoint"),
        "all damaged": (all_damaged, "has no checkpoint to evaluate: all 2 in checkpoints/ are damaged"),
    }


def test_what_is_not_a_run_with_a_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    for name, (path, message) in _not_a_run_cases(tmp_path).items():
        before = snapshot(path) if path.is_dir() else None
        assert main(["eval", str(path)]) == 2, name
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if not line.startswith("warning: checkpoint")]  # damaged files
        assert out == "" and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], (name, err)
        with pytest.raises(NotEvaluable):
            evaluate_run(path)
        capsys.readouterr()
        if before is not None:
            assert snapshot(path) == before, name


def test_bad_options_are_refused(tmp_path, capsys):
    run_dir = tiny_run(tmp_path, "ppo")
    for argv, message in [
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--threads", "0"], "--threads must be >= 1"),
    ]:
        assert main(["eval", str(run_dir), *argv]) == 2
        assert message in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", str(run_dir), "--device", "cuda"]) == 2
        assert "device cuda is not available here (no CUDA device): use --device cpu" in capsys.readouterr().err
    assert main(["eval", "--help"]) == 0
    assert "run's own evaluation protocol" in capsys.readouterr().out


@pytest.mark.minatar
def test_eval_of_an_image_run(tmp_path):
    pytest.importorskip("minatar")
    run_dir = tiny_run(tmp_path, "dqn", "MinAtar/Breakout-v1")  # CNN torso, frame replay memory (not read)
    result = json.loads((run_dir / "result.json").read_text())
    before = snapshot(run_dir)
    assert evaluate_run(run_dir).mean == result["final_eval_return"]
    assert snapshot(run_dir) == before


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 9, 29, 99, 999):
        for p in (0.5, 0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-7), (p, df)
    values = [3.0, 5.0, 4.0, 10.0]
    expected = stats.t.interval(0.95, 3, loc=5.5, scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(expected, abs=1e-7)
    assert t_interval([1.0]) is None
