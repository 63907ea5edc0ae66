"""Plumbing shared by every algorithm: seeding, logging, results, checkpoints.

Nothing here changes learning dynamics (see the sharing rule in DESIGN.md).
"""

from algorithms.common.checkpoint import Checkpointer, RunInterrupted, RunPaused, restore_rng_state, rng_state
from algorithms.common.logging import ConsoleLogger, Logger, NullLogger, RecordingLogger, TrainResult
from algorithms.common.seeding import seed_everything

__all__ = [
    "Checkpointer",
    "ConsoleLogger",
    "Logger",
    "NullLogger",
    "RecordingLogger",
    "RunInterrupted",
    "RunPaused",
    "TrainResult",
    "restore_rng_state",
    "rng_state",
    "seed_everything",
]
