"""Command lines of algorithm Configs: `python -m algorithms.<name>` and `rlgrid train <name>` parse them the same way
(`parse_command_line`).

Every Config field is `--field-name VALUE` (booleans `--flag` / `--no-flag`, optional values `None`), its help is the
field's docstring and default, and the Config validates itself; tyro reports unknown options (with the closest
names), missing and ill-typed values and failed validation, and exits with status 2 (0 after `--help`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import tyro

from algorithms.common.logging import ConsoleLogger
from envs import check_env_support


def parse_command_line(args: Sequence[str], prog: str, description: str | None = None, **groups: type) -> dict[str, Any]:
    """Instances of the dataclasses in `groups` (e.g. `config=ppo.Config`, and for `rlgrid train` the runner's options
    too) from one command line: each field is `--field-name`, in one help screen with a section per group."""
    fields = [
        (name, Annotated[cls, tyro.conf.OmitArgPrefixes], dataclasses.field(default_factory=cls))
        for name, cls in groups.items()
    ]
    command_line = dataclasses.make_dataclass("CommandLine", fields, frozen=True)
    parsed = tyro.cli(command_line, args=list(args), prog=prog, description=description)
    return {name: getattr(parsed, name) for name in groups}


def run_algorithm_cli(module_name: str, argv: Sequence[str] | None = None) -> None:
    """The `__main__` of an algorithm file: parse its Config, refuse an env it cannot act in before any compute (the
    env check of every entry point), and train with a progress display. No run directory: `rlgrid train` adds those."""
    module = sys.modules[module_name]
    name = module.__spec__.name.rsplit(".", 1)[-1] if module.__spec__ else module_name
    description = (module.__doc__ or "").strip().splitlines()[0]
    for variant, values in getattr(module, "VARIANTS", {}).items():
        flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in values.items())
        description += f"\n{variant}: {flags}"
    args = sys.argv[1:] if argv is None else argv
    config = parse_command_line(args, f"python -m algorithms.{name}", description, config=module.Config)["config"]
    try:
        check_env_support(config.env_id, name, module.ACTION_SPACES, module.OBSERVATIONS)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    logger = ConsoleLogger(total_steps=config.total_timesteps)
    try:
        module.train(config, logger)
    finally:
        logger.close()
