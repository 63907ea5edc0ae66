"""Offline datasets: a Minari dataset and a D4RL HDF5 file holding the same episodes load as the same transitions, with
terminals and timeouts kept apart; datasets that are not on the machine are refused clearly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.datasets import DatasetNotFound, load_d4rl_hdf5, load_dataset, load_minari, local_minari_ids

minari = pytest.importorskip("minari")
h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.mujoco

DATASET_ID = "rlgrid/hopper/random-test-v0"
REF_MIN, REF_MAX = -20.0, 3234.3


def hopper_episodes(count: int = 6, limit: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random-action Hopper episodes cut at `limit` steps: some fall (terminated), some are cut (truncated)."""
    env = gym.make("Hopper-v5", max_episode_steps=limit)
    env.action_space.seed(seed)
    episodes = []
    for i in range(count):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        while True:
            action = env.action_space.sample() * (0.2 if i % 2 else 1.0)  # gentle pushes survive to the time limit
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        episodes.append(
            {
                "observations": np.array(observations, np.float32),
                "actions": np.array(actions, np.float32),
                "rewards": np.array(rewards),
                "terminations": np.array(terminations),
                "truncations": np.array(truncations),
            }
        )
    env.close()
    return episodes


def write_minari(episodes: list[dict[str, np.ndarray]]) -> None:
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, seed=i, **episode) for i, episode in enumerate(episodes)]
    minari.create_dataset_from_buffers(
        DATASET_ID,
        buffers,
        env=gym.make("Hopper-v5", max_episode_steps=40),
        algorithm_name="random",
        author="rlgrid tests",
        author_email="tests@example.invalid",
        code_permalink="https://example.invalid/rlgrid",
        description="random-action Hopper episodes cut at 40 steps",
        eval_env="Hopper-v5",
        ref_min_score=REF_MIN,
        ref_max_score=REF_MAX,
    )


def write_d4rl(path, episodes: list[dict[str, np.ndarray]], with_next: bool = True) -> None:
    """D4RL's flat layout: one row per step; `timeouts` marks a step where the time limit cut the episode."""
    with h5py.File(path, "w") as file:
        file["observations"] = np.concatenate([e["observations"][:-1] for e in episodes])
        if with_next:
            file["next_observations"] = np.concatenate([e["observations"][1:] for e in episodes])
        file["actions"] = np.concatenate([e["actions"] for e in episodes])
        file["rewards"] = np.concatenate([e["rewards"] for e in episodes]).astype(np.float32)
        file["terminals"] = np.concatenate([e["terminations"] for e in episodes])
        file["timeouts"] = np.concatenate([e["truncations"] for e in episodes])
        file.attrs["env_id"] = "Hopper-v5"
        file.attrs["ref_min_score"], file.attrs["ref_max_score"] = REF_MIN, REF_MAX


@pytest.fixture()
def episodes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = hopper_episodes()
    ends = [("terminated" if e["terminations"][-1] else "truncated") for e in episodes]
    assert {"terminated", "truncated"} <= set(ends), ends  # the fixture exercises both endings
    return episodes


FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts")


