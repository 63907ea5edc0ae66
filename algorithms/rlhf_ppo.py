"""RLHF with PPO: maximise a learned reward under a per-token KL penalty to the reference policy (the third stage of
RLHF), or the true reward (PPO-GT, `reward="true"`).

Papers: Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593, sec. 2;
Stiennon et al. (2020), arXiv:2009.01325, sec. 3.4-3.5; Ouyang et al. (2022), arXiv:2203.02155, sec. 3.5 (the
objective); Schulman et al. (2017), arXiv:1707.06347 (PPO). The policy maximises
E_(x, y ~ pi)[r(x, y)] - beta KL(pi(. | x) || pi_ref(. | x)), written as a reward per token of the completion:

    R_t = -beta [log pi_old(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]    for every token t,
    R_L += r_phi(x, y)                                                      at the last token,

with r_phi the reward_model run's score, re-centred so that pi_ref's completions score 0 on average (Stiennon et al.
re-centre theirs on the dataset's reference summaries; a constant at the last token changes no optimum, only the value
targets), or the task's true reward
(PPO-GT, the DPO paper's "PPO-GT", an oracle). Each iteration samples one completion for each of `rollout_prompts`
prompts, computes GAE over the completion's tokens (gamma 1, lambda 0.95: an episode is one completion, ending with
it), and runs `update_epochs` epochs of PPO's clipped surrogate and clipped value loss over `num_minibatches` minibatches
of whole completions. The value head reads the policy's last hidden state (one linear layer), as TRL's
AutoModelForCausalLMWithValueHead does, so policy and value share the transformer.

A step is one gradient update: an iteration is update_epochs x num_minibatches of them. Defaults are TRL's PPO ones
where they exist (clip 0.2, value clip 0.2, vf_coef 0.1, gamma 1, lambda 0.95, 4 epochs, advantages whitened per
rollout) with beta 0.05 and Adam at 1e-4 for these tiny models. `compile=True` wraps the PPO step in torch.compile.
Deviations: a fixed beta (Ziegler et al. also adapt it to a KL target: the comparison sweeps beta instead); no entropy
bonus; the policy samples at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.language_models import positions
from algorithms.common.policy_gradient import clipped_surrogate_loss, compute_gae, value_loss
from algorithms.common.preference import (
    PREFERENCE_SMOKE,
    ModelPolicy,
    PreferenceConfig,
    TextEvaluation,
    TextTask,
    check_run_inputs,
    load_reward_model,
    model_inputs,
    reference_policy,
    start_model,
)
from algorithms.common.run import RunState

SMOKE = {
    **PREFERENCE_SMOKE,
    "sft_run": "@sft",
    "reward": "true",
    "rollout_prompts": 16,
    "num_minibatches": 2,
    "update_epochs": 1,
}
"""Tiny settings for the contract tests: `@sft` is the finished smoke sft run tests/conftest.py provides."""
ACTION_SPACES = ("discrete",)  # tokens
OBSERVATIONS = ("text",)
VARIANTS = {"ppo_gt": {"reward": "true"}}
"""PPO-GT: the true reward instead of a reward model (an oracle baseline)"""


@dataclass(frozen=True)
class Config(PreferenceConfig):
    reward: str = "model"
    """model: the reward_model run's score; true: the task's hidden reward (PPO-GT)"""
    reward_model_run: str | None = None
    """run directory of a finished reward_model run (reward='model')"""
    kl_coef: float = 0.05
    """beta: the per-token KL penalty's coefficient"""
    learning_rate: float = 1e-4
    """Adam learning rate of the policy and its value head"""
    rollout_prompts: int = 256
    """prompts per iteration, one completion each"""
    num_minibatches: int = 4
    """minibatches of whole completions per epoch"""
    update_epochs: int = 4
    """PPO epochs over each rollout"""
    clip_coef: float = 0.2
    """PPO's ratio clip epsilon"""
    vf_clip: float = 0.2
    """clip of the value update around the rollout's values"""
    vf_coef: float = 0.1
    """weight of the value loss"""
    gamma: float = 1.0
    """discount over a completion's tokens"""
    gae_lambda: float = 0.95
    """GAE lambda"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward not in ("model", "true"):
            raise ValueError(f"reward must be 'model' or 'true', got {self.reward!r}")
        if self.reward == "true" and self.env_id.endswith(".jsonl"):
            raise ValueError(f"{self.env_id} is a preference file: it has no true reward (reward='model')")
        if self.kl_coef < 0 or self.learning_rate <= 0 or self.clip_coef <= 0 or self.vf_clip <= 0 or self.vf_coef < 0:
            raise ValueError("kl_coef, vf_coef must be >= 0 and learning_rate, clip_coef, vf_clip > 0")
        if min(self.rollout_prompts, self.num_minibatches, self.update_epochs) < 1:
            raise ValueError("rollout_prompts, num_minibatches and update_epochs must be >= 1")
        if self.rollout_prompts % self.num_minibatches:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide rollout_prompts ({self.rollout_prompts})")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("gamma and gae_lambda must be in [0, 1]")


class PolicyWithValue(torch.nn.Module):
    """The policy (a causal LM) and a linear value head on its last hidden state."""

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = causal_lm
        self.value_head = torch.nn.Linear(causal_lm.config.hidden_size, 1)

    def forward(self, ids: torch.Tensor, first: int, words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of the tokens at columns >= first and the values of the states before them: (B, L) each.
        Sampled completions are never padded; prompts may be, on the left (PAD_ID)."""
        ids, mask = model_inputs(ids)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True)
        log_probs = F.log_softmax(out.logits[:, first - 1 : -1, :words].float(), dim=-1)
        chosen = torch.gather(log_probs, 2, ids[:, first:, None])[..., 0]
        values = self.value_head(out.hidden_states[-1][:, first - 1 : -1]).squeeze(-1)
        return chosen, values


