"""A suite whose runs take other runs' outputs: `sft_run = "@sft"` links each run to the suite's sft run of the same task
and seed, the input's hash goes into the consumer's, and the grid runs inputs first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.suite import SuiteError, load_suite

PIPELINE = """
algorithms = ["sft", "reward_model", "dpo", "rlhf_ppo"]
env_ids = ["SyntheticSentiment-v0"]
seeds = [1, 2]
total_timesteps = 8
eval_every = 0
eval_episodes = 8
[algo.sft]
n_embd = 16
n_layer = 1
n_head = 1
batch_size = 8
[algo.reward_model]
sft_run = "@sft"
num_pairs = 32
batch_size = 8
[algo.dpo]
sft_run = "@sft"
num_pairs = 32
batch_size = 8
[algo.rlhf_ppo]
sft_run = "@sft"
reward_model_run = "@reward_model"
rollout_prompts = 8
num_minibatches = 2
update_epochs = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_references_are_linked_to_the_same_task_and_seed_and_carry_the_inputs_hash(tmp_path):
    suite = load_suite(str(write(tmp_path, PIPELINE)))
    by_cell = {(spec.algo, spec.seed): spec for spec in suite.specs}
    for seed in (1, 2):
        sft = by_cell["sft", seed]
        sft_dir = "@" + sft.run_dir(".").relative_to(sft.suite).as_posix()
        assert (
            dict(by_cell["dpo", seed].overrides)["sft_run"] == sft_dir == f"@sft/SyntheticSentiment-v0/seed{seed}-{sft.hash}"
        )
        reward_model = by_cell["reward_model", seed]
        ppo = dict(by_cell["rlhf_ppo", seed].overrides)
        assert ppo["reward_model_run"].endswith(f"/seed{seed}-{reward_model.hash}") and ppo["sft_run"] == sft_dir
    # Another sft setting is another sft run, so every stage after it is another run too.
    changed = load_suite(str(write(tmp_path, PIPELINE.replace("n_embd = 16", "n_embd = 8"))))
    before = {(s.algo, s.seed): s.hash for s in suite.specs}
    after = {(s.algo, s.seed): s.hash for s in changed.specs}
    assert all(before[cell] != after[cell] for cell in before)


def test_bad_references_are_refused_with_the_rest_of_the_problems(tmp_path):
    sft_table = "[algo.sft]\nn_embd = 16\nn_layer = 1\nn_head = 1\nbatch_size = 8\n"
    no_sft = PIPELINE.replace('algorithms = ["sft", ', "algorithms = [").replace(sft_table, "")
    with pytest.raises(SuiteError, match="sft_run = '@sft' matches no run of this suite with the same env and seed"):
        load_suite(str(write(tmp_path, no_sft)))
    two_sfts = (
        PIPELINE + '[[variants]]\nalgo = "sft"\nname = "a"\n[[variants]]\nalgo = "sft"\nname = "b"\nlearning_rate = 0.01\n'
    )
    with pytest.raises(SuiteError, match=r"matches 2 runs \(variants a, b\)"):
        load_suite(str(write(tmp_path, two_sfts)))
    named = two_sfts.replace('[algo.dpo]\nsft_run = "@sft"', '[algo.dpo]\nsft_run = "@sft/b"')
    with pytest.raises(SuiteError) as refused:
        load_suite(str(write(tmp_path, named)))
    assert "dpo x" not in str(refused.value)  # dpo names variant b: only the other stages are ambiguous


def test_the_grid_runs_inputs_first_and_each_stage_starts_from_its_input(tmp_path):
    path = write(tmp_path, PIPELINE)
    runs = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs), "--workers", "2", "--progress-interval", "0.5"]) == 0
    summary = json.loads((runs / "pipeline" / "summary.json").read_text())
    assert summary["counts"] == {"done": 8}
    rows = {(row["algo"], row["seed"]): row for row in summary["runs_detail"]}
    for seed in (1, 2):
        dpo_config = json.loads((Path(rows["dpo", seed]["run_dir"]) / "config.json").read_text())
        assert dpo_config["sft_run"] == rows["sft", seed]["run_dir"]
        ppo_config = json.loads((Path(rows["rlhf_ppo", seed]["run_dir"]) / "config.json").read_text())
        assert ppo_config["reward_model_run"] == rows["reward_model", seed]["run_dir"]
        # Each consumer finished after the runs it took, whatever the worker count.
        done_at = {algo: (Path(rows[algo, seed]["run_dir"]) / "DONE").stat().st_mtime for algo in ("sft", "reward_model")}
        started = (Path(rows["rlhf_ppo", seed]["run_dir"]) / "spec.json").stat().st_mtime
        assert started >= max(done_at.values())
    # A second invocation finds everything done and starts nothing.
    assert main(["run", str(path), "--runs-dir", str(runs)]) == 0
    again = json.loads((runs / "pipeline" / "summary.json").read_text())
    assert all(row["status"] == "done" and row["skipped"] for row in again["runs_detail"])


def test_an_input_that_failed_keeps_its_consumers_from_starting(tmp_path):
    runs = tmp_path / "runs"
    path = write(tmp_path, PIPELINE.replace("seeds = [1, 2]", "seeds = [1]"))
    suite = load_suite(str(path))
    sft = next(spec for spec in suite.specs if spec.algo == "sft")
    blocker = sft.run_dir(runs)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the sft run's directory goes: the sft run fails")
    assert main(["run", str(path), "--runs-dir", str(runs), "--retries", "0"]) == 1
    summary = json.loads((runs / "pipeline" / "summary.json").read_text())
    status = {row["algo"]: row for row in summary["runs_detail"]}
    assert status["sft"]["status"] == "failed"
    for algo in ("reward_model", "dpo", "rlhf_ppo"):
        assert status[algo]["status"] == "failed" and "not started: its input run" in status[algo]["error"]
        assert not Path(status[algo]["run_dir"]).exists()


def test_a_bare_reference_outside_a_suite_is_refused(tmp_path, capsys):
    assert main(["train", "dpo", "--sft-run", "@sft", "--runs-dir", str(tmp_path), "--total-timesteps", "2"]) == 2
    assert "names a run of a suite: use it in a suite file" in capsys.readouterr().err


def test_the_shipped_preferences_suite_links_every_stage_to_its_seeds_sft_run():
    suite = load_suite("preferences")
    assert len(suite.specs) == 3 * 14
    sft = {spec.seed: spec for spec in suite.specs if spec.algo == "sft" and spec.variant == "default"}
    reward_models = {spec.seed: spec for spec in suite.specs if spec.algo == "reward_model"}
    for spec in suite.specs:
        overrides = dict(spec.overrides)
        if spec.algo != "sft" or spec.variant == "preferred-ft":
            assert overrides["sft_run"] == f"@sft/SyntheticSentiment-v0/seed{spec.seed}-{sft[spec.seed].hash}"
        if spec.algo in ("rlhf_ppo", "best_of_n"):
            assert overrides["reward_model_run"].endswith(f"seed{spec.seed}-{reward_models[spec.seed].hash}")
    methods = {(spec.algo, spec.variant) for spec in suite.specs}
    assert {("dpo", f"beta-{b}") for b in ("0.05", "0.1", "0.5")} | {
        ("rlhf_ppo", f"kl-{k}") for k in ("0.02", "0.05", "0.2")
    } <= methods
    assert {("ipo", "default"), ("ppo_gt", "default"), ("sft", "preferred-ft"), ("best_of_n", "n-16")} <= methods