def test_a_minari_dataset_and_a_d4rl_file_of_the_same_episodes_load_identically(tmp_path, episodes):
    write_minari(episodes)
    write_d4rl(tmp_path / "hopper-random.hdf5", episodes)

    from_minari = load_dataset(DATASET_ID)
    from_d4rl = load_dataset(str(tmp_path / "hopper-random.hdf5"))

    steps = sum(len(e["rewards"]) for e in episodes)
    assert len(from_minari) == len(from_d4rl) == steps
    for field in FIELDS:
        assert np.array_equal(getattr(from_minari, field), getattr(from_d4rl, field)), field
    assert from_minari.env_id == from_d4rl.env_id == "Hopper-v5"
    assert (
        (from_minari.ref_min_score, from_minari.ref_max_score)
        == (REF_MIN, REF_MAX)
        == (
            from_d4rl.ref_min_score,
            from_d4rl.ref_max_score,
        )
    )
    # Terminals and timeouts apart: each episode ends in exactly one of them, at its last step.
    assert from_minari.terminals.sum() == sum(bool(e["terminations"][-1]) for e in episodes)
    assert from_minari.timeouts.sum() == sum(bool(e["truncations"][-1]) for e in episodes)
    assert not (from_minari.terminals & from_minari.timeouts).any()
    assert from_minari.num_episodes == len(episodes)
    expected = [np.float32(e["rewards"]).astype(np.float64).sum() for e in episodes]
    assert np.allclose(from_minari.episode_returns(), expected)
    # Within an episode, a transition's next observation is the following transition's observation.
    inside = ~(from_minari.terminals | from_minari.timeouts)
    assert np.array_equal(from_minari.next_observations[inside], np.roll(from_minari.observations, -1, axis=0)[inside])


def test_a_d4rl_file_without_next_observations_drops_the_steps_cut_by_a_timeout(tmp_path, episodes):
    write_d4rl(tmp_path / "full.hdf5", episodes)
    write_d4rl(tmp_path / "flat.hdf5", episodes, with_next=False)
    full, flat = load_d4rl_hdf5(tmp_path / "full.hdf5"), load_d4rl_hdf5(tmp_path / "flat.hdf5")

    keep = ~full.timeouts  # their next observation is not in the file (the next row starts another episode)
    for field in FIELDS:
        if field != "next_observations":
            assert np.array_equal(getattr(flat, field), getattr(full, field)[keep]), field
    # A terminal step's next observation is never bootstrapped from; the file does not have it, so it is a placeholder.
    live = ~flat.terminals
    assert np.array_equal(flat.next_observations[live], full.next_observations[keep][live])
    assert not flat.timeouts.any() and flat.terminals.sum() == full.terminals.sum()


def test_a_dataset_that_is_not_here_is_refused_saying_where_it_was_looked_for(tmp_path, episodes):
    write_minari(episodes)
    with pytest.raises(DatasetNotFound, match="no Minari dataset 'mujoco/hopper/medium-v0' under .*minari") as error:
        load_minari("mujoco/hopper/medium-v0")
    assert DATASET_ID in str(error.value) and "nothing is downloaded" in str(error.value)
    with pytest.raises(DatasetNotFound, match="no D4RL HDF5 file at"):
        load_dataset(str(tmp_path / "hopper-medium-v2.hdf5"))
    (tmp_path / "other.hdf5").write_bytes(b"")
    with h5py.File(tmp_path / "other.hdf5", "w") as file:
        file["observations"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="not a D4RL dataset file: it lacks actions, rewards, terminals"):
        load_dataset(str(tmp_path / "other.hdf5"))


# --- rlgrid dataset --------------------------------------------------------------------------------------------
def test_dataset_make_random_writes_what_loads_back_with_its_provenance(tmp_path, monkeypatch, capsys):
    import json

    from experiments.cli import main
    from experiments.dataset_cli import random_episodes

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert main(["dataset", "make", "random", "--env-id", "Hopper-v5", "--transitions", "1500", "--seed", "4"]) == 0
    name = "rlgrid/hopper-v5/random-v0"
    assert name in capsys.readouterr().out

    data = load_dataset(name)
    episodes = random_episodes("Hopper-v5", 1500, seed=4)  # the same draws again
    assert len(data) == 1500 and data.num_episodes == len(episodes)
    assert np.array_equal(data.observations, np.concatenate([e["observations"][:-1] for e in episodes]).astype(np.float32))
    assert np.array_equal(data.actions, np.concatenate([e["actions"] for e in episodes]).astype(np.float32))
    assert data.timeouts[-1] and not data.timeouts[:-1].any()  # only the last episode is cut, by the transition count
    assert data.terminals.sum() == len(episodes) - 1  # random Hopper falls well before its 1,000-step limit
    mean_return = float(np.mean([e["rewards"].sum() for e in episodes]))
    assert data.ref_min_score == pytest.approx(mean_return) and data.ref_max_score == 3234.3  # D4RL's Hopper expert
    provenance = json.loads((tmp_path / "minari" / name / "provenance.json").read_text())
    assert provenance["recipe"] == "random" and provenance["seed"] == 4 and provenance["transitions"] == 1500
    assert provenance["versions"]["gymnasium"] and provenance["ref_max_score_source"].startswith("D4RL")

    assert main(["dataset", "list"]) == 0 and name in capsys.readouterr().out
    assert main(["dataset", "info", name]) == 0
    info = capsys.readouterr().out
    assert "1,500 transitions" in info and "    recipe: random" in info
    assert f"reference returns: random {mean_return:.1f}, expert 3234.3; the data's mean is 0.0 normalised" in info


