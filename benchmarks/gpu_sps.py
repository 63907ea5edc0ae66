"""Aggregate env steps/s of packed seeds (one process, K seeds stacked) against single runs and CleanRL, on one device.

    python benchmarks/gpu_sps.py [--device cuda] [--algos sac td3] [--packs 1 4 16 64] [--steps 2000]
                                 [--cleanrl DIR] [--budget-s 450]

Every measurement runs in a subprocess of its own (a fresh CUDA context, so each reports its own peak GPU memory):
`--warmup` uniform random steps (no learning) and then `--steps` learning steps on Hopper-v5, each algorithm's default
hyperparameters (batch 256, one update per env step). The rate is the learning phase's alone, from the run's own
`charts/SPS` readings (every 100 updates, cumulative from the start), between the second and the last; a pack's
aggregate is K times its per-seed rate. Rows, per algorithm:
- rlgrid single run: eager, `compile=True` (torch.compile of the update and acting functions), and on CUDA
  `cuda_graphs=True` as well (those compiled steps captured in CUDA graphs and replayed);
- rlgrid packs of K seeds (`train_seeds`), eager, for each K of `--packs`; compiled, and on CUDA captured, for every
  K of 16 or more (the issue's goal: 16 SAC seeds at 10x one CleanRL run's aggregate steps/s), or the largest K;
- CleanRL's script (`--cleanrl DIR`: copies of td3_continuous_action.py / sac_continuous_action.py that run on
  gymnasium >= 1.0, not part of rlgrid), the same warm-up and steps, for the ratios.
Measurements that would start after `--budget-s` seconds are skipped (and said so): the device session is short.
Prints one table: steps/s per seed, aggregate steps/s, aggregate over CleanRL's single run, peak GPU memory; before
it, each captured run's warnings for steps that ran without CUDA graphs, with inductor's reason.
On a CPU the same script runs (small --packs and --steps) and shows what the issue states: packing gains nothing there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offpolicy_hopper_sps import CLEANRL_SCRIPTS, ENV_ID, cleanrl_sps, learning_config, rate_between  # noqa: E402

from algorithms.common import RecordingLogger  # noqa: E402
from experiments.registry import load_algorithm  # noqa: E402

MODES = {"eager": {}, "compiled": {"compile": True}, "graphs": {"compile": True, "cuda_graphs": True}}
"""how a measured run executes its hot paths: the config fields each mode sets"""


def measure(algo: str, seeds: int, mode: str, device: str, steps: int, warmup: int) -> dict[str, float]:
    """One pack of `seeds` seeds (1: a single run, through train()) in this process, its hot paths run as `mode` says:
    per-seed steps/s after learning starts, and the peak GPU memory."""
    module = load_algorithm(algo)
    cfg = learning_config(algo, steps, device, warmup, **MODES[mode])
    loggers = [RecordingLogger() for _ in range(seeds)]
    start = time.perf_counter()
    if seeds == 1:
        module.train(cfg, loggers[0])
    else:
        cfgs = [dataclasses.replace(cfg, seed=cfg.seed + k) for k in range(seeds)]
        module.module.train_seeds(cfgs, loggers, [None] * seeds)
    rate = rate_between(loggers[0])
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return {"per_seed": rate, "aggregate": rate * seeds, "memory_mib": memory, "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--algos", nargs="+", default=["sac", "td3"])
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 4, 16, 64], help="seeds per process (K)")
    parser.add_argument("--steps", type=int, default=2000, help="learning steps measured after the warm-up")
    parser.add_argument("--warmup", type=int, default=1000, help="uniform random steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of every process")
    parser.add_argument("--cleanrl", metavar="DIR", help="also run CleanRL's td3/sac scripts from DIR")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--budget-s", type=float, default=450.0, help="start no measurement after this many seconds")
    parser.add_argument("--one", nargs=3, metavar=("ALGO", "K", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:  # a measurement in this (sub)process, printed as one JSON line
        algo, seeds, mode = args.one[0], int(args.one[1]), args.one[2]
        print(json.dumps(measure(algo, seeds, mode, args.device, args.steps, args.warmup)), flush=True)
        return
    if args.steps < 400:
        parser.error("--steps: need at least 400 for enough steps/s readings")

    start = time.perf_counter()
    fast = [] if args.no_compile else ["compiled"] + (["graphs"] if args.device.startswith("cuda") else [])
    large = [k for k in args.packs if k >= 16] or [max(args.packs)]
    plan = []
    for algo in args.algos:
        plan += [(algo, "cleanrl", 1, "eager")] if args.cleanrl and algo in CLEANRL_SCRIPTS else []
        plan += [(algo, "rlgrid", 1, mode) for mode in ["eager", *fast]]
        plan += [(algo, "rlgrid", k, "eager") for k in args.packs if k > 1]
        plan += [(algo, "rlgrid", k, mode) for k in large if k > 1 for mode in fast]
    rows: list[tuple[str, str, dict[str, float] | None]] = []
    reference: dict[str, float] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for algo, who, seeds, mode in plan:
        label = "CleanRL" if who == "cleanrl" else f"rlgrid K={seeds}" + ("" if mode == "eager" else f" {mode}")
        if time.perf_counter() - start > args.budget_s:
            print(f"{algo} {label}: skipped (over the {args.budget_s:.0f} s budget)", flush=True)
            rows.append((algo, label, None))
            continue
        if who == "cleanrl":
            rate = cleanrl_sps(args.cleanrl, algo, args.steps, args.device, args.threads, warmup=args.warmup)
            result = {"per_seed": rate, "aggregate": rate, "memory_mib": float("nan")}
            reference[algo] = rate
        else:
            command = [sys.executable, __file__, "--one", algo, str(seeds), mode]
            command += ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
            command += ["--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"{algo} {label}: failed\n{out.stderr[-3000:]}", flush=True)
                rows.append((algo, label, None))
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            for line in out.stderr.splitlines():  # a step inductor did not capture, and why (algorithms.common.compiling)
                if "without CUDA graphs" in line:
                    print(f"{algo} {label}: {line}", flush=True)
        print(f"{algo} {label}: {result['aggregate']:,.0f} steps/s aggregate", flush=True)
        rows.append((algo, label, result))

    where = f"{args.device}, {args.threads} thread(s)"
    print(f"\n{ENV_ID} on {where}, {args.steps:,} learning steps after {args.warmup:,} random ones")
    print(f"{'algo':<5} {'run':<22} {'steps/s/seed':>13} {'aggregate':>10} {'vs CleanRL':>11} {'GPU MiB':>8}")
    for algo, label, result in rows:
        if result is None:
            print(f"{algo:<5} {label:<22} {'-':>13} {'-':>10} {'-':>11} {'-':>8}")
            continue
        ratio = f"{result['aggregate'] / reference[algo]:.2f}x" if algo in reference else "-"
        memory = "-" if result["memory_mib"] != result["memory_mib"] else f"{result['memory_mib']:,.0f}"
        print(f"{algo:<5} {label:<22} {result['per_seed']:>13,.0f} {result['aggregate']:>10,.0f} {ratio:>11} {memory:>8}")
    print(f"({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
