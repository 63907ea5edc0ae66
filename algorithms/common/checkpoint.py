"""Checkpoint handle: atomic saves of arbitrary state, the last K kept, RNG state capture.

An algorithm builds a plain dict (model and optimizer `state_dict()`s, env state, counters, `rng_state()`)
and hands it to `Checkpointer.save`; on start it calls `Checkpointer.load()` and restores what it finds.
Files are written to a temporary name and renamed, so a kill during a save never leaves a torn file.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")


def newest_checkpoint_step(directory: Path) -> int:
    """The env step of the newest checkpoint in `directory` (0 when there is none); extras files are not counted."""
    steps = [int(m.group(1)) for p in Path(directory).glob("ckpt-*.pt") if (m := _NAME.match(p.name))]
    return max(steps, default=0)


class RunInterrupted(Exception):
    """Raised by `Checkpointer.save` after a stop was requested (SIGTERM/SIGINT): the state is safe on disk."""


class RunPaused(RunInterrupted):
    """Raised by `Checkpointer.save` once `pause_at_step` is reached: the run stops there, to be resumed later
    (the tuner runs a trial's seeds in lockstep segments between evaluations, so it can prune mid-run)."""


def rng_state() -> dict[str, Any]:
    """Capture python, numpy (global) and torch (CPU and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves to `directory/ckpt-<step>.pt`, keeps the newest `keep_last`.

    A save is due every `every_steps` environment steps or `every_seconds` of wall time, whichever comes
    first, and right away once a stop was requested (`handle_signals()` turns SIGTERM/SIGINT into such a
    request, so a preempted or Ctrl-C'd run saves at its next safe point and then raises RunInterrupted).
    `metadata_fn` adds caller data to every file (the runner records how far `metrics.jsonl` had got).
    `pause_at_step`: save and raise RunPaused at the first safe point at or after that step.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int = 2,
        every_steps: int | None = None,
        every_seconds: float | None = 300.0,
        metadata_fn: Callable[[], dict[str, Any]] | None = None,
        pause_at_step: int | None = None,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.metadata_fn = metadata_fn
        self.pause_at_step = pause_at_step
        self.stop_requested = False
        self._last_step: int | None = None
        self._last_time = time.monotonic()

    # --- when -------------------------------------------------------------------------------------
    def handle_signals(self) -> None:
        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def due(self, step: int) -> bool:
        if self.stop_requested or (self.pause_at_step is not None and step >= self.pause_at_step):
            return True
        if self._last_step is None:
            self._last_step = step
        if self.every_steps is not None and step - self._last_step >= self.every_steps:
            return True
        return self.every_seconds is not None and time.monotonic() - self._last_time >= self.every_seconds

    # --- io ---------------------------------------------------------------------------------------
    def paths(self) -> list[Path]:
        """Existing checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _NAME.match(p.name))

    def _write(self, path: Path, payload: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def save(self, step: int, state: dict[str, Any], extras: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint atomically. `extras` (e.g. a replay buffer) go to files of their own,
        `ckpt-<step>.<name>.pt`, written before the checkpoint that refers to them and pruned with it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"ckpt-{step:012d}.pt"
        for name, extra in (extras or {}).items():
            self._write(path.with_name(f"{path.stem}.{name}.pt"), extra)
        payload = {"step": step, "saved_at": time.time(), "state": state, "extras": sorted(extras or {})}
        if self.metadata_fn is not None:
            payload["metadata"] = self.metadata_fn()
        self._write(path, payload)
        for old in self.paths()[: -self.keep_last]:
            for extra in self.directory.glob(f"{old.stem}.*.pt"):
                extra.unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        self._last_step, self._last_time = step, time.monotonic()
        if self.stop_requested:
            raise RunInterrupted(f"stopped on request after saving a checkpoint at step {step:,}")
        if self.pause_at_step is not None and step >= self.pause_at_step:
            raise RunPaused(f"paused at step {step:,} (asked for {self.pause_at_step:,})")
        return path

    def load_extra(self, name: str) -> Any:
        """The extra `name` saved with the newest checkpoint (call after `load()`)."""
        newest = self.paths()[-1]
        return torch.load(newest.with_name(f"{newest.stem}.{name}.pt"), map_location="cpu", weights_only=False)

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint's payload (`step`, `state`, `metadata`), or None."""
        paths = self.paths()
        if not paths:
            return None
        # weights_only=False: our own files hold numpy RNG tuples and env snapshots, not just tensors.
        return torch.load(paths[-1], map_location="cpu", weights_only=False)

    def load(self) -> dict[str, Any] | None:
        """The newest saved state dict, or None when the run starts fresh."""
        payload = self.latest()
        if payload is None:
            return None
        self._last_step = payload["step"]
        return payload["state"]