def test_dataset_make_refuses_bad_input_before_any_step(tmp_path, monkeypatch, capsys):
    from experiments.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert main(["dataset", "make", "random", "--env-id", "Hoper-v5", "--transitions", "10"]) == 2
    assert "unknown environment id 'Hoper-v5'" in capsys.readouterr().err
    assert main(["dataset", "make", "random", "--env-id", "Hopper-v5", "--transitions", "0"]) == 2
    assert "--transitions must be >= 1" in capsys.readouterr().err
    assert main(["dataset", "make", "random", "--env-id", "Pendulum-v1", "--transitions", "10", "--name", "a/b-v0"]) == 2
    assert "Malformed dataset ID: a/b-v0" in capsys.readouterr().err  # Minari's rule: a namespace of 2+ characters
    make = ["dataset", "make", "random", "--env-id", "Pendulum-v1", "--transitions", "10", "--name", "test/pendulum-v0"]
    assert main(make) == 0
    capsys.readouterr()
    assert main(make) == 2
    assert "a dataset 'test/pendulum-v0' exists" in capsys.readouterr().err
    assert main(["dataset", "info", "test/other-v0"]) == 2
    assert "no Minari dataset 'test/other-v0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dataset", "make", "expert", "--env-id", "Hopper-v5"])  # argparse: expert is made from a run (--run)
    with pytest.raises(SystemExit):
        main(["dataset", "make", "medium-random", "--env-id", "Hopper-v5"])  # argparse: not a recipe rlgrid makes
    assert main(["dataset", "make", "random", "--env-id", "CartPole-v1", "--transitions", "10"]) == 2
    assert "CartPole-v1 has discrete actions" in capsys.readouterr().err


def test_a_minari_datasets_second_load_reads_its_flat_cache_and_a_changed_dataset_rebuilds_it(tmp_path, episodes):
    import os

    from envs.datasets import CACHE, minari_root

    write_minari(episodes)
    first = load_minari(DATASET_ID)
    cache = minari_root() / DATASET_ID / CACHE
    assert cache.is_file()
    second = load_minari(DATASET_ID)
    for field in FIELDS:
        assert np.array_equal(getattr(first, field), getattr(second, field)), field
    assert (second.env_id, second.ref_min_score, second.ref_max_score, second.source) == (
        first.env_id,
        first.ref_min_score,
        first.ref_max_score,
        first.source,
    )
    # The cache answers only for the data file it was made from: touch the data and it is rebuilt, not trusted.
    cache.write_bytes(b"not an npz")  # a damaged cache is rebuilt too
    assert np.array_equal(load_minari(DATASET_ID).rewards, first.rewards)
    data = minari_root() / DATASET_ID / "data" / "main_data.hdf5"
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    with np.load(cache) as stale:
        old_tag = str(stale["tag"])
    load_minari(DATASET_ID)
    with np.load(cache) as fresh:
        assert str(fresh["tag"]) != old_tag