def per_token_rewards(
    log_probs: torch.Tensor, ref_log_probs: torch.Tensor, score: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """R_t = -beta (log pi - log pi_ref) at every token, plus the sequence's score at the last: (B, L)."""
    rewards = -kl_coef * (log_probs - ref_log_probs)
    rewards[:, -1] += score
    return rewards


def check_inputs(cfg: Config) -> TextTask:
    """The runner's check before it makes the run's directory: a finished sft run (or a model), and a finished
    reward_model run unless reward='true'."""
    return check_run_inputs(cfg, ("sft_run", "reward_model_run") if cfg.reward == "model" else ("sft_run",))


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)

    # 1. pi_ref (frozen), the reward (r_phi, frozen, or the true one), the policy: a copy of pi_ref with a value head.
    task = check_inputs(cfg)
    reference = reference_policy(cfg, task, device)
    reward_model = load_reward_model(cfg.reward_model_run, task, device) if cfg.reward == "model" else None
    agent = PolicyWithValue(start_model(cfg, task, device)).to(device)
    policy = ModelPolicy(agent.lm, task)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate)
    rng = np.random.default_rng(cfg.seed)  # the rollouts' prompts; torch's global generator draws their completions
    first, words = task.prompt_length, task.words

    @torch.no_grad()
    def score(prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        if reward_model is None:
            return torch.as_tensor(task.true_reward(prompts, completions), dtype=torch.float32, device=device)
        return reward_model(prompts, completions) - score_offset

    # Stiennon et al.'s re-centring: pi_ref's completions score 0 on average (512 of them, a fixed draw).
    score_offset = 0.0
    if reward_model is not None:
        with torch.no_grad():
            offset_prompts = task.prompts(512, np.random.default_rng(cfg.seed + 1)).to(device)
            offset_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
            score_offset = reward_model(offset_prompts, reference.sample(offset_prompts, offset_generator)).mean()

    def update(ids: torch.Tensor, old_log_probs, old_values, advantages, returns) -> tuple[torch.Tensor, torch.Tensor]:
        """One PPO step on a minibatch of whole completions ((M, P + L) ids, the rest (M, L))."""
        new_log_probs, new_values = agent(ids, first, words)
        ratio = torch.exp(new_log_probs - old_log_probs)
        pg_loss = clipped_surrogate_loss(ratio, advantages, cfg.clip_coef).mean()
        v_loss = value_loss(new_values, old_values, returns, cfg.vf_clip).mean()
        optimizer.zero_grad(set_to_none=True)
        (pg_loss + cfg.vf_coef * v_loss).backward()
        optimizer.step()
        return pg_loss.detach(), v_loss.detach()

    update = compiled(update, cfg)

    # 2. State: fresh, or restored from the newest checkpoint.
    evaluation = TextEvaluation(task, reference, device)
    state = {"agent": agent, "optimizer": optimizer, "prompt_rng": rng}
    run = RunState(cfg, None, logger, checkpoint, state, eval_metrics=lambda: evaluation.metrics, evaluator=evaluation)
    step, _ = run.restore()
    minibatch = cfg.rollout_prompts // cfg.num_minibatches
    while step < cfg.total_timesteps:
        # 3. Rollout: one completion per prompt; its log-probabilities under pi_old and pi_ref, values, rewards.
        with torch.no_grad():
            prompts = task.prompts(cfg.rollout_prompts, rng).to(device)
            completions = policy.sample(prompts, None)
            ids = torch.cat([prompts, completions], 1)  # (B, P + L)
            old_log_probs, old_values = agent(ids, first, words)  # (B, L) each
            ref_log_probs = reference.log_prob_tokens(prompts, completions)
            scores = score(prompts, completions)
            rewards = per_token_rewards(old_log_probs, ref_log_probs, scores, cfg.kl_coef)
            # GAE over the tokens, (L, B): the completion ends at its last token (no bootstrap past it).
            ends = torch.zeros_like(rewards.T)
            ends[-1] = 1.0
            next_values = torch.cat([old_values.T[1:], torch.zeros_like(old_values.T[:1])])
            advantages, returns = compute_gae(rewards.T, old_values.T, next_values, ends, ends, cfg.gamma, cfg.gae_lambda)
            advantages, returns = advantages.T, returns.T
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)  # whitened per rollout (TRL)

        # 4. PPO epochs over minibatches of whole completions.
        for _ in range(cfg.update_epochs):
            order = torch.randperm(cfg.rollout_prompts, device=device)
            for start in range(0, cfg.rollout_prompts, minibatch):
                index = order[start : start + minibatch]
                pg_loss, v_loss = update(
                    ids[index], old_log_probs[index], old_values[index], advantages[index], returns[index]
                )
                step += 1
        kl = (old_log_probs - ref_log_probs).sum(1).mean()
        metrics = {
            "losses/policy_loss": pg_loss.item(),
            "losses/value_loss": v_loss.item(),
            "objective/kl": kl.item(),
            "objective/score": scores.mean().item(),
        }
        if task.language is not None:  # a synthetic task: the rollout's true reward too (a preference file has none)
            metrics["objective/true_reward"] = float(task.true_reward(prompts, completions).mean())
        run.logger.log(step, {**metrics, "charts/SPS": run.steps_per_second(step)})

        # 5. Evaluate (true reward, KL to pi_ref, win rate; a preference file: held-out accuracy), checkpoint.
        run.evaluate_if_due(step, policy)
        run.checkpoint_if_due(step)

    return run.finish(step, policy)


if __name__ == "__main__":
    run_algorithm_cli(__name__)
