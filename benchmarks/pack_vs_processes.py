"""The same grid of seeds trained as separate processes and as seed packs (rlgrid run --seeds-per-process K).

    python benchmarks/pack_vs_processes.py [--algo sac] [--seeds 4] [--warmup 1000] [--steps 1500] [--cores 2]

A suite of `--seeds` seeds of one off-policy algorithm on Hopper-v5 (its default networks and batch, `--warmup`
random steps and `--steps` learning steps each, no evaluation until the end) runs three ways on `--cores` cores:
- separate processes: one per seed, `--cores` at once, one torch thread each (the grid's default on a CPU);
- packs of seeds / cores: `--cores` packs at once, one thread each;
- one pack of every seed, with `--cores` threads.
Prints each way's wall time and aggregate env steps/s (all runs' steps over the grid's wall time, process start-up
included), and its ratio to separate processes. Run directories go to a temporary directory, removed afterwards.
On a CPU the learning step is compute-bound (benchmarks/ceiling.py), so packing is not expected to gain: this
measures by how much it does or does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = """
name = "packing"
algorithms = ["{algo}"]
env_ids = ["Hopper-v5"]
seeds = {seeds}
total_timesteps = {total}
eval_every = 0
eval_episodes = 1
[algo.{algo}]
learning_starts = {warmup}
"""


def run_grid(suite: Path, runs: Path, workers: int, threads: int, seeds_per_process: int) -> dict:
    command = [sys.executable, "-m", "experiments", "run", str(suite), "--runs-dir", str(runs), "--progress-interval", "3600"]
    command += ["--workers", str(workers), "--threads-per-run", str(threads), "--seeds-per-process", str(seeds_per_process)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((runs / "packing" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="sac", choices=["sac", "td3", "ddpg"])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000, help="uniform random steps first")
    parser.add_argument("--steps", type=int, default=1500, help="learning steps per seed")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.seeds % args.cores:
        parser.error("--seeds must be a multiple of --cores")
    ways = {
        f"{args.seeds} processes, {args.cores} at once": (args.cores, 1, 1),
        f"{args.cores} packs of {args.seeds // args.cores}, 1 thread each": (args.cores, 1, args.seeds // args.cores),
        f"1 pack of {args.seeds}, {args.cores} threads": (1, args.cores, args.seeds),
    }
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "packing.toml"
        seeds = list(range(1, args.seeds + 1))
        suite.write_text(SUITE.format(algo=args.algo, seeds=seeds, total=args.warmup + args.steps, warmup=args.warmup))
        for n, (name, (workers, threads, per_process)) in enumerate(ways.items()):
            summaries[name] = run_grid(suite, Path(tmp) / f"way{n}", workers, threads, per_process)
            print(f"{name}: {summaries[name]['wall_time_s']:.1f} s", flush=True)
    base = next(iter(summaries.values()))["aggregate_steps_per_second"]
    print(f"\n{args.algo} on Hopper-v5, {args.seeds} seeds x ({args.warmup:,} random + {args.steps:,} learning steps)")
    for name, summary in summaries.items():
        rate = summary["aggregate_steps_per_second"]
        print(f"{name:<34} {summary['wall_time_s']:7.1f} s {rate:8,.0f} steps/s {rate / base:6.2f}x  {summary['counts']}")


if __name__ == "__main__":
    main()
