"""Compute-bound ceilings for the speed benchmarks: the FLOPs of one training step over this machine's matmul rate.

A ceiling says how fast any implementation of the same maths could go on this CPU if every FLOP ran at the rate of a
large float32 matrix product: no implementation beats it, and a target above it cannot be met by faster code. FLOPs
are counted by torch's `FlopCounterMode` (matrix products and convolutions, forward and backward; element-wise work,
the optimizer and the env are free here, which keeps the ceiling an upper bound).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from algorithms.common import Checkpointer, RecordingLogger, RunPaused


def train_until(train: Callable[..., Any], cfg: Any, step: int, logger: RecordingLogger | None = None) -> None:
    """Run `train(cfg, logger, checkpointer)` until it pauses at `step`, before any final evaluation (the run stops at
    its first checkpoint at or after `step`, saved in a scratch folder)."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            train(cfg, logger or RecordingLogger(), Checkpointer(directory, every_seconds=None, pause_at_step=step))
        except RunPaused:
            return
    raise RuntimeError(f"the run ended before pausing at step {step}: make total_timesteps larger")


def flops_until(train: Callable[..., Any], cfg: Any, step: int) -> int:
    """FLOPs that `train` spends from its start until it pauses at `step` (`train_until`)."""
    with FlopCounterMode(display=False) as counter:
        train_until(train, cfg, step)
    return counter.get_total_flops()


def matmul_rate(size: int = 256, repeats: int = 400) -> float:
    """FLOP/s of a float32 (size x size) @ (size x size) product at torch's current thread count, best of five."""
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


def ceiling_line(flops_per_step: float, achieved: float) -> str:
    """One line: FLOPs per step, the matmul rate, the ceiling in steps/s and the share of it that `achieved` reached."""
    rate = matmul_rate()
    ceiling = rate / flops_per_step
    return (
        f"  {flops_per_step / 1e6:,.0f} MFLOP per step; matmuls run at {rate / 1e9:,.0f} GFLOP/s here: ceiling "
        f"{ceiling:,.0f} steps/s (the run reached {achieved / ceiling:.0%} of it)"
    )
