"""Run specs and run directories: the unit of work and where everything about it is kept.

A run directory (`runs/<suite>/<algo>/<env-slug>/seed<k>-<hash8>/`) holds `spec.json`, `config.json`,
append-only `metrics.jsonl`, `checkpoints/`, `result.json`, `error.txt` after a failure, and `DONE`,
written last. Local files are the source of truth; W&B only mirrors them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.registry import config_fields, convert_value, load_algorithm, make_config, unknown_field_message


def env_slug(env_id: str) -> str:
    """`ALE/Pong-v5` -> `ALE-Pong-v5`: safe as one path component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", env_id).strip("-")


INPUT_FILE_FIELDS = {"env_id": "file", "preferences": "file", "model": "directory"}
"""Config fields that may name an input by its path: a preference file (a task, or a synthetic task's pairs) and a
local Hugging Face model. Their contents' checksums are part of a run's hash, as an input run's hash is."""
_fingerprints: dict[tuple, str] = {}


def input_fingerprints(values: dict[str, Any]) -> dict[str, str]:
    """{field: sha256 of the contents} for the INPUT_FILE_FIELDS among `values` that name an existing .jsonl file or
    model directory (every file in it, by relative path); kept per (path, sizes, mtimes), so a file is read once while
    it does not change."""
    out = {}
    for name, kind in INPUT_FILE_FIELDS.items():
        value = values.get(name)
        if not isinstance(value, str):
            continue
        path = Path(value)
        if kind == "file" and value.endswith(".jsonl") and path.is_file():
            files = [path]
        elif kind == "directory" and path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            continue
        key = (str(path.resolve()), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
        if key not in _fingerprints:
            digest = hashlib.sha256()
            for file in files:
                digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
                with open(file, "rb") as handle:
                    while block := handle.read(1 << 20):
                        digest.update(block)
            _fingerprints[key] = digest.hexdigest()[:16]
        out[name] = _fingerprints[key]
    return out


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: algorithm x env x seed x config overrides. Its hash covers everything that changes the run."""

    algo: str
    env_id: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()
    suite: str = "single"
    variant: str = "default"

    @classmethod
    def create(cls, algo: str, env_id: Any, seed: Any, overrides: dict[str, Any] | None = None, **labels: str) -> RunSpec:
        """Values are converted to the Config field types and overrides equal to the default are dropped,
        so `--gamma 0.99`, `gamma = 0.99` and no gamma at all name the same run. Raises ValueError on bad input."""
        config_cls = load_algorithm(algo).Config
        fields = config_fields(config_cls)
        rest = {}
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ValueError(unknown_field_message(config_cls, name, algo))
            value = convert_value(fields[name], value)
            if name not in ("env_id", "seed") and value != fields[name].default:
                rest[name] = value
        env_id, seed = convert_value(fields["env_id"], env_id), convert_value(fields["seed"], seed)
        return cls(algo, env_id, seed, tuple(sorted(rest.items())), **labels)

    @functools.cached_property  # once per spec: its input files are read (or their sizes and times looked up) once
    def hash(self) -> str:
        content = {"algo": self.algo, "env_id": self.env_id, "seed": self.seed, "overrides": dict(self.overrides)}
        inputs = input_fingerprints({"env_id": self.env_id, **dict(self.overrides)})
        if inputs:  # a run on a file is another run when the file's contents change
            content["inputs"] = inputs
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]

    def config(self) -> Any:
        """The resolved, validated Config (raises ValueError on bad input)."""
        return make_config(self.algo, {**dict(self.overrides), "env_id": self.env_id, "seed": self.seed})

    def run_dir(self, runs_dir: str | os.PathLike) -> Path:
        return Path(runs_dir) / self.suite / self.algo / env_slug(self.env_id) / f"seed{self.seed}-{self.hash}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "env_id": self.env_id,
            "seed": self.seed,
            "overrides": dict(self.overrides),
            "suite": self.suite,
            "variant": self.variant,
            "hash": self.hash,
        }


RUN_REFERENCE = "@"
"""a Config value `@<algo>` (in a suite) names the suite's run of that algorithm with the same env and seed, whose output
this run takes as its input (an sft run's policy); linked, it is `@<algo>/<env-slug>/seed<k>-<hash8>`: the input's
directory under the suite's, its hash part of this run's hash"""


def run_references(spec: RunSpec) -> dict[str, str]:
    """The Config fields of `spec` that name another run of its suite, and the run they name (`@...` values)."""
    return {name: value for name, value in spec.overrides if isinstance(value, str) and value.startswith(RUN_REFERENCE)}


def resolve_run_references(spec: RunSpec, config: Any, runs_dir: str | os.PathLike) -> Any:
    """`config` with every linked `@...` value replaced by the input run's directory; ValueError, before any compute,
    when an input run has not finished (or was never linked: a bare `@sft` outside a suite)."""
    resolved = {}
    for name, value in run_references(spec).items():
        path = Path(runs_dir) / spec.suite / value[len(RUN_REFERENCE) :]
        if not (path / "DONE").is_file():
            if value.count("/") < 3:
                raise ValueError(f"{name} = {value!r} names a run of a suite: use it in a suite file, or give a run directory")
            raise ValueError(f"{name}: its input run {path} has not finished (the grid runs inputs first)")
        resolved[name] = str(path)
    return dataclasses.replace(config, **resolved) if resolved else config


def check_runs_dir(runs_dir: str | os.PathLike) -> None:
    """Make `runs_dir` if needed and write (then remove) a file in it, or raise a one-line ValueError: the commands call
    it after validating their input and before any compute, so an unusable --runs-dir (under a file, read-only, on a
    full disk) fails at once with the reason instead of with a traceback at a run's first write."""
    path = Path(runs_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".rlgrid-write-test-"):
            pass
    except OSError as exc:
        blocking = next((p for p in (path, *path.parents) if os.path.exists(p) and not os.path.isdir(p)), None)
        reason = f"{blocking} is a file, not a directory" if blocking is not None else exc.strerror or str(exc)
        raise ValueError(f"--runs-dir {path} cannot be created or written to: {reason}") from None


class RunDirectoryMismatch(ValueError):
    """The directory exists but was made for a different spec or config."""


class RunDirectory:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    spec_file = property(lambda self: self.path / "spec.json")
    config_file = property(lambda self: self.path / "config.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    result_file = property(lambda self: self.path / "result.json")
    done_file = property(lambda self: self.path / "DONE")
    error_file = property(lambda self: self.path / "error.txt")
    diverged_file = property(lambda self: self.path / "DIVERGED")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")

    @property
    def status(self) -> str:
        """'done', 'diverged' (stopped on non-finite losses: final), 'partial' (resumable) or 'new'."""
        if self.done_file.exists():
            return "done"
        if self.diverged_file.exists():
            return "diverged"
        return "partial" if self.spec_file.exists() else "new"

    def create_or_check(self, spec: RunSpec, config: Any) -> None:
        """Create the directory (atomically: spec and config appear together), or check that the existing
        one belongs to this spec and config. Never overwrites anything."""
        config_dict = dataclasses.asdict(config)
        if self.spec_file.exists():
            old_config = json.loads(self.config_file.read_text())
            # The directory's name hashes every non-default value, so a field only one side has (added to or removed
            # from the Config since the directory was made, e.g. when ppo_kl became ppo's objective option) was at its
            # default on both: only the values both sides have can differ, which happens when a default changed.
            diff = {k: (old_config[k], v) for k, v in config_dict.items() if k in old_config and old_config[k] != v}
            if diff:
                lines = "\n".join(f"  {k}: directory has {a!r}, this run has {b!r}" for k, (a, b) in sorted(diff.items()))
                raise RunDirectoryMismatch(
                    f"run directory {self.path} was made with a different config:\n{lines}\n"
                    "It was left untouched. Use another --runs-dir, or move that directory away to start over."
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        meta = {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "python": platform.python_version(),
        }
        (staging / "spec.json").write_text(json.dumps({**spec.to_dict(), **meta}, indent=2) + "\n")
        (staging / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
        try:
            os.rename(staging, self.path)
        except OSError:  # another process created it first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
            self.create_or_check(spec, config)

    def truncate_metrics(self, offset: int) -> None:
        """Drop metric lines written after the checkpoint we resume from (they will be logged again)."""
        if self.metrics_file.exists() and self.metrics_file.stat().st_size > offset:
            with open(self.metrics_file, "r+b") as f:
                f.truncate(offset)

    def write_json_atomic(self, path: Path, data: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)

    def finish(self, result: dict[str, Any]) -> None:
        self.write_json_atomic(self.result_file, result)
        self.error_file.unlink(missing_ok=True)
        self.done_file.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]


class JsonlLogger:
    """Appends one JSON line per `log` call to metrics.jsonl, flushed so a crash loses nothing logged."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **metrics}) + "\n")
        self.file.flush()

    def offset(self) -> int:
        self.file.flush()
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
