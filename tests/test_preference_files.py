"""Learning from preferences on a user's own model and pairs: a local Hugging Face model through `model`, a synthetic
task's pairs from a JSONL file through `preferences`, and a preference file as the task (real text, a tokenizer of
its own, every tenth pair held out). The models are tiny and randomly initialised, saved with `save_pretrained` here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import deterministic_metrics, smoke_settings, smoke_sft_run

pytest.importorskip("transformers")

from algorithms.common.language_models import tiny_gpt2  # noqa: E402
from algorithms.common.preference import (  # noqa: E402
    PAD_ID,
    ModelPolicy,
    PreferenceConfig,
    RewardModel,
    TextTask,
    draw_pairs,
    reference_policy,
)
from envs.preferences import make_tokenizer, synthetic_language, write_preferences  # noqa: E402
from experiments.execute import RunOptions, execute_run  # noqa: E402
from experiments.runs import RunSpec  # noqa: E402

TASK = "SyntheticSentiment-v0"
PAIRS = [
    {
        "prompt": "The film opens on a quiet harbour town, and",
        "chosen": " the acting carries every scene with warmth and wit.",
        "rejected": " it drags on.",
    },
    {
        "prompt": "Review: the soundtrack",
        "chosen": " is lovely, a score I would buy.",
        "rejected": " is loud, dull and far too long for a film of this kind.",
    },
    {"prompt": "In short,", "chosen": " a delight.", "rejected": " a waste of two hours and a ticket."},
]
"""three distinct pairs of real text, of different lengths in tokens"""


def save_model(directory: Path, tokenizer, n_embd: int = 24, n_positions: int = 128) -> Path:
    """A tiny randomly initialised GPT-2 for `tokenizer`, saved with its tokenizer as a Hugging Face directory."""
    torch.manual_seed(0)
    model = tiny_gpt2(len(tokenizer), n_positions, n_embd, 1, 2, tokenizer.pad_token_id, tokenizer.eos_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def text_tokenizer():
    """A byte-level BPE trained on PAIRS' text, as GPT-2's tokenizer is built, with <pad> and <eos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    texts = [pair[key] for pair in PAIRS for key in ("prompt", "chosen", "rejected")]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


def write_text_file(path: Path, repeats: int = 10) -> Path:
    """PAIRS, repeated: the held-out pairs (lines 10, 20, 30) are copies of pairs that are learned from."""
    write_preferences(path, PAIRS * repeats)
    return path


