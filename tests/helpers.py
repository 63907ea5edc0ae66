"""What several test modules share: a tiny PPO suite, run metrics without wall-clock fields, holding a run at a known
point (tests/hold)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMOKE_RUNS_ENV = "RLGRID_TEST_SMOKE_RUNS"
"""where tests/conftest.py (which sets it) keeps the session's finished smoke runs that other smoke runs take as inputs"""

TINY_SUITE = """
algorithms = ["ppo"]
env_ids = {envs}
seeds = {seeds}
total_timesteps = {steps}
eval_every = 1024
eval_episodes = 2
[algo.ppo]
num_envs = 2
num_steps = 128
update_epochs = 2
num_minibatches = 4
"""
WALL_CLOCK = {"time", "charts/SPS"}
COMPILED_DRIFT = {"rel": 1e-2, "abs": 1e-5}
"""how far a compiled run's first logged losses may be from an eager run's: inductor fuses and reorders float
operations, and the two runs drift apart over the updates before that first log (up to ~100) by an amount that
depends on the CPU's kernels. Measured on an AMD EPYC: 1.6e-3 relative for SAC's entropy estimate after 100 updates,
at most 1e-5 for every logged loss of the other online algorithms (the offline and preference ones within 1e-3); a
wrong step (a missing term, other noise) moves them by far more."""
PPO_CARTPOLE = {
    "env_id": "CartPole-v1",
    "total_timesteps": 100_000,
    "num_envs": 8,
    "num_steps": 32,
    "num_minibatches": 1,
    "update_epochs": 20,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "learning_rate": 1e-3,
    "ent_coef": 0.0,
    "normalize_obs": False,
    "normalize_reward": False,
}
"""RL Zoo's tuned CartPole-v1 PPO setting, the learning tests of ppo and ppo_kl (objective kl) alike"""


def tiny_suite(envs: str = '["CartPole-v1"]', seeds: str = "[1]", steps: int = 1024) -> str:
    return TINY_SUITE.format(envs=envs, seeds=seeds, steps=steps)


def deterministic_metrics(run_dir: str | Path) -> list[dict]:
    """A run's metrics.jsonl rows without wall-clock quantities: what must match between two runs of a seed."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def write_synthetic_runs(
    root: str | Path,
    cells: dict[tuple[str, str, str], float],
    seeds: list[int],
    points: int = 20,
    total_steps: int = 100_000,
    noise: float = 1.0,
    train_episodes: int = 120,
    suite: str = "synthetic",
    rng_seed: int = 0,
    complete: bool = True,
) -> list[Path]:
    """Run directories in rlgrid's format whose scores are known: for cell (algo, variant, env_id) -> level, each
    seed's curve rises linearly to `level + noise * N(0, 1)` (one draw per seed, held for the last half of the run).
    Evaluations at `points` evenly spaced steps; `train_episodes` training episodes at the same per-seed level."""
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    steps = np.linspace(total_steps / points, total_steps, points).astype(int)
    dirs = []
    for (algo, variant, env_id), level in cells.items():
        for seed in seeds:
            final = level + noise * rng.standard_normal()
            curve = final * np.minimum(1.0, 2.0 * steps / total_steps)
            run_dir = Path(root) / suite / algo / env_id.replace("/", "-") / f"{variant}-seed{seed}"
            run_dir.mkdir(parents=True)
            spec = {"algo": algo, "env_id": env_id, "seed": seed, "overrides": {}, "suite": suite, "variant": variant}
            (run_dir / "spec.json").write_text(json.dumps(spec))
            train_steps = np.linspace(total_steps / 2, total_steps, train_episodes).astype(int)
            rows = [{"step": int(s), "time": 0.0, "charts/episodic_return": float(final)} for s in train_steps]
            rows += [{"step": int(s), "time": 0.0, "eval/episodic_return": float(v)} for s, v in zip(steps, curve)]
            rows.sort(key=lambda row: row["step"])
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
            if complete:
                (run_dir / "DONE").touch()
            dirs.append(run_dir)
    return dirs


def run_env(**extra: str) -> dict[str, str]:
    """The environment of an `rlgrid` subprocess run from the repository."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def held_env(hold_dir: Path, after_saves: int = 1, ignores_stop: bool = False, only: str = "", **extra: str) -> dict[str, str]:
    """The environment of a subprocess whose runs (those whose checkpoint directory contains `only`) are held once,
    after `after_saves` checkpoints (tests/hold/sitecustomize.py)."""
    hold_dir.mkdir(parents=True, exist_ok=True)
    return {
        **run_env(**extra),
        "PYTHONPATH": f"{REPO / 'tests' / 'hold'}{os.pathsep}{REPO}",
        "RLGRID_HOLD_DIR": str(hold_dir),
        "RLGRID_HOLD_AFTER_SAVES": str(after_saves),
        "RLGRID_HOLD_IGNORES_STOP": "1" if ignores_stop else "0",
        "RLGRID_HOLD_ONLY": only,
    }


def wait_for_hold(hold_dir: Path, process: subprocess.Popen, count: int = 1, timeout: float = 600.0) -> list[dict]:
    """The records of `count` held processes (pid, checkpoint directory, newest checkpoint `step`), once they are held.
    Fails if `process` ends first: its runs finished or failed without being held."""
    deadline = time.monotonic() + timeout
    while len(records := sorted(hold_dir.glob("held-*.json"))) < count:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before {count} runs were held: {output}")
        assert time.monotonic() < deadline, f"no run was held within {timeout:.0f} s"
        time.sleep(0.02)
    return [json.loads(path.read_text()) for path in records]


def smoke_settings(algo: str) -> dict[str, Any]:
    """An algorithm's SMOKE settings with `@<algo>` (a run a preference algorithm takes as input) made the path of the
    session's smoke run of that algorithm."""
    from experiments.registry import load_algorithm

    return {
        key: str(smoke_run(value[1:])) if isinstance(value, str) and value.startswith("@") else value
        for key, value in load_algorithm(algo).SMOKE.items()
    }


def smoke_run(algo: str) -> Path:
    """The directory of the session's finished smoke run of `algo` (seed 1), trained the first time a test asks for it
    (its own inputs first): the runs that other smoke runs take as inputs (`@sft`, `@reward_model` in a SMOKE dict).
    A session that asks for none trains none."""
    from experiments.execute import RunOptions, execute_run
    from experiments.runs import RunSpec

    settings = smoke_settings(algo)
    spec = RunSpec.create(algo, settings["env_id"], 1, settings)
    root = Path(os.environ[SMOKE_RUNS_ENV])
    if not (spec.run_dir(root) / "DONE").is_file():
        outcome = execute_run(spec, RunOptions(runs_dir=root, progress=False))
        assert outcome["status"] == "done", f"the smoke {algo} run did not finish: {outcome}"
    return spec.run_dir(root)


def smoke_sft_run() -> Path:
    """The session's finished smoke sft run: what `@sft` in a SMOKE dict stands for."""
    return smoke_run("sft")