# --- the agent recipes: medium, expert, medium-replay, medium-expert -------------------------------------------
def train_run(root, algo: str, env_id: str, **overrides) -> Path:
    """A tiny finished run whose one checkpoint is at its final step (with its replay memory, for sac/td3/ddpg)."""
    from experiments.execute import RunOptions, execute_run
    from experiments.runs import RunSpec

    spec = RunSpec.create(algo, env_id, 0, overrides)
    outcome = execute_run(spec, RunOptions(runs_dir=root, checkpoint_every_seconds=1e9, progress=False))
    assert outcome["status"] == "done"
    return Path(outcome["run_dir"])


TD3 = {"learning_starts": 200, "buffer_size": 1000, "batch_size": 32, "eval_every": 300, "eval_episodes": 2}


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory) -> Path:
    # 550 steps of 200-step Pendulum episodes: two whole episodes and one that training stopped in.
    return train_run(tmp_path_factory.mktemp("runs"), "td3", "Pendulum-v1", total_timesteps=550, **TD3)


def provenance_of(tmp_path, name: str) -> dict:
    import json

    return json.loads((tmp_path / "minari" / name / "provenance.json").read_text())


def checkpoint_policy(run_dir: Path, step: int | None = None):
    """The policy of the run's newest checkpoint (or the kept one at `step`), rebuilt as rlgrid eval rebuilds it."""
    from experiments.evaluate_run import open_run

    algorithm, config, handle, _ = open_run(run_dir, episodes=1, device="cpu", step=step)
    algorithm.train(config, None, handle)
    return handle.policy


