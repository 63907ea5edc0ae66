"""Steady-state steps per second of rlgrid's off-policy algorithms on Hopper-v5, after learning starts.

    python benchmarks/offpolicy_hopper_sps.py [--algos td3 ddpg] [--steps 3000] [--threads 2] [--device cuda]
                                              [--cleanrl DIR]

Each algorithm runs `learning_starts` (5,000 here, to keep the warm-up short) random steps and then
`--steps` learning steps with its default hyperparameters (one gradient step per env step, batch 256); the
rate is the learning phase's alone, read from the run's own `charts/SPS` logging (cumulative from the start)
at the second and the last points. For orientation on this project's 2-core machine, CleanRL's scripts measured at
the same point: td3_continuous_action.py about 166 steps/s, sac_continuous_action.py about 85 (2 threads).

`--cleanrl DIR` also runs CleanRL's td3_continuous_action.py and sac_continuous_action.py from DIR (copies that
run on gymnasium >= 1.0; CleanRL is not part of rlgrid) as subprocesses, on the same device (`--cuda` /
`--no-cuda`), the same torch thread count (OMP_NUM_THREADS), the same warm-up (`--learning-starts`) and the same
number of steps, each with its own default hyperparameters, and prints both rates side by side. CleanRL prints
its cumulative SPS every 100 steps once learning has started; its rate is taken between its second and last
readings, as rlgrid's is.

`--ceiling` also prints a compute-bound ceiling (benchmarks/ceiling.py): this machine's float32 matmul rate on a
256x256x256 product (the size of the hidden layers) at the same thread count, over the FLOPs of one learning step
(counted over 200 steps). No implementation of the same maths on this CPU can beat it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from ceiling import ceiling_line, flops_until

from algorithms.common import RecordingLogger
from algorithms.common.config import RunConfig
from experiments.registry import load_algorithm

ENV_ID = "Hopper-v5"
WARMUP = 5_000
CLEANRL_SCRIPTS = {"td3": "td3_continuous_action.py", "sac": "sac_continuous_action.py"}


def rate_from_marks(marks: list[tuple[int, float]], first: int = 1) -> float:
    """Steps/s between marks[first] and marks[-1]; each mark is (global step, steps/s cumulative from the start)."""
    if len(marks) < first + 2:
        raise ValueError(f"{len(marks)} steps/s readings, need at least {first + 2}: measure more steps")
    (step_a, sps_a), (step_b, sps_b) = marks[first], marks[-1]
    # Cumulative readings: step / sps is the time since the start; the rate is the steps between two readings over
    # the time between them.
    return (step_b - step_a) / (step_b / sps_b - step_a / sps_a)


def rate_between(logger: RecordingLogger, first: int = 1) -> float:
    """Steps/s between the `first` and the last `charts/SPS` readings of a run's logger (rate_from_marks)."""
    return rate_from_marks([(step, m["charts/SPS"]) for step, m in logger.records if "charts/SPS" in m], first)


def learning_config(
    algo: str, steps: int, device: str = "cpu", warmup: int = WARMUP, compile: bool = False, cuda_graphs: bool = False
) -> RunConfig:
    """The measured run of `algo`: `warmup` random steps, then `steps` learning steps, no evaluation until the end."""
    module = load_algorithm(algo)
    return module.Config(
        env_id=ENV_ID,
        total_timesteps=warmup + steps,
        learning_starts=warmup,
        eval_every=0,
        eval_episodes=1,
        device=device,
        compile=compile,
        cuda_graphs=cuda_graphs,
    )


def steady_sps(algo: str, steps: int, device: str = "cpu") -> float:
    module = load_algorithm(algo)
    logger = RecordingLogger()
    start = time.perf_counter()
    module.train(learning_config(algo, steps, device), logger)
    print(f"  ({algo}: {time.perf_counter() - start:.0f} s in all)")
    return rate_between(logger)


