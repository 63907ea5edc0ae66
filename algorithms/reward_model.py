"""A Bradley-Terry reward model fitted to preference pairs: the second stage of RLHF.

Papers: Christiano et al. (2017), "Deep Reinforcement Learning from Human Preferences", arXiv:1706.03741, sec. 2.2.3;
Stiennon et al. (2020), "Learning to summarize from human feedback", arXiv:2009.01325, sec. 3.4; Ouyang et al. (2022),
arXiv:2203.02155, sec. 3.5. Under the Bradley-Terry model P(y_w preferred to y_l | x) = sigmoid(r(x, y_w) - r(x, y_l)),
so the reward model r_phi maximises the likelihood of the labels:

    loss = -log sigmoid(r_phi(x, y_w) - r_phi(x, y_l))

r_phi is the sft run's transformer with its unembedding replaced by a scalar head on the last token
(`algorithms.common.preference.RewardModel`), trained on the `num_pairs` pairs that the sft policy draws and the task's
teacher labels (the pairs dpo learns from with the same seed). r_phi is identified only up to a constant per prompt;
rlhf_ppo and best_of_n use differences or re-centre it.

Each evaluation draws fresh pairs from the sft policy (the evaluation's seed) and logs as its return the share of pairs
that r_phi orders as the true reward does (ties of the true reward count half), with `eval/label_accuracy` (agreement
with the teacher's labels, noise included) and `eval/reward_correlation` (Pearson, r_phi against the true reward, over
the completions). Defaults: Adam 1e-4, batch 64 pairs, 2,000 updates, one pass over 8,192 pairs being about 128
updates. Deviations: Ouyang et al. train for a single epoch to avoid overfitting; here the number of updates is the
budget, and the held-out accuracy shows overfitting if there is any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.preference import (
    LOG_EVERY,
    PREFERENCE_SMOKE,
    PreferenceConfig,
    RewardModel,
    TextTask,
    check_run_inputs,
    draw_pairs,
    ranks_first,
    reference_policy,
    start_model,
    training_pairs,
)
from algorithms.common.run import RunState, log_due

SMOKE = {**PREFERENCE_SMOKE, "sft_run": "@sft"}
"""Tiny settings for the contract tests: `@sft` is the finished smoke sft run tests/conftest.py provides."""
ACTION_SPACES = ("discrete",)  # tokens
OBSERVATIONS = ("text",)


@dataclass(frozen=True)
class Config(PreferenceConfig):
    learning_rate: float = 1e-4
    """Adam learning rate"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r(x, y_w) - r(x, y_l)) per pair: (N,)."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


class RewardModelEvaluation:
    """`RunState`'s evaluator: fresh pairs from pi_ref, scored by the reward model (see the module docstring)."""

    def __init__(self, cfg: Config, task: TextTask, reference, device: torch.device) -> None:
        self.cfg, self.task, self.reference, self.device = cfg, task, reference, device
        self.metrics: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, reward_model: RewardModel, episodes: int, seed: int) -> np.ndarray:
        if self.task.language is None:  # a preference file: its held-out pairs, scored against their labels
            pairs = self.task.held_out.to(self.device)
            chosen = reward_model(pairs.prompts[:episodes], pairs.chosen[:episodes])
            rejected = reward_model(pairs.prompts[:episodes], pairs.rejected[:episodes])
            self.metrics = {"eval/label_accuracy": float((chosen > rejected).float().mean())}
            return ranks_first(chosen, rejected)
        pairs = draw_pairs(self.cfg, self.task, self.reference, seed, self.device, count=episodes)
        chosen, rejected = reward_model(pairs.prompts, pairs.chosen), reward_model(pairs.prompts, pairs.rejected)
        true_chosen = self.task.true_reward(pairs.prompts, pairs.chosen)
        true_rejected = self.task.true_reward(pairs.prompts, pairs.rejected)
        model_sign = np.sign((chosen - rejected).cpu().numpy())
        true_sign = np.sign(true_chosen - true_rejected)
        agreement = np.where(true_sign == 0, 0.5, (model_sign == true_sign).astype(float))
        scores = torch.cat([chosen, rejected]).cpu().numpy()
        truth = np.concatenate([true_chosen, true_rejected])
        self.metrics = {
            "eval/label_accuracy": float((chosen > rejected).float().mean()),
            "eval/reward_correlation": float(np.corrcoef(scores, truth)[0, 1]) if scores.std() > 0 else 0.0,
        }
        return agreement


def check_inputs(cfg: Config) -> TextTask:
    """The runner's check before it makes the run's directory: a finished sft run (or a model) to start from."""
    return check_run_inputs(cfg, ("sft_run",))


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)

    # 1. pi_ref (the sft policy, frozen: it draws the pairs) and r_phi: the sft transformer with a fresh scalar head.
    task = check_inputs(cfg)
    reference = reference_policy(cfg, task, device)
    reward_model = RewardModel(start_model(cfg, task, device)).to(device)
    optimizer = torch.optim.Adam(reward_model.parameters(), lr=cfg.learning_rate)

    # 2. The preference pairs.
    pairs = training_pairs(cfg, task, reference, device)

    def update(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prompts, chosen, rejected = pairs.batch(index)
        chosen_scores, rejected_scores = reward_model(prompts, chosen), reward_model(prompts, rejected)
        loss = bradley_terry_loss(chosen_scores, rejected_scores).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (chosen_scores > rejected_scores).float().mean()

    update = compiled(update, cfg)

    # 3. State: fresh, or restored from the newest checkpoint.
    evaluation = RewardModelEvaluation(cfg, task, reference, device)
    state = {"reward_model": reward_model, "optimizer": optimizer}
    run = RunState(cfg, None, logger, checkpoint, state, eval_metrics=lambda: evaluation.metrics, evaluator=evaluation)
    step, _ = run.restore()
    while step < cfg.total_timesteps:
        # 4. One update on a batch of pairs drawn uniformly.
        step += 1
        loss, accuracy = update(torch.randint(len(pairs), (cfg.batch_size,), device=device))
        if log_due(step, cfg.total_timesteps, LOG_EVERY):
            metrics = {"losses/loss": loss.item(), "rewards/accuracy": accuracy.item()}
            run.logger.log(step, {**metrics, "charts/SPS": run.steps_per_second(step)})

        # 5. Evaluate on held-out pairs, checkpoint.
        run.evaluate_if_due(step, reward_model)
        run.checkpoint_if_due(step)

    return run.finish(step, reward_model)


if __name__ == "__main__":
    run_algorithm_cli(__name__)
