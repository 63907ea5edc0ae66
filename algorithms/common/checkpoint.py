"""Checkpoint handle: atomic saves of plain state, the last K kept, damaged files set aside, RNG state capture.

An algorithm builds a plain dict (model and optimizer `state_dict()`s, env state, counters, `rng_state()`)
and hands it to `Checkpointer.save`; on start it calls `Checkpointer.load()` and restores what it finds.
Files are written to a temporary name and renamed, so a kill during a save never leaves a torn file.

Files are read with `torch.load(weights_only=True)` and an allow-list of numpy's array and dtype types: a file
planted in a shared runs directory cannot run code on the next resume (it is refused, `CheckpointRefused`). What
rlgrid stores is therefore plain data only: tensors, numpy arrays, python scalars, strings, bytes and containers
(`envs.state` turns simulator states into such data). A file that was damaged after it was written (bit rot, a
partial copy between machines; detected by the CRC-32 of every zip record, which `torch.save` writes and
`torch.load` does not check) is moved to `damaged/` and the next older checkpoint is used instead.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")
DAMAGED_DIR = "damaged"
"""where damaged checkpoints are set aside, inside the checkpoint directory (kept for inspection, never loaded)"""


def _numpy_types() -> list[Any]:
    """What pickled numpy arrays, scalars and dtypes refer to (numpy 2 moved `core` to `_core`)."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(code)) for code in np.typecodes["All"] if code != "O"}  # no object arrays
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


SAFE_TYPES = _numpy_types()
"""the only globals a checkpoint may name besides torch's tensors and python's containers"""


class CheckpointRefused(ValueError):
    """A checkpoint file is intact but names types rlgrid never stores (a file planted or written by other code):
    it is not loaded, since unpickling it could run code."""


class CheckpointDamaged(Exception):
    """A checkpoint file cannot be read back as written (truncated, bit rot): it is set aside for an older one."""


def checkpoint_file(directory: str | os.PathLike, step: int) -> Path:
    """The checkpoint file saved at env step `step` in `directory` (whether or not it exists)."""
    return Path(directory) / f"ckpt-{step:012d}.pt"


def checkpoint_step(path: Path) -> int:
    """The env step of a checkpoint file `ckpt-<step>.pt`."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint file (ckpt-<12-digit step>.pt)")
    return int(match.group(1))


def newest_checkpoint_step(directory: Path) -> int:
    """The env step of the newest checkpoint in `directory` (0 when there is none); extras files are not counted."""
    steps = [int(m.group(1)) for p in Path(directory).glob("ckpt-*.pt") if (m := _NAME.match(p.name))]
    return max(steps, default=0)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""what `handle_stop_signals` turns into a checkpoint and a stop"""


class RunInterrupted(Exception):
    """Raised by `Checkpointer.save` after a stop was requested (SIGTERM/SIGINT): the state is safe on disk."""


