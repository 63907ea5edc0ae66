"""The checkpoint handle: atomic files, last K kept, RNG capture, due logic."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms.common import Checkpointer, RunInterrupted, restore_rng_state, rng_state
from algorithms.common.checkpoint import CheckpointRefused


def test_save_load_keeps_last_k_and_leaves_no_temp_files(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep_last=2)
    assert ckpt.load() is None
    model = torch.nn.Linear(3, 2)
    for step in (100, 200, 300):
        ckpt.save(step, {"model": model.state_dict(), "step": step})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["ckpt-000000000200.pt", "ckpt-000000000300.pt"]
    state, extras = Checkpointer(tmp_path / "ckpt").load()
    assert state["step"] == 300 and extras == {}
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())


def test_metadata_and_latest(tmp_path):
    ckpt = Checkpointer(tmp_path, metadata_fn=lambda: {"metrics_offset": 42})
    ckpt.save(7, {"x": 1})
    payload = ckpt.latest()
    assert payload["step"] == 7 and payload["metadata"] == {"metrics_offset": 42} and payload["state"] == {"x": 1}
    assert payload["extras"] == {}


def test_rng_state_roundtrip():
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_due_every_steps_and_stop_request(tmp_path):
    ckpt = Checkpointer(tmp_path, every_steps=100, every_seconds=None)
    assert not ckpt.due(0)
    assert not ckpt.due(99)
    assert ckpt.due(100)
    ckpt.save(100, {})
    assert not ckpt.due(150)
    ckpt.stop_requested = True
    assert ckpt.due(151)
    with pytest.raises(RunInterrupted):
        ckpt.save(151, {})
    assert (tmp_path / "ckpt-000000000151.pt").exists(), "the state is on disk before the interrupt is raised"


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, keep_last=0)


def test_a_checkpoint_that_does_not_fit_the_networks_is_refused_clearly(tmp_path):
    """Resuming into other networks (another hidden size here; in practice another version of the algorithm) names the
    directory and the mismatch instead of failing inside torch."""
    from algorithms import ppo
    from algorithms.common.run import CheckpointMismatch

    tiny = {"env_id": "CartPole-v1", "total_timesteps": 256, "num_steps": 128, "num_minibatches": 2, "update_epochs": 1}
    ppo.train(ppo.Config(**tiny), checkpoint=Checkpointer(tmp_path, every_steps=128, every_seconds=None))
    assert list(tmp_path.glob("ckpt-*.pt"))
    with pytest.raises(CheckpointMismatch, match=f"newest checkpoint in {tmp_path}.*does not fit"):
        ppo.train(ppo.Config(**tiny, hidden_size=32), checkpoint=Checkpointer(tmp_path))


def _save_three(directory, keep_last: int = 3) -> Checkpointer:
    ckpt = Checkpointer(directory, keep_last=keep_last)
    for step in (100, 200, 300):
        ckpt.save(
            step,
            {"weights": torch.full((64, 64), float(step)), "rng": np.random.get_state()},
            extras={"replay": {"obs": np.full((500, 4), step, np.float32)}},
        )
    return ckpt


@pytest.mark.parametrize("damage", ["truncated", "bit flipped in a tensor", "bit flipped in an extra", "empty"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_loads(tmp_path, damage, capsys):
    """Bit rot or a partial copy: the newest checkpoint that reads back whole is used, the damaged one (and its extras)
    is moved to damaged/ with a warning, nothing is deleted. torch.load itself does not notice a flipped bit in a tensor:
    the zip records' CRC-32 does."""
    _save_three(tmp_path)
    newest = tmp_path / "ckpt-000000000300.pt"
    target = tmp_path / "ckpt-000000000300.replay.pt" if "extra" in damage else newest
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data[len(data) // 2] ^= 0x10  # the middle of the file: inside the largest record's data
    target.write_bytes(bytes(data))

    state, extras = Checkpointer(tmp_path).load()
    assert float(state["weights"][0, 0]) == 200.0 and float(extras["replay"]["obs"][0, 0]) == 200.0
    assert "ckpt-000000000300.pt is damaged" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "damaged").iterdir()) == ["ckpt-000000000300.pt", "ckpt-000000000300.replay.pt"]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-000000000100.pt",
        "ckpt-000000000100.replay.pt",
        "ckpt-000000000200.pt",
        "ckpt-000000000200.replay.pt",
    ]


