"""Learning from preferences, the plumbing shared by sft, reward_model, dpo, rlhf_ppo and best_of_n: the text task,
the reference policy a run starts from, the preference pairs, and the evaluation (true reward, KL, win rate).

A run's `env_id` is its text task: a synthetic one (`envs.preferences.SYNTHETIC_TASKS`), whose language and hidden
reward are known. A step is one gradient update (best_of_n: none). The reference policy pi_ref is the policy of a
finished sft run (`sft_run`, a run directory: the pipeline's first stage), or a local Hugging Face causal LM (`model`),
or, for an sft run trained from scratch, the task's language itself. Each evaluation samples one completion for each
of `eval_episodes` prompts (fixed per evaluation index, as an env's episodes are) and logs:
- `eval/episodic_return`: the mean true reward of the completions (what reports and verdicts read);
- `eval/kl`: KL(pi || pi_ref) per sequence, the mean of log pi(y | x) - log pi_ref(y | x) over the sampled y
  (`eval/language_kl` for a policy trained from scratch, whose reference is the task's language);
- `eval/win_rate`: how often the completion's true reward beats that of a completion of pi_ref for the same prompt
  (ties count half).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.common.checkpoint import Checkpointer
from algorithms.common.config import RunConfig
from algorithms.common.language_models import sample, sequence_log_prob, tiny_gpt2, token_log_probs
from envs.preferences import SyntheticLanguage, is_text_task, make_tokenizer, synthetic_language

LOG_EVERY = 100
"""gradient updates between two logs of the losses (and the last update)"""
PREFERENCE_SMOKE = {
    "env_id": "SyntheticSentiment-v0",
    "total_timesteps": 20,
    "eval_every": 10,
    "eval_episodes": 16,
    "batch_size": 8,
    "num_pairs": 64,
}
"""tiny settings for the contract tests: a few updates on the synthetic task"""


@dataclass(frozen=True)
class PreferenceConfig(RunConfig):
    env_id: str = "SyntheticSentiment-v0"
    """the text task: a synthetic task (SyntheticSentiment-v0: a known language and a hidden reward)"""
    total_timesteps: int = 2_000
    """gradient updates"""
    eval_every: int = 500
    """gradient updates between evaluations (0: only at the end)"""
    eval_episodes: int = 256
    """prompts per evaluation, one sampled completion each"""
    sft_run: str | None = None
    """run directory of a finished sft run: its policy is where this run starts and its reference pi_ref"""
    num_pairs: int = 8_192
    """preference pairs drawn from pi_ref and labelled by the task's teacher (reward_model, dpo, sft on chosen)"""
    label_noise: float = 0.0
    """probability that the teacher's label is flipped (a teacher that errs at random)"""
    batch_size: int = 64
    """sequences (or pairs) per gradient update"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_text_task(self.env_id):
            raise ValueError(f"learning from preferences needs a text task (SyntheticSentiment-v0), not {self.env_id!r}")
        if self.env_id.endswith(".jsonl"):
            raise ValueError(f"{self.env_id}: preference files as tasks are not supported yet; use SyntheticSentiment-v0")
        if self.num_pairs < 1 or self.batch_size < 1:
            raise ValueError(f"num_pairs and batch_size must be >= 1, got {self.num_pairs}, {self.batch_size}")
        if not 0 <= self.label_noise <= 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5], got {self.label_noise}")


# --- the task --------------------------------------------------------------------------------------------------------
class TextTask:
    """A synthetic task: prompts of its language, its hidden reward, its teacher and tokenizer. Word i is token i, so
    prompts and completions are tensors of word ids, (N, P) and (N, L)."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        self.language: SyntheticLanguage = synthetic_language(env_id)
        self.tokenizer = make_tokenizer(self.language)
        self.prompt_length, self.completion_length = self.language.prompt_length, self.language.completion_length
        self.vocab_size = len(self.tokenizer)  # the words, <pad> and <eos>
        self.words = self.language.vocab_size  # a policy chooses among the words only (token ids 0 .. words - 1)

    def prompts(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.as_tensor(self.language.sample_prompts(n, rng))

    def true_reward(self, prompts: torch.Tensor, completions: torch.Tensor) -> np.ndarray:
        return self.language.reward(prompts.cpu().numpy(), completions.cpu().numpy())


# --- policies --------------------------------------------------------------------------------------------------------
class ModelPolicy:
    """A causal LM as a policy over fixed-length completions of fixed-length prompts."""

    def __init__(self, model: torch.nn.Module, task: TextTask) -> None:
        self.model, self.task = model, task

    def log_prob(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """log pi(y | x): (N,), differentiable."""
        ids = torch.cat([prompts, completions], 1)
        return sequence_log_prob(self.model, ids, torch.ones_like(ids), prompts.shape[1], self.task.words)

    def log_prob_tokens(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """log pi(y_t | x, y_<t): (N, L)."""
        ids = torch.cat([prompts, completions], 1)
        return token_log_probs(self.model, ids, torch.ones_like(ids), prompts.shape[1], self.task.words)

    def sample(self, prompts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One completion per prompt, drawn from `generator` (None: torch's global one)."""
        mask = torch.ones_like(prompts)
        ids, _ = sample(self.model, prompts, mask, self.task.completion_length, generator, words=self.task.words)
        return ids[:, prompts.shape[1] :]


class LanguagePolicy:
    """The task's language as a policy: the reference of an sft run trained from scratch."""

    def __init__(self, task: TextTask) -> None:
        self.task = task

    def log_prob(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        return self.log_prob_tokens(prompts, completions).sum(1)

    def log_prob_tokens(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        previous = torch.cat([prompts[:, -1:], completions[:, :-1]], 1)
        log_transition = torch.log(torch.as_tensor(self.task.language.transition, dtype=torch.float32, device=prompts.device))
        return log_transition[previous, completions]

    def sample(self, prompts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        return torch.as_tensor(self.task.language.sample_completions(prompts.cpu().numpy(), rng), device=prompts.device)


def new_policy_model(task: TextTask, n_embd: int, n_layer: int, n_head: int) -> torch.nn.Module:
    """A tiny GPT-2 for the task, initialised from torch's global generator."""
    tokenizer, length = task.tokenizer, task.prompt_length + task.completion_length
    return tiny_gpt2(task.vocab_size, length, n_embd, n_layer, n_head, tokenizer.pad_token_id, tokenizer.eos_token_id)


SFT_ARCHITECTURE = ("n_embd", "n_layer", "n_head")
"""the sft Config fields that fix its model's shape"""


def load_sft_policy(run_dir: str, task: TextTask, device: torch.device) -> torch.nn.Module:
    """The final policy of a finished sft run on the same task (its model rebuilt from its config.json, its weights from
    its final checkpoint). ValueError, before any compute, when the directory is not such a run."""
    _, config, saved = _finished_run(run_dir, "sft", "sft_run", task.env_id)
    model = new_policy_model(task, *(config[name] for name in SFT_ARCHITECTURE))
    model.load_state_dict(saved["state"]["policy"])
    return model.to(device)


class RewardModel(torch.nn.Module):
    """r_phi(x, y): a causal LM's body (its `base_model`, the transformer without the unembedding) read at the
    completion's last token through a linear head to one number, as RLHF's reward models are the SFT model with its
    unembedding layer replaced by a scalar head (Ouyang et al. 2022, sec. 3.5; Stiennon et al. 2020, sec. 3.4)."""

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        super().__init__()
        self.body = causal_lm.base_model
        self.head = torch.nn.Linear(causal_lm.config.hidden_size, 1)

    def forward(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of completions (N, L) of prompts (N, P)."""
        ids = torch.cat([prompts, completions], 1)
        hidden = self.body(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state  # (N, P + L, d)
        return self.head(hidden[:, -1]).squeeze(-1)


def _finished_run(run_dir: str, algo: str, option: str, task_id: str) -> tuple[Path, dict, dict]:
    """(path, config, final checkpoint payload) of a finished `algo` run on `task`; ValueError naming `option` else."""
    path = Path(run_dir)
    try:
        spec = json.loads((path / "spec.json").read_text())
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{option} {run_dir}: not a run directory ({type(exc).__name__}: {exc})") from None
    if spec.get("algo") != algo:
        raise ValueError(f"{option} {run_dir} is a run of {spec.get('algo')}, not of {algo}")
    if config.get("env_id") != task_id:
        raise ValueError(f"{option} {run_dir} learned {config.get('env_id')}, not {task_id}")
    if not (path / "DONE").is_file():
        raise ValueError(f"{option} {run_dir} has not finished: run it to the end first")
    saved = Checkpointer(path / "checkpoints", read_only=True).latest()
    if saved is None or saved["state"]["global_step"] != config["total_timesteps"]:
        raise ValueError(f"{option} {run_dir} has no checkpoint at its final step")
    return path, config, saved


RUN_INPUTS = {"sft_run": "sft", "reward_model_run": "reward_model"}
"""the Config fields that name an input run, and the algorithm that run must be"""


def check_run_inputs(cfg: PreferenceConfig, required: tuple[str, ...]) -> None:
    """ValueError, before any compute (the runner calls it before it makes the run's directory), unless each of the
    `required` input fields is given and names a finished run of its algorithm on the same task; an optional input that
    is given is checked too."""
    task_id = cfg.env_id
    for name, algo in RUN_INPUTS.items():
        value = getattr(cfg, name, None)
        if value is None:
            if name in required:
                raise ValueError(f"{name} is needed: the run directory of a finished {algo} run on {task_id}")
            continue
        _finished_run(value, algo, name, task_id)


def load_reward_model(run_dir: str, task: TextTask, device: torch.device) -> RewardModel:
    """The trained reward model of a finished reward_model run on the same task, frozen."""
    _, config, saved = _finished_run(run_dir, "reward_model", "reward_model_run", task.env_id)
    _, sft_config, _ = _finished_run(config["sft_run"], "sft", "its sft_run", task.env_id)
    model = RewardModel(new_policy_model(task, *(sft_config[name] for name in SFT_ARCHITECTURE)))
    model.load_state_dict(saved["state"]["reward_model"])
    return model.to(device).eval().requires_grad_(False)


def reference_policy(cfg: PreferenceConfig, task: TextTask, device: torch.device) -> ModelPolicy | LanguagePolicy:
    """pi_ref: the sft run's policy, frozen; without one, the task's language."""
    if cfg.sft_run is None:
        return LanguagePolicy(task)
    model = load_sft_policy(cfg.sft_run, task, device).eval().requires_grad_(False)
    return ModelPolicy(model, task)


# --- preference pairs ------------------------------------------------------------------------------------------------
@dataclass
class PreferencePairs:
    prompts: torch.Tensor  # (N, P)
    chosen: torch.Tensor  # (N, L)
    rejected: torch.Tensor  # (N, L)

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.prompts[index], self.chosen[index], self.rejected[index]


@torch.no_grad()
def draw_pairs(
    cfg: PreferenceConfig, task: TextTask, reference, seed: int, device: torch.device, count: int | None = None
) -> PreferencePairs:
    """`count` (default `num_pairs`) prompts, two completions of each from pi_ref, labelled by the task's teacher
    (Bradley-Terry on the true reward, flipped with probability `label_noise`), as the DPO paper's pairs are drawn from
    its SFT model. The same (reference, seed) gives the same pairs, so a reward model and a DPO run of one seed learn
    from one dataset."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompts = task.prompts(count or cfg.num_pairs, rng).to(device)
    first, second = reference.sample(prompts, generator), reference.sample(prompts, generator)
    prefer_first = task.language.label(prompts.cpu().numpy(), first.cpu().numpy(), second.cpu().numpy(), rng, cfg.label_noise)
    keep_first = torch.as_tensor(prefer_first, device=device)[:, None]
    return PreferencePairs(prompts, torch.where(keep_first, first, second), torch.where(keep_first, second, first))


# --- evaluation ------------------------------------------------------------------------------------------------------
class TextEvaluation:
    """`RunState`'s evaluator for a text task: `__call__(policy, episodes, seed)` samples one completion per prompt
    and returns the true rewards; `metrics` then holds KL(pi || pi_ref) and the win rate against pi_ref."""

    def __init__(self, task: TextTask, reference, device: torch.device) -> None:
        self.task, self.reference, self.device = task, reference, device
        self.metrics: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, policy: Any, episodes: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        prompts = self.task.prompts(episodes, rng).to(self.device)
        completions = policy.sample(prompts, generator)
        reference_completions = self.reference.sample(prompts, generator)
        rewards = self.task.true_reward(prompts, completions)
        reference_rewards = self.task.true_reward(prompts, reference_completions)
        if hasattr(policy, "log_prob"):
            kl = float((policy.log_prob(prompts, completions) - self.reference.log_prob(prompts, completions)).mean())
        else:  # a policy whose probabilities are not at hand gives its KL in closed form (best_of_n)
            kl = policy.kl
        wins = (rewards > reference_rewards) + 0.5 * (rewards == reference_rewards)
        # A policy learned from scratch (sft) is measured against the language it learns: its own KL to pi_ref is 0.
        kl_name = "eval/language_kl" if isinstance(self.reference, LanguagePolicy) else "eval/kl"
        self.metrics = {kl_name: kl, "eval/win_rate": float(wins.mean())}
        return rewards
