"""The W&B mirror, for real but OFFLINE only: a tiny CLI run with --track writes an offline W&B run whose
config, metrics and id follow the conventions in experiments/tracking.py. Nothing here may go online.

wandb >= 0.2x (wandb-core) keeps an offline run only in its transaction log, `run-<id>.wandb` (no
files/config.yaml or files/wandb-summary.json until `wandb sync`), so the log is read directly: a
LevelDB-style record log of `wandb_internal_pb2.Record` protobufs. Where config.yaml and
wandb-summary.json do exist (older wandb), they are checked as well.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.wandb
wandb = pytest.importorskip("wandb")
yaml = pytest.importorskip("yaml")

from experiments.runs import RunSpec  # noqa: E402
from experiments.tracking import resolve_wandb_mode, wandb_run_id  # noqa: E402

TINY = "--env-id CartPole-v1 --total-timesteps 1024 --num-envs 2 --num-steps 128 --update-epochs 2 --num-minibatches 4".split()
TINY += "--eval-every 512 --eval-episodes 2 --quiet".split()
REQUIRED_METRICS = ("charts/episodic_return", "eval/episodic_return", "losses/value_loss", "global_step")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection from this process fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted a network connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def offline_wandb_env(monkeypatch, tmp_path) -> Path:
    """Only our W&B settings: offline, every W&B folder in tmp, a dead server address, no key, no ~/.netrc."""
    for name in list(os.environ):
        if name.startswith("WANDB_") or name == "NETRC":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # closed port: anything going online fails fast
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "30")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


# --- reading an offline run's transaction log --------------------------------------------------------
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_transaction_log(path: Path) -> list[Any]:
    """The `Record`s of a `.wandb` file: a 7-byte header (":W&B", magic 0xBEE1, version 0), then records
    in 32 KiB blocks, each chunk prefixed by crc32 (4 bytes), length (2) and type (1: full, 2-4: split)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {pos}")
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def _items(updates) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in updates}


def summarize(records: list[Any]) -> tuple[Any, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(run record, config, final summary, history rows) of an offline run."""
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(runs) == 1
    config = _items(runs[0].config.update)
    summary: dict[str, Any] = {}
    history = []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update(_items(record.config.update))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "history":
            history.append(_items(record.history.item))
    return runs[0], config, summary, history


# --- the real offline run -----------------------------------------------------------------------------
def test_offline_run_mirrors_the_local_run(tmp_path, offline_wandb_env):
    runs_dir = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        "train",
        "ppo",
        *TINY,
        "--runs-dir",
        str(runs_dir),
        "--track",
        "--wandb-mode",
        "offline",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (run_dir,) = runs_dir.glob("single/ppo/CartPole-v1/seed1-*")
    assert (run_dir / "DONE").is_file()
    spec_json = json.loads((run_dir / "spec.json").read_text())
    spec = RunSpec.create(
        spec_json["algo"],
        spec_json["env_id"],
        spec_json["seed"],
        spec_json["overrides"],
        suite=spec_json["suite"],
        variant=spec_json["variant"],
    )
    assert spec.hash == spec_json["hash"] and run_dir.name == f"seed1-{spec.hash}"
    run_id = wandb_run_id(spec)

    # Offline, inside the run directory, named by the deterministic id; nothing was written for online use.
    (offline_dir,) = run_dir.glob("wandb/offline-run-*")
    assert offline_dir.name.endswith(f"-{run_id}")
    assert not list(run_dir.glob("wandb/run-*"))
    assert f"wandb sync {offline_dir}" in proc.stderr

    record_run, config, summary, history = summarize(read_transaction_log(offline_dir / f"run-{run_id}.wandb"))
    assert record_run.run_id == run_id
    assert record_run.project == "rlgrid-single"
    assert record_run.run_group == "single/ppo/CartPole-v1"

    # Flat config keys with the run's values (converted types, not command-line strings).
    assert config["env_id"] == "CartPole-v1"
    assert config["exp_name"] == "ppo"
    assert config["seed"] == 1
    assert config["total_timesteps"] == 1024 and config["num_minibatches"] == 4
    assert config["run_hash"] == spec.hash

    # Summary: the last value of each metric, the same as the local metrics.jsonl and result.json.
    local = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = json.loads((run_dir / "result.json").read_text())
    for key in REQUIRED_METRICS:
        assert key in summary, f"{key} missing from the W&B summary"
        assert math.isfinite(summary[key]), (key, summary[key])
    for key in ("charts/episodic_return", "eval/episodic_return", "losses/value_loss"):
        last_local = [row[key] for row in local if key in row][-1]
        assert summary[key] == pytest.approx(last_local, rel=1e-6), key
    assert summary["global_step"] == result["global_step"] == 1024
    assert summary["eval/episodic_return"] == pytest.approx(result["final_eval_return"])

    # Every logged row went to W&B, plotted against global_step = the local step.
    assert [row["global_step"] for row in history] == [row["step"] for row in local]

    # Older wandb versions also write these files for an offline run; check them where they exist.
    config_yaml = offline_dir / "files" / "config.yaml"
    if config_yaml.exists():
        flat = yaml.safe_load(config_yaml.read_text())
        assert flat["env_id"]["value"] == "CartPole-v1"
        assert flat["exp_name"]["value"] == "ppo"
        assert flat["seed"]["value"] == 1
    summary_json = offline_dir / "files" / "wandb-summary.json"
    if summary_json.exists():
        file_summary = json.loads(summary_json.read_text())
        for key in REQUIRED_METRICS:
            assert math.isfinite(file_summary[key]), key


# --- run ids and the mode ------------------------------------------------------------------------------
def test_wandb_run_id_is_deterministic_and_distinct():
    overrides = {"total_timesteps": "1024", "num_envs": "2"}
    spec = RunSpec.create("ppo", "CartPole-v1", 1, overrides)
    assert wandb_run_id(spec) == wandb_run_id(RunSpec.create("ppo", "CartPole-v1", 1, dict(overrides)))
    others = [
        RunSpec.create("ppo", "CartPole-v1", 2, overrides),
        RunSpec.create("ppo", "Acrobot-v1", 1, overrides),
        RunSpec.create("ppo", "CartPole-v1", 1, {**overrides, "num_envs": "4"}),
        RunSpec.create("ppo", "CartPole-v1", 1, overrides, suite="mujoco-core"),
    ]
    ids = [wandb_run_id(s) for s in [spec, *others]]
    assert len(set(ids)) == len(ids), ids


def test_wandb_run_id_is_a_valid_id_for_any_suite_name():
    spec = RunSpec.create("ppo", "ALE/Pong-v5", 3, {}, suite="my suite/v2:final?#%")
    run_id = wandb_run_id(spec)
    assert 0 < len(run_id) <= 128
    assert not set(run_id) & set("/\\#?%: "), run_id


def test_mode_is_offline_without_a_key(monkeypatch, tmp_path, no_network):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert resolve_wandb_mode(None) == "offline"


def test_mode_is_online_with_a_key_without_going_online(monkeypatch, tmp_path, no_network):
    for name in ("WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert resolve_wandb_mode(None) == "online"
    # An explicit mode or WANDB_MODE wins over the key.
    assert resolve_wandb_mode("offline") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(ValueError, match="unknown W&B mode 'sideways'"):
        resolve_wandb_mode(None)


def test_mode_follows_a_netrc_key_for_the_configured_host(monkeypatch, tmp_path, no_network):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    netrc_file.chmod(0o600)
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.internal")  # a key for another host does not count
    assert resolve_wandb_mode(None) == "offline"
