"""CI's rule against silent skips (tests/conftest.py): with RLGRID_REQUIRE_ALL=1 a pytest session that skips a test,
or a whole module at collection, outside the allow-list fails and names the skip. Checked on real pytest sessions
in subprocesses, on generated test files, with our conftest's hooks loaded as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TESTS = {
    "test_module_skip.py": """
import pytest
pytest.importorskip("rlgrid_no_such_package")

def test_never_collected():
    pass
""",
    "test_skip_in_body.py": """
import pytest

def test_passes():
    pass

def test_skips_in_its_body():
    pytest.skip("the feature's package is missing")
""",
    "test_skip_mark.py": """
import pytest

@pytest.mark.skip(reason="skipped by a mark")
def test_skipped_by_a_mark():
    pass
""",
    "test_gpu.py": """
import pytest

@pytest.mark.gpu
def test_needs_cuda():
    import torch
    assert torch.cuda.is_available()
""",
    "test_xfail.py": """
import pytest

@pytest.mark.xfail(reason="a known bug, marked in the code", strict=True)
def test_known_bug():
    assert False
""",
}


def pytest_session(tmp_path: Path, test_file: str, require_all: bool) -> subprocess.CompletedProcess:
    """`python -m pytest` on one generated file, in its own rootdir, with tests/conftest.py's hooks as a plugin."""
    (tmp_path / test_file).write_text(TESTS[test_file])
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA device\naddopts = -ra --strict-markers\n")
    env = {k: v for k, v in os.environ.items() if k != "RLGRID_REQUIRE_ALL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""  # the gpu test skips here on any machine: no CUDA device is visible to it
    if require_all:
        env["RLGRID_REQUIRE_ALL"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", test_file]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("test_file", "skipped", "reason"),
    [
        ("test_module_skip.py", "test_module_skip.py", "could not import 'rlgrid_no_such_package'"),
        ("test_skip_in_body.py", "test_skip_in_body.py::test_skips_in_its_body", "the feature's package is missing"),
        ("test_skip_mark.py", "test_skip_mark.py::test_skipped_by_a_mark", "skipped by a mark"),
    ],
)
def test_a_skip_fails_the_session_and_is_named_when_all_features_are_required(tmp_path, test_file, skipped, reason):
    required = pytest_session(tmp_path, test_file, require_all=True)
    out = required.stdout + required.stderr
    assert required.returncode == 1, out
    assert f"SKIP NOT ALLOWED {skipped}: {reason}" in out, out
    assert "SKIPPED" in out, "-ra still lists the skip"
    relaxed = pytest_session(tmp_path, test_file, require_all=False)  # a developer's machine: skips are fine
    assert relaxed.returncode in (0, 5) and "SKIP NOT ALLOWED" not in relaxed.stdout, relaxed.stdout


def test_an_allow_listed_skip_and_an_xfail_pass_when_all_features_are_required(tmp_path):
    for test_file, outcome in (("test_gpu.py", "1 skipped"), ("test_xfail.py", "1 xfailed")):
        result = pytest_session(tmp_path, test_file, require_all=True)
        assert result.returncode == 0 and outcome in result.stdout, result.stdout + result.stderr
        assert "SKIP NOT ALLOWED" not in result.stdout
