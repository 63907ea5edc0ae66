"""Direct Preference Optimization (DPO), with IPO's loss and conservative DPO's label smoothing as options.

Papers: Rafailov et al. (2023), "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv:2305.18290; Azar et al. (2023), "A General Theoretical Paradigm to Understand Learning from Human Preferences",
arXiv:2310.12036 (IPO); Mitchell (2023), "A note on DPO with noisy preferences & relationship to IPO" (conservative DPO).

The KL-regularised reward maximisation max_pi E[r(x, y)] - beta KL(pi || pi_ref) has the closed-form optimum
pi*(y | x) = pi_ref(y | x) exp(r(x, y) / beta) / Z(x) (DPO eq. 4), so r(x, y) = beta log(pi*(y | x) / pi_ref(y | x)) +
beta log Z(x) (eq. 5). Put into the Bradley-Terry likelihood of the preferences, Z cancels and the policy is fitted to
the pairs directly, with no reward model and no sampling (eq. 7):

    h = [log pi(y_w | x) - log pi_ref(y_w | x)] - [log pi(y_l | x) - log pi_ref(y_l | x)]
    loss = -log sigmoid(beta h)                                         (loss="sigmoid": DPO)
    loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)    (label_smoothing eps > 0: conservative DPO)
    loss = (h - 1 / (2 beta))^2                                         (loss="ipo": IPO eq. 17, beta as its tau)

`beta * [log pi(y | x) - log pi_ref(y | x)]` is the implicit reward (eq. 5 without Z): logged for the chosen and the
rejected completions, with how often the chosen one's is higher (TRL's rewards/accuracies).

The pairs are drawn from pi_ref, the sft run's policy (`sft_run`) or a local model (`model`), and labelled by the task's
teacher, as the DPO paper's IMDb pairs were sampled from its SFT model, or read from a file (`preferences`, or a
preference file as the task); the policy starts as a copy of pi_ref. Defaults: beta 0.1 (the
paper's), Adam at 1e-4 with no warm-up, batch 64 pairs, 2,000 updates. Deviations: the paper uses RMSprop at 1e-6 with
a 150-step warm-up on a 774M-parameter model; these tiny models need a larger step. IPO uses summed sequence
log-probabilities, as its paper writes it (TRL's IPO averages them over tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.preference import (
    LOG_EVERY,
    PREFERENCE_SMOKE,
    ModelPolicy,
    PreferenceConfig,
    TextEvaluation,
    TextTask,
    check_run_inputs,
    reference_policy,
    start_model,
    training_pairs,
)
from algorithms.common.run import RunState, log_due

SMOKE = {**PREFERENCE_SMOKE, "sft_run": "@sft"}
"""Tiny settings for the contract tests: `@sft` is the finished smoke sft run tests/conftest.py provides."""
ACTION_SPACES = ("discrete",)  # tokens
OBSERVATIONS = ("text",)
VARIANTS = {"ipo": {"loss": "ipo"}}
"""IPO: the same file with loss="ipo" (a registered name for suites)"""


@dataclass(frozen=True)
class Config(PreferenceConfig):
    beta: float = 0.1
    """KL-regularisation strength beta (IPO: its tau)"""
    loss: str = "sigmoid"
    """sigmoid: DPO's loss (eq. 7); ipo: IPO's squared loss (eq. 17)"""
    label_smoothing: float = 0.0
    """conservative DPO: the probability that a label is wrong, in [0, 0.5) (sigmoid loss only)"""
    learning_rate: float = 1e-4
    """Adam learning rate"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0 or self.learning_rate <= 0:
            raise ValueError(f"beta and learning_rate must be > 0, got {self.beta}, {self.learning_rate}")
        if self.loss not in ("sigmoid", "ipo"):
            raise ValueError(f"loss must be 'sigmoid' or 'ipo', got {self.loss!r}")
        if not 0 <= self.label_smoothing < 0.5 or (self.label_smoothing and self.loss == "ipo"):
            raise ValueError(f"label_smoothing must be in [0, 0.5) and is for the sigmoid loss, got {self.label_smoothing}")


