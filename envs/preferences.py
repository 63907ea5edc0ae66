"""A synthetic controlled-generation task for learning from preferences, small enough for a CPU.

The DPO paper's controlled sentiment generation (Rafailov et al. 2023, section 6.1) in miniature: its prompts are
prefixes of IMDb reviews, its policy writes a continuation, and a sentiment classifier is the ground-truth reward. Here
the "language" is a known first-order Markov chain over `vocab_size` word tokens (rows of its transition matrix drawn
from a Dirichlet, so some words follow others far more often), a prompt is `prompt_length` words of it, a completion
`completion_length` more, and the hidden "sentiment" is a reward on the completion that the policy never sees:

    r(x, y) = (1 / sqrt(L)) * sum_t [ w(y_t) + bigram_weight * B(y_{t-1}, y_t) ],     y_0 = the prompt's last word,

with word scores w and word-pair scores B drawn from N(0, 1). Because the language and the reward are known, what the
DPO paper estimates can be computed here exactly:
- `log_prob`: log pi_lang(y | x), the language's own probability of a completion;
- `optimal_policy(beta)`: the KL-regularised optimum pi*(y | x) proportional to pi_lang(y | x) exp(r(x, y) / beta) (the
  closed form of the DPO paper's eq. 4), by backward dynamic programming over the chain, as a time-dependent chain;
- `policy_reward_and_kl`: its expected reward and its KL(pi* || pi_lang), which trace the best reward-KL frontier any
  method can reach with the language as reference.

Preference pairs are two completions of one prompt, labelled by the Bradley-Terry model of the true reward,
P(y1 preferred) = sigmoid(r(x, y1) - r(x, y2)), then flipped with probability `label_noise` (a teacher that errs at
random, as B-Pref's "mistake" teacher). Words are written `w0 w1 ...` so pairs can be stored as text in the
prompt/chosen/rejected JSONL that TRL reads, and a Hugging Face tokenizer of the task (`make_tokenizer`) maps them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PAD, EOS = "<pad>", "<eos>"
"""the tokenizer's special tokens, after the words (ids vocab_size and vocab_size + 1)"""
SYNTHETIC_TASKS = {
    "SyntheticSentiment-v0": {"vocab_size": 16, "prompt_length": 4, "completion_length": 8, "seed": 0},
}
"""the registered synthetic tasks (the task id of a preference run, its `env_id`) and their language's parameters"""


def is_text_task(env_id: str) -> bool:
    """A task of the preference algorithms: a synthetic task's id, or the path of a preference file (.jsonl)."""
    return env_id in SYNTHETIC_TASKS or env_id.endswith(".jsonl")


def synthetic_language(env_id: str) -> SyntheticLanguage:
    """The language of a registered synthetic task; ValueError naming the registered ones otherwise."""
    if env_id not in SYNTHETIC_TASKS:
        raise ValueError(f"unknown synthetic task {env_id!r}: the registered ones are {', '.join(SYNTHETIC_TASKS)}")
    return SyntheticLanguage(**SYNTHETIC_TASKS[env_id])


