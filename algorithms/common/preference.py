"""Learning from preferences, the plumbing shared by sft, reward_model, dpo, rlhf_ppo and best_of_n: the text task,
the model a run starts from and its reference policy, the preference pairs, and the evaluation.

A run's `env_id` is its text task, one of two kinds:
- a synthetic task (`envs.preferences.SYNTHETIC_TASKS`), whose language and hidden reward are known. Its pairs are
  drawn from pi_ref and labelled by its teacher, or read from `preferences`, a JSONL file written in its words;
- a preference file (`.jsonl`, TRL's prompt/chosen/rejected): real pairs, with no true reward. Every tenth pair (the
  10th, 20th, ...) is held out for evaluation, the rest are learned from; the tokenizer is `model`'s.
A step is one gradient update (best_of_n: none). A run starts from the final policy of a finished sft run (`sft_run`,
the pipeline's first stage), or from a local Hugging Face causal LM (`model`: a directory with its config, weights and
tokenizer), or, for an sft run on a synthetic task, from a fresh tiny GPT-2. Its reference pi_ref is where it starts;
an sft run from scratch has the task's language as reference.

Token tensors: prompts (N, P) padded on the left, completions (N, L) on the right, with PAD_ID where there is no token,
so every completion starts at column P and a mask is `ids >= 0`. A synthetic task's tensors are never padded.

Each evaluation logs, on a synthetic task, with one sampled completion for each of `eval_episodes` prompts (fixed per
evaluation index, as an env's episodes are):
- `eval/episodic_return`: the mean true reward of the completions (what reports and verdicts read);
- `eval/kl`: KL(pi || pi_ref) per sequence, the mean of log pi(y | x) - log pi_ref(y | x) over the sampled y
  (`eval/language_kl` for a policy trained from scratch, whose reference is the task's language);
- `eval/win_rate`: how often the completion's true reward beats that of a completion of pi_ref for the same prompt
  (ties count half).
On a preference file, with no true reward, `eval/episodic_return` is the held-out preference accuracy: how often the
policy's implicit reward log pi(y | x) - log pi_ref(y | x) ranks the chosen completion above the rejected one (ties
count half; pi_ref itself scores 0.5), over up to `eval_episodes` held-out pairs; `eval/kl` is measured on completions
sampled for their prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.common.checkpoint import Checkpointer, checkpoint_file
from algorithms.common.config import RunConfig
from algorithms.common.language_models import (
    load_causal_lm,
    load_tokenizer,
    max_positions,
    positions,
    sample,
    tiny_gpt2,
    token_log_probs,
)
from envs.preferences import SYNTHETIC_TASKS, is_text_task, make_tokenizer, read_preferences, synthetic_language

LOG_EVERY = 100
"""gradient updates between two logs of the losses (and the last update)"""
PAD_ID = -1
"""no token: the padding of prompts (on the left) and completions (on the right) in a task's tensors"""
HELD_OUT_EVERY = 10
"""a preference file's pairs 10, 20, 30, ... are held out for evaluation"""
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
    """the text task: a synthetic task (SyntheticSentiment-v0: a known language and a hidden reward), or a preference
    file (path.jsonl, prompt/chosen/rejected per line: real pairs, every tenth held out for evaluation)"""
    total_timesteps: int = 2_000
    """gradient updates"""
    eval_every: int = 500
    """gradient updates between evaluations (0: only at the end)"""
    eval_episodes: int = 256
    """prompts per evaluation, one sampled completion each (a preference file: held-out pairs, at most)"""
    sft_run: str | None = None
    """run directory of a finished sft run: its policy is where this run starts and its reference pi_ref"""
    model: str | None = None
    """a local Hugging Face causal LM (the directory save_pretrained writes, with its tokenizer), in place of sft_run:
    where this run starts and its reference pi_ref"""
    preferences: str | None = None
    """a synthetic task's pairs from this JSONL file (prompt/chosen/rejected, in the task's words) instead of drawn
    from pi_ref and labelled by the task's teacher"""
    num_pairs: int = 8_192
    """preference pairs drawn from pi_ref and labelled by the task's teacher (reward_model, dpo, sft on chosen)"""
    label_noise: float = 0.0
    """probability that the teacher's label is flipped (a teacher that errs at random)"""
    max_length: int = 256
    """a preference file's pair: prompt + completion tokens at most, and at most the model's positions (the prompt loses
    its start, then the completion its end)"""
    batch_size: int = 64
    """sequences (or pairs) per gradient update"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_text_task(self.env_id):
            names = ", ".join(SYNTHETIC_TASKS)
            raise ValueError(f"learning from preferences needs a text task ({names} or a .jsonl file), not {self.env_id!r}")
        if self.sft_run is not None and self.model is not None:
            raise ValueError("give sft_run or model, not both: each is where the run starts and its reference")
        if self.env_id.endswith(".jsonl"):
            if self.preferences is not None:
                raise ValueError(f"the task {self.env_id} is a preference file: it learns from its own pairs (no preferences)")
            if self.sft_run is None and self.model is None:
                raise ValueError(
                    f"{self.env_id}: a preference file's task needs a model with its tokenizer (model or sft_run)"
                )
        if self.num_pairs < 1 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError(
                f"num_pairs, batch_size must be >= 1 and max_length >= 2, got {self.num_pairs}, {self.batch_size}"
            )
        if not 0 <= self.label_noise <= 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5], got {self.label_noise}")


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

    def to(self, device: torch.device) -> PreferencePairs:
        return PreferencePairs(self.prompts.to(device), self.chosen.to(device), self.rejected.to(device))


def padded(rows: list[list[int]], left: bool = False, width: int | None = None) -> torch.Tensor:
    """Token lists as one tensor (N, width: the longest by default), PAD_ID on the right (or the left)."""
    width = width or max(len(row) for row in rows)
    pads = [[PAD_ID] * (width - len(row)) for row in rows]
    return torch.tensor([pad + row if left else row + pad for row, pad in zip(rows, pads)], dtype=torch.long)


def tokenize_pairs(rows: list[dict], tokenizer, max_length: int, path: str) -> PreferencePairs:
    """Text pairs as tokens: each completion ends with the tokenizer's EOS (as TRL's trainers append it); a pair longer
    than `max_length` keeps the prompt's last tokens (at most half, unless the completions leave more) and the
    completions' first. A prompt with no tokens is refused by its line."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    prompts, chosen, rejected = [], [], []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        if not prompt:
            raise ValueError(f"{path}, line {row['line']}: the prompt has no tokens (the first completion token needs one)")
        completions = [tokenizer(row[key], add_special_tokens=False)["input_ids"] + eos for key in ("chosen", "rejected")]
        longest = max(map(len, completions))
        if len(prompt) + longest > max_length:
            prompt = prompt[-max(max_length // 2, max_length - longest) :]
            completions = [completion[: max_length - len(prompt)] for completion in completions]
        prompts.append(prompt)
        chosen.append(completions[0])
        rejected.append(completions[1])
    width = max(len(completion) for completion in chosen + rejected)
    return PreferencePairs(padded(prompts, left=True), padded(chosen, width=width), padded(rejected, width=width))


def synthetic_pairs(language, rows: list[dict], path: str) -> PreferencePairs:
    """A synthetic task's pairs from file rows in its words; a pair of other words or lengths is refused by line."""
    prompts, chosen, rejected = [], [], []
    for row in rows:
        try:
            ids = [language.from_text([row[key]]) for key in ("prompt", "chosen", "rejected")]
        except ValueError as exc:
            raise ValueError(f"{path}, line {row['line']}: {exc}") from None
        lengths = (ids[0].shape[1], ids[1].shape[1], ids[2].shape[1])
        if lengths != (language.prompt_length, language.completion_length, language.completion_length):
            raise ValueError(
                f"{path}, line {row['line']}: prompt, chosen, rejected have {lengths} words, where the task's have "
                f"{language.prompt_length}, {language.completion_length}, {language.completion_length}"
            )
        prompts.append(ids[0])
        chosen.append(ids[1])
        rejected.append(ids[2])
    return PreferencePairs(*(torch.as_tensor(np.concatenate(part)) for part in (prompts, chosen, rejected)))


# --- the task --------------------------------------------------------------------------------------------------------
class TextTask:
    """The run's task (see the module docstring): its tokenizer, prompts, pairs read from a file, and, for a synthetic
    task, its language, hidden reward and teacher. `words` limits a policy to the first `words` token ids (a synthetic
    task's words; None: the whole vocabulary)."""

    def __init__(self, cfg: PreferenceConfig) -> None:
        self.env_id = cfg.env_id
        self.model_path = model_path(cfg)
        self.file_pairs: PreferencePairs | None = None  # pairs read from a file, to learn from
        self.held_out: PreferencePairs | None = None  # a preference file's pairs for evaluation
        if self.env_id.endswith(".jsonl"):
            self.language = None
            self.tokenizer = load_tokenizer(self.model_path)
            rows = read_preferences(self.env_id)
            if len(rows) < HELD_OUT_EVERY:
                raise ValueError(f"{self.env_id} has {len(rows)} pairs: at least {HELD_OUT_EVERY} (one is held out)")
            max_length = min(cfg.max_length, max_positions(self.model_path) or cfg.max_length)  # the model's positions
            pairs = tokenize_pairs(rows, self.tokenizer, max_length, self.env_id)
            held_out = torch.arange(len(rows)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
            self.file_pairs = PreferencePairs(pairs.prompts[~held_out], pairs.chosen[~held_out], pairs.rejected[~held_out])
            self.held_out = PreferencePairs(pairs.prompts[held_out], pairs.chosen[held_out], pairs.rejected[held_out])
            # Sampled completions as long as the longest, within the model's positions after the longest prompt.
            self.prompt_length = pairs.prompts.shape[1]
            self.completion_length = min(pairs.chosen.shape[1], max_length - self.prompt_length)
            self.words = None
        else:
            self.language = synthetic_language(self.env_id)
            self.tokenizer = make_tokenizer(self.language)
            if self.model_path is not None:
                check_task_tokenizer(load_tokenizer(self.model_path), self.language, self.model_path)
            if cfg.preferences is not None:
                self.file_pairs = synthetic_pairs(self.language, read_preferences(cfg.preferences), cfg.preferences)
            self.prompt_length, self.completion_length = self.language.prompt_length, self.language.completion_length
            self.words = self.language.vocab_size
        self.vocab_size = len(self.tokenizer)

    def prompts(self, n: int, rng: np.random.Generator, held_out: bool = False) -> torch.Tensor:
        """n prompts (n, P): the language's, or a preference file's (its learning or its held-out pairs'), drawn with
        replacement."""
        if self.language is not None:
            return torch.as_tensor(self.language.sample_prompts(n, rng))
        pool = (self.held_out if held_out else self.file_pairs).prompts
        return pool[torch.as_tensor(rng.integers(len(pool), size=n))]

    def true_reward(self, prompts: torch.Tensor, completions: torch.Tensor) -> np.ndarray:
        if self.language is None:
            raise ValueError(f"{self.env_id} is a preference file: it has no true reward")
        return self.language.reward(prompts.cpu().numpy(), completions.cpu().numpy())


def check_task_tokenizer(tokenizer, language, path: str) -> None:
    """ValueError unless `tokenizer` maps the synthetic language's words w0, w1, ... to token ids 0, 1, ..."""
    if tokenizer.convert_tokens_to_ids(language.words()) != list(range(language.vocab_size)):
        raise ValueError(f"model {path}: its tokenizer does not write the synthetic task's words w0.. as token ids 0..")


def model_path(cfg: PreferenceConfig) -> str | None:
    """The local Hugging Face model behind a run: `model`, or the one its sft_run (or that run's sft_run, ...) started
    from; None for a tiny GPT-2 trained here."""
    return _first_stage({"model": cfg.model, "sft_run": cfg.sft_run}).get("model")


def _first_stage(config: dict[str, Any]) -> dict[str, Any]:
    """The config of the run a chain of sft runs began with (Preferred-FT from sft, ...): the first that names a
    `model`, or has no sft_run. Its model (or its tiny GPT-2's shape) is every later stage's."""
    while config.get("model") is None and config.get("sft_run") is not None:
        config = _read_config(config["sft_run"], "sft_run")
    return config


def _read_config(run_dir: str, option: str) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{option} {run_dir}: not a run directory ({type(exc).__name__}: {exc})") from None


def model_inputs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids with PAD_ID replaced by a real id, mask (B, T): 1 on tokens): what a model reads."""
    mask = (ids != PAD_ID).long()
    return ids.clamp(min=0), mask


# --- policies --------------------------------------------------------------------------------------------------------
class ModelPolicy:
    """A causal LM as a policy over completions of the task's prompts."""

    def __init__(self, model: torch.nn.Module, task: TextTask) -> None:
        self.model, self.task = model, task

    def log_prob(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """log pi(y | x): (N,), differentiable."""
        return self.log_prob_tokens(prompts, completions).sum(1)

    def log_prob_tokens(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        """log pi(y_t | x, y_<t): (N, L), 0 on padding."""
        ids, mask = model_inputs(torch.cat([prompts, completions], 1))
        return token_log_probs(self.model, ids, mask, prompts.shape[1], self.task.words)

    def sample(self, prompts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One completion of `completion_length` tokens per prompt, drawn from `generator` (None: torch's global one).
        An EOS does not end it early, so completions have one length."""
        ids, mask = model_inputs(prompts)
        ids, _ = sample(self.model, ids, mask, self.task.completion_length, generator, words=self.task.words)
        return ids[:, prompts.shape[1] :]


class LanguagePolicy:
    """A synthetic task's language as a policy: the reference of an sft run trained from scratch."""

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
    """A tiny GPT-2 for a synthetic task, initialised from torch's global generator."""
    tokenizer, length = task.tokenizer, task.prompt_length + task.completion_length
    return tiny_gpt2(task.vocab_size, length, n_embd, n_layer, n_head, tokenizer.pad_token_id, tokenizer.eos_token_id)


SFT_ARCHITECTURE = ("n_embd", "n_layer", "n_head")
"""the sft Config fields that fix the shape of a model trained from scratch"""


def load_sft_policy(run_dir: str, task: TextTask, device: torch.device) -> torch.nn.Module:
    """The final policy of a finished sft run on the same task: the model it started from (a local Hugging Face model,
    or a tiny GPT-2 of the first sft run's shape) with the run's final weights. ValueError, before any compute, when the
    directory is not such a run."""
    _, config, saved = _finished_run(run_dir, "sft", "sft_run", task.env_id)
    first = _first_stage(config)
    if first.get("model") is not None:
        model, _ = load_causal_lm(first["model"])
    else:
        model = new_policy_model(task, *(first[name] for name in SFT_ARCHITECTURE))
    model.load_state_dict(saved["state"]["policy"])
    return model.to(device)


def start_model(cfg: PreferenceConfig, task: TextTask, device: torch.device) -> torch.nn.Module | None:
    """Where a run starts: sft_run's final policy, or `model`'s weights; None when neither is given."""
    return _model_of(cfg.sft_run, cfg.model, task, device)


def _model_of(sft_run: str | None, model: str | None, task: TextTask, device: torch.device) -> torch.nn.Module | None:
    if sft_run is not None:
        return load_sft_policy(sft_run, task, device)
    if model is not None:
        return load_causal_lm(model)[0].to(device)
    return None


def reference_policy(cfg: PreferenceConfig, task: TextTask, device: torch.device) -> ModelPolicy | LanguagePolicy:
    """pi_ref: where the run starts (sft_run or model), frozen; without either, the synthetic task's language."""
    model = start_model(cfg, task, device)
    if model is None:
        return LanguagePolicy(task)
    return ModelPolicy(model.eval().requires_grad_(False), task)


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
        ids, mask = model_inputs(torch.cat([prompts, completions], 1))
        hidden = self.body(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).last_hidden_state  # (N, T, d)
        last = mask.cumsum(1).argmax(1)  # the column of each sequence's last token (completions are padded on the right)
        return self.head(hidden[torch.arange(len(ids), device=ids.device), last]).squeeze(-1)


def _finished_run(run_dir: str, algo: str, option: str, task_id: str, load: bool = True) -> tuple[Path, dict, dict | None]:
    """(path, config, final checkpoint payload) of a finished `algo` run on `task`; ValueError naming `option` else.
    `load=False` (the checks before a run) only looks for the final checkpoint's file: a real model's is large."""
    path = Path(run_dir)
    config = _read_config(run_dir, option)
    try:
        spec = json.loads((path / "spec.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{option} {run_dir}: not a run directory ({type(exc).__name__}: {exc})") from None
    if spec.get("algo") != algo:
        raise ValueError(f"{option} {run_dir} is a run of {spec.get('algo')}, not of {algo}")
    if config.get("env_id") != task_id:
        raise ValueError(f"{option} {run_dir} learned {config.get('env_id')}, not {task_id}")
    if not (path / "DONE").is_file():
        raise ValueError(f"{option} {run_dir} has not finished: run it to the end first")
    missing = ValueError(f"{option} {run_dir} has no checkpoint at its final step")
    if not checkpoint_file(path / "checkpoints", config["total_timesteps"]).is_file():
        raise missing
    if not load:
        return path, config, None
    saved = Checkpointer(path / "checkpoints", read_only=True).latest()
    if saved is None or saved["state"]["global_step"] != config["total_timesteps"]:
        raise missing
    return path, config, saved


RUN_INPUTS = {"sft_run": "sft", "reward_model_run": "reward_model"}
"""the Config fields that name an input run, and the algorithm that run must be"""


def check_run_inputs(cfg: PreferenceConfig, required: tuple[str, ...]) -> TextTask:
    """ValueError, before any compute (the runner calls it before it makes the run's directory), unless each of the
    `required` input fields is given and names a finished run of its algorithm on the same task; an optional input that
    is given is checked too, and so are `model` (a Hugging Face model directory) and the preference file (line by
    line). "sft_run" in `required` is met by `model` too. Returns the task it built, which train goes on with."""
    task_id = cfg.env_id
    for name, algo in RUN_INPUTS.items():
        value = getattr(cfg, name, None)
        if value is None:
            if name in required and not (name == "sft_run" and cfg.model is not None):
                alternative = " (or model: a local Hugging Face model)" if name == "sft_run" else ""
                raise ValueError(f"{name} is needed: the run directory of a finished {algo} run on {task_id}{alternative}")
            continue
        _finished_run(value, algo, name, task_id, load=False)
    if cfg.model is not None and not (Path(cfg.model) / "config.json").is_file():
        raise ValueError(f"model {cfg.model} is not a Hugging Face model directory (no config.json in it)")
    return TextTask(cfg)  # the tokenizer, and every pair of a preference file: a bad line is refused by its number


def load_reward_model(run_dir: str, task: TextTask, device: torch.device) -> RewardModel:
    """The trained reward model of a finished reward_model run on the same task, frozen."""
    _, config, saved = _finished_run(run_dir, "reward_model", "reward_model_run", task.env_id)
    model = RewardModel(_model_of(config.get("sft_run"), config.get("model"), task, device))
    model.load_state_dict(saved["state"]["reward_model"])
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def draw_pairs(
    cfg: PreferenceConfig, task: TextTask, reference, seed: int, device: torch.device, count: int | None = None
) -> PreferencePairs:
    """`count` (default `num_pairs`) prompts, two completions of each from pi_ref, labelled by the synthetic task's
    teacher (Bradley-Terry on the true reward, flipped with probability `label_noise`), as the DPO paper's pairs are
    drawn from its SFT model. The same (reference, seed) gives the same pairs, so a reward model and a DPO run of one
    seed learn from one dataset."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    prompts = task.prompts(count or cfg.num_pairs, rng).to(device)
    first, second = reference.sample(prompts, generator), reference.sample(prompts, generator)
    prefer_first = task.language.label(prompts.cpu().numpy(), first.cpu().numpy(), second.cpu().numpy(), rng, cfg.label_noise)
    keep_first = torch.as_tensor(prefer_first, device=device)[:, None]
    return PreferencePairs(prompts, torch.where(keep_first, first, second), torch.where(keep_first, second, first))


def training_pairs(cfg: PreferenceConfig, task: TextTask, reference, device: torch.device) -> PreferencePairs:
    """The pairs a run learns from: a file's (the task's, or `preferences`), else `num_pairs` drawn with the run's seed."""
    if task.file_pairs is not None:
        return task.file_pairs.to(device)
    return draw_pairs(cfg, task, reference, cfg.seed, device)


# --- evaluation ------------------------------------------------------------------------------------------------------
class TextEvaluation:
    """`RunState`'s evaluator for a text task: `__call__(policy, episodes, seed)` returns the episodes' scores (see the
    module docstring); `metrics` then holds KL(pi || pi_ref) and, on a synthetic task, the win rate against pi_ref."""

    def __init__(self, task: TextTask, reference, device: torch.device) -> None:
        self.task, self.reference, self.device = task, reference, device
        self.metrics: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, policy: Any, episodes: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        prompts = self.task.prompts(episodes, rng, held_out=True).to(self.device)
        completions = policy.sample(prompts, generator)
        if hasattr(policy, "log_prob"):
            kl = float((policy.log_prob(prompts, completions) - self.reference.log_prob(prompts, completions)).mean())
        else:  # a policy whose probabilities are not at hand gives its KL in closed form (best_of_n)
            kl = policy.kl
        # A policy learned from scratch (sft) is measured against the language it learns: its own KL to pi_ref is 0.
        kl_name = "eval/language_kl" if isinstance(self.reference, LanguagePolicy) else "eval/kl"
        if self.task.language is None:
            self.metrics = {kl_name: kl}
            return self.held_out_accuracy(policy, episodes)
        reference_completions = self.reference.sample(prompts, generator)
        rewards = self.task.true_reward(prompts, completions)
        reference_rewards = self.task.true_reward(prompts, reference_completions)
        wins = (rewards > reference_rewards) + 0.5 * (rewards == reference_rewards)
        self.metrics = {kl_name: kl, "eval/win_rate": float(wins.mean())}
        return rewards

    def held_out_accuracy(self, policy: ModelPolicy, episodes: int) -> np.ndarray:
        """1 where the implicit reward log pi - log pi_ref ranks the held-out chosen completion first, 0.5 on a tie, 0
        else: (min(episodes, held-out pairs),)."""
        pairs = self.task.held_out
        prompts, chosen, rejected = (part[:episodes].to(self.device) for part in (pairs.prompts, pairs.chosen, pairs.rejected))
        ratio_chosen = policy.log_prob(prompts, chosen) - self.reference.log_prob(prompts, chosen)
        ratio_rejected = policy.log_prob(prompts, rejected) - self.reference.log_prob(prompts, rejected)
        return ranks_first(ratio_chosen, ratio_rejected)


def ranks_first(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> np.ndarray:
    """Per held-out pair, whether a score ranks the chosen completion first: 1, 0.5 on a tie, 0 else. (N,)"""
    return ((chosen_scores > rejected_scores).float() + 0.5 * (chosen_scores == rejected_scores).float()).cpu().numpy()
