"""Causal language models as policies, for learning from preferences (sft, reward_model, dpo, rlhf_ppo, best_of_n).

A policy is a Hugging Face causal LM: a tiny GPT-2 built from a config and trained from scratch on the task's language
(`tiny_gpt2`), or any local model directory (`load_causal_lm`). Sequences are prompt then completion, prompts padded
on the left so every completion starts at the same column (B, P + L); masks are 1 on real tokens. Positions count
real tokens only, so a left-padded prompt is read as an unpadded one. `words` limits a policy's choices to the first
`words` token ids (a synthetic task's words, not its <pad> and <eos>): logits past them are dropped before the softmax.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F


def tiny_gpt2(
    vocab_size: int,
    n_positions: int,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
):
    """A GPT-2 of the given size with freshly initialised weights (from torch's global generator)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,  # no dropout: the runs are deterministic per seed, and these models are far from overfitting
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=pad_token_id,
        bos_token_id=eos_token_id,  # GPT-2's convention: one <|endoftext|> token begins and ends a text
        eos_token_id=eos_token_id,
    )
    return GPT2LMHeadModel(config)


def load_causal_lm(path: str | Path):
    """(model, tokenizer) from a local Hugging Face directory (`save_pretrained`'s); nothing is downloaded."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # its "Loading weights" bar, at every load, would break into the run's progress line
    tokenizer = load_tokenizer(path)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True), tokenizer


def max_positions(path: str | Path) -> int | None:
    """The longest sequence a local Hugging Face model's position embeddings take (None: its config does not say)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def load_tokenizer(path: str | Path):
    """The tokenizer of a local Hugging Face model directory; ValueError when it is not one."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a Hugging Face model directory (no config.json in it)")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only: (B, T) -> (B, T), 0 on the left padding."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def token_log_probs(model, ids: torch.Tensor, mask: torch.Tensor, first: int, words: int | None = None) -> torch.Tensor:
    """log pi(ids[:, t] | ids[:, <t]) for the columns t >= `first` (the completion's): (B, T - first), 0 where masked."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits  # (B, T, vocab)
    predicted = logits[:, first - 1 : -1, :words].float()  # the logits at column t - 1 predict the token at t
    chosen = torch.gather(F.log_softmax(predicted, dim=-1), 2, ids[:, first:, None])[..., 0]
    return chosen * mask[:, first:]


def sequence_log_prob(model, ids: torch.Tensor, mask: torch.Tensor, first: int, words: int | None = None) -> torch.Tensor:
    """log pi(completion | prompt), the sum over the completion's tokens: (B,)."""
    return token_log_probs(model, ids, mask, first, words).sum(-1)


@torch.no_grad()
def sample(
    model,
    prompt: torch.Tensor,
    prompt_mask: torch.Tensor,
    new_tokens: int,
    generator: torch.Generator | None,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    temperature: float = 1.0,
    words: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completions drawn token by token with a key-value cache: (ids (B, P + L), mask (B, P + L)). After a sequence's
    EOS its tokens are padding with mask 0 (the EOS itself counts); `generator` (None: torch's global one) makes the
    draws reproducible."""
    ids, mask = prompt, prompt_mask
    finished = torch.zeros(len(prompt), dtype=torch.bool, device=prompt.device)
    # transformers 5 renamed the key-value cache `past_key_values` -> `cache` (argument and output); older ones have the first
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache, step_ids, step_positions = None, ids, positions(mask)
    for _ in range(new_tokens):
        out = model(
            input_ids=step_ids, attention_mask=mask, position_ids=step_positions, use_cache=True, **{cache_name: cache}
        )
        cache = out[cache_name]
        probs = F.softmax(out.logits[:, -1, :words].float() / temperature, dim=-1)  # (B, vocab or words)
        token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, (~finished).long()[:, None]], 1)
        if eos_token_id is not None:
            finished |= token == eos_token_id
        step_ids, step_positions = token[:, None], positions(mask)[:, -1:]
    return ids, mask
