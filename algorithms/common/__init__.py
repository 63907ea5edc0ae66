"""What algorithm files borrow (see the sharing rule in the README's layout section).

- protocol and plumbing: `RunConfig` (config.py), seeding, `RunState` (run.py: resume, evaluation, the result),
  checkpoints, loggers, the command line of an algorithm file (cli.py), on-policy rollout storage and replay memories;
- networks and maths used by two or more algorithms: networks.py (actor-critic MLPs, Q ensembles, target updates),
  torsos.py (CNNs for images), distributions.py (Gaussian and categorical policies), policy_gradient.py (GAE, the
  A2C loss), tabular.py (Bellman backups through an env's model, exact values, tables, epsilon-greedy acting).

Nothing here imports an algorithm file or the runner.
"""

from algorithms.common.checkpoint import Checkpointer, RunInterrupted, RunPaused, RunStopped, restore_rng_state, rng_state
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
    "RunStopped",
    "TrainResult",
    "restore_rng_state",
    "rng_state",
    "seed_everything",
]
