"""Grid throughput: the same 4 PPO CartPole runs with N workers versus one at a time (local executor).

    python benchmarks/grid_throughput.py [--steps 50000] [--workers 2]

Prints wall time and aggregate env steps per second (all runs' steps / grid wall time, process start-up
included) for both, and their ratio. Runs go to a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = """
name = "throughput"
algorithms = ["ppo"]
env_ids = ["CartPole-v1"]
seeds = [1, 2, 3, 4]
total_timesteps = {steps}
eval_every = 0
eval_episodes = 10
[algo.ppo]
num_envs = 8
num_steps = 32
num_minibatches = 1
update_epochs = 20
gamma = 0.98
gae_lambda = 0.8
learning_rate = 1e-3
normalize_obs = false
normalize_reward = false
"""


def run_grid(suite: Path, runs: Path, workers: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "experiments",
        "run",
        str(suite),
        "--runs-dir",
        str(runs),
        "--workers",
        str(workers),
        "--progress-interval",
        "3600",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((runs / "throughput" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "throughput.toml"
        suite.write_text(SUITE.format(steps=args.steps))
        serial = run_grid(suite, Path(tmp) / "serial", 1)
        parallel = run_grid(suite, Path(tmp) / "parallel", args.workers)
    for name, summary in (("1 worker", serial), (f"{args.workers} workers", parallel)):
        print(
            f"{name:<10} {summary['wall_time_s']:7.1f} s  {summary['aggregate_steps_per_second']:8,.0f} steps/s  "
            f"({summary['counts']})"
        )
    print(f"throughput ratio: {parallel['aggregate_steps_per_second'] / serial['aggregate_steps_per_second']:.2f}x")


if __name__ == "__main__":
    main()
