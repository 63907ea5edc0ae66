"""Training steps per second on Pong: DQN after learning starts, PPO with 8 envs, next to the raw env rates.

    python benchmarks/atari_pong_sps.py [--algos dqn ppo] [--dqn-steps 2000] [--ppo-iterations 3] [--threads 2]
                                        [--dqn-warmup 2000] [--device cuda] [--cleanrl DIR] [--no-raw] [--ceiling]

Settings are CleanRL's `dqn_atari.py` and `ppo_atari.py` (the suites' `[algo.*.atari]` overrides in
experiments/suites/atari_10m.toml) on PongNoFrameskip-v4 (dqn-nature protocol); DQN starts learning after a short
warm-up here (2,000 steps instead of 80,000; `--dqn-warmup`) with a 100k replay, which does not change the cost of a
learning step.
Rates are read from the run's own cumulative `charts/SPS` at two points, so start-up and warm-up are left out.
Printed for comparison:
- the raw rate of the same preprocessed env (8 copies, random actions) through rlgrid's VecEnv, and of ale-py's C++
  `AtariVectorEnv` (8 envs, threads) with the same preprocessing, when available;
- CleanRL on this project's 2-core machine (from the brief): dqn_atari.py about 115-121 steps/s after learning starts.

`--cleanrl DIR` runs CleanRL's dqn_atari.py and ppo_atari.py from DIR (copies that run on gymnasium >= 1.0 and
ale-py >= 0.9; CleanRL is not part of rlgrid) as subprocesses instead of quoting that figure: same device (`--cuda` /
`--no-cuda`), torch thread count (OMP_NUM_THREADS), warm-up (`--learning-starts`), number of steps and the
hyperparameters above, and prints both rates side by side. CleanRL prints its cumulative SPS every 100 steps once DQN
learns, and after every PPO iteration; its rate is read between the same readings as rlgrid's (DQN: second to last;
PPO: end of the first iteration to the last). `--no-raw` skips the raw env rates.
`--ceiling` prints each algorithm's compute-bound ceiling (benchmarks/ceiling.py): this machine's float32 matmul rate
over the convolution and matmul FLOPs of one training step. A target above it cannot be met on this machine by any
implementation of the same maths.
PPO's line also gives the share of its training time spent in the vector env's `step` (the rest is the agent's); its
run stops before rlgrid's final evaluation. DQN's run ends with one evaluation episode (CleanRL has none), outside the
measured rate.
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

import numpy as np
import torch
from ceiling import ceiling_line, flops_until, train_until
from offpolicy_hopper_sps import rate_between, rate_from_marks

from algorithms.common import RecordingLogger
from algorithms.common.config import RunConfig

ENV_ID = "PongNoFrameskip-v4"
DQN_WARMUP = 2_000
CLEANRL_DQN_SPS = (115, 121)
DQN_ATARI = {
    "buffer_size": 100_000,
    "learning_rate": 1e-4,
    "batch_size": 32,
    "target_network_frequency": 1000,
    "end_e": 0.01,
    "exploration_fraction": 0.1,
    "train_frequency": 4,
}
PPO_ATARI = {
    "num_envs": 8,
    "num_steps": 128,
    "learning_rate": 2.5e-4,
    "num_minibatches": 4,
    "update_epochs": 4,
    "clip_coef": 0.1,
    "ent_coef": 0.01,
    "normalize_obs": False,
    "normalize_reward": False,
}


def dqn_config(steps: int, warmup: int = DQN_WARMUP, device: str = "cpu") -> RunConfig:
    """The measured DQN run: `warmup` random steps, then `steps` learning steps, no evaluation until the end."""
    from algorithms import dqn

    return dqn.Config(
        env_id=ENV_ID,
        total_timesteps=warmup + steps,
        learning_starts=warmup,
        eval_every=0,
        eval_episodes=1,
        device=device,
        **DQN_ATARI,
    )


def dqn_sps(steps: int, warmup: int = DQN_WARMUP, device: str = "cpu") -> float:
    from algorithms import dqn

    logger = RecordingLogger()
    dqn.train(dqn_config(steps, warmup, device), logger)
    return rate_between(logger)  # the first reading is at the first update, after the warm-up


def ppo_sps(iterations: int, device: str = "cpu") -> float:
    """PPO's rate from the end of its first iteration (start-up left out); also prints the share of the training's wall
    time spent in the vector env's `step` (the rest is the agent: inference, transfers, updates, bookkeeping)."""
    from algorithms import ppo

    logger = RecordingLogger()
    batch = PPO_ATARI["num_envs"] * PPO_ATARI["num_steps"]
    cfg = ppo.Config(
        env_id=ENV_ID, total_timesteps=(iterations + 1) * batch, eval_every=0, eval_episodes=1, device=device, **PPO_ATARI
    )
    in_step = 0.0

    def timed_vec_env(*args, **kwargs):
        envs, first_obs = make_vec_env(*args, **kwargs)
        step = envs.step

        def timed_step(actions):
            nonlocal in_step
            start = time.perf_counter()
            try:
                return step(actions)
            finally:
                in_step += time.perf_counter() - start

        envs.step = timed_step
        return envs, first_obs

    make_vec_env, ppo.make_vec_env = ppo.make_vec_env, timed_vec_env
    start = time.perf_counter()
    try:  # paused at the last step, before the final evaluation, so that the env share is the training loop's
        train_until(ppo.train, cfg, cfg.total_timesteps, logger)
    finally:
        ppo.make_vec_env = make_vec_env
    whole = time.perf_counter() - start
    print(f"  (PPO: {whole:.1f} s of training, {in_step:.1f} s of it ({in_step / whole:.0%}) in env.step)")
    return rate_between(logger, first=0)


