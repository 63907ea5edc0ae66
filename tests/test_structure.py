"""The sharing rule and the direction of imports (README, "Layout"), checked on the source: no algorithm file imports
another one, each package imports only what is upstream of it, and no module imports one that imports it back
(imports inside functions count: a lazy import still makes a circle). Also: an algorithm file's own command line and
`rlgrid train` parse a Config the same way."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("algorithms", "envs", "experiments", "analysis")
UPSTREAM = {
    "algorithms": {"algorithms.common", "envs"},  # an algorithm file: only what it borrows and the environments
    "algorithms.common": {"algorithms.common", "envs"},
    "envs": {"envs"},
    "analysis": {"analysis", "envs"},  # run files in, figures out; envs only to name an env's family
    "experiments": set(PACKAGES),  # the runner is the one place that imports everything
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(source: str) -> set[str]:
    """Every project module `source` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from algorithms import ppo`
    return {name for name in names if name.split(".")[0] in PACKAGES}


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}
GRAPH = {name: {m for m in project_imports(path.read_text()) if m in MODULES and m != name} for name, path in MODULES.items()}


def area(module: str) -> str:
    if module.startswith("algorithms.common") or module == "algorithms":
        return "algorithms.common"
    return module.split(".")[0]


def test_no_algorithm_file_imports_another_algorithm_file():
    files = {name for name in MODULES if area(name) == "algorithms"}
    assert files, "no algorithm files found"
    offenders = {name: sorted(GRAPH[name] & files) for name in files if GRAPH[name] & files}
    assert not offenders, f"algorithm files importing algorithm files: {offenders}"


def test_imports_go_downstream_only():
    wrong = {}
    for name, imported in GRAPH.items():
        allowed = UPSTREAM[area(name)]
        bad = sorted(m for m in imported if area(m) not in allowed and m.split(".")[0] not in allowed)
        if bad:
            wrong[name] = bad
    assert not wrong, f"imports against the data flow: {wrong}"


def test_no_import_circles():
    """Tarjan's strongly connected components of the module graph: every one must be a single module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_checker_counts_lazy_imports_and_imported_modules():
    source = "import numpy\nfrom algorithms import ppo\n\ndef f():\n    from experiments.grid import GridRunner\n"
    found = project_imports(source)
    assert {"experiments.grid", "algorithms.ppo"} <= found and "numpy" not in found
    assert {"algorithms.common.run", "envs"} <= GRAPH["algorithms.ppo"]


def option_names(help_text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_the_algorithm_files_command_line_is_rlgrid_trains_config_part(algo, capsys):
    """`python -m algorithms.X --help` lists exactly the Config options that `rlgrid train X --help` lists next to the
    runner's own, both from algorithms.common.cli.parse_command_line."""
    proc = subprocess.run(
        [sys.executable, "-m", f"algorithms.{algo}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    file_options = option_names(proc.stdout) - {"--help"}
    assert main(["train", algo, "--help"]) == 0
    train_options = option_names(capsys.readouterr().out) - {"--help"}
    assert {"--env-id", "--seed", "--total-timesteps", "--learning-rate"} <= file_options
    assert file_options < train_options
    assert {"--runs-dir", "--threads", "--track"} <= train_options - file_options
    bad = subprocess.run(
        [sys.executable, "-m", f"algorithms.{algo}", "--learning-rate", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "--learning-rate" in bad.stderr