class RunStopped(KeyboardInterrupt):
    """A second SIGTERM/SIGINT: the run stops at once, wherever it is (a step or an evaluation that does not end);
    it resumes from its newest checkpoint. A KeyboardInterrupt, so no `except Exception` on the way swallows it."""


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
    first, and right away once a stop was requested (`handle_stop_signals` turns SIGTERM/SIGINT into such a
    request, so a preempted or Ctrl-C'd run saves at its next safe point and then raises RunInterrupted; a second
    signal raises RunStopped at once).
    `metadata_fn` adds caller data to every file (the runner records how far `metrics.jsonl` had got).
    `pause_at_step`: save and raise RunPaused at the first safe point at or after that step.
    `read_only`: a view of a run's checkpoints that changes nothing in it (`rlgrid eval`): `save` raises, a damaged file
    is skipped with a warning but left where it is, and extras (a replay memory) are not read (`latest()` gives them
    as {}): what is read is the networks' and the protocol's state, all an evaluation needs.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep_last: int = 2,
        every_steps: int | None = None,
        every_seconds: float | None = 300.0,
        metadata_fn: Callable[[], dict[str, Any]] | None = None,
        pause_at_step: int | None = None,
        read_only: bool = False,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.metadata_fn = metadata_fn
        self.pause_at_step = pause_at_step
        self.read_only = read_only
        self.stop_requested = False
        self._loaded: dict[str, Any] | None = None  # `latest()`'s payload, until `load()` hands it over
        self._last_step: int | None = None
        self._last_time = time.monotonic()

    # --- when -------------------------------------------------------------------------------------
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
        if self.read_only:
            raise RuntimeError(f"{self.directory} is opened read-only: nothing is saved there")
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("ckpt-*.tmp"):  # left by a process killed while writing (one process per run)
            stale.unlink(missing_ok=True)
        path = checkpoint_file(self.directory, step)
        for name, extra in (extras or {}).items():
            self._write(_extra_path(path, name), extra)
        payload = {"step": step, "saved_at": time.time(), "state": state, "extras": sorted(extras or {})}
        if self.metadata_fn is not None:
            payload["metadata"] = self.metadata_fn()
        self._write(path, payload)
        for old in self.paths()[: -self.keep_last]:
            for extra in self.directory.glob(f"{old.stem}.*.pt"):
                extra.unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        self._last_step, self._last_time, self._loaded = step, time.monotonic(), None
        if self.stop_requested:
            raise RunInterrupted(f"stopped on request after saving a checkpoint at step {step:,}")
        if self.pause_at_step is not None and step >= self.pause_at_step:
            raise RunPaused(f"paused at step {step:,} (asked for {self.pause_at_step:,})")
        return path

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that reads back whole, its extras included: its payload (`step`, `state`, `metadata`,
        `extras`: the extras' contents by name), or None when there is none. Damaged files on the way are moved to
        `damaged/` with a warning (`read_only`: skipped, left in place); a refused one raises `CheckpointRefused`. The
        result is kept for `load()`."""
        if self._loaded is not None:
            return self._loaded
        for path in reversed(self.paths()):
            try:
                payload = _read(path)
                names = [] if self.read_only else payload.get("extras", [])
                payload["extras"] = {name: _read(_extra_path(path, name)) for name in names}
            except CheckpointDamaged as exc:
                if self.read_only:
                    print(f"warning: checkpoint {path} is damaged ({exc}); using the one before", file=sys.stderr, flush=True)
                else:
                    self._set_aside(path, str(exc))
                continue
            self._loaded = payload
            return payload
        return None

    def read_extra(self, step: int, name: str) -> Any:
        """The extra `name` (a replay memory) saved with the checkpoint at `step`, read as checkpoints are. Raises
        FileNotFoundError when that checkpoint has none, CheckpointDamaged when it does not read back whole."""
        path = _extra_path(checkpoint_file(self.directory, step), name)
        if not path.is_file():
            raise FileNotFoundError(f"the checkpoint at step {step:,} has no {name} ({path.name}) in {self.directory}")
        return _read(path)

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(state, extras) of the newest checkpoint that reads back whole (`latest()`), or None when the run starts
        fresh. Saves are counted from its step."""
        payload = self.latest()
        if payload is None:
            return None
        self._loaded = None  # the extras (a replay memory) are not kept twice
        self._last_step = payload["step"]
        return payload["state"], payload["extras"]

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a damaged checkpoint and its extras to `damaged/` (never deleted: the user may want to look)."""
        aside = self.directory / DAMAGED_DIR
        aside.mkdir(exist_ok=True)
        for item in [path, *self.directory.glob(f"{path.stem}.*.pt")]:
            os.replace(item, aside / item.name)
        print(
            f"warning: checkpoint {path} is damaged ({reason}); moved to {aside}, resuming from the previous one",
            file=sys.stderr,
            flush=True,
        )


def handle_stop_signals(checkpointers: list[Checkpointer]) -> None:
    """SIGTERM/SIGINT: the first asks every checkpointer (a run's, or each seed's of a pack) for a checkpoint and a stop
    at the next safe point; a second one stops the run at once (RunStopped), for a run that never reaches a safe point.
    SIGHUP (a closed terminal; a local worker's grid that died) asks for the same checkpoint and stop but never counts as
    a second signal: the kernel may send a worker its parent-death signal more than once (once per thread of the dying
    parent)."""
    requested = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal requested
        if requested and signum != signal.SIGHUP:
            raise RunStopped(f"stopped at once by a second {signal.Signals(signum).name}")
        if requested:
            return
        requested = True
        for checkpointer in checkpointers:
            checkpointer.stop_requested = True
        try:
            print(
                f"\n{signal.Signals(signum).name}: checkpointing at the next safe point, then stopping (a second "
                "SIGINT or SIGTERM stops at once)",
                file=sys.stderr,
                flush=True,
            )
        except OSError:  # no one reads stderr any more (a dead grid's pipe): the stop must go on regardless
            pass

    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)


def _extra_path(checkpoint: Path, name: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.{name}.pt")


def _read(path: Path) -> Any:
    """A file written by `torch.save`, checked record by record against its CRC-32 first, then unpickled with only
    plain data allowed. Raises CheckpointDamaged (unreadable) or CheckpointRefused (names other types)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointDamaged(f"{type(exc).__name__}: {exc}") from None
    if bad_record is not None:
        raise CheckpointDamaged(f"record {bad_record} fails its CRC-32 check")
    try:
        with torch.serialization.safe_globals(SAFE_TYPES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            raise CheckpointRefused(
                f"{path} names types rlgrid never stores in a checkpoint ({', '.join(unsafe) or 'see below'}); it was not "
                "loaded, since loading it could run code. Remove it (or the run directory) if you did not put it there."
            ) from None
        raise CheckpointDamaged(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # an intact zip whose pickle torch cannot read
        raise CheckpointDamaged(f"{type(exc).__name__}: {exc}") from None
