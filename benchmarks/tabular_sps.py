"""Tabular speed, measured in one run: Q-learning and SARSA steps per second next to the raw env's, and the wall time
of value and policy iteration.

The raw rate steps `gym.make(env_id)` (its standard wrappers: time limit, order enforcing) with pre-drawn random
actions and resets at episode ends, nothing else: what any learner on the same env pays before it learns. The learners
run through their own `train()` (the vector env's bookkeeping, epsilon-greedy acting, the update, episode logging to a
recording logger, no evaluation until the end) and report their own `steps_per_second`. Goal: at least half the raw
rate. Rates on this machine vary 2-3x from hour to hour: only the ratios within one run compare.

    python benchmarks/tabular_sps.py [--steps 200000]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import envs  # noqa: F401 (registers the book's worlds)
from algorithms.common import RecordingLogger
from envs.tabular import transition_model
from experiments.registry import load_algorithm

ENVS = ("FrozenLake8x8-v1", "Taxi-v4")
PLANNING = (("FrozenLake8x8-v1", 0.99), ("Taxi-v4", 0.99), ("Taxi-v4", 1.0))


def raw_rate(env_id: str, steps: int, seed: int = 0) -> float:
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=steps).tolist()
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def learner_rate(algo: str, env_id: str, steps: int) -> float:
    module = load_algorithm(algo)
    cfg = module.Config(env_id=env_id, total_timesteps=steps, eval_every=0, eval_episodes=1, gamma=0.99)
    return module.train(cfg, RecordingLogger()).steps_per_second


def planning_time(algo: str, env_id: str, gamma: float) -> tuple[float, int]:
    module = load_algorithm(algo)
    cfg = module.Config(env_id=env_id, gamma=gamma, eval_episodes=1)
    start = time.perf_counter()
    result = module.train(cfg, RecordingLogger())
    return time.perf_counter() - start, result.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000, help="environment steps per measurement")
    args = parser.parse_args()
    print(f"{'env':<18} {'raw steps/s':>12} {'q_learning':>11} {'ratio':>6} {'sarsa':>9} {'ratio':>6}")
    for env_id in ENVS:
        raw = raw_rate(env_id, args.steps)
        q_learning, sarsa = learner_rate("q_learning", env_id, args.steps), learner_rate("sarsa", env_id, args.steps)
        print(f"{env_id:<18} {raw:>12,.0f} {q_learning:>11,.0f} {q_learning / raw:>6.2f} {sarsa:>9,.0f} {sarsa / raw:>6.2f}")
    print()
    for env_id, gamma in PLANNING:
        model = transition_model(env_id)
        for algo in ("value_iteration", "policy_iteration"):
            seconds, sweeps = planning_time(algo, env_id, gamma)
            print(
                f"{algo:<17} {env_id:<17} ({model.num_states} states x {model.num_actions} actions, gamma {gamma}): "
                f"{seconds:.3f} s wall, {sweeps} sweeps, one final evaluation episode included"
            )


if __name__ == "__main__":
    main()