def test_dataset_make_medium_expert_and_medium_expert_play_the_checkpoints_policy(tmp_path, monkeypatch, td3_run, capsys):
    import json

    from experiments.cli import main
    from experiments.dataset_recipes import random_return

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    make = ["dataset", "make", "medium", "--run", str(td3_run), "--transitions", "450", "--seed", "1"]
    assert main([*make, "--ref-max-score", "-150"]) == 0
    medium = load_dataset("rlgrid/pendulum-v1/medium-v0")
    assert len(medium) == 450 and medium.num_episodes == 3  # 200 + 200 + 50, the last one cut
    assert not medium.terminals.any() and np.flatnonzero(medium.timeouts).tolist() == [199, 399, 449]
    env = gym.make("Pendulum-v1")
    assert np.allclose(medium.observations[200], env.reset(seed=2)[0])  # episode i is reset with seed + i
    # No random dataset of Pendulum here: the random return is measured, on 100 episodes.
    assert medium.ref_min_score == pytest.approx(random_return("Pendulum-v1")) and medium.ref_max_score == -150
    provenance = provenance_of(tmp_path, "rlgrid/pendulum-v1/medium-v0")
    assert provenance["checkpoint_step"] == 550 and provenance["algorithm"] == "td3" and provenance["run_dir"] == str(td3_run)
    assert provenance["checkpoint_eval_episodes"] == 10 and np.isfinite(provenance["checkpoint_eval_return"])
    assert provenance["action_noise"] == 0.1 and provenance["seed"] == 1 and provenance["versions"]["torch"]
    assert "100 uniformly random episodes" in provenance["ref_min_score_source"]

    # The noise: the policy's action plus N(0, 0.1 half-ranges), one draw a step from a stream seeded with --seed,
    # clipped to Pendulum's [-2, 2] (half-range 2).
    policy = checkpoint_policy(td3_run)
    noise = np.random.default_rng(1).normal(0.0, 0.1, (450, 1)) * 2.0
    assert np.allclose(medium.actions, np.clip(policy(medium.observations) + noise, -2.0, 2.0), atol=1e-5)
    assert 0 < (np.abs(medium.actions) == 2.0).mean() < 1  # some actions clipped, not all

    # expert with no noise, evaluated on the run's own evaluation episodes: its final evaluation return, the policy's
    # actions exactly; a random dataset of the env is here now, and gives ref_min_score.
    assert main(["dataset", "make", "random", "--env-id", "Pendulum-v1", "--transitions", "400"]) == 0
    random_mean = provenance_of(tmp_path, "rlgrid/pendulum-v1/random-v0")["mean_episode_return"]
    expert_make = ["dataset", "make", "expert", "--run", str(td3_run), "--transitions", "250", "--seed", "7"]
    assert main([*expert_make, "--action-noise", "0", "--eval-episodes", "2", "--ref-max-score", "-150"]) == 0
    expert = load_dataset("rlgrid/pendulum-v1/expert-v0")
    assert len(expert) == 250 and np.allclose(expert.actions, policy(expert.observations), atol=1e-6)
    provenance = provenance_of(tmp_path, "rlgrid/pendulum-v1/expert-v0")
    result = json.loads((td3_run / "result.json").read_text())
    assert provenance["checkpoint_eval_return"] == result["final_eval_return"]
    assert expert.ref_min_score == pytest.approx(random_mean) and "random dataset" in provenance["ref_min_score_source"]

    # medium-expert: both datasets' transitions, medium first.
    sources = ["rlgrid/pendulum-v1/medium-v0", "rlgrid/pendulum-v1/expert-v0"]
    assert main(["dataset", "make", "medium-expert", "--from", *sources, "--ref-max-score", "-150"]) == 0
    both = load_dataset("rlgrid/pendulum-v1/medium-expert-v0")
    assert len(both) == 700 and both.num_episodes == medium.num_episodes + expert.num_episodes
    for field in FIELDS:
        assert np.array_equal(getattr(both, field), np.concatenate([getattr(medium, field), getattr(expert, field)])), field
    assert both.ref_min_score == pytest.approx(random_mean) and both.ref_max_score == -150
    assert provenance_of(tmp_path, "rlgrid/pendulum-v1/medium-expert-v0")["sources"] == sources
    capsys.readouterr()
    # ... of one env only.
    assert main(["dataset", "make", "random", "--env-id", "MountainCarContinuous-v0", "--transitions", "5"]) == 0
    other = "rlgrid/mountaincarcontinuous-v0/random-v0"
    assert main(["dataset", "make", "medium-expert", "--from", sources[0], other, "--name", "test/mixed-v0"]) == 2
    assert "datasets of different envs (Pendulum-v1 and MountainCarContinuous-v0)" in capsys.readouterr().err
    assert "test/mixed-v0" not in local_minari_ids()


def test_dataset_make_medium_replay_holds_exactly_what_the_agent_saw(tmp_path, monkeypatch, td3_run, capsys):
    import torch

    from experiments.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert main(["dataset", "make", "medium-replay", "--run", str(td3_run), "--ref-min-score", "-1200"]) == 0
    data = load_dataset("rlgrid/pendulum-v1/medium-replay-v0")
    replay = torch.load(td3_run / "checkpoints" / "ckpt-000000000550.replay.pt", weights_only=True)
    assert len(data) == replay["size"] == 550 and data.num_episodes == 3
    assert np.array_equal(data.observations, replay["obs"].numpy())
    assert np.array_equal(data.next_observations, replay["next_obs"].numpy())
    assert np.array_equal(data.actions, replay["actions"].numpy())
    assert np.array_equal(data.rewards, replay["rewards"].numpy())
    assert np.array_equal(data.terminals, replay["terminated"].numpy() > 0)
    truncated = replay["truncated"].numpy() > 0
    # Time limits where the agent met them; the episode training stopped in is cut at its last step.
    assert np.array_equal(data.timeouts[:-1], truncated[:-1]) and data.timeouts[-1] and not truncated[-1]
    assert data.ref_min_score is None  # Minari keeps reference scores only with an expert one (Pendulum has none)
    provenance = provenance_of(tmp_path, "rlgrid/pendulum-v1/medium-replay-v0")
    assert provenance["checkpoint_step"] == 550 and provenance["transitions"] == 550
    assert provenance["ref_min_score"] == -1200 and provenance["run_last_evaluation"]["step"] == 550
    capsys.readouterr()
    assert main(["dataset", "info", "rlgrid/pendulum-v1/medium-replay-v0"]) == 0
    assert "reference returns: none (random -1200.0; Minari keeps them only with an expert return)" in capsys.readouterr().out


