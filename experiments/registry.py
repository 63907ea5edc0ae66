"""Algorithm discovery and the typed view of an algorithm's `Config` used by every command line.

An algorithm is any module `algorithms/<name>.py` that defines `Config` and `train`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import inspect
import pkgutil
import types
import typing
from functools import cache
from typing import Any

import algorithms


@cache
def list_algorithms() -> tuple[str, ...]:
    names = []
    for info in pkgutil.iter_modules(algorithms.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"algorithms.{info.name}")
        if hasattr(module, "Config") and hasattr(module, "train"):
            names.append(info.name)
    return tuple(sorted(names))


def load_algorithm(name: str) -> types.ModuleType:
    """The algorithm module, or ValueError listing the known ones."""
    known = list_algorithms()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algorithm {name!r}.{hint} Known algorithms: {', '.join(known)}")
    return importlib.import_module(f"algorithms.{name}")


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: Any
    default: Any
    doc: str


@cache
def config_fields(config_cls: type) -> dict[str, FieldInfo]:
    """Fields of a Config dataclass with resolved types and their docstrings (the string under each field)."""
    hints = typing.get_type_hints(config_cls)
    docs: dict[str, str] = {}
    # Base classes first, so a subclass (e.g. double_dqn's Config over dqn's) overrides what it redefines.
    for cls in reversed([c for c in config_cls.__mro__ if dataclasses.is_dataclass(c)]):
        body = ast.parse(inspect.getsource(cls)).body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                    docs[node.target.id] = str(following.value.value).strip()
    return {f.name: FieldInfo(f.name, hints[f.name], f.default, docs.get(f.name, "")) for f in dataclasses.fields(config_cls)}


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(underlying type, whether None is allowed) for `T` or `T | None`."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def convert_value(field: FieldInfo, value: Any) -> Any:
    """Coerce `value` (a string from a command line, or a TOML/JSON value) to the field's type."""
    base, optional = _base_type(field.type)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"{field.name} cannot be None")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{field.name} expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{field.name} expects an integer, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field.name} expects an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"{field.name} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field.name} expects a number, got {value!r}") from None
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"{field.name} expects a string, got {value!r}")
        return value
    raise ValueError(f"{field.name} has an unsupported type {field.type!r}")


def unknown_field_message(config_cls: type, name: str, algo: str) -> str:
    close = difflib.get_close_matches(name, list(config_fields(config_cls)), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else f" See `rlgrid train {algo} --help` for its fields."
    return f"{algo} has no Config field {name!r}.{hint}"


def make_config(algo: str, overrides: dict[str, Any]) -> Any:
    """Build the validated Config of `algo` from overrides; every problem raises ValueError with a clear message."""
    module = load_algorithm(algo)
    fields = config_fields(module.Config)
    values = {}
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(unknown_field_message(module.Config, name, algo))
        values[name] = convert_value(fields[name], value)
    try:
        return module.Config(**values)
    except ValueError as exc:
        raise ValueError(f"invalid {algo} config: {exc}") from None


def check_env_support(algo: str, env_id: str) -> None:
    """ValueError when `algo` cannot act in `env_id` or has no network for its observations (envs.check_env_support)."""
    from envs import check_env_support as check

    module = load_algorithm(algo)
    check(env_id, algo, module.ACTION_SPACES, module.OBSERVATIONS)
