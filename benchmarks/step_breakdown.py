"""Where the time of one training step goes in a real run, and the rate the network work alone allows.

    python benchmarks/step_breakdown.py {dqn,td3,sac,ddpg} [--steps N] [--threads 2] [--cleanrl DIR]

The run is the speed benchmarks' run: DQN on Pong with CleanRL's `dqn_atari.py` settings
(atari_pong_sps.py), TD3, SAC and DDPG on Hopper-v5 with their defaults (offpolicy_hopper_sps.py). From its second
`charts/SPS` reading to its last, timers are wrapped around
- the vector env's `step`, the replay memory's `add` and `sample`;
- every forward pass of the algorithm's own networks (the `nn.Module` classes of its file and those it borrows from
  `algorithms.common.networks`; TD3's `QEnsemble.first` too),
  split by batch size and grad mode: batch 1 is acting, batch 32 or 256 the update;
- `Tensor.backward`, and the optimizers' `step` and `zero_grad`.
The rest ("loop and small ops") is the training loop itself: targets, losses, noise, Polyak averaging, logging.

The last line is the rate that the network work alone allows (forwards, backwards and optimizer steps, with env,
replay and loop taking no time): an implementation that runs the same maths through the same torch kernels on this
machine cannot be faster. With `--cleanrl DIR` (see the two benchmarks) CleanRL's script runs next, and the line
says whether twice its rate fits under that bound.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import atari_pong_sps
import offpolicy_hopper_sps
import torch
import torch.nn as nn

from algorithms.common import RecordingLogger, networks
from algorithms.common.frame_replay import FrameReplayBuffer
from algorithms.common.replay import ReplayBuffer
from experiments.registry import load_algorithm

NETWORK_WORK = ("forward", "backward", "optimizer")  # the prefixes of the timers that count as network work


class StepTimers:
    """Wall time per labelled call, summed while `on`; nested timed calls count once, in the outermost label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.on = False
        self._depth = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, new: Any) -> None:
        """Set `owner.name` to `new` until `unwrap`."""
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def wrap(self, owner: Any, name: str, label: Callable[..., str] | str) -> None:
        """Time the calls of `owner.name` under `label` (or the label it returns for the call's arguments)."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on or self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = label(*args) if callable(label) else label
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1
                self._depth -= 1

        self.replace(owner, name, timed)

    def unwrap(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def forward_label(method: str) -> Callable[..., str]:
    """The label of a network call: class, method, batch size, grad mode."""

    def label(module: nn.Module, first: Any, *rest: Any) -> str:
        grad = "with grad" if torch.is_grad_enabled() else "no grad"
        return f"forward {type(module).__name__}{method} (batch {first.shape[0]}, {grad})"

    return label


def instrument(module: Any, timers: StepTimers) -> None:
    """Wrap the timers around the algorithm module's networks, env, replay memory, autograd and optimizers."""
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ in (module.__name__, networks.__name__):
            timers.wrap(obj, "forward", forward_label(""))
            if hasattr(obj, "first"):  # TD3's actor loss: Q_1 through frozen weights, outside forward()
                timers.wrap(obj, "first", forward_label(".first"))
    for buffer in (ReplayBuffer, FrameReplayBuffer):
        timers.wrap(buffer, "add", "replay add")
        timers.wrap(buffer, "sample", "replay sample")
    timers.wrap(torch.Tensor, "backward", "backward")
    timers.wrap(torch.optim.Adam, "step", "optimizer step")
    timers.wrap(torch.optim.Optimizer, "zero_grad", "optimizer zero_grad")
    make_vec_env = module.make_vec_env

    def timed_vec_env(*args: Any, **kwargs: Any) -> Any:
        envs, first_obs = make_vec_env(*args, **kwargs)
        timers.wrap(envs, "step", "env step")
        return envs, first_obs

    timers.replace(module, "make_vec_env", timed_vec_env)