def test_step_picks_a_kept_checkpoint_for_eval_medium_and_medium_replay(tmp_path, tmp_path_factory, monkeypatch, capsys):
    """D4RL's medium-replay is the memory up to the medium policy: one run that keeps its checkpoints on the way gives
    medium (--step), medium-replay (--step) and expert (the newest)."""
    import torch

    from experiments.cli import main
    from experiments.execute import RunOptions, execute_run
    from experiments.runs import RunSpec

    spec = RunSpec.create("td3", "Pendulum-v1", 0, {"total_timesteps": 550, **TD3})
    options = RunOptions(
        runs_dir=tmp_path_factory.mktemp("kept"), checkpoint_every_seconds=1e9, checkpoint_every_steps=300, progress=False
    )
    run_dir = Path(execute_run(spec, dataclasses.replace(options, keep_checkpoints=5))["run_dir"])
    early = 301  # the first save due once 300 steps have passed since the first iteration
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*[0-9].pt")) == [
        f"ckpt-{early:012d}.pt",
        f"ckpt-{550:012d}.pt",
    ]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))

    assert main(["eval", str(run_dir), "--step", str(early), "--episodes", "1"]) == 0
    assert f"checkpoint at step {early} (before its final step 550)" in capsys.readouterr().out
    obs = np.array([[1.0, 0.0, 0.5]], dtype=np.float32)
    assert not np.allclose(checkpoint_policy(run_dir, step=early)(obs), checkpoint_policy(run_dir)(obs))

    make = ["dataset", "make", "medium-replay", "--run", str(run_dir), "--ref-min-score", "-1200"]
    assert main([*make, "--step", str(early)]) == 0
    data = load_dataset("rlgrid/pendulum-v1/medium-replay-v0")
    newest = torch.load(run_dir / "checkpoints" / f"ckpt-{550:012d}.replay.pt", weights_only=True)
    assert len(data) == early and np.array_equal(data.observations, newest["obs"][:early].numpy())
    provenance = provenance_of(tmp_path, "rlgrid/pendulum-v1/medium-replay-v0")
    assert provenance["checkpoint_step"] == early and provenance["run_last_evaluation"]["step"] == 300

    medium = ["dataset", "make", "medium", "--run", str(run_dir), "--transitions", "50", "--eval-episodes", "1"]
    assert main([*medium, "--step", str(early), "--ref-max-score", "-150"]) == 0
    assert provenance_of(tmp_path, "rlgrid/pendulum-v1/medium-v0")["checkpoint_step"] == early

    capsys.readouterr()
    assert main([*medium, "--step", "123", "--name", "test/none-v0"]) == 2
    error = capsys.readouterr().err
    assert f"has no checkpoint at step 123; the steps of its kept checkpoints: {early}, 550" in error
    assert "test/none-v0" not in local_minari_ids()