def dqn_flops_per_step(steps: int = 400, warmup: int = 200) -> float:
    """FLOPs of one DQN step after learning starts (acting, plus a quarter of an update): the warm-up's subtracted."""
    from algorithms import dqn

    cfg = dqn.Config(
        env_id=ENV_ID, total_timesteps=warmup + steps + 1, learning_starts=warmup, eval_every=0, eval_episodes=1, **DQN_ATARI
    )
    return (flops_until(dqn.train, cfg, warmup + steps) - flops_until(dqn.train, cfg, warmup)) / steps


def ppo_flops_per_step() -> float:
    """FLOPs of one PPO iteration (rollout and update) per env step."""
    from algorithms import ppo

    batch = PPO_ATARI["num_envs"] * PPO_ATARI["num_steps"]
    cfg = ppo.Config(env_id=ENV_ID, total_timesteps=2 * batch, eval_every=0, eval_episodes=1, **PPO_ATARI)
    return flops_until(ppo.train, cfg, batch) / batch


def run_cleanrl(cleanrl_dir: str, script: str, options: dict[str, int | float], device: str, threads: int) -> list[float]:
    """Run CleanRL's `script` from `cleanrl_dir` on ENV_ID with `options` (`--name value`) on `device`, with `threads`
    torch threads, in a scratch folder (for its tensorboard `runs/`); return the values of its `SPS:` lines."""
    path = Path(cleanrl_dir, script).resolve()
    cuda = "--cuda" if device.startswith("cuda") else "--no-cuda"  # CleanRL's choice: cuda or cpu
    cmd = [sys.executable, str(path), "--env-id", ENV_ID, "--seed", "1", cuda]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{script} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    print(f"  (CleanRL {script}: {time.perf_counter() - start:.0f} s in all)")
    return [float(sps) for sps in re.findall(r"^SPS: (\d+)$", out.stdout, re.MULTILINE)]


def cleanrl_dqn_sps(cleanrl_dir: str, steps: int, device: str, threads: int, warmup: int = DQN_WARMUP) -> float:
    total = warmup + steps
    options = {"total_timesteps": total, "learning_starts": warmup, **DQN_ATARI}  # all DQN_ATARI keys are CleanRL's
    readings = run_cleanrl(cleanrl_dir, "dqn_atari.py", options, device, threads)
    # dqn_atari.py prints `SPS: int(global_step / elapsed)` (no step) when it trains at a global_step > learning_starts
    # that is a multiple of 100 (train_frequency 4 divides 100), for global_step in range(total_timesteps).
    marks = [step for step in range(warmup + 1, total) if step % 100 == 0]
    if len(readings) != len(marks):
        raise RuntimeError(f"dqn_atari.py printed {len(readings)} SPS lines, expected {len(marks)}")
    return rate_from_marks(list(zip(marks, readings)), first=1)


def cleanrl_ppo_sps(cleanrl_dir: str, iterations: int, device: str, threads: int) -> float:
    batch = PPO_ATARI["num_envs"] * PPO_ATARI["num_steps"]
    shared = {key: value for key, value in PPO_ATARI.items() if not key.startswith("normalize_")}  # rlgrid-only keys
    readings = run_cleanrl(
        cleanrl_dir, "ppo_atari.py", {"total_timesteps": (iterations + 1) * batch, **shared}, device, threads
    )
    # ppo_atari.py prints `SPS: int(global_step / elapsed)` after each iteration, at global_step = iteration * batch.
    if len(readings) != iterations + 1:
        raise RuntimeError(f"ppo_atari.py printed {len(readings)} SPS lines, expected {iterations + 1}")
    return rate_from_marks([((i + 1) * batch, sps) for i, sps in enumerate(readings)], first=0)


def random_play_sps(envs, num_envs: int, steps: int) -> float:
    """Steps/s of `envs` (reset already) under uniformly random actions, closing it afterwards."""
    actions = np.random.default_rng(0).integers(0, envs.single_action_space.n, (steps, num_envs))
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    envs.close()
    return steps * num_envs / (time.perf_counter() - start)


