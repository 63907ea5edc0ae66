"""Algorithm discovery: the registered names suites, run directories and every command line use.

An algorithm file `algorithms/<name>.py` (one that defines `Config` and `train`) registers `<name>`, and one name per
entry of its `VARIANTS` (a paper's alternatives kept in the same file as Config options, e.g. `ppo_kl` is ppo.py with
`objective="kl"`); a file with `FAMILY = True` (one book chapter's methods, e.g. temporal_difference.py) registers its
variants only. A variant is the file's algorithm with other Config defaults: its own `Config` subclass, so that
`Config()`, the run hash (which counts only non-default values) and `--help` all show the variant's defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

import algorithms


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: its name, the file that implements it, and its Config (defaults included)."""

    name: str
    module: types.ModuleType
    Config: type

    @property
    def train(self) -> Callable[..., Any]:
        return self.module.train

    @property
    def SMOKE(self) -> dict[str, Any]:  # noqa: N802 (the module constant's name)
        return self.module.SMOKE

    @property
    def ACTION_SPACES(self) -> tuple[str, ...]:  # noqa: N802
        return self.module.ACTION_SPACES

    @property
    def OBSERVATIONS(self) -> tuple[str, ...]:  # noqa: N802
        return self.module.OBSERVATIONS

    def check_inputs(self, config: Any) -> None:
        """ValueError, before any compute, when the runs this config takes as inputs (an sft run, a reward model) are not
        there or not finished: the algorithm file's `check_inputs`, where it has one."""
        check = getattr(self.module, "check_inputs", None)
        if check is not None:
            check(config)

    def check_env(self, env_id: str) -> None:
        """ValueError, before any compute, when this algorithm cannot act in `env_id` or has no network for its
        observations (`envs.check_env_support`, which the algorithm files' own command line calls too)."""
        from envs import check_env_support

        check_env_support(env_id, self.name, self.ACTION_SPACES, self.OBSERVATIONS)


def _variant_config(config_cls: type, name: str, defaults: dict[str, Any]) -> type:
    """A subclass of `config_cls` whose fields in `defaults` have those defaults (validated like any Config)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(defaults) - set(fields)
    if unknown:
        raise TypeError(f"variant {name!r} sets unknown {config_cls.__module__}.Config fields {sorted(unknown)}")
    hints = typing.get_type_hints(config_cls)
    changed = [(key, hints[key], dataclasses.field(default=value)) for key, value in defaults.items()]
    class_name = "".join(part.title() for part in name.split("_")) + "Config"
    variant = dataclasses.make_dataclass(class_name, changed, bases=(config_cls,), frozen=True)
    variant.__module__ = config_cls.__module__
    variant.__doc__ = f"{config_cls.__module__}.Config with {', '.join(f'{k}={v!r}' for k, v in defaults.items())}"
    variant()  # the variant's defaults must validate
    return variant


@cache
def _registry() -> dict[str, Algorithm]:
    registry: dict[str, Algorithm] = {}
    for info in pkgutil.iter_modules(algorithms.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"algorithms.{info.name}")
        if not (hasattr(module, "Config") and hasattr(module, "train")):
            continue
        if not getattr(module, "FAMILY", False):
            registry[info.name] = Algorithm(info.name, module, module.Config)
        for name, defaults in getattr(module, "VARIANTS", {}).items():
            if name in registry:
                raise TypeError(f"algorithm name {name!r} is registered twice")
            registry[name] = Algorithm(name, module, _variant_config(module.Config, name, defaults))
    return dict(sorted(registry.items()))


def list_algorithms() -> tuple[str, ...]:
    return tuple(_registry())


def load_algorithm(name: str) -> Algorithm:
    """The registered algorithm, or ValueError listing the known ones."""
    registry = _registry()
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown algorithm {name!r}.{hint} Known algorithms: {', '.join(registry)}")
    return registry[name]


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: Any
    default: Any


@cache
def config_fields(config_cls: type) -> dict[str, FieldInfo]:
    """Fields of a Config dataclass with resolved types and defaults."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: FieldInfo(f.name, hints[f.name], f.default) for f in dataclasses.fields(config_cls)}


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(underlying type, whether None is allowed) for `T` or `T | None`."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def convert_value(field: FieldInfo, value: Any) -> Any:
    """Coerce a TOML or JSON value (suites, studies, spec files) to the field's type; command lines go through
    `algorithms.common.cli.parse_config`."""
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
    config_cls = load_algorithm(algo).Config
    fields = config_fields(config_cls)
    values = {}
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(unknown_field_message(config_cls, name, algo))
        values[name] = convert_value(fields[name], value)
    try:
        return config_cls(**values)
    except ValueError as exc:
        raise ValueError(f"invalid {algo} config: {exc}") from None
