"""Training steps per second on Pong: DQN after learning starts, PPO with 8 envs, next to the raw env rates.

    python benchmarks/atari_pong_sps.py [--algos dqn ppo] [--dqn-steps 2000] [--ppo-iterations 3] [--threads 2]

Settings are CleanRL's `dqn_atari.py` and `ppo_atari.py` (the suites' `[algo.*.atari]` overrides in
experiments/suites/atari_10m.toml) on PongNoFrameskip-v4 (dqn-nature protocol); DQN starts learning after a short
warm-up here (2,000 steps instead of 80,000) with a 100k replay, which does not change the cost of a learning step.
Rates are read from the run's own cumulative `charts/SPS` at two points, so start-up and warm-up are left out.
Printed for comparison:
- the raw rate of the same preprocessed env (8 copies, random actions) through rlgrid's VecEnv, and of ale-py's C++
  `AtariVectorEnv` (8 envs, threads) with the same preprocessing, when available;
- CleanRL on this project's 2-core machine (from the brief): dqn_atari.py about 115-121 steps/s after learning starts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from algorithms.common import RecordingLogger

ENV_ID = "PongNoFrameskip-v4"
CLEANRL_DQN_SPS = (115, 121)
DQN_ATARI = {"buffer_size": 100_000, "learning_rate": 1e-4, "batch_size": 32, "target_network_frequency": 1000,
             "end_e": 0.01, "exploration_fraction": 0.1, "train_frequency": 4}  # fmt: skip
PPO_ATARI = {"num_envs": 8, "num_steps": 128, "learning_rate": 2.5e-4, "num_minibatches": 4, "update_epochs": 4,
             "clip_coef": 0.1, "ent_coef": 0.01, "normalize_obs": False, "normalize_reward": False}  # fmt: skip


def rate_between(logger: RecordingLogger, first: int = 1) -> float:
    """Steps/s between the `first` and the last `charts/SPS` readings (each is cumulative from the start)."""
    marks = [(step, m["charts/SPS"]) for step, m in logger.records if "charts/SPS" in m]
    (step_a, sps_a), (step_b, sps_b) = marks[first], marks[-1]
    return (step_b - step_a) / (step_b / sps_b - step_a / sps_a)


def dqn_sps(steps: int, warmup: int = 2_000) -> float:
    from algorithms import dqn

    logger = RecordingLogger()
    cfg = dqn.Config(env_id=ENV_ID, total_timesteps=warmup + steps, learning_starts=warmup, eval_every=0, **DQN_ATARI)
    dqn.train(cfg, logger)
    return rate_between(logger)  # the first reading is at the first update, after the warm-up


def ppo_sps(iterations: int) -> float:
    from algorithms import ppo

    logger = RecordingLogger()
    batch = PPO_ATARI["num_envs"] * PPO_ATARI["num_steps"]
    cfg = ppo.Config(env_id=ENV_ID, total_timesteps=(iterations + 1) * batch, eval_every=0, **PPO_ATARI)
    ppo.train(cfg, logger)
    return rate_between(logger, first=0)  # from the end of the first iteration (start-up left out)


def random_play_sps(envs, num_envs: int, steps: int) -> float:
    """Steps/s of `envs` (reset already) under uniformly random actions, closing it afterwards."""
    actions = np.random.default_rng(0).integers(0, envs.single_action_space.n, (steps, num_envs))
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    envs.close()
    return steps * num_envs / (time.perf_counter() - start)


def vecenv_sps(steps: int = 2_000, num_envs: int = 8) -> float:
    from envs import make_vec_env

    envs, _ = make_vec_env(ENV_ID, num_envs, seed=0)
    return random_play_sps(envs, num_envs, steps)


def ale_vector_sps(steps: int = 2_000, num_envs: int = 8) -> float | None:
    try:
        from ale_py.vector_env import AtariVectorEnv
    except ImportError:
        return None
    envs = AtariVectorEnv(game="pong", num_envs=num_envs, frameskip=4, grayscale=True, stack_num=4, img_height=84,
                          img_width=84, noop_max=30, episodic_life=True, reward_clipping=True)  # fmt: skip
    envs.reset(seed=0)
    return random_play_sps(envs, num_envs, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["dqn", "ppo"], choices=["dqn", "ppo"])
    parser.add_argument("--dqn-steps", type=int, default=2_000, help="learning steps measured (after the warm-up)")
    parser.add_argument("--ppo-iterations", type=int, default=3, help="PPO iterations of 1,024 steps measured")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{ENV_ID}, {args.threads} torch threads")
    raw = vecenv_sps()
    print(f"  raw env, rlgrid VecEnv (8 copies, preprocessed): {raw:,.0f} steps/s")
    ale = ale_vector_sps()
    if ale is not None:
        print(f"  raw env, ale-py AtariVectorEnv (8 envs, threads): {ale:,.0f} steps/s")
    if "dqn" in args.algos:
        sps = dqn_sps(args.dqn_steps)
        low, high = CLEANRL_DQN_SPS
        print(f"  DQN after learning starts: {sps:,.1f} steps/s ({sps / high:.2f}-{sps / low:.2f}x CleanRL's {low}-{high})")
    if "ppo" in args.algos:
        sps = ppo_sps(args.ppo_iterations)
        reference = ale if ale is not None else raw
        print(
            f"  PPO (8 envs): {sps:,.1f} steps/s ({sps / reference:.1%} of the {'ALE vector' if ale else 'VecEnv'} raw rate)"
        )


if __name__ == "__main__":
    main()