def test_replay_episodes_of_several_env_copies_come_back_whole_in_the_order_they_started():
    from experiments.dataset_recipes import replay_episodes

    # Two copies, rows interleaved (row r: copy r % 2): copy 0 terminates after 2 steps then runs 3 more unfinished;
    # copy 1 is truncated after 4 steps, then runs 1 more. Observations count up per copy, so next_obs = obs + 1.
    steps = 5
    obs = np.zeros((2 * steps, 1), np.float32)
    obs[0::2, 0] = np.array([0, 1, 10, 11, 12])
    obs[1::2, 0] = np.array([100, 101, 102, 103, 200])
    terminated = np.zeros(2 * steps)
    truncated = np.zeros(2 * steps)
    terminated[2 * 1] = 1  # copy 0, step 1
    truncated[2 * 3 + 1] = 1  # copy 1, step 3
    replay = {
        "obs": obs,
        "next_obs": obs + 1,
        "actions": np.arange(2 * steps, dtype=np.float32)[:, None],
        "rewards": np.arange(2 * steps, dtype=np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }
    episodes = replay_episodes(replay, num_envs=2)
    assert [e["observations"][:, 0].tolist() for e in episodes] == [
        [0, 1, 2],
        [100, 101, 102, 103, 104],
        [10, 11, 12, 13],
        [200, 201],
    ]
    assert [e["actions"][:, 0].tolist() for e in episodes] == [[0, 2], [1, 3, 5, 7], [4, 6, 8], [9]]
    assert [(e["terminations"].tolist(), e["truncations"].tolist()) for e in episodes] == [
        ([False, True], [False, False]),
        ([False] * 4, [False, False, False, True]),
        ([False] * 3, [False, False, True]),  # unfinished: cut
        ([False], [True]),
    ]
    replay["next_obs"] = replay["next_obs"].copy()
    replay["next_obs"][0] = 5  # not the next row's observation: not a memory written step by step
    with pytest.raises(ValueError, match="not consecutive steps"):
        replay_episodes(replay, num_envs=2)


def test_agent_recipes_refuse_bad_runs_before_any_step(tmp_path, tmp_path_factory, monkeypatch, capsys, td3_run):
    import shutil

    import experiments.dataset_recipes as recipes
    from experiments.cli import main

    def no_step(*args, **kwargs):
        raise AssertionError("a refused dataset played or read episodes")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setattr(recipes, "rollout", no_step)
    monkeypatch.setattr(recipes, "replay_episodes", no_step)

    def refused(*argv: str) -> str:
        assert main(["dataset", "make", *argv]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1, error  # one line
        return error

    assert "no such directory" in refused("medium", "--run", str(tmp_path / "nowhere"))
    no_checkpoint = tmp_path / "copy"
    no_checkpoint.mkdir()
    for name in ("spec.json", "config.json"):
        shutil.copy(td3_run / name, no_checkpoint / name)
    assert "has no checkpoint" in refused("medium-replay", "--run", str(no_checkpoint))
    runs = tmp_path_factory.mktemp("more-runs")
    ppo = train_run(runs, "ppo", "Pendulum-v1", **load_algorithm_smoke("ppo"))
    assert "is a ppo run: medium is made from sac, td3, ddpg runs only" in refused("medium", "--run", str(ppo))
    assert "is a ppo run" in refused("medium-replay", "--run", str(ppo))
    wrapped = train_run(runs, "td3", "Pendulum-v1", total_timesteps=400, **{**TD3, "buffer_size": 300})
    error = refused("medium-replay", "--run", str(wrapped))
    assert "buffer_size 300" in error and "dropped the oldest 100 transitions" in error
    assert "buffer_size >= total_timesteps" in error
    assert "--action-noise must be >= 0" in refused("expert", "--run", str(td3_run), "--action-noise", "-0.1")
    (tmp_path / "minari" / "rlgrid" / "pendulum-v1" / "medium-replay-v0" / "data").mkdir(parents=True)
    assert "a dataset 'rlgrid/pendulum-v1/medium-replay-v0' exists" in refused("medium-replay", "--run", str(td3_run))
    assert "no Minari dataset 'test/none-v0'" in refused("medium-expert", "--from", "test/none-v0", "test/other-v0")


def load_algorithm_smoke(algo: str) -> dict:
    from experiments.registry import load_algorithm

    return dict(load_algorithm(algo).SMOKE)
