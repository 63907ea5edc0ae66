"""Replay memory for stacked image observations that stores each frame once (plumbing, like `replay.py`).

An Atari observation is a stack of the last K frames, so consecutive observations share K-1 frames and
`next_obs` of a step is `obs` of the next one. Storing both stacks per transition keeps every frame 2K times:
1M transitions of 4 x 84 x 84 uint8 frames take 53 GiB, and 26 GiB with one stack per step (SB3's
`optimize_memory_usage`, which CleanRL's DQN turns on). Here each env copy has a ring of single frames, and a
transition keeps the ring positions of its 2K frames (int64 counters, 64 bytes), so a step costs one new frame
(7,056 bytes at 84 x 84) and 1M transitions take about 6.7 GiB.

Exactness does not rest on assumptions about the frame stacker: the frames of `obs` are reused from the
previous step's `next_obs` only where that step did not end the episode and the stacks are equal, and
`next_obs` shares `obs`'s last K-1 frames only where they are equal; anything else is written in full. So a
sampled stack is always the stack that was observed, whatever the padding at an episode start and also for
the true final observation of an episode (`info["final_obs"]`).

Capacity is per env copy (`capacity // num_envs` transitions each). The frame ring holds that many frames plus
2K + 1, so in steady state every stored transition stays valid; each episode start writes K extra frames and
retires the oldest transitions a little earlier (a few per thousand on Atari).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from algorithms.common.replay import Batch


class FrameReplayBuffer:
    FIELDS = ("obs_frames", "next_frames", "actions", "rewards", "terminated", "truncated")

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(obs_shape) < 2:
            raise ValueError(f"obs_shape must be (K, *frame_shape) with K stacked frames, got {obs_shape}")
        if capacity < num_envs or num_envs < 1:
            raise ValueError(f"need capacity >= num_envs >= 1, got capacity {capacity}, num_envs {num_envs}")
        self.num_envs, self.stack = num_envs, obs_shape[0]
        self.per_env = capacity // num_envs  # transitions per env copy
        self.frame_slots = self.per_env + 2 * self.stack + 1  # one add may write 2K frames (an episode start)
        self.device = torch.device(device)
        N, C, K = num_envs, self.per_env, self.stack
        self.frames = torch.zeros((N, self.frame_slots, *obs_shape[1:]), dtype=torch.uint8, device=self.device)
        # Frame counters (the n-th frame written for env i lives in slot n % frame_slots): (N, C, K) each.
        self.obs_frames = torch.zeros((N, C, K), dtype=torch.int64, device=self.device)
        self.next_frames = torch.zeros((N, C, K), dtype=torch.int64, device=self.device)
        self.actions = torch.zeros((N, C, *action_shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.zeros((N, C), dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros((N, C), dtype=torch.float32, device=self.device)
        self.truncated = torch.zeros((N, C), dtype=torch.float32, device=self.device)
        self.steps = 0  # vector steps added (the same for every env copy)
        self.frames_written = np.zeros(N, np.int64)
        self.oldest = np.zeros(N, np.int64)  # first still-valid step of each env copy
        self.prev_next: list[np.ndarray | None] = [None] * N  # frame counters of the last next_obs
        self.prev_ended = np.ones(N, bool)

    def __len__(self) -> int:
        return int((self.steps - self.oldest).sum())

    def bytes_per_transition(self) -> float:
        """Storage of the whole buffer (frames, counters, actions, scalars) per transition it can hold."""
        tensors = [self.frames, *(getattr(self, name) for name in self.FIELDS)]
        return sum(t.numel() * t.element_size() for t in tensors) / (self.num_envs * self.per_env)

    def _write(self, env: int, frames: np.ndarray) -> np.ndarray:
        """Append frames (n, *frame_shape) to env's ring; their counters."""
        first, n = int(self.frames_written[env]), len(frames)
        rows = torch.as_tensor(frames, device=self.device)
        # Slots start.. (wrapping round to 0), written through slices rather than an index tensor: with deterministic
        # kernels on CUDA that is a plain copy instead of index_put's sort-based path (as in ReplayBuffer.add).
        start = first % self.frame_slots
        head = min(n, self.frame_slots - start)
        self.frames[env, start : start + head] = rows[:head]
        if head < n:
            self.frames[env, : n - head] = rows[head:]
        self.frames_written[env] += n
        return np.arange(first, first + n)

    def _gather(self, flat_slots: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames at flat slots (env * frame_slots + slot), shape (*flat_slots.shape, *frame_shape). index_select
        copies whole frames; advanced indexing (frames[rows, slots]) copies them byte by byte, about 10x slower on
        the CPU (1 ms against 0.1 ms for a batch of 32 Atari stacks, one thread)."""
        index = torch.as_tensor(flat_slots, device=self.device)
        frame_shape = self.frames.shape[2:]
        return self.frames.view(-1, *frame_shape).index_select(0, index.reshape(-1)).view(*index.shape, *frame_shape)

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one vector step: obs and next_obs (N, K, *frame_shape) uint8, the rest with a leading axis N."""
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        slot = self.steps % self.per_env
        for env in range(self.num_envs):
            previous = self.prev_next[env]
            same_as_previous = (
                not self.prev_ended[env]
                and previous is not None
                and torch.equal(
                    self._gather(env * self.frame_slots + previous % self.frame_slots),
                    torch.as_tensor(obs[env], device=self.device),
                )
            )
            obs_counters = previous if same_as_previous else self._write(env, obs[env])
            if np.array_equal(next_obs[env, :-1], obs[env, 1:]):
                next_counters = np.concatenate([obs_counters[1:], self._write(env, next_obs[env, -1:])])
            else:
                next_counters = self._write(env, next_obs[env])
            self.obs_frames[env, slot] = torch.from_numpy(obs_counters)
            self.next_frames[env, slot] = torch.from_numpy(next_counters)
            self.prev_next[env] = next_counters
        self.prev_ended = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        for name, value in (("actions", actions), ("rewards", rewards), ("terminated", terminated), ("truncated", truncated)):
            target = getattr(self, name)
            target[:, slot] = torch.as_tensor(np.asarray(value), device=self.device).to(target.dtype)
        self.steps += 1
        self._retire()

    def _retire(self) -> None:
        """Move each env's oldest valid step past steps overwritten in the ring or whose frames were overwritten.
        Counters grow along the ring, so the valid steps are always a suffix."""
        first_step = max(0, self.steps - self.per_env)
        oldest_frame = self.frames_written - self.frame_slots  # counters below this are overwritten
        for env in range(self.num_envs):
            self.oldest[env] = max(self.oldest[env], first_step)
            while (
                self.oldest[env] < self.steps
                and int(self.obs_frames[env, self.oldest[env] % self.per_env, 0]) < oldest_frame[env]
            ):
                self.oldest[env] += 1

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """`batch_size` transitions uniformly over the valid ones of every env copy, with replacement, drawn on the CPU
        from `generator` (None: torch's global RNG; both restored on resume). obs and next_obs come back as uint8
        (B, K, *frame_shape)."""
        counts = torch.as_tensor(self.steps - self.oldest)
        if int(counts.sum()) == 0:
            raise ValueError("the replay buffer is empty")
        draw = torch.randint(0, int(counts.sum()), (batch_size,), generator=generator)
        ends = counts.cumsum(0)
        env = torch.searchsorted(ends, draw, right=True)
        step = torch.as_tensor(self.oldest)[env] + draw - (ends - counts)[env]
        env, slot = env.to(self.device), (step % self.per_env).to(self.device)
        first_slot = env[:, None] * self.frame_slots  # (B, 1): env's ring in the flattened frames
        obs = self._gather(first_slot + self.obs_frames[env, slot] % self.frame_slots)
        next_obs = self._gather(first_slot + self.next_frames[env, slot] % self.frame_slots)
        return Batch(
            obs,
            self.actions[env, slot],
            self.rewards[env, slot],
            next_obs,
            self.terminated[env, slot],
            self.truncated[env, slot],
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, on the CPU (the filled part of each ring only)."""
        filled_steps = min(self.steps, self.per_env)
        filled_frames = min(int(self.frames_written.max()), self.frame_slots)
        return {
            "steps": self.steps,
            "frames_written": self.frames_written.copy(),
            "oldest": self.oldest.copy(),
            "prev_next": [None if p is None else p.copy() for p in self.prev_next],
            "prev_ended": self.prev_ended.copy(),
            "frames": self.frames[:, :filled_frames].cpu(),
            **{name: getattr(self, name)[:, :filled_steps].cpu() for name in self.FIELDS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["frames"].shape[0] != self.num_envs or state["obs_frames"].shape[1] > self.per_env:
            raise ValueError("saved frame buffer has a different number of env copies or a larger capacity")
        self.steps = state["steps"]
        self.frames_written, self.oldest = state["frames_written"].copy(), state["oldest"].copy()
        self.prev_next, self.prev_ended = list(state["prev_next"]), state["prev_ended"].copy()
        self.frames[:, : state["frames"].shape[1]] = state["frames"].to(self.device)
        for name in self.FIELDS:
            getattr(self, name)[:, : state[name].shape[1]] = state[name].to(self.device)