def run(root: Path, algo: str, env_id: str, overrides: dict) -> tuple[dict, list[dict]]:
    """Run one stage to its end; (outcome, metrics rows)."""
    spec = RunSpec.create(algo, env_id, 1, {"eval_every": 0, **overrides})
    outcome = execute_run(spec, RunOptions(runs_dir=root, progress=False))
    rows = [json.loads(line) for line in (Path(outcome["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    return outcome, rows


def final_evaluation(rows: list[dict]) -> dict:
    return [row for row in rows if "eval/episodic_return" in row][-1]


def test_a_left_padded_prompt_and_a_right_padded_completion_read_as_unpadded_ones(tmp_path):
    directory = save_model(tmp_path / "model", text_tokenizer())
    task = TextTask(PreferenceConfig(env_id=str(write_text_file(tmp_path / "pairs.jsonl")), model=str(directory)))
    policy = reference_policy(PreferenceConfig(env_id=task.env_id, model=str(directory)), task, torch.device("cpu"))
    reward_model = RewardModel(policy.model)
    pairs = task.file_pairs
    assert (pairs.prompts == PAD_ID).any() and (pairs.rejected == PAD_ID).any()  # the file's lengths differ
    for index in range(3):
        prompt, rejected = pairs.prompts[index], pairs.rejected[index]
        prompt, rejected = prompt[prompt != PAD_ID][None], rejected[rejected != PAD_ID][None]  # (1, own length)
        padded_tokens = policy.log_prob_tokens(pairs.prompts[index : index + 1], pairs.rejected[index : index + 1])
        alone = policy.log_prob_tokens(prompt, rejected)
        torch.testing.assert_close(padded_tokens[0, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)
        assert (padded_tokens[0, alone.shape[1] :] == 0).all()
        padded_score = reward_model(pairs.prompts[index : index + 1], pairs.rejected[index : index + 1])
        torch.testing.assert_close(padded_score, reward_model(prompt, rejected), atol=1e-5, rtol=0)
    assert isinstance(policy, ModelPolicy) and task.words is None


def test_pairs_longer_than_the_models_positions_are_cut_to_them(tmp_path):
    directory = save_model(tmp_path / "model", text_tokenizer(), n_positions=12)
    task = str(write_text_file(tmp_path / "pairs.jsonl"))
    pairs = TextTask(PreferenceConfig(env_id=task, model=str(directory))).file_pairs
    lengths = [(pairs.prompts != PAD_ID).sum(-1) + (part != PAD_ID).sum(-1) for part in (pairs.chosen, pairs.rejected)]
    assert max(int(length.max()) for length in lengths) == 12  # the longest pairs are cut to the model's 12 positions
    outcome, rows = run(tmp_path / "runs", "dpo", task, {"model": str(directory), "total_timesteps": 2, "eval_episodes": 8})
    assert outcome["status"] == "done", outcome  # its evaluation samples completions within the 12 positions too


def test_a_saved_hugging_face_model_is_where_a_run_starts_and_its_reference(tmp_path):
    language = synthetic_language(TASK)
    directory = save_model(tmp_path / "model", make_tokenizer(language), n_embd=24)
    outcome, rows = run(tmp_path / "runs", "dpo", TASK, {"model": str(directory), "total_timesteps": 1, "num_pairs": 64})
    assert outcome["status"] == "done"
    (first_loss,) = [row["losses/loss"] for row in rows if "losses/loss" in row]
    assert first_loss == pytest.approx(math.log(2), rel=1e-6)  # policy = pi_ref = the saved model at the first update
    checkpoint = torch.load(next((Path(outcome["run_dir"]) / "checkpoints").glob("*.pt")), weights_only=False)
    assert checkpoint["state"]["policy"]["transformer.wte.weight"].shape == (len(language.words()) + 2, 24)

    # A model whose tokenizer does not write the task's words is refused before any run directory is made.
    other = save_model(tmp_path / "other", text_tokenizer())
    with pytest.raises(ValueError, match="does not write the synthetic task's words"):
        execute_run(RunSpec.create("dpo", TASK, 1, {"model": str(other)}), RunOptions(runs_dir=tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_a_synthetic_tasks_pairs_from_a_file_train_as_the_drawn_ones(tmp_path):
    settings = {**smoke_settings("dpo"), "eval_every": 10}
    cfg = PreferenceConfig(env_id=TASK, sft_run=str(smoke_sft_run()), num_pairs=settings["num_pairs"])
    task = TextTask(cfg)
    pairs = draw_pairs(cfg, task, reference_policy(cfg, task, torch.device("cpu")), 1, torch.device("cpu"))
    text = {key: task.language.to_text(getattr(pairs, key).numpy()) for key in ("prompts", "chosen", "rejected")}
    path = tmp_path / "pairs.jsonl"
    write_preferences(path, [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(*text.values())])

    drawn, _ = run(tmp_path / "runs", "dpo", TASK, settings)
    from_file, _ = run(tmp_path / "runs", "dpo", TASK, {**settings, "preferences": str(path)})
    assert drawn["status"] == from_file["status"] == "done"
    assert deterministic_metrics(drawn["run_dir"]) == deterministic_metrics(from_file["run_dir"])

    # A pair in other words, or of another length, is refused by its line before any run directory is made.
    good = path.read_text().splitlines()
    for prompt, reason in (("w3 w99 w1 w2", "line 3: .*not words w0..w15"), ("w3 w4 w5", r"line 3: .*\(3, 8, 8\) words")):
        lines = list(good)
        lines[2] = json.dumps({**json.loads(lines[2]), "prompt": prompt})
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=reason):
            execute_run(RunSpec.create("dpo", TASK, 1, {**settings, "preferences": str(path)}), RunOptions(runs_dir="bad"))
    assert not Path("bad").exists()


def test_the_rlhf_pipeline_runs_on_a_preference_file_and_a_local_model(tmp_path):
    directory = save_model(tmp_path / "model", text_tokenizer())
    task = str(write_text_file(tmp_path / "pairs.jsonl"))
    root = tmp_path / "runs"
    small = {"batch_size": 8, "eval_episodes": 8}

    # SFT on the chosen completions, from the local model; then a reward model and DPO on the sft policy.
    sft, _ = run(root, "sft", task, {**small, "model": str(directory), "data": "chosen", "total_timesteps": 20})
    assert sft["status"] == "done"
    reward_model, reward_rows = run(root, "reward_model", task, {**small, "sft_run": sft["run_dir"], "total_timesteps": 60})
    dpo, dpo_rows = run(root, "dpo", task, {**small, "sft_run": sft["run_dir"], "total_timesteps": 60, "beta": 0.5})
    assert reward_model["status"] == dpo["status"] == "done"
    # The three held-out pairs are copies of learned ones: both rank all three right (0.5 is chance, and pi_ref's score).
    assert final_evaluation(reward_rows)["eval/episodic_return"] == 1.0
    assert final_evaluation(dpo_rows)["eval/episodic_return"] == 1.0
    assert final_evaluation(dpo_rows)["eval/kl"] > 0

    # RLHF-PPO samples completions for the file's prompts and is paid by the reward model; there is no true reward.
    settings = {
        "sft_run": sft["run_dir"],
        "reward_model_run": reward_model["run_dir"],
        "rollout_prompts": 8,
        "total_timesteps": 8,
    }
    ppo, ppo_rows = run(root, "rlhf_ppo", task, {**small, **settings, "num_minibatches": 2, "update_epochs": 1})
    assert ppo["status"] == "done"
    assert any("objective/score" in row for row in ppo_rows) and not any("objective/true_reward" in row for row in ppo_rows)
    assert 0 <= final_evaluation(ppo_rows)["eval/episodic_return"] <= 1
    with pytest.raises(ValueError, match="has no true reward"):
        RunSpec.create("rlhf_ppo", task, 1, {**settings, "reward": "true"}).config()


def test_a_malformed_preference_file_is_refused_with_its_line_number_before_any_compute(tmp_path):
    directory = save_model(tmp_path / "model", text_tokenizer())
    path = write_text_file(tmp_path / "pairs.jsonl", repeats=4)
    lines = path.read_text().splitlines()
    lines[6] = '{"prompt": "a", "chosen": "b"}'
    path.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "experiments", "train", "dpo", "--env-id", str(path), "--model", str(directory)]
    result = subprocess.run(command + ["--runs-dir", "runs"], capture_output=True, text=True, cwd=tmp_path, env=os.environ)
    assert result.returncode != 0
    assert "line 7: rejected missing or not a string" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_bad_input_run_is_refused_by_name_before_the_consumers_directory_is_made(tmp_path):
    import shutil

    from helpers import smoke_run

    def copy(name: str) -> Path:
        return Path(shutil.copytree(smoke_sft_run(), tmp_path / name))

    unfinished, no_checkpoint, other_task = copy("unfinished"), copy("no_checkpoint"), copy("other_task")
    (unfinished / "DONE").unlink()
    for checkpoint in (no_checkpoint / "checkpoints").glob("*.pt"):
        checkpoint.unlink()
    config = json.loads((other_task / "config.json").read_text())
    (other_task / "config.json").write_text(json.dumps({**config, "env_id": "pairs.jsonl"}))
    cases = {
        tmp_path / "nowhere": "not a run directory",
        smoke_run("reward_model"): "is a run of reward_model, not of sft",
        unfinished: "has not finished: run it to the end first",
        no_checkpoint: "has no checkpoint at its final step",
        other_task: f"learned pairs.jsonl, not {TASK}",
    }
    for run_dir, reason in cases.items():
        spec = RunSpec.create("dpo", TASK, 1, {**smoke_settings("dpo"), "sft_run": str(run_dir)})
        with pytest.raises(ValueError, match=f"sft_run {run_dir}.*{reason}"):
            execute_run(spec, RunOptions(runs_dir=tmp_path / "runs", progress=False))
    with pytest.raises(ValueError, match="model .* is not a Hugging Face model directory"):
        execute_run(RunSpec.create("dpo", TASK, 1, {"model": str(tmp_path)}), RunOptions(runs_dir=tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_a_run_on_a_changed_preference_file_or_model_is_another_run(tmp_path):
    """An input named by its path enters a run's hash by its contents, as an input run does by its hash: a grid never
    takes a run on an edited file (or a re-saved model) for done."""
    directory = save_model(tmp_path / "model", text_tokenizer())
    path = write_text_file(tmp_path / "pairs.jsonl")

    def run_hash() -> str:
        return RunSpec.create("dpo", str(path), 1, {"model": str(directory)}).hash

    original, text = run_hash(), path.read_text()
    assert run_hash() == original  # the same contents: the same run
    path.write_text(text + json.dumps({"prompt": "a", "chosen": " b", "rejected": " c"}) + "\n")
    edited = run_hash()
    path.write_text(text)
    assert edited != original and run_hash() == original
    save_model(directory, text_tokenizer(), n_embd=16)
    assert run_hash() != original
    synthetic = RunSpec.create("dpo", TASK, 1, {"preferences": str(path), "sft_run": "x"}).hash
    path.write_text(text.replace("delight", "joy"))
    assert RunSpec.create("dpo", TASK, 1, {"preferences": str(path), "sft_run": "x"}).hash != synthetic
