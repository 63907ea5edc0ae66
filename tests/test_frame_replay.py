"""The frame replay memory: every sampled stack is the stack that was observed (episode starts with either padding,
true final observations, ring and frame wrap-around, a caller that breaks the stacking pattern), only the newest
transitions of each env copy are sampled, a restored buffer samples the same, and the memory per transition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.common.frame_replay import FrameReplayBuffer

K, H, W = 4, 6, 5


class StackedStream:
    """N env copies emitting K-frame stacks of random uint8 frames, with random episode lengths (1 included),
    terminations and truncations, and the vector env's SAME_STEP convention: at an episode end `next_obs` is the
    true final stack and the following `obs` is the reset stack. `padding` is how a reset stack is filled."""

    def __init__(self, num_envs: int, padding: str, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n, self.padding = num_envs, padding
        self.obs = np.stack([self._reset_stack() for _ in range(num_envs)])

    def _frame(self) -> np.ndarray:
        return self.rng.integers(0, 256, (H, W), dtype=np.uint8)

    def _reset_stack(self) -> np.ndarray:
        first = self._frame()
        if self.padding == "reset":  # gymnasium's FrameStackObservation default: the first frame repeated
            return np.stack([first] * K)
        return np.concatenate([np.zeros((K - 1, H, W), np.uint8), first[None]])

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(obs, next_obs, terminated, truncated) of one vector step; advances to the next obs."""
        obs = self.obs.copy()
        next_obs = np.concatenate([obs[:, 1:], np.stack([self._frame() for _ in range(self.n)])[:, None]], axis=1)
        ended = self.rng.random(self.n) < 0.15
        terminated = ended & (self.rng.random(self.n) < 0.5)
        truncated = ended & ~terminated
        self.obs = next_obs.copy()
        for i in np.flatnonzero(ended):
            self.obs[i] = self._reset_stack()
        return obs, next_obs, terminated, truncated


def fill(buffer: FrameReplayBuffer, stream: StackedStream, steps: int, start_id: int = 0) -> dict[int, tuple]:
    """Add `steps` vector steps; each transition's reward is its unique id. Returns id -> (env, obs, next_obs, ...)."""
    record = {}
    for s in range(steps):
        obs, next_obs, terminated, truncated = stream.step()
        ids = start_id + s * stream.n + np.arange(stream.n)
        actions = ids % 7
        buffer.add(obs, actions, ids.astype(np.float32), next_obs, terminated, truncated)
        for i in range(stream.n):
            record[int(ids[i])] = (i, obs[i], next_obs[i], actions[i], terminated[i], truncated[i])
    return record


def check_batch(batch, record: dict[int, tuple]) -> list[int]:
    ids = [int(r) for r in batch.rewards]
    for b, transition_id in enumerate(ids):
        _, obs, next_obs, action, terminated, truncated = record[transition_id]
        np.testing.assert_array_equal(batch.obs[b].numpy(), obs)
        np.testing.assert_array_equal(batch.next_obs[b].numpy(), next_obs)
        assert int(batch.actions[b]) == action
        assert float(batch.terminated[b]) == float(terminated) and float(batch.truncated[b]) == float(truncated)
    return ids


@pytest.mark.parametrize("padding", ["reset", "zeros"])
def test_sampled_stacks_are_the_observed_stacks_across_episode_ends_and_wraparound(padding):
    torch.manual_seed(0)
    num_envs, capacity = 3, 3 * 40
    buffer = FrameReplayBuffer(capacity, num_envs, (K, H, W), (), torch.int64)
    stream = StackedStream(num_envs, padding, seed=1)
    record = fill(buffer, stream, 300)  # 300 steps per env through a 40-step ring: wraps 7 times
    assert buffer.frames.shape[1] < 2 * 40  # frames are not duplicated per stack
    seen = set()
    for _ in range(20):
        seen.update(check_batch(buffer.sample(64), record))
    # Only each env's newest transitions: no more than 40 per env, all from the last 40 steps.
    newest_step_ids = {start for start in range((300 - 40) * num_envs, 300 * num_envs)}
    assert seen <= newest_step_ids
    assert len(buffer) <= capacity and len(buffer) > 0.6 * capacity  # resets retire a few transitions early
    assert len(seen) > 0.9 * len(buffer)  # sampling covers what is valid


def test_a_caller_that_breaks_the_stacking_pattern_still_gets_its_stacks_back():
    """Observations that do not follow on from the previous next_obs (or whose next_obs is not a shifted obs)
    are stored in full instead of being reconstructed wrongly."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    buffer = FrameReplayBuffer(50, 1, (K, H, W), (), torch.int64)
    record = {}
    for transition_id in range(30):
        obs = rng.integers(0, 256, (1, K, H, W), dtype=np.uint8)
        next_obs = rng.integers(0, 256, (1, K, H, W), dtype=np.uint8)
        no = np.zeros(1, bool)
        buffer.add(obs, np.array([1]), np.array([transition_id], np.float32), next_obs, no, no)
        record[transition_id] = (0, obs[0], next_obs[0], 1, False, False)
    check_batch(buffer.sample(100), record)


def test_restored_buffer_samples_exactly_as_the_original():
    num_envs = 2
    original = FrameReplayBuffer(2 * 30, num_envs, (K, H, W), (), torch.int64)
    stream = StackedStream(num_envs, "reset", seed=5)
    record = fill(original, stream, 70)
    restored = FrameReplayBuffer(2 * 30, num_envs, (K, H, W), (), torch.int64)
    restored.load_state_dict(original.state_dict())
    # Continue both with the same steps, then draw with the same RNG state.
    more = StackedStream(num_envs, "reset", seed=6)
    more_again = StackedStream(num_envs, "reset", seed=6)
    record.update(fill(original, more, 25, start_id=10_000))
    fill(restored, more_again, 25, start_id=10_000)
    torch.manual_seed(7)
    a = original.sample(128)
    torch.manual_seed(7)
    b = restored.sample(128)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    check_batch(a, record)


def test_memory_per_transition_is_about_one_frame():
    frame_bytes = 84 * 84
    buffer = FrameReplayBuffer(10_000, 8, (4, 84, 84), (), torch.int64)
    per_transition = buffer.bytes_per_transition()
    print(
        f"frame replay: {per_transition:,.0f} bytes per transition (one frame {frame_bytes:,}, "
        f"two stacks {2 * 4 * frame_bytes:,})"
    )
    assert frame_bytes < per_transition < 1.05 * frame_bytes + 100


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="K stacked frames"):
        FrameReplayBuffer(100, 1, (84,), (), torch.int64)
    with pytest.raises(ValueError, match="capacity"):
        FrameReplayBuffer(2, 4, (4, 84, 84), (), torch.int64)
    with pytest.raises(ValueError, match="empty"):
        FrameReplayBuffer(10, 1, (4, 8, 8), (), torch.int64).sample(1)
