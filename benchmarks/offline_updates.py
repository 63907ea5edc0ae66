"""Gradient updates per second of the offline algorithms at batch 256, next to their compute-bound ceiling and CORL's
published times.

    python benchmarks/offline_updates.py [--dataset rlgrid/hopper-v5/medium-v0] [--updates 2000] [--threads 2]

Each algorithm trains on the dataset (without one: a 50,000-transition random Hopper-v5 dataset made in a scratch
Minari root; an update's cost depends on the dimensions only, not on the data) with its defaults for `--updates`
updates after a 200-update warm-up, no evaluation in between (`measure`). The ceiling is the FLOPs of one update
(torch's FlopCounterMode) over this CPU's float32 matmul rate (benchmarks/ceiling.py). CORL's times are its README's,
for 1M updates on a GTX 1080 Ti in PyTorch: IQL 4.08 h, TD3+BC 2.47 h, CQL 11.52 h (about 68, 112 and 24 updates/s;
BC is not listed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from experiments.registry import load_algorithm

CORL_HOURS = {"iql": 4.08, "td3_bc": 2.47, "cql": 11.52}
"""CORL README, 1M updates on a GTX 1080 Ti (PyTorch)"""
ALGORITHMS = ("bc", "td3_bc", "iql", "cql")
WARM_UP = 200
MIN_SECONDS = 3.0


def measure(algo: str, dataset: str, updates: int) -> tuple[float, float, int]:
    """(updates per second, FLOPs per update, updates measured): the wall time of a run to WARM_UP + n updates minus
    that of the same run to WARM_UP, so that loading the dataset, building the env and the first kernels are not counted;
    n starts at `updates` and grows until the difference is at least MIN_SECONDS (BC's updates take a millisecond)."""
    from ceiling import flops_until, train_until

    algorithm = load_algorithm(algo)
    n = updates
    while True:
        config = algorithm.Config(env_id=dataset, total_timesteps=WARM_UP + n + 10, eval_every=0)
        times = []
        for stop in (WARM_UP, WARM_UP + n):
            start = time.perf_counter()
            train_until(algorithm.train, config, stop)
            times.append(time.perf_counter() - start)
        if times[1] - times[0] >= MIN_SECONDS:
            break
        n *= 4
    flops = flops_until(algorithm.train, config, 11) / 11
    return n / (times[1] - times[0]), flops, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="a Minari id or D4RL .hdf5 path (default: a scratch random Hopper)")
    parser.add_argument("--updates", type=int, default=2_000, help="measured updates per algorithm")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = args.dataset
    if dataset is None:
        os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="rlgrid-bench-minari-")
        from experiments.dataset_recipes import make_random

        dataset, _ = make_random("Hopper-v5", transitions=50_000, seed=0)
    from ceiling import matmul_rate

    rate = matmul_rate()
    print(f"dataset {dataset}; batch 256; {args.threads} torch threads; matmuls at {rate / 1e9:,.0f} GFLOP/s")
    header = f"{'algorithm':<8} {'updates/s':>10} {'MFLOP/update':>13} {'ceiling/s':>10} {'share':>6}"
    print(f"{header}   CORL (1080 Ti)  [updates measured]")
    for algo in ALGORITHMS:
        achieved, flops, measured = measure(algo, dataset, args.updates)
        ceiling = rate / flops
        corl = (
            f"{1e6 / (CORL_HOURS[algo] * 3600):.0f}/s ({achieved * CORL_HOURS[algo] * 3600 / 1e6:.2f}x)"
            if algo in CORL_HOURS
            else "-"
        )
        row = f"{algo:<8} {achieved:>10,.0f} {flops / 1e6:>13,.1f} {ceiling:>10,.0f} {achieved / ceiling:>6.0%}"
        print(f"{row}   {corl}  [{measured:,}]")


if __name__ == "__main__":
    main()
