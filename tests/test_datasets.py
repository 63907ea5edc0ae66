"""Offline datasets: a Minari dataset and a D4RL HDF5 file holding the same episodes load as the same transitions, with
terminals and timeouts kept apart; datasets that are not on the machine are refused clearly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.datasets import DatasetNotFound, load_d4rl_hdf5, load_dataset, load_minari

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
    assert "1,500 transitions" in info and '"recipe": "random"' in info


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
        main(["dataset", "make", "expert", "--env-id", "Hopper-v5"])  # argparse: not a recipe rlgrid makes yet


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
