"""Steady-state steps per second of rlgrid's off-policy algorithms on Hopper-v5, after learning starts.

    python benchmarks/offpolicy_hopper_sps.py [--algos td3 ddpg] [--steps 3000] [--threads 2]

Each algorithm runs `learning_starts` (5,000 here, to keep the warm-up short) random steps and then
`--steps` learning steps with its default hyperparameters (one gradient step per env step, batch 256); the
rate is the learning phase's alone, read from the run's own `charts/SPS` logging (cumulative from the start)
at the last two points. For orientation on this project's 2-core machine, CleanRL's scripts measured at the
same point: td3_continuous_action.py about 166 steps/s, sac_continuous_action.py about 85 (2 threads).

`--ceiling` also prints a compute-bound ceiling: the matmul FLOPs of one learning step (counted by the torch
profiler over 200 steps) divided by this machine's float32 matmul rate on a 256x256x256 product (the size of
the hidden layers) at the same thread count. No implementation of the same maths on this CPU can beat it.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from algorithms.common import RecordingLogger

WARMUP = 5_000


def steady_sps(algo: str, steps: int) -> float:
    module = importlib.import_module(f"algorithms.{algo}")
    logger = RecordingLogger()
    cfg = module.Config(env_id="Hopper-v5", total_timesteps=WARMUP + steps, learning_starts=WARMUP, eval_every=0,
                        eval_episodes=1)  # fmt: skip
    start = time.perf_counter()
    module.train(cfg, logger)
    marks = [(step, m["charts/SPS"]) for step, m in logger.records if "charts/SPS" in m]
    (step_a, sps_a), (step_b, sps_b) = marks[1], marks[-1]
    # charts/SPS is cumulative over all steps since the start: turn two readings into the rate between them.
    time_a, time_b = step_a / sps_a, step_b / sps_b
    print(f"  ({algo}: {time.perf_counter() - start:.0f} s in all)")
    return (step_b - step_a) / (time_b - time_a)


def matmul_flops_per_step(algo: str, steps: int = 200) -> float:
    """Matmul FLOPs of one learning step of `algo` (batch 256, its default networks), from the profiler."""
    module = importlib.import_module(f"algorithms.{algo}")
    warmup = 1_000
    cfg = module.Config(env_id="Hopper-v5", total_timesteps=warmup + steps, learning_starts=warmup, eval_every=0,
                        eval_episodes=1)  # fmt: skip
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as profiler:
        module.train(cfg, RecordingLogger())
    matmuls = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")
    total = sum(event.flops for event in profiler.key_averages() if event.key in matmuls)
    return total / steps  # the warm-up steps do no learning (and the final evaluation's 1 episode is negligible)


def matmul_rate(size: int = 256, repeats: int = 400) -> float:
    """FLOP/s of a float32 (size x size) @ (size x size) product, best of five timings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(50):
        a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["td3", "sac", "ddpg"])
    parser.add_argument("--steps", type=int, default=3000, help="learning steps measured after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CleanRL's figures: 2)")
    parser.add_argument("--ceiling", action="store_true", help="also print the compute-bound ceiling (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for algo in args.algos:
        rate = steady_sps(algo, args.steps)
        print(f"{algo} on Hopper-v5, {args.threads} thread(s): {rate:,.0f} steps/s after learning starts")
        if args.ceiling:
            flops, peak = matmul_flops_per_step(algo), matmul_rate()
            print(
                f"  {flops / 1e6:,.0f} matmul MFLOP per step; matmuls run at {peak / 1e9:,.0f} GFLOP/s here: "
                f"ceiling {peak / flops:,.0f} steps/s (the run reached {rate * flops / peak:.0%} of it)"
            )


if __name__ == "__main__":
    main()