def preference_margin(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
) -> torch.Tensor:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)], all (N,) sequence log-probabilities."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO's loss per pair (eq. 7), conservative with label_smoothing eps: (N,)."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)


def ipo_loss(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO's loss per pair (eq. 17 with tau = beta): (h - 1 / (2 tau))^2, (N,)."""
    return (margin - 1 / (2 * beta)) ** 2


def implicit_reward(policy_log_prob: torch.Tensor, ref_log_prob: torch.Tensor, beta: float) -> torch.Tensor:
    """beta log(pi(y | x) / pi_ref(y | x)): the reward the policy implies, up to beta log Z(x) (eq. 5)."""
    return beta * (policy_log_prob - ref_log_prob)


def check_inputs(cfg: Config) -> TextTask:
    """The runner's check before it makes the run's directory: a finished sft run (or a model) to start from."""
    return check_run_inputs(cfg, ("sft_run",))


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)

    # 1. pi_ref (frozen) and the policy, a trainable copy of it.
    task = check_inputs(cfg)
    reference = reference_policy(cfg, task, device)
    policy = ModelPolicy(start_model(cfg, task, device), task)
    optimizer = torch.optim.Adam(policy.model.parameters(), lr=cfg.learning_rate)

    # 2. The preference pairs, and pi_ref's log-probabilities of their completions, once: (N,) each.
    pairs = training_pairs(cfg, task, reference, device)
    with torch.no_grad():
        ref_chosen = reference.log_prob(pairs.prompts, pairs.chosen)
        ref_rejected = reference.log_prob(pairs.prompts, pairs.rejected)

    def update(index: torch.Tensor) -> dict[str, torch.Tensor]:
        prompts, chosen, rejected = pairs.batch(index)
        policy_chosen, policy_rejected = policy.log_prob(prompts, chosen), policy.log_prob(prompts, rejected)
        margin = preference_margin(policy_chosen, policy_rejected, ref_chosen[index], ref_rejected[index])
        losses = ipo_loss(margin, cfg.beta) if cfg.loss == "ipo" else dpo_loss(margin, cfg.beta, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        optimizer.step()
        reward_chosen = implicit_reward(policy_chosen.detach(), ref_chosen[index], cfg.beta)
        reward_rejected = implicit_reward(policy_rejected.detach(), ref_rejected[index], cfg.beta)
        return {
            "losses/loss": losses.detach().mean(),
            "rewards/chosen": reward_chosen.mean(),
            "rewards/rejected": reward_rejected.mean(),
            "rewards/accuracy": (reward_chosen > reward_rejected).float().mean(),
            "rewards/margin": (reward_chosen - reward_rejected).mean(),
        }

    update = compiled(update, cfg)

    # 3. State: fresh, or restored from the newest checkpoint.
    evaluation = TextEvaluation(task, reference, device)
    state = {"policy": policy.model, "optimizer": optimizer}
    run = RunState(cfg, None, logger, checkpoint, state, eval_metrics=lambda: evaluation.metrics, evaluator=evaluation)
    step, _ = run.restore()
    while step < cfg.total_timesteps:
        # 4. One update on a batch of pairs drawn uniformly.
        step += 1
        metrics = update(torch.randint(len(pairs), (cfg.batch_size,), device=device))
        if log_due(step, cfg.total_timesteps, LOG_EVERY):
            run.logger.log(step, {**{k: v.item() for k, v in metrics.items()}, "charts/SPS": run.steps_per_second(step)})

        # 5. Evaluate (true reward, KL to pi_ref, win rate; a preference file: held-out accuracy), checkpoint.
        run.evaluate_if_due(step, policy)
        run.checkpoint_if_due(step)

    return run.finish(step, policy)


if __name__ == "__main__":
    run_algorithm_cli(__name__)
