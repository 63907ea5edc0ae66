"""The run settings every algorithm's `Config` starts with: which task, how long, how it is evaluated, where it
runs. They are protocol and plumbing (see DESIGN.md's sharing rule); hyperparameters stay in each file.

A subclass redeclares a field to change its default (DQN starts on CartPole-v1) and calls
`super().__post_init__()` first in its own `__post_init__`: that refuses a NaN or infinite number in any field, the
subclass's included, before the subclass's range checks (which NaN would pass: every comparison with it is False).
No field gives inf a meaning (an optional limit such as ppo's target_kl or dqn's max_grad_norm says "none" with None).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class RunConfig:
    env_id: str = "Hopper-v5"
    """gymnasium environment id"""
    seed: int = 1
    """seed of every RNG of the run (env copy i gets seed + i)"""
    total_timesteps: int = 1_000_000
    """environment steps, summed over env copies"""
    eval_every: int = 50_000
    """environment steps between deterministic evaluations (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...)"""
    compile: bool = False
    """wrap the hot paths (acting, losses or updates: the algorithm's docstring says which) in torch.compile"""
    cuda_graphs: bool = False
    """with compile on a CUDA device: capture the compiled steps in CUDA graphs and replay them (torch.compile's
    "reduce-overhead" mode); a step that cannot be captured runs compiled and says why (algorithms.common.compiling)"""
    torch_deterministic: bool = True
    """ask torch for deterministic kernels"""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value}")
        if not self.env_id:
            raise ValueError("env_id must not be empty")
        if self.total_timesteps < 1 or self.eval_episodes < 1:
            raise ValueError(
                f"total_timesteps and eval_episodes must be >= 1, got {self.total_timesteps}, {self.eval_episodes}"
            )
        if self.cuda_graphs and not self.compile:
            raise ValueError("cuda_graphs captures the compiled steps: set compile=True too")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
