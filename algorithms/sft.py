"""Supervised fine-tuning (SFT) of a causal language model, the first stage of learning from preferences, and
Preferred-FT, the DPO paper's baseline that fine-tunes on the chosen completions only.

Papers: Ouyang et al. (2022), "Training language models to follow instructions with human feedback", arXiv:2203.02155,
sec. 3.5 (SFT, the start and the reference of RLHF); Rafailov et al. (2023), "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model", arXiv:2305.18290: sec. 4 (pi_ref is the SFT model) and sec. 6.1, where the
IMDb SFT model is GPT-2-large fine-tuned on the reviews' text and "Preferred-FT" fine-tunes on the chosen completions.

Minimise the negative log-likelihood of text, -sum_t log pi(w_t | w_<t), on one of two data sources (`data`):
- "language": sequences of a synthetic task's language, a fresh batch every update (the SFT model of the DPO paper's
  IMDb task). The loss covers every word after the first, prompt included: the model learns the language, not one slot.
- "chosen": the chosen completions of preference pairs: the `num_pairs` that pi_ref (`sft_run` or `model`) draws and the
  task's teacher labels, the pairs reward_model and dpo learn from with the same seed, or a file's (`preferences`, or a
  preference file as the task: the usual SFT stage on real data); the loss covers the completion's tokens only, the
  prompt being given. That is Preferred-FT.
The model is trained from scratch, a tiny GPT-2 (`n_embd`, `n_layer`, `n_head`), or onward from `sft_run` or `model`.

Each evaluation logs the true reward, KL(pi || pi_ref) and the win rate (algorithms/common/preference.py); pi_ref is
where the run starts (`sft_run` or `model`), or, for a model trained from scratch, the task's language itself, logged then as
eval/language_kl: how well the model has learned the language (as pi_ref of later stages its KL is 0). Deviations:
the paper's models are pretrained transformers; these are tiny ones trained here (no dropout), with Adam at a constant
learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.language_models import token_log_probs
from algorithms.common.preference import (
    LOG_EVERY,
    PREFERENCE_SMOKE,
    ModelPolicy,
    PreferenceConfig,
    TextEvaluation,
    TextTask,
    check_run_inputs,
    model_inputs,
    new_policy_model,
    reference_policy,
    start_model,
    training_pairs,
)
from algorithms.common.run import RunState, log_due

SMOKE = {**PREFERENCE_SMOKE, "n_embd": 16, "n_layer": 1, "n_head": 1}
"""Tiny settings for the contract tests."""
ACTION_SPACES = ("discrete",)  # tokens
OBSERVATIONS = ("text",)


@dataclass(frozen=True)
class Config(PreferenceConfig):
    data: str = "language"
    """language: sequences of a synthetic task's language (SFT); chosen: the chosen completions of preference pairs,
    drawn from sft_run's or model's policy or read from a file (Preferred-FT)"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    n_embd: int = 64
    """width of a model trained from scratch"""
    n_layer: int = 2
    """transformer blocks of a model trained from scratch"""
    n_head: int = 2
    """attention heads of a model trained from scratch"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data not in ("language", "chosen"):
            raise ValueError(f"data must be 'language' or 'chosen', got {self.data!r}")
        if self.data == "language" and self.env_id.endswith(".jsonl"):
            raise ValueError(f"{self.env_id} is a preference file: it has no language to learn (use data=chosen)")
        if self.learning_rate <= 0 or min(self.n_embd, self.n_layer, self.n_head) < 1 or self.n_embd % self.n_head:
            raise ValueError("learning_rate must be > 0, n_embd, n_layer, n_head >= 1, and n_head must divide n_embd")


def nll_loss(model: torch.nn.Module, ids: torch.Tensor, first: int, words: int | None) -> torch.Tensor:
    """Mean negative log-likelihood of the tokens at columns >= `first` of `ids` (B, T), PAD_ID not counted, over the
    first `words` token ids."""
    ids, mask = model_inputs(ids)
    log_probs = token_log_probs(model, ids, mask, first, words)  # (B, T - first), 0 on padding
    return -log_probs.sum() / mask[:, first:].sum()


def check_inputs(cfg: Config) -> TextTask:
    """The runner's check before it makes the run's directory: Preferred-FT without a preference file draws its pairs
    from a finished sft run (or a model)."""
    from_file = cfg.preferences is not None or cfg.env_id.endswith(".jsonl")
    return check_run_inputs(cfg, ("sft_run",) if cfg.data == "chosen" and not from_file else ())


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)

    # 1. The task, pi_ref, and the policy: a trainable copy of sft_run's policy or of model, or a fresh tiny GPT-2.
    task = check_inputs(cfg)  # Preferred-FT without a file draws its pairs from a reference: sft_run or model
    reference = reference_policy(cfg, task, device)
    model = start_model(cfg, task, device)
    if model is None:
        model = new_policy_model(task, cfg.n_embd, cfg.n_layer, cfg.n_head).to(device)
    policy = ModelPolicy(model, task)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    rng = np.random.default_rng(cfg.seed)  # the language's batches

    # 2. Preferred-FT's data: the chosen completions (prompt + completion, the loss on the completion only).
    if cfg.data == "chosen":
        pairs = training_pairs(cfg, task, reference, device)
        chosen = torch.cat([pairs.prompts, pairs.chosen], 1)  # (N, P + L)

    def update(ids: torch.Tensor, first: int) -> torch.Tensor:
        loss = nll_loss(model, ids, first, task.words)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    update = compiled(update, cfg)

    # 3. State: fresh, or restored from the newest checkpoint.
    evaluation = TextEvaluation(task, reference, device)
    state = {"policy": model, "optimizer": optimizer, "language_rng": rng}
    run = RunState(cfg, None, logger, checkpoint, state, eval_metrics=lambda: evaluation.metrics, evaluator=evaluation)
    step, _ = run.restore()
    while step < cfg.total_timesteps:
        # 4. One update on a batch: fresh sequences of the language, or chosen completions drawn uniformly.
        step += 1
        if cfg.data == "language":
            prompts = task.prompts(cfg.batch_size, rng)
            words = np.concatenate([prompts.numpy(), task.language.sample_completions(prompts.numpy(), rng)], 1)
            loss = update(torch.as_tensor(words, device=device), 1)
        else:
            loss = update(chosen[torch.randint(len(chosen), (cfg.batch_size,), device=device)], pairs.prompts.shape[1])
        if log_due(step, cfg.total_timesteps, LOG_EVERY):
            run.logger.log(step, {"losses/nll": loss.item(), "charts/SPS": run.steps_per_second(step)})

        # 5. Evaluate (true reward, KL to pi_ref, win rate), checkpoint.
        run.evaluate_if_due(step, policy)
        run.checkpoint_if_due(step)

    return run.finish(step, policy)


if __name__ == "__main__":
    run_algorithm_cli(__name__)
