"""Steps per second of rlgrid's on-policy algorithms on Hopper-v5, next to the raw env rate measured in the same
run (and, if given the path, CleanRL's ppo_continuous_action.py with PPO's hyperparameters).

    python benchmarks/onpolicy_hopper_sps.py [--algos ppo trpo] [--steps 40960] [--threads 1] [--cleanrl PATH]

Every algorithm runs its default (MuJoCo) configuration without evaluation; PPO also runs with an evaluation
every 20,480 steps to show what evaluation costs. Rates are cumulative over the same number of environment steps
from the start of training (as CleanRL's printed SPS), on this machine, one after another so they do not compete
for cores. CleanRL's script is not part of rlgrid: pass the path of a copy adapted to gymnasium >= 1.0.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from algorithms.common import RecordingLogger
from experiments.registry import load_algorithm

ON_POLICY = ["ppo", "ppo_kl", "a2c", "acktr", "trpo", "npg", "reinforce"]


def raw_env_rate(env_id: str, steps: int) -> float:
    """Bare env.step with random actions, resets included: the physical limit for one env copy."""
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def rlgrid_rate(algo: str, env_id: str, steps: int, eval_every: int) -> float:
    module = load_algorithm(algo)
    logger = RecordingLogger()
    module.train(module.Config(env_id=env_id, total_timesteps=steps, eval_every=eval_every), logger)
    return logger.series("charts/SPS")[-1][1]


def cleanrl_rate(script: str, env_id: str, steps: int) -> float:
    out = subprocess.run(
        [sys.executable, script, "--env-id", env_id, "--total-timesteps", str(steps), "--seed", "1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.abspath(script)),
    )
    rates = re.findall(r"SPS:\s*(\d+)", out.stdout + out.stderr)
    if not rates:
        raise RuntimeError(f"no SPS lines in CleanRL's output:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(rates[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=ON_POLICY, choices=ON_POLICY)
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=40_960, help="env steps per measurement (multiple of 2048)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for rlgrid's runs")
    parser.add_argument("--cleanrl", default=None, help="path to CleanRL's ppo_continuous_action.py (optional)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.env_id}, {args.steps:,} steps per measurement, torch {torch.__version__}, {os.cpu_count()} cores")
    rows = [("raw env.step (random actions)", raw_env_rate(args.env_id, args.steps))]
    for algo in args.algos:
        rows.append((f"rlgrid {algo}, default config, no evaluation", rlgrid_rate(algo, args.env_id, args.steps, 0)))
        if algo == "ppo":
            rows.append(("rlgrid ppo, default config, eval every 20,480", rlgrid_rate(algo, args.env_id, args.steps, 20_480)))
    if args.cleanrl:
        rows.append(("CleanRL ppo_continuous_action.py", cleanrl_rate(args.cleanrl, args.env_id, args.steps)))
    raw = rows[0][1]
    for name, rate in rows:
        print(f"{name:<48} {rate:>9,.0f} steps/s   {rate / raw:5.1%} of raw")
    if args.cleanrl and "ppo" in args.algos:
        ppo_rate = dict(rows)["rlgrid ppo, default config, no evaluation"]
        print(f"rlgrid ppo over CleanRL: {ppo_rate / rows[-1][1]:.2f}x (no evaluation)")


if __name__ == "__main__":
    main()
