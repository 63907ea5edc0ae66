"""The checkpoint handle: atomic files, last K kept, RNG capture, due logic."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from algorithms.common import Checkpointer, RunInterrupted, restore_rng_state, rng_state


def test_save_load_keeps_last_k_and_leaves_no_temp_files(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep_last=2)
    assert ckpt.load() is None
    model = torch.nn.Linear(3, 2)
    for step in (100, 200, 300):
        ckpt.save(step, {"model": model.state_dict(), "step": step})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["ckpt-000000000200.pt", "ckpt-000000000300.pt"]
    state = Checkpointer(tmp_path / "ckpt").load()
    assert state["step"] == 300
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())


def test_metadata_and_latest(tmp_path):
    ckpt = Checkpointer(tmp_path, metadata_fn=lambda: {"metrics_offset": 42})
    ckpt.save(7, {"x": 1})
    payload = ckpt.latest()
    assert payload["step"] == 7 and payload["metadata"] == {"metrics_offset": 42} and payload["state"] == {"x": 1}


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
