"""Shared test setup: W&B can never go online, MuJoCo's log stays out of the repo, a tiny test env, and (in CI) no
silent skips: with RLGRID_REQUIRE_ALL=1 (set by .ci/run) the session fails on any skip outside ALLOWED_SKIPS."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py, also when this file is loaded as a plugin elsewhere

# A tripwire: if any code path tried to reach W&B's servers it would fail fast on a closed loopback port.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_BASE_URL"] = "http://127.0.0.1:9"
os.environ["WANDB_INIT_TIMEOUT"] = "30"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
# Ray reads these when it is imported: every node on 127.0.0.1 (else Ray binds the primary interface) and no
# token authentication for the tests' local clusters. test_ray.py also asserts the node addresses.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
# Offline datasets live under the Minari root: the session's is a scratch folder (a test never reads or writes the
# user's ~/.minari), inherited by the subprocesses tests start. It holds the smoke dataset of the offline algorithms.
SCRATCH_MINARI_ROOT = tempfile.mkdtemp(prefix="rlgrid-test-minari-")
os.environ["MINARI_DATASETS_PATH"] = SCRATCH_MINARI_ROOT
SMOKE_DATASET = "rlgrid/pendulum-v1/smoke-v0"
"""what the offline algorithms' SMOKE settings train on: 2,000 random Pendulum-v1 transitions (10 episodes)"""
# Runs that smoke runs take as inputs (the sft run that dpo starts from: `@sft` in a SMOKE dict, tests/helpers.py).
SCRATCH_SMOKE_RUNS = tempfile.mkdtemp(prefix="rlgrid-test-smoke-runs-")
os.environ["RLGRID_TEST_SMOKE_RUNS"] = SCRATCH_SMOKE_RUNS  # tests/helpers.py's SMOKE_RUNS_ENV


class CountEnv(gym.Env):
    """Observation = [steps taken in the episode]; reward 1 per step; terminates after `terminate_at` steps
    (if set). Registered with a TimeLimit, so it is truncated at max_episode_steps otherwise."""

    def __init__(self, terminate_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1e6, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


gym.register(id="rlgrid-test/Count-v0", entry_point=CountEnv, max_episode_steps=3)


@pytest.fixture(scope="session", autouse=True)
def _smoke_dataset():
    """Write the smoke dataset once per session with `rlgrid dataset make random` (skipped without the offline
    extra: the offline algorithms' tests then fail on the missing dataset, as their runs would)."""
    try:
        import minari  # noqa: F401
    except ImportError:
        yield
        return
    from experiments.dataset_recipes import make_random

    make_random("Pendulum-v1", transitions=2_000, seed=0, name=SMOKE_DATASET)
    yield
    shutil.rmtree(SCRATCH_MINARI_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _smoke_input_runs():
    """Remove the session's smoke input runs at its end; tests/helpers.py's `smoke_run` trains each the first time a test
    asks for it (a session that needs none, such as tests/test_ci_skips.py's, trains none)."""
    yield
    shutil.rmtree(SCRATCH_SMOKE_RUNS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path, monkeypatch):
    """Run every test in a scratch directory (MuJoCo writes MUJOCO_LOG.TXT into the working directory)."""
    monkeypatch.chdir(tmp_path)


# --- No silent skips in CI --------------------------------------------------------------------------------------
# A missing extra (optuna, wandb, ray, submitit, minatar, mujoco, ...) skips the tests of its feature, which is right on
# a developer's machine and wrong in CI, where `.ci/run` installs every extra: there a skip means an untested feature.
# With RLGRID_REQUIRE_ALL=1 every skip fails the session (exit status 1, the skips listed at the end), collection-time
# skips included (a module-level importorskip skips the whole module before any test of it is collected), except:
ALLOWED_SKIPS = {
    # Hardware, not a package CI can install: tests marked `gpu` skip where no CUDA device is visible.
    "gpu": lambda: not _cuda_available(),
}
REQUIRE_ALL = "RLGRID_REQUIRE_ALL"
_unexpected_skips: list[str] = []


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip without a CUDA device (the allow-listed skip above)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (marker gpu)"))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _note_skip(report) -> None:
    if not os.environ.get(REQUIRE_ALL) or not report.skipped or hasattr(report, "wasxfail"):  # xfail is no skip
        return
    keywords = getattr(report, "keywords", {})
    if any(marker in keywords and allowed() for marker, allowed in ALLOWED_SKIPS.items()):
        return
    _unexpected_skips.append(f"{report.nodeid or '<session>'}: {_skip_reason(report)}")


def pytest_collectreport(report):
    """A module skipped while it was collected (module-level pytest.importorskip / pytest.skip)."""
    _note_skip(report)


def pytest_runtest_logreport(report):
    """A test skipped in setup (skip marks, fixtures) or in its body (pytest.skip, pytest.importorskip)."""
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section(f"{REQUIRE_ALL} is set: skips outside the allow-list (tests/conftest.py ALLOWED_SKIPS)")
        for line in _unexpected_skips:
            terminalreporter.line(f"SKIP NOT ALLOWED {line}", red=True)