def read_preferences(path: str | Path) -> list[dict[str, str]]:
    """Preference pairs from a JSON Lines file in the prompt/chosen/rejected format TRL's trainers read: one object per
    line with those three strings (chosen and rejected are completions of prompt), returned with its line number under
    "line". A line that is not such an object is refused with its number, before anything is trained; blank lines are
    skipped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"preference file {path} does not exist")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: a JSON object with prompt, chosen and rejected is expected")
            bad = [key for key in ("prompt", "chosen", "rejected") if not isinstance(row.get(key), str)]
            if bad:
                raise ValueError(f"{path}, line {number}: {', '.join(bad)} missing or not a string")
            if not row["chosen"].strip() or not row["rejected"].strip():
                raise ValueError(f"{path}, line {number}: an empty completion")
            pairs.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"], "line": number})
    if not pairs:
        raise ValueError(f"{path} holds no preference pairs")
    return pairs


def write_preferences(path: str | Path, pairs: list[dict[str, str]]) -> None:
    """The inverse of `read_preferences`."""
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps({key: pair[key] for key in ("prompt", "chosen", "rejected")}) + "\n")


def _log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=axis, keepdims=True))


class SyntheticLanguage:
    """The language, its hidden reward and its preference teacher, all fixed by `seed`."""

    def __init__(
        self,
        vocab_size: int = 16,
        prompt_length: int = 4,
        completion_length: int = 8,
        seed: int = 0,
        concentration: float = 0.5,
        bigram_weight: float = 0.5,
    ) -> None:
        if vocab_size < 2 or prompt_length < 1 or completion_length < 1:
            raise ValueError(
                f"vocab_size must be >= 2 and prompt_length, completion_length >= 1, got {vocab_size}, {prompt_length}, "
                f"{completion_length}"
            )
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        self.vocab_size, self.prompt_length, self.completion_length = vocab_size, prompt_length, completion_length
        self.seed, self.concentration, self.bigram_weight = seed, concentration, bigram_weight
        rng = np.random.default_rng(seed)
        self.initial = rng.dirichlet(np.full(vocab_size, concentration))  # (V,) the first word of a prompt
        self.transition = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)  # (V, V), rows sum to 1
        self.word_score = rng.standard_normal(vocab_size)  # w: (V,)
        self.pair_score = rng.standard_normal((vocab_size, vocab_size))  # B: (V, V), [previous word, word]

    # --- the reward --------------------------------------------------------------------------------------------------
    def step_reward(self) -> np.ndarray:
        """r_t(s, a): the reward of word a after word s, (V, V); a completion's reward is the sum over its words."""
        return (self.word_score[None, :] + self.bigram_weight * self.pair_score) / np.sqrt(self.completion_length)

    def reward(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """r(x, y) for prompts (N, P) and completions (N, L) of word ids: (N,)."""
        previous = np.concatenate([prompts[:, -1:], completions[:, :-1]], axis=1)  # (N, L)
        return self.step_reward()[previous, completions].sum(axis=1)

    # --- the language ------------------------------------------------------------------------------------------------
    def log_prob(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """log pi_lang(y | x): (N,)."""
        previous = np.concatenate([prompts[:, -1:], completions[:, :-1]], axis=1)
        with np.errstate(divide="ignore"):
            return np.log(self.transition)[previous, completions].sum(axis=1)

    def _walk(self, first: np.ndarray, steps: int, rng: np.random.Generator, chain: np.ndarray | None = None) -> np.ndarray:
        """`steps` words after the words `first` (N,), by `chain` (V, V) or a time-dependent (steps, V, V)."""
        words = np.empty((len(first), steps), dtype=np.int64)
        previous = first
        for t in range(steps):
            rows = (self.transition if chain is None else chain if chain.ndim == 2 else chain[t])[previous]  # (N, V)
            cumulative = rows.cumsum(axis=1)
            draws = rng.random((len(first), 1)) * cumulative[:, -1:]
            words[:, t] = np.minimum((cumulative < draws).sum(axis=1), self.vocab_size - 1)
            previous = words[:, t]
        return words

    def sample_prompts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n prompts (n, P): the first word from `initial`, the rest by the chain."""
        first = rng.choice(self.vocab_size, size=n, p=self.initial)
        return np.concatenate([first[:, None], self._walk(first, self.prompt_length - 1, rng)], axis=1)

    def sample_completions(
        self, prompts: np.ndarray, rng: np.random.Generator, policy: np.ndarray | None = None
    ) -> np.ndarray:
        """One completion (N, L) per prompt, from the language or from a chain `policy` ((L, V, V), `optimal_policy`)."""
        return self._walk(prompts[:, -1], self.completion_length, rng, policy)

    def last_word_distribution(self) -> np.ndarray:
        """P(a prompt ends in word s), (V,): what every exact expectation over prompts averages over."""
        p = self.initial
        for _ in range(self.prompt_length - 1):
            p = p @ self.transition
        return p

    # --- the exact KL-regularised optimum ------------------------------------------------------------------------------
    def optimal_policy(self, beta: float) -> np.ndarray:
        """pi*(y | x) proportional to pi_lang(y | x) exp(r(x, y) / beta), as a chain whose step t draws y_t given y_{t-1}:
        (L, V, V). Backward: V_L(s) = 0, Q_t(s, a) = log T(s, a) + r_t(s, a) / beta + V_{t+1}(a), V_t(s) = logsumexp_a
        Q_t(s, a), pi_t(a | s) = exp(Q_t(s, a) - V_t(s)); the product of the pi_t is the normalised optimum."""
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        with np.errstate(divide="ignore"):
            log_transition = np.log(self.transition)
        step = self.step_reward() / beta
        value = np.zeros(self.vocab_size)
        policy = np.empty((self.completion_length, self.vocab_size, self.vocab_size))
        for t in reversed(range(self.completion_length)):
            q = log_transition + step + value[None, :]  # (V, V)
            policy[t] = np.exp(_log_softmax(q, axis=1))
            top = q.max(axis=1, keepdims=True)
            value = (top + np.log(np.exp(q - top).sum(axis=1, keepdims=True)))[:, 0]
        return policy

    def policy_reward_and_kl(self, policy: np.ndarray) -> tuple[float, float]:
        """E[r(x, y)] and E[KL(pi(. | x) || pi_lang(. | x))] of a chain policy (L, V, V), exactly, over prompts from the
        language: a forward pass over the distribution of the previous word."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.where(policy > 0, np.log(policy) - np.log(self.transition)[None], 0.0)  # (L, V, V)
        state = self.last_word_distribution()
        reward, kl, step_reward = 0.0, 0.0, self.step_reward()
        for t in range(self.completion_length):
            joint = state[:, None] * policy[t]  # (V, V): P(y_{t-1} = s, y_t = a)
            reward += float((joint * step_reward).sum())
            kl += float((joint * log_ratio[t]).sum())
            state = joint.sum(axis=0)
        return reward, kl

    # --- the teacher -------------------------------------------------------------------------------------------------
    def label(
        self,
        prompts: np.ndarray,
        first: np.ndarray,
        second: np.ndarray,
        rng: np.random.Generator,
        label_noise: float = 0.0,
    ) -> np.ndarray:
        """True where `first` is preferred: Bradley-Terry on the true reward, P = sigmoid(r1 - r2), then each label
        flipped with probability `label_noise`. (N,) bool."""
        if not 0 <= label_noise <= 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5], got {label_noise}")
        margin = self.reward(prompts, first) - self.reward(prompts, second)
        prefer_first = rng.random(len(margin)) < 1 / (1 + np.exp(-margin))
        return prefer_first ^ (rng.random(len(margin)) < label_noise)

    # --- text --------------------------------------------------------------------------------------------------------
    def words(self) -> list[str]:
        return [f"w{i}" for i in range(self.vocab_size)]

    def to_text(self, word_ids: np.ndarray) -> list[str]:
        """Rows of word ids (N, T) as text, e.g. 'w3 w0 w12'."""
        return [" ".join(f"w{int(i)}" for i in row) for row in word_ids]

    def from_text(self, texts: list[str]) -> np.ndarray:
        """Texts of exactly equal length back to word ids (N, T); a word outside the language raises ValueError."""
        rows = []
        for text in texts:
            try:
                row = [int(word[1:]) for word in text.split() if word[0] == "w"]
            except (ValueError, IndexError):
                row = []
            if len(row) != len(text.split()) or any(not 0 <= i < self.vocab_size for i in row):
                raise ValueError(f"{text!r} is not words w0..w{self.vocab_size - 1} of this language")
            rows.append(row)
        if len({len(row) for row in rows}) > 1:
            raise ValueError("texts of different lengths")
        return np.array(rows, dtype=np.int64).reshape(len(rows), -1)


def make_tokenizer(language: SyntheticLanguage):
    """A Hugging Face fast tokenizer of the language: one id per word (w_i -> i), then <pad> and <eos>; splits on
    whitespace. What `save_pretrained` writes loads back with AutoTokenizer, as a real model's tokenizer does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(language.words())}
    vocab[PAD], vocab[EOS] = language.vocab_size, language.vocab_size + 1
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, padding_side="left")
