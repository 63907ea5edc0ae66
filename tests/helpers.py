"""What several test modules share: a tiny PPO suite and run metrics without wall-clock fields."""

from __future__ import annotations

import json
from pathlib import Path

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


def tiny_suite(envs: str = '["CartPole-v1"]', seeds: str = "[1]", steps: int = 1024) -> str:
    return TINY_SUITE.format(envs=envs, seeds=seeds, steps=steps)


def deterministic_metrics(run_dir: str | Path) -> list[dict]:
    """A run's metrics.jsonl rows without wall-clock quantities: what must match between two runs of a seed."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]
