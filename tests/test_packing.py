"""Seed packs (algorithms.common.packing): K seeds of one cell trained in one process, each seed still an ordinary run.

What a pack must keep: seed k's networks, streams and first updates are its lone run's; seeds never touch each other
(gradients, optimizer state, a divergence); each seed checkpoints into its own run directory in the lone layout, so a
killed pack resumes to exactly the metrics of an uninterrupted one and a packed seed's checkpoint resumes alone; the
grid groups a cell's unfinished seeds into packs and never retrains a finished one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import crashing_env  # noqa: F401  (registers NaNRewardForSeedTwoBox-v0)
import numpy as np
import pytest
import torch
from helpers import COMPILED_DRIFT, deterministic_metrics

from algorithms import td3
from algorithms.common import RecordingLogger
from algorithms.common.networks import DeterministicActor, QEnsemble
from algorithms.common.packing import OptimizerSlice, SeedStack, clip_grad_norm_per_seed, same_run_but_seed
from experiments.cli import main
from experiments.execute import RunOptions, execute_pack, execute_run
from experiments.registry import load_algorithm
from experiments.runs import RunDirectory, RunSpec

LOW, HIGH = np.array([-2.0], np.float32), np.array([2.0], np.float32)
PENDULUM = {
    "env_id": "Pendulum-v1",
    "total_timesteps": 900,
    "learning_starts": 300,
    "buffer_size": 2000,
    "batch_size": 32,
    "hidden_size": 32,
    "eval_every": 300,
    "eval_episodes": 2,
}
"""a short TD3 run that logs its losses from update 100 (env step 400) on"""


def _actors(seeds: list[int]) -> list[DeterministicActor]:
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(DeterministicActor(3, 1, 16, LOW, HIGH))
    return out


def test_a_stack_of_one_computes_the_lone_networks_numbers_bit_for_bit():
    (actor,) = _actors([1])
    stack = SeedStack(_actors([1]))
    obs = torch.randn(5, 3)
    torch.testing.assert_close(stack(obs[None])[0], actor(obs), rtol=0, atol=0)
    actor(obs).square().sum().backward()
    stack(obs[None]).square().sum().backward()
    for (name, p), q in zip(actor.named_parameters(), stack.parameters()):
        torch.testing.assert_close(q.grad[0], p.grad, rtol=0, atol=0, msg=name)


def test_each_seed_of_a_stack_is_its_own_network_and_gets_only_its_own_gradients():
    members = _actors([1, 2, 3])
    stack = SeedStack(_actors([1, 2, 3]))
    obs = torch.randn(3, 5, 3)
    obs[2] = float("nan")  # seed 3's inputs are broken: seeds 1 and 2 must not notice
    out = stack(obs)  # (K, B, A)
    for k in range(2):
        torch.testing.assert_close(out[k], members[k](obs[k]), rtol=1e-5, atol=1e-6)
    loss = out.square().mean(-1).mean(-1)  # (K,): seed 3's is NaN
    assert torch.isnan(loss[2]) and torch.isfinite(loss[:2]).all()
    loss.sum().backward()
    for k, member in enumerate(members[:2]):
        member(obs[k]).square().mean(-1).mean(-1).backward()
        for p, q in zip(member.parameters(), stack.parameters()):
            torch.testing.assert_close(q.grad[k], p.grad, rtol=1e-4, atol=1e-6)


def test_a_stacked_ensemble_evaluates_every_seeds_critics_and_its_methods():
    torch.manual_seed(0)
    critics = [QEnsemble(4, 8, 2) for _ in range(3)]
    stack = SeedStack(critics)
    obs, actions = torch.randn(3, 6, 3), torch.randn(3, 6, 1)
    q, first = stack(obs, actions), stack.call("first", obs, actions)
    assert q.shape == (3, 2, 6) and first.shape == (3, 6)
    for k, critic in enumerate(critics):
        torch.testing.assert_close(q[k], critic(obs[k], actions[k]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(first[k], critic.first(obs[k], actions[k]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stack.member(k)(obs[k], actions[k]), critic(obs[k], actions[k]))


def test_a_seeds_slice_of_networks_and_adam_loads_into_the_lone_run_and_back():
    stack = SeedStack(_actors([1, 2]))
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        stack(torch.randn(2, 4, 3)).square().sum().backward()
        optimizer.step()
    # Seed 2's slice is a lone actor's and a lone Adam's state: load it into both, and take one step each with the same
    # gradient (Adam normalises each element: gradients that differ in the last bit could move a near-zero one apart).
    (lone,) = _actors([7])
    lone.load_state_dict(stack.seed(1).state_dict())
    lone_optimizer = torch.optim.Adam(lone.parameters(), lr=1e-2)
    lone_optimizer.load_state_dict(OptimizerSlice(optimizer, 1).state_dict())
    for p, q in zip(stack.parameters(), lone.parameters()):
        p.grad = torch.randn_like(p)
        q.grad = p.grad[1].clone()
    optimizer.step()
    lone_optimizer.step()
    for name, value in lone.state_dict().items():
        torch.testing.assert_close(stack.seed(1).state_dict()[name], value, rtol=0, atol=0)
    # ... and back, into the other seed's slice of a fresh pack: its whole state moves with it.
    other = SeedStack(_actors([3, 4]))
    other_optimizer = torch.optim.Adam(other.parameters(), lr=1e-2)
    other.seed(0).load_state_dict(lone.state_dict())
    OptimizerSlice(other_optimizer, 0).load_state_dict(lone_optimizer.state_dict())
    moments = OptimizerSlice(other_optimizer, 0).state_dict()["state"]
    for i, state in lone_optimizer.state_dict()["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(moments[i][key], value, msg=f"{i} {key}")
    with pytest.raises(ValueError, match="shape"):
        SeedStack([DeterministicActor(3, 1, 8, LOW, HIGH)]).seed(0).load_state_dict(lone.state_dict())


def test_a_gradient_clip_is_per_seed():
    params = [torch.zeros(2, 3, requires_grad=True)]
    params[0].grad = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]])  # norms 5 and 0.5
    norms = clip_grad_norm_per_seed(params, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(params[0].grad, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0]]), rtol=1e-5, atol=1e-6)


def test_a_pack_takes_one_config_with_distinct_seeds():
    cfg = td3.Config(**PENDULUM)
    with pytest.raises(ValueError, match="differ in: batch_size"):
        same_run_but_seed([cfg, dataclasses.replace(cfg, seed=2, batch_size=64)])
    with pytest.raises(ValueError, match="each seed once"):
        same_run_but_seed([cfg, cfg])


CARTPOLE = {
    "env_id": "CartPole-v1",
    "total_timesteps": 1200,
    "learning_starts": 400,
    "train_frequency": 2,
    "buffer_size": 2000,
    "batch_size": 32,
    "eval_every": 600,
    "eval_episodes": 2,
}
FIRST_UPDATES = {
    "td3": (PENDULUM, "losses/qf_loss"),
    "ddpg": (PENDULUM, "losses/qf_loss"),
    "sac": (PENDULUM, "losses/qf_loss"),
    "dqn": ({**CARTPOLE, "loss": "huber", "max_grad_norm": 0.5}, "losses/td_loss"),  # the per-seed clip at work
    "double_dqn": ({**CARTPOLE, "env_id": "MinAtar/Breakout-v1"}, "losses/td_loss"),  # the CNN torso under vmap
    # ActorCritic's torso is shared by its actor and critic heads; PPO-KL's penalty reads the stacked log-std.
    "ppo": (
        {
            "env_id": "MinAtar/Breakout-v1",
            "num_envs": 2,
            "num_steps": 64,
            "num_minibatches": 2,
            "update_epochs": 2,
            "total_timesteps": 512,
            "eval_every": 256,
            "eval_episodes": 2,
            "ent_coef": 0.01,
        },
        "losses/policy_loss",
    ),
    "ppo_kl": (
        {
            "env_id": "Pendulum-v1",
            "num_envs": 2,
            "num_steps": 256,
            "num_minibatches": 4,
            "update_epochs": 2,
            "total_timesteps": 1024,
            "eval_every": 256,
            "eval_episodes": 2,
        },
        "losses/policy_loss",
    ),
}


@pytest.mark.parametrize("algo", sorted(FIRST_UPDATES))
def test_each_seed_of_a_pack_starts_as_its_lone_run(algo):
    """The seeds' streams are the lone runs': the warm-up (before the first update: acting and episodes) is the same,
    and the first logged losses agree within float tolerance (batched kernels round differently; the runs then drift
    apart as any two float orders do)."""
    settings, loss_key = FIRST_UPDATES[algo]
    module = load_algorithm(algo).module
    cfg = load_algorithm(algo).Config(**settings)
    seeds = [1, 2, 3]
    loggers = [RecordingLogger() for _ in seeds]
    results = module.train_seeds([dataclasses.replace(cfg, seed=s) for s in seeds], loggers, [None] * 3)
    assert [r.global_step for r in results] == [cfg.total_timesteps] * 3
    before_learning = getattr(cfg, "learning_starts", None) or cfg.batch_size - 1  # PPO: its first rollout
    firsts = []
    for seed, logger in zip(seeds, loggers):
        alone = RecordingLogger()
        module.train(dataclasses.replace(cfg, seed=seed), alone)
        warm_up = [
            [(s, k, v) for s, m in rec if s <= before_learning for k, v in m.items()]
            for rec in (alone.records, logger.records)
        ]
        assert warm_up[0] and [row[:2] for row in warm_up[0]] == [row[:2] for row in warm_up[1]]
        # Uniform random actions give the same episodes to the bit; PPO acts with its policy from the start, whose
        # batched forward pass rounds differently, by how much depends on the CPU's kernels (continuous actions:
        # returns equal to 1e-12 relative on one machine, 1.3e-9 on another). Another stream's returns would differ
        # in their leading digits.
        assert [row[2] for row in warm_up[1]] == pytest.approx([row[2] for row in warm_up[0]], rel=1e-6)
        packed_losses, lone_losses = (next(m for _, m in r if loss_key in m) for r in (logger.records, alone.records))
        assert {k: v for k, v in packed_losses.items() if k != "charts/SPS"} == pytest.approx(
            {k: v for k, v in lone_losses.items() if k != "charts/SPS"}, rel=1e-4, abs=1e-6
        )
        firsts.append(lone_losses[loss_key])
    assert len(set(firsts)) == 3, "the seeds differ from one another"


def _specs(seeds, env_id="Pendulum-v1", **extra):
    settings = {k: v for k, v in PENDULUM.items() if k != "env_id"}
    return [RunSpec.create("td3", env_id, seed, {**settings, **extra}, suite="pack") for seed in seeds]


def test_a_killed_pack_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    """Paused (checkpointed and stopped, as on SIGTERM) at step 600, then resumed: every seed's metrics.jsonl equals the
    uninterrupted pack's, row for row, and each seed's directory holds its own checkpoints and replay memory."""
    options = RunOptions(runs_dir=tmp_path / "whole", progress=False, checkpoint_every_seconds=None)
    whole = execute_pack(_specs([1, 2]), options)
    assert [o["status"] for o in whole] == ["done", "done"]
    split = dataclasses.replace(options, runs_dir=tmp_path / "split")
    assert [o["status"] for o in execute_pack(_specs([1, 2]), dataclasses.replace(split, pause_at_step=600))] == ["paused"] * 2
    for spec in _specs([1, 2]):
        checkpoints = RunDirectory(spec.run_dir(split.runs_dir)).checkpoint_dir
        assert (checkpoints / "ckpt-000000000600.pt").is_file() and (checkpoints / "ckpt-000000000600.replay.pt").is_file()
    resumed = execute_pack(_specs([1, 2]), split)
    for a, b in zip(whole, resumed):
        assert deterministic_metrics(a["run_dir"]) == deterministic_metrics(b["run_dir"])
        assert b["result"]["resumed_from_step"] == 600
        assert a["result"]["final_eval_return"] == b["result"]["final_eval_return"]


def test_a_packed_seeds_checkpoint_resumes_alone_and_a_finished_seed_is_skipped(tmp_path):
    options = RunOptions(runs_dir=tmp_path, progress=False, checkpoint_every_seconds=None)
    execute_pack(_specs([1, 2]), dataclasses.replace(options, pause_at_step=600))
    alone = execute_run(_specs([2])[0], options)  # seed 2 goes on by itself from the pack's checkpoint
    assert alone["status"] == "done" and alone["result"]["resumed_from_step"] == 600
    outcomes = execute_pack(_specs([1, 2]), options)
    assert [o["status"] for o in outcomes] == ["done", "skipped"]
    assert outcomes[0]["result"]["resumed_from_step"] == 600


def test_a_diverged_seed_is_recorded_and_the_others_finish(tmp_path):
    outcomes = execute_pack(
        _specs([1, 2, 3], "crashing_env:NaNRewardForSeedTwoBox-v0"), RunOptions(runs_dir=tmp_path, progress=False)
    )
    assert [o["status"] for o in outcomes] == ["done", "diverged", "done"]
    assert "non-finite training episode return nan" in outcomes[1]["error"]
    diverged = Path(outcomes[1]["run_dir"])
    assert (diverged / "DIVERGED").is_file() and "FloatingPointError" in (diverged / "error.txt").read_text()
    for outcome in (outcomes[0], outcomes[2]):
        assert outcome["result"]["global_step"] == 900 and np.isfinite(outcome["result"]["final_eval_return"])


SUITE = """
algorithms = ["td3", "ppo"]
env_ids = ["Pendulum-v1"]
seeds = [1, 2, 3]
total_timesteps = 900
eval_every = 300
eval_episodes = 2
[algo.td3]
learning_starts = 300
buffer_size = 2000
batch_size = 32
hidden_size = 32
[algo.ppo]
num_steps = 300
num_minibatches = 4
update_epochs = 1
target_kl = 0.05
"""


def test_the_grid_packs_a_cells_unfinished_seeds_and_never_retrains_a_finished_one(tmp_path, capsys):
    suite = tmp_path / "pack.toml"
    suite.write_text(SUITE)
    runs = tmp_path / "runs"
    args = ["run", str(suite), "--runs-dir", str(runs), "--seeds-per-process", "3"]
    assert main([*args, "--dry-run"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    process = {(row[0], int(row[3])): row[-1] for row in rows}
    assert process[("td3", 1)] == process[("td3", 2)] == process[("td3", 3)]  # one pack of three
    # PPO packs too, but not with target_kl (each seed would stop its epochs at its own time): apart
    assert len({process[("ppo", s)] for s in (1, 2, 3)} | {process[("td3", 1)]}) == 4

    assert main(["run", str(suite), "--runs-dir", str(runs), "--seeds-per-process", "2", "--workers", "1"]) == 0
    summary = json.loads((runs / "pack" / "summary.json").read_text())
    assert summary["counts"] == {"done": 6}
    for row in summary["runs_detail"]:
        run_dir = Path(row["run_dir"])
        assert (run_dir / "DONE").is_file() and deterministic_metrics(run_dir)
    # A finished seed is not retrained: with seed 2's run undone, only it is planned, in a pack of its own.
    seed2 = next(Path(r["run_dir"]) for r in summary["runs_detail"] if r["algo"] == "td3" and r["seed"] == 2)
    done_at = {Path(r["run_dir"]): (Path(r["run_dir"]) / "result.json").stat().st_mtime_ns for r in summary["runs_detail"]}
    (seed2 / "DONE").unlink()
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 processes to run" in out and "5 done, 1 partial" in out
    assert main([*args, "--workers", "1"]) == 0
    for run_dir, mtime in done_at.items():
        assert ((run_dir / "result.json").stat().st_mtime_ns == mtime) == (run_dir != seed2)


def _first_logged_losses(algo: str, seeds: int, **fields) -> list[dict[str, float]]:
    """Each seed's first logged losses in a pack of `seeds` seeds (1, 2, ...) of FIRST_UPDATES[algo], with `fields`."""
    settings, loss_key = FIRST_UPDATES[algo]
    if algo == "ppo":
        settings = {**settings, "env_id": "CartPole-v1"}
    cfg = load_algorithm(algo).Config(**settings, **fields)
    loggers = [RecordingLogger() for _ in range(seeds)]
    cfgs = [dataclasses.replace(cfg, seed=s) for s in range(1, seeds + 1)]
    load_algorithm(algo).module.train_seeds(cfgs, loggers, [None] * seeds)
    firsts = [next(m for _, m in log.records if loss_key in m) for log in loggers]
    return [{k: v for k, v in m.items() if k.startswith("losses/")} for m in firsts]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "sac", "dqn", "ppo"])