def cleanrl_sps(cleanrl_dir: str, algo: str, steps: int, device: str, threads: int, warmup: int = WARMUP) -> float:
    """CleanRL's rate after learning starts, from the `SPS:` lines of its script run with the same warm-up and steps."""
    total = warmup + steps
    script = Path(cleanrl_dir, CLEANRL_SCRIPTS[algo]).resolve()
    cuda = "--cuda" if device.startswith("cuda") else "--no-cuda"  # CleanRL's choice: cuda or cpu
    cmd = [
        sys.executable,
        str(script),
        "--env-id",
        ENV_ID,
        "--total-timesteps",
        str(total),
        "--learning-starts",
        str(warmup),
        "--seed",
        "1",
        cuda,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:  # its tensorboard `runs/` folder goes there
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    print(f"  (CleanRL {algo}: {time.perf_counter() - start:.0f} s in all)")
    readings = [float(sps) for sps in re.findall(r"^SPS: (\d+)$", out.stdout, re.MULTILINE)]
    # The scripts print `SPS: int(global_step / elapsed)` (no step) at every global_step > learning_starts that is a
    # multiple of 100, for global_step in range(total_timesteps).
    marks = [step for step in range(warmup + 1, total) if step % 100 == 0]
    if len(readings) != len(marks):
        raise RuntimeError(f"{script.name} printed {len(readings)} SPS lines, expected {len(marks)}")
    return rate_from_marks(list(zip(marks, readings)))


def learning_flops_per_step(algo: str, steps: int = 200, warmup: int = 1_000) -> float:
    """FLOPs of one learning step of `algo` (its default networks, batch 256): the warm-up's are subtracted."""
    module = load_algorithm(algo)
    cfg = module.Config(
        env_id=ENV_ID, total_timesteps=warmup + steps + 1, learning_starts=warmup, eval_every=0, eval_episodes=1
    )
    return (flops_until(module.train, cfg, warmup + steps) - flops_until(module.train, cfg, warmup)) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["td3", "sac", "ddpg"])
    parser.add_argument("--steps", type=int, default=3000, help="learning steps measured after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CleanRL's figures: 2)")
    parser.add_argument("--device", default="cpu", help="torch device of the runs (cpu, cuda, ...)")
    parser.add_argument("--cleanrl", metavar="DIR", help="also run CleanRL's td3/sac scripts from DIR (see above)")
    parser.add_argument("--ceiling", action="store_true", help="also print the compute-bound ceiling (CPU, see above)")
    args = parser.parse_args()
    if args.steps < 400:  # both log their rate every 100 learning steps; the rate needs three readings after the first
        parser.error(f"--steps {args.steps}: need at least 400 for enough steps/s readings")
    torch.set_num_threads(args.threads)
    where = f"{args.threads} thread(s)" + ("" if args.device == "cpu" else f", {args.device}")
    rows: list[tuple[str, float, float | None]] = []
    for algo in args.algos:
        rate = steady_sps(algo, args.steps, args.device)
        print(f"{algo} on {ENV_ID}, {where}: {rate:,.0f} steps/s after learning starts")
        if args.ceiling:
            print(ceiling_line(learning_flops_per_step(algo), rate))
        if args.cleanrl and algo in CLEANRL_SCRIPTS:
            reference = cleanrl_sps(args.cleanrl, algo, args.steps, args.device, args.threads)
            print(f"CleanRL {CLEANRL_SCRIPTS[algo]}, {where}: {reference:,.0f} steps/s after learning starts")
            rows.append((algo, rate, reference))
        else:
            rows.append((algo, rate, None))
    if args.cleanrl:
        print(f"\n{ENV_ID}, {args.steps:,} learning steps after {WARMUP:,} random ones, {where}")
        print(f"{'algo':<6} {'rlgrid steps/s':>15} {'CleanRL steps/s':>16} {'ratio':>7}")
        for algo, rate, reference in rows:
            if reference is None:
                print(f"{algo:<6} {rate:>15,.0f} {'-':>16} {'-':>7}")
            else:
                print(f"{algo:<6} {rate:>15,.0f} {reference:>16,.0f} {rate / reference:>6.2f}x")


if __name__ == "__main__":
    main()
