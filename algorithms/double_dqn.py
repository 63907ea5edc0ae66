"""Double DQN: DQN whose target lets the online network select the next action and the target network
evaluate it.

Paper: van Hasselt, Guez, Silver (2016), "Deep Reinforcement Learning with Double Q-learning", AAAI --
eq. 4, y = r + gamma * Q^(s', argmax_a' Q(s', a')), which removes the max operator's overestimation bias.
The paper keeps every other part of DQN (network, schedule, target period), and so does this module: it
is `algorithms.dqn` with `double_q=True` (see `dqn.q_target`), given its own name so that suites and
reports can put "double_dqn" next to "dqn". Defaults and deviations are dqn's.
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms import dqn
from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.logging import train_from_cli

SMOKE = dqn.SMOKE
"""Tiny settings for the contract tests."""
ACTION_SPACES = dqn.ACTION_SPACES
OBSERVATIONS = dqn.OBSERVATIONS


@dataclass(frozen=True)
class Config(dqn.Config):
    double_q: bool = True
    """Double DQN target (the point of this algorithm; false gives plain DQN)"""


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    return dqn.train(cfg, logger, checkpoint)


if __name__ == "__main__":
    train_from_cli(Config, train)