def vecenv_sps(backend: str, steps: int = 2_000, num_envs: int = 8) -> float:
    """rlgrid's env on one Atari path (envs.atari: "vector" is the C++ env on min(num_envs, torch threads) threads)."""
    import os

    from envs import make_vec_env

    previous = os.environ.get("RLGRID_ATARI_BACKEND")
    os.environ["RLGRID_ATARI_BACKEND"] = backend
    try:
        envs, _ = make_vec_env(ENV_ID, num_envs, seed=0)
    finally:
        if previous is None:
            del os.environ["RLGRID_ATARI_BACKEND"]
        else:
            os.environ["RLGRID_ATARI_BACKEND"] = previous
    return random_play_sps(envs, num_envs, steps)


def ale_vector_sps(steps: int = 2_000, num_envs: int = 8) -> float | None:
    try:
        from ale_py.vector_env import AtariVectorEnv
    except ImportError:
        return None
    envs = AtariVectorEnv(
        game="pong",
        num_envs=num_envs,
        frameskip=4,
        grayscale=True,
        stack_num=4,
        img_height=84,
        img_width=84,
        noop_max=30,
        episodic_life=True,
        reward_clipping=True,
    )
    envs.reset(seed=0)
    return random_play_sps(envs, num_envs, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    parser.add_argument("--dqn-steps", type=int, default=2_000, help="learning steps measured (after the warm-up)")
    parser.add_argument("--dqn-warmup", type=int, default=DQN_WARMUP, help="DQN's random steps before learning")
    parser.add_argument("--ppo-iterations", type=int, default=3, help="PPO iterations of 1,024 steps measured")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu", help="torch device of the training runs (cpu, cuda, ...)")
    parser.add_argument("--cleanrl", metavar="DIR", help="also run CleanRL's dqn_atari.py / ppo_atari.py from DIR")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw env rates")
    parser.add_argument("--ceiling", action="store_true", help="also print the compute-bound ceilings (CPU, see above)")
    args = parser.parse_args()
    # rlgrid's DQN logs its rate every 100 updates (400 steps) from the first; the rate needs three readings.
    if "dqn" in args.algos and args.dqn_steps < 4 * 201:
        parser.error(f"--dqn-steps {args.dqn_steps}: need at least 804 for three steps/s readings")
    if "ppo" in args.algos and args.ppo_iterations < 1:
        parser.error("--ppo-iterations must be at least 1")
    torch.set_num_threads(args.threads)
    print(f"{ENV_ID}, {args.threads} torch threads" + ("" if args.device == "cpu" else f", {args.device}"))
    raw = ale = None
    if not args.no_raw:
        raw = vecenv_sps("vector")
        print(f"  raw env, rlgrid C++ path (8 copies, {min(8, args.threads)} threads, preprocessed): {raw:,.0f} steps/s")
        print(f"  raw env, rlgrid Python path (8 copies, preprocessed): {vecenv_sps('python'):,.0f} steps/s")
        ale = ale_vector_sps()
        if ale is not None:
            print(f"  raw env, bare ale-py AtariVectorEnv (8 envs, its default threads): {ale:,.0f} steps/s")
    rows: list[tuple[str, float, float]] = []
    if "dqn" in args.algos:
        sps = dqn_sps(args.dqn_steps, args.dqn_warmup, args.device)
        if args.cleanrl:
            print(f"  DQN after learning starts: {sps:,.1f} steps/s")
            reference = cleanrl_dqn_sps(args.cleanrl, args.dqn_steps, args.device, args.threads, args.dqn_warmup)
            print(f"  DQN after learning starts, CleanRL dqn_atari.py: {reference:,.1f} steps/s")
            rows.append((f"dqn ({args.dqn_steps:,} steps after {args.dqn_warmup:,})", sps, reference))
        else:
            low, high = CLEANRL_DQN_SPS
            versus = f"{sps / high:.2f}-{sps / low:.2f}x CleanRL's {low}-{high}"
            print(f"  DQN after learning starts: {sps:,.1f} steps/s ({versus})")
        if args.ceiling:
            print(ceiling_line(dqn_flops_per_step(), sps))
    if "ppo" in args.algos:
        sps = ppo_sps(args.ppo_iterations, device=args.device)
        reference = ale if ale is not None else raw
        share = "" if reference is None else f" ({sps / reference:.1%} of the {'ALE vector' if ale else 'VecEnv'} raw rate)"
        print(f"  PPO (8 envs): {sps:,.1f} steps/s{share}")
        if args.ceiling:
            print(ceiling_line(ppo_flops_per_step(), sps))
        if args.cleanrl:
            cleanrl = cleanrl_ppo_sps(args.cleanrl, args.ppo_iterations, args.device, args.threads)
            print(f"  PPO (8 envs), CleanRL ppo_atari.py: {cleanrl:,.1f} steps/s")
            rows.append((f"ppo (8 envs, {args.ppo_iterations} iterations)", sps, cleanrl))
    if rows:
        print(f"\n{ENV_ID}, {args.threads} torch threads, {args.device}")
        print(f"{'algo':<32} {'rlgrid steps/s':>15} {'CleanRL steps/s':>16} {'ratio':>7}")
        for name, sps, reference in rows:
            print(f"{name:<32} {sps:>15,.1f} {reference:>16,.1f} {sps / reference:>6.2f}x")


if __name__ == "__main__":
    main()
