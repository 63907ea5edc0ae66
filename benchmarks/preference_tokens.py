"""Tokens per second of the preference algorithms on this machine: generation alone, and training for each method.

    python benchmarks/preference_tokens.py [--threads 2] [--gpt2-small]

On SyntheticSentiment-v0 (prompt 4 words, completion 8) with each algorithm's defaults, the suite's model (the sft
default: a 2-layer, 64-wide GPT-2):
- generation: KV-cached sampling of 8-token completions by the sft policy (`ModelPolicy.sample`), at several batch sizes;
- training: each algorithm's run to WARM_UP + n updates minus the same run to WARM_UP, so that building the model and
  pairs, and the final evaluation, cancel out; n grows until the difference is at least MIN_SECONDS. Tokens per update
  are the sequence tokens (prompt + completion) that pass forward and backward through the trained model: sft 64 x 12,
  dpo and reward_model 64 pairs x 2 x 12, rlhf_ppo a 64 x 12 minibatch. rlhf_ppo's wall time includes its rollouts
  (256 completions of 8 tokens every 16 updates) and best_of_n's is generation only (n x 256 completions).
With --gpt2-small, the same for a randomly initialised GPT-2-small-shaped model (124M parameters, 50,257 tokens) on a
preference file of 40 pairs of 32 + 32 tokens, through `--model`: DPO at batch 8 and generation, what a real model
costs on this CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from algorithms.common.preference import ModelPolicy, PreferenceConfig, TextTask, load_sft_policy
from experiments.execute import RunOptions, execute_run
from experiments.registry import load_algorithm
from experiments.runs import RunSpec

TASK = "SyntheticSentiment-v0"
WARM_UP = 20
MIN_SECONDS = 4.0
SEQUENCE = 12  # prompt 4 + completion 8


def timed_run(algo: str, settings: dict, updates: int) -> float:
    algorithm = load_algorithm(algo)
    cfg = algorithm.Config(**{**settings, "total_timesteps": updates, "eval_every": 0, "eval_episodes": 16})
    start = time.perf_counter()
    algorithm.train(cfg)
    return time.perf_counter() - start


def updates_per_second(algo: str, settings: dict, first: int, warm_up: int = WARM_UP) -> tuple[float, int]:
    n = first
    while True:
        elapsed = timed_run(algo, settings, warm_up + n) - timed_run(algo, settings, warm_up)
        if elapsed >= MIN_SECONDS or n >= 100_000:
            return n / elapsed, n
        n *= 2


def generation_rate(policy: ModelPolicy, task: TextTask, batch: int) -> float:
    """Generated tokens per second of one sampling call over `batch` prompts."""
    prompts = task.prompts(batch, np.random.default_rng(0))
    generator = torch.Generator().manual_seed(0)
    policy.sample(prompts, generator)  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < MIN_SECONDS / 2:
        policy.sample(prompts, generator)
        calls += 1
    return calls * batch * task.completion_length / (time.perf_counter() - start)


def synthetic(root: Path) -> None:
    # The inputs: an sft run and a reward model of the default shapes (their weights do not change the speed).
    inputs = {}
    for algo, extra in (("sft", {}), ("reward_model", {"sft_run": "sft"})):
        settings = {"total_timesteps": 20, "eval_every": 0, "eval_episodes": 16, "num_pairs": 512}
        settings.update({key: inputs[value] for key, value in extra.items()})
        outcome = execute_run(RunSpec.create(algo, TASK, 1, settings), RunOptions(runs_dir=root, progress=False))
        inputs[algo] = outcome["run_dir"]
    task = TextTask(PreferenceConfig(env_id=TASK))
    policy = ModelPolicy(load_sft_policy(inputs["sft"], task, torch.device("cpu")).eval(), task)
    print("generation (the sft policy, 8-token completions, KV cache):")
    for batch in (16, 64, 256, 1024):
        print(f"  batch {batch:5d}: {generation_rate(policy, task, batch):10,.0f} tokens/s")

    sft, reward = {"sft_run": inputs["sft"]}, {"reward_model_run": inputs["reward_model"]}
    cases = [
        ("sft", {}, 64 * SEQUENCE),
        ("sft (chosen)", {**sft, "data": "chosen"}, 64 * SEQUENCE),
        ("dpo", sft, 2 * 64 * SEQUENCE),
        ("ipo", {**sft, "loss": "ipo"}, 2 * 64 * SEQUENCE),
        ("reward_model", sft, 2 * 64 * SEQUENCE),
        ("rlhf_ppo", {**sft, **reward}, 64 * SEQUENCE),
        ("ppo_gt", {**sft, "reward": "true"}, 64 * SEQUENCE),
    ]
    print(f"training (updates after {WARM_UP} warm-up ones; tokens = sequence tokens through forward and backward):")
    print(f"  {'method':14s} {'updates/s':>10s} {'tokens/update':>14s} {'tokens/s':>10s}")
    for name, settings, tokens in cases:
        algo = {"sft (chosen)": "sft", "ipo": "dpo", "ppo_gt": "rlhf_ppo"}.get(name, name)
        rate, _ = updates_per_second(algo, {"env_id": TASK, **settings}, 32)
        print(f"  {name:14s} {rate:10.1f} {tokens:14,d} {rate * tokens:10,.0f}")
    for n in (4, 16, 64):  # best_of_n: its run is generation and scoring only
        settings = {"env_id": TASK, **sft, **reward, "n": n, "eval_episodes": 256}
        algorithm = load_algorithm("best_of_n")
        start = time.perf_counter()
        algorithm.train(algorithm.Config(**settings))
        seconds = time.perf_counter() - start
        print(f"  best_of_n n={n:<3d} {n * 256 * 8 / seconds:,.0f} tokens/s generated and scored ({seconds:.1f} s)")


def gpt2_small(root: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from envs.preferences import write_preferences

    vocab = {f"t{i}": i for i in range(50_255)} | {"<pad>": 50_255, "<eos>": 50_256}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50_257, n_positions=1024, pad_token_id=50_255, eos_token_id=50_256))
    model.save_pretrained(root / "gpt2-small")
    tokenizer.save_pretrained(root / "gpt2-small")
    rng = np.random.default_rng(0)
    text = lambda n: " ".join(f"t{i}" for i in rng.integers(50_255, size=n))  # noqa: E731
    write_preferences(
        root / "pairs.jsonl", [{"prompt": text(32), "chosen": text(31), "rejected": text(31)} for _ in range(40)]
    )
    settings = {"env_id": str(root / "pairs.jsonl"), "model": str(root / "gpt2-small"), "batch_size": 8, "eval_episodes": 8}
    print(f"GPT-2-small shape ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters), 32 + 32 tokens:")
    rate, _ = updates_per_second("dpo", settings, 4, warm_up=2)
    print(f"  dpo, batch 8 pairs: {rate:.2f} updates/s, {rate * 8 * 2 * 64:,.0f} tokens/s")
    task = TextTask(PreferenceConfig(**settings))
    policy = ModelPolicy(model.eval(), task)
    for batch in (1, 8, 32):
        print(f"  generation, batch {batch:3d}: {generation_rate(policy, task, batch):8,.0f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads (default 2)")
    parser.add_argument("--gpt2-small", action="store_true", help="also a GPT-2-small-shaped model (124M parameters)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    with tempfile.TemporaryDirectory() as scratch:
        synthetic(Path(scratch))
        if args.gpt2_small:
            gpt2_small(Path(scratch))


if __name__ == "__main__":
    main()