class WindowLogger(RecordingLogger):
    """Switches the timers on at the second `charts/SPS` reading and off at the last one (`readings` in all)."""

    def __init__(self, timers: StepTimers, readings: int) -> None:
        super().__init__()
        self.timers, self.readings, self.seen = timers, readings, 0
        self.window: tuple[int, float, int, float] | None = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        super().log(step, metrics)
        if "charts/SPS" not in metrics:
            return
        self.seen += 1
        if self.seen == 2:
            self.timers.on, self.start = True, (step, time.perf_counter())
        elif self.seen == self.readings:
            self.timers.on = False
            self.window = (*self.start, step, time.perf_counter())


def run(algo: str, steps: int) -> tuple[StepTimers, int, float]:
    """Train `algo` as its speed benchmark does; returns the timers, the env steps and the seconds of the window."""
    module = load_algorithm(algo).module
    if algo == "dqn":
        cfg = atari_pong_sps.dqn_config(steps)
        readings = (steps // cfg.train_frequency - 1) // 100 + 1  # at updates 1, 101, 201, ...
    else:
        cfg = offpolicy_hopper_sps.learning_config(algo, steps)
        readings = steps // 100  # at updates 100, 200, ...
    if readings < 3:
        raise SystemExit(f"--steps {steps} gives {readings} rate readings for {algo}; three are needed")
    timers = StepTimers()
    logger = WindowLogger(timers, readings)
    instrument(module, timers)
    try:
        module.train(cfg, logger)
    finally:
        timers.unwrap()
    if logger.window is None:
        raise RuntimeError(f"{algo} logged {logger.seen} rate readings, expected {readings}")
    first_step, first_time, last_step, last_time = logger.window
    return timers, last_step - first_step, last_time - first_time


def cleanrl_rate(algo: str, cleanrl_dir: str, steps: int, threads: int) -> float:
    if algo == "dqn":
        return atari_pong_sps.cleanrl_dqn_sps(cleanrl_dir, steps, "cpu", threads)
    return offpolicy_hopper_sps.cleanrl_sps(cleanrl_dir, algo, steps, "cpu", threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algo", choices=["dqn", "td3", "sac", "ddpg"])
    parser.add_argument("--steps", type=int, default=3000, help="learning steps after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cleanrl", metavar="DIR", help="then run CleanRL's script from DIR (dqn, td3, sac)")
    args = parser.parse_args()
    if args.cleanrl and args.algo == "ddpg":
        parser.error("CleanRL's DDPG script is not one of the benchmarks' (dqn, td3, sac)")
    torch.set_num_threads(args.threads)
    timers, steps, seconds = run(args.algo, args.steps)
    per_step = {key: value / steps * 1e3 for key, value in timers.seconds.items()}  # ms per env step
    loop = seconds / steps * 1e3 - sum(per_step.values())
    network = sum(value for key, value in per_step.items() if key.startswith(NETWORK_WORK))
    print(f"{args.algo}, {args.threads} threads: {steps:,} env steps in {seconds:.2f} s, {steps / seconds:,.1f} steps/s")
    for key in sorted(per_step, key=per_step.get, reverse=True):
        calls = timers.calls[key]
        print(f"  {key:<44} {per_step[key]:6.3f} ms/step  ({calls:,} calls, {timers.seconds[key] / calls * 1e3:.3f} ms each)")
    print(f"  {'loop and small ops':<44} {loop:6.3f} ms/step")
    print(f"network work: {network:.3f} ms per env step, so at most {1e3 / network:,.1f} steps/s with everything else free")
    if args.cleanrl:
        reference = cleanrl_rate(args.algo, args.cleanrl, args.steps, args.threads)
        needed = 1e3 / (2 * reference)
        verdict = "fits" if network <= needed else "does not fit"
        print(f"CleanRL: {reference:,.1f} steps/s; 2x needs {needed:.3f} ms per env step: the network work alone {verdict}")


if __name__ == "__main__":
    main()
