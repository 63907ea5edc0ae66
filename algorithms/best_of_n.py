"""Best-of-N sampling: draw N completions from pi_ref and keep the one the reward model scores highest. A baseline with
no training, the DPO paper's "Best of N" (Rafailov et al. 2023, arXiv:2305.18290, sec. 6: N completions from the SFT
model, the highest-scoring under a reward model learned from the preferences); also Stiennon et al. (2020),
arXiv:2009.01325, and Nakano et al. (2021), arXiv:2112.09332.

Its KL to pi_ref is not measured by sampling (the selection's probabilities are not at hand): each evaluation logs
`eval/kl` = log N - (N - 1) / N, the expression the literature uses for best-of-N (e.g. Gao et al. 2022,
arXiv:2210.10760), which Beirami et al. (2024, arXiv:2401.01879) show is an upper bound on the true KL, not its value:
best-of-N's points on a reward-KL frontier sit at most that far right. The run has no gradient update: its one step is
the selection itself, evaluated once at the end like any run (true reward of the kept completions, win rate against
pi_ref).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.preference import (
    PREFERENCE_SMOKE,
    PreferenceConfig,
    RewardModel,
    TextEvaluation,
    TextTask,
    check_run_inputs,
    load_reward_model,
    reference_policy,
)
from algorithms.common.run import RunState

SMOKE = {**PREFERENCE_SMOKE, "sft_run": "@sft", "reward_model_run": "@reward_model", "total_timesteps": 1, "n": 4}
"""Tiny settings for the contract tests: `@sft` and `@reward_model` are smoke runs tests/conftest.py provides."""
ACTION_SPACES = ("discrete",)  # tokens
OBSERVATIONS = ("text",)
TRAINS = False
"""no gradient update: the run logs its evaluation only (no losses, no steps per second)"""


@dataclass(frozen=True)
class Config(PreferenceConfig):
    total_timesteps: int = 1
    """the selection (no gradient update): one step"""
    n: int = 16
    """completions drawn from pi_ref per prompt"""
    reward_model_run: str | None = None
    """run directory of a finished reward_model run: its score picks the completion"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.total_timesteps != 1:
            raise ValueError(f"best_of_n trains nothing: total_timesteps is 1, got {self.total_timesteps}")
        if self.compile:
            raise ValueError("best_of_n has no update to compile (compile=True)")
        if self.env_id.endswith(".jsonl"):
            raise ValueError(f"{self.env_id}: best_of_n's policy has no probabilities to rank a file's held-out pairs by")


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n: the usual figure for KL(best-of-n || pi_ref), an upper bound on it (Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


class BestOfN:
    """The policy: n completions from pi_ref per prompt, the reward model's favourite kept."""

    def __init__(self, reference, reward_model: RewardModel, n: int) -> None:
        self.reference, self.reward_model, self.n = reference, reward_model, n
        self.kl = best_of_n_kl(n)

    @torch.no_grad()
    def sample(self, prompts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        repeated = prompts.repeat_interleave(self.n, 0)  # (B n, P): prompt b's copies are rows b n .. b n + n - 1
        candidates = self.reference.sample(repeated, generator)  # (B n, L)
        scores = self.reward_model(repeated, candidates).view(len(prompts), self.n)
        best = scores.argmax(1) + torch.arange(len(prompts), device=prompts.device) * self.n
        return candidates[best]


def check_inputs(cfg: Config) -> TextTask:
    """The runner's check before it makes the run's directory: a finished sft run (or a model) to sample, a reward_model
    run to rank by."""
    return check_run_inputs(cfg, ("sft_run", "reward_model_run"))


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)

    # 1. pi_ref and the reward model, both frozen.
    task = check_inputs(cfg)
    reference = reference_policy(cfg, task, device)
    policy = BestOfN(reference, load_reward_model(cfg.reward_model_run, task, device), cfg.n)

    # 2. The run: nothing to learn; its one step is the selection, evaluated at the end.
    evaluation = TextEvaluation(task, reference, device)
    run = RunState(cfg, None, logger, checkpoint, {}, eval_metrics=lambda: evaluation.metrics, evaluator=evaluation)
    run.restore()
    return run.finish(cfg.total_timesteps, policy)


if __name__ == "__main__":
    run_algorithm_cli(__name__)
