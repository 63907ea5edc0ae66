"""Uniform experience replay (plumbing: storage and sampling only; what is learned from it is the algorithm's).

Preallocated tensors on the training device, written as a ring. Each transition keeps `terminated` apart
from `truncated`: a target bootstraps through a time-limit end (the episode did not really end) and not
through a termination. `next_obs` is the observation the step really led to (`info["final_obs"]` of
`envs`), also where the episode ended. Checkpoints save the filled part in a file of its own
(`Checkpointer.save(..., extras={"replay": buffer.state_dict()})`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, *obs_shape)
    actions: torch.Tensor  # (B, *action_shape)
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) float 0/1: no bootstrap where 1
    truncated: torch.Tensor  # (B,) float 0/1 (diagnostic; targets bootstrap through it)


class ReplayBuffer:
    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        """`obs_dtype`: torch.uint8 keeps 0/1 grids and 0..255 pixels exactly in a quarter of the memory."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.truncated = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one vector step: every argument has a leading axis of num_envs."""
        n = len(rewards)
        if n > self.capacity:
            raise ValueError(f"a step of {n} env copies does not fit a replay memory of {self.capacity}")
        # Rows pos.. (wrapping round to 0): written through slices, not an index tensor, so that with deterministic
        # kernels on CUDA the write is a plain copy instead of index_put's sort-based deterministic path.
        first = min(n, self.capacity - self.pos)
        for name, value in zip(self.FIELDS, (obs, actions, rewards, next_obs, terminated, truncated)):
            target = getattr(self, name)
            rows = torch.as_tensor(np.asarray(value), device=self.device).to(target.dtype)
            target[self.pos : self.pos + first] = rows[:first]
            if first < n:
                target[: n - first] = rows[first:]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """`batch_size` transitions uniformly with replacement, drawn from `generator` (None: torch's global RNG; both
        are restored on resume)."""
        index = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        # index_select copies whole rows; advanced indexing (tensor[index]) goes element by element: on the CPU, 28
        # against 6 us for 256 rows of 17 floats, one thread (as in FrameReplayBuffer).
        return Batch(*(getattr(self, name).index_select(0, index) for name in self.FIELDS))

    def state_dict(self) -> dict[str, Any]:
        """The filled part only, on the CPU, in insertion order's storage layout (pos and size kept)."""
        return {"pos": self.pos, "size": self.size, **{name: getattr(self, name)[: self.size].cpu() for name in self.FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["size"] > self.capacity:
            raise ValueError(f"saved buffer holds {state['size']} transitions, capacity is {self.capacity}")
        self.pos, self.size = state["pos"], state["size"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = state[name].to(self.device)


def sample_seeds(buffers: list[ReplayBuffer], batch_size: int, generators: list[torch.Generator]) -> Batch:
    """A seed pack's batch: `batch_size` transitions from each seed's replay memory, drawn from its own generator;
    every field (K, B, ...)."""
    batches = [buffer.sample(batch_size, generator) for buffer, generator in zip(buffers, generators)]
    return Batch(*(torch.stack(field) for field in zip(*batches)))