def test_a_compiled_pack_logs_the_losses_of_an_eager_one(algo):
    """compile=True on a pack of two compiles the vmapped steps (TorchDynamo's counters say so) and each seed's first
    logged losses equal the eager pack's within float tolerance (every random draw is made outside the compiled
    functions, from the seeds' streams). Once per packed algorithm file."""
    from torch._dynamo.utils import counters

    eager = _first_logged_losses(algo, 2)
    torch._dynamo.reset()
    counters.clear()
    compiled = _first_logged_losses(algo, 2, compile=True)
    assert counters["frames"]["ok"] >= 1 and counters["stats"]["unique_graphs"] >= 1
    for seed_compiled, seed_eager in zip(compiled, eager):
        assert seed_compiled == pytest.approx(seed_eager, **COMPILED_DRIFT)
    assert eager[0] != eager[1]


@pytest.mark.gpu
@pytest.mark.parametrize("seeds", [1, 2])
@pytest.mark.parametrize("algo", ["td3", "sac", "dqn", "ppo"])
def test_captured_steps_on_cuda_log_the_losses_of_eager_ones(algo, seeds, capsys):
    """On a CUDA device, compile=True with cuda_graphs=True captures the steps in CUDA graphs: inductor declines none
    (no skip counted, no warning), and each seed's first logged losses equal the eager run's on the same device, for a
    lone run (a pack of one) and a pack of two."""
    from torch._dynamo.utils import counters

    eager = _first_logged_losses(algo, seeds, device="cuda")
    torch._dynamo.reset()
    counters.clear()
    captured = _first_logged_losses(algo, seeds, device="cuda", compile=True, cuda_graphs=True)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["inductor"]["cudagraph_skips"]
    assert "without CUDA graphs" not in capsys.readouterr().err
    for seed_captured, seed_eager in zip(captured, eager):
        assert seed_captured == pytest.approx(seed_eager, **COMPILED_DRIFT)