def test_the_last_loadable_checkpoint_is_never_deleted(tmp_path):
    """keep_last=1 and a damaged newest file: the older one loads; the next save prunes only after writing a new one."""
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(100, {"x": 1})
    (tmp_path / "ckpt-000000000200.pt").write_bytes(b"PK\x03\x04 a partial copy")
    resumed = Checkpointer(tmp_path, keep_last=1)
    assert resumed.load() == ({"x": 1}, {})
    resumed.save(300, {"x": 3})
    assert [p.name for p in resumed.paths()] == ["ckpt-000000000300.pt"]
    assert (tmp_path / "damaged" / "ckpt-000000000200.pt").exists()
    assert Checkpointer(tmp_path).load() == ({"x": 3}, {})


def test_only_damaged_checkpoints_start_the_run_over(tmp_path):
    (tmp_path / "ckpt-000000000100.pt").write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path).load() is None
    assert (tmp_path / "damaged" / "ckpt-000000000100.pt").exists()


class _WritesAFile:
    """What a planted checkpoint does: unpickling it calls a function of the attacker's choice."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


@pytest.mark.parametrize("where", ["checkpoint", "extra"])
def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path, where):
    """A file that unpickles into a call (here: writing a file) is refused with a clear error; the call never runs, the
    file is not moved or deleted, older checkpoints are not used in its place."""
    _save_three(tmp_path)
    marker = tmp_path.parent / "pwned.txt"
    newest = tmp_path / "ckpt-000000000300.pt"
    if where == "checkpoint":
        torch.save({"step": 300, "state": {"x": _WritesAFile(str(marker))}, "extras": []}, newest)
    else:
        torch.save(_WritesAFile(str(marker)), tmp_path / "ckpt-000000000300.replay.pt")
    with pytest.raises(CheckpointRefused, match="ckpt-000000000300.*names types rlgrid never stores.*not loaded"):
        Checkpointer(tmp_path).load()
    assert not marker.exists()
    assert newest.exists() and not (tmp_path / "damaged").exists()


def test_a_run_with_a_planted_checkpoint_stops_with_a_clear_error(tmp_path):
    """`rlgrid train` on a run whose newest checkpoint was replaced names the file and exits 2 before training; nothing
    is executed from the file."""
    import subprocess
    import sys

    from experiments.execute import RunOptions, execute_run
    from experiments.runs import RunSpec

    spec = RunSpec.create("ppo", "CartPole-v1", 1, {"total_timesteps": 256, "num_steps": 128})
    options = RunOptions(runs_dir=tmp_path / "runs", progress=False, pause_at_step=128)
    assert execute_run(spec, options)["status"] == "paused"
    (checkpoint,) = (tmp_path / "runs").glob("single/ppo/*/*/checkpoints/ckpt-*.pt")
    marker = tmp_path / "pwned.txt"
    torch.save({"step": 128, "state": _WritesAFile(str(marker)), "extras": [], "metadata": {}}, checkpoint)
    command = ["train", "ppo", "--env-id", "CartPole-v1", "--seed", "1", "--total-timesteps", "256", "--num-steps", "128"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    resumed = subprocess.run(
        [sys.executable, "-m", "experiments", *command, "--runs-dir", str(tmp_path / "runs"), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 2 and "names types rlgrid never stores" in resumed.stderr, resumed.stderr
    assert "Traceback" not in resumed.stderr and not marker.exists()
