"""CartPole with a barrier for tests of several tuning workers, importable by any worker process (local, Ray, submitit)
as `barrier_env:BarrierCartPole-v1` with tests/ on its PYTHONPATH.

When RLGRID_TEST_BARRIER names a directory, each process leaves its pid there at its first env reset and waits until
a second process has left its own: the first trial of each of two workers starts only once the other worker has a
trial under way, so both workers run trials by construction, on a machine of any speed. A lone worker fails its trial
after TIMEOUT_S with a message that says so. Without the variable it is CartPole-v1, step for step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

BARRIER = "RLGRID_TEST_BARRIER"
TIMEOUT_S = 300.0


def wait_for_a_second_process(directory: Path, timeout_s: float = TIMEOUT_S) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(directory.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"barrier {directory}: no second worker process started a trial within {timeout_s:.0f} s "
                f"(only pid {os.getpid()} did)"
            )
        time.sleep(0.05)


class BarrierCartPole(CartPoleEnv):
    passed = False  # per process: the barrier holds only a process's first reset

    def reset(self, *, seed=None, options=None):
        directory = os.environ.get(BARRIER)
        if directory and not BarrierCartPole.passed:
            wait_for_a_second_process(Path(directory))
            BarrierCartPole.passed = True
        return super().reset(seed=seed, options=options)


def pids_at(directory: Path) -> set[int]:
    """The processes that passed (or waited at) the barrier."""
    return {int(path.name) for path in directory.iterdir()}


gym.register(id="BarrierCartPole-v1", entry_point=BarrierCartPole, max_episode_steps=500, reward_threshold=475.0)
