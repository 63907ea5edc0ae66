"""The `rlgrid` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from algorithms.common import RunInterrupted
from experiments.registry import config_fields, list_algorithms, load_algorithm, unknown_field_message
from experiments.runs import RunDirectoryMismatch, RunSpec

TRAIN_DESCRIPTION = """\
Train one run: ALGO on --env-id with --seed for --total-timesteps environment steps.

Results go to RUNS_DIR/single/ALGO/ENV/seed<k>-<hash>/ (spec.json, config.json, metrics.jsonl,
checkpoints/, result.json, DONE). Running the same command again resumes an unfinished run from its
newest checkpoint, and does nothing for a finished one. Any Config field of the algorithm can be set as
--field-name value (booleans: --flag / --no-flag); `rlgrid train ALGO --help` lists them.
"""


def _train_parser(algo: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"rlgrid train {algo or 'ALGO'}",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="root of run directories (default: ./runs)")
    parser.add_argument("--track", action="store_true", help="mirror the run to Weights & Biases")
    parser.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None,
                        help="default: online if an API key is configured, else offline (then `wandb sync`)")  # fmt: skip
    parser.add_argument("--wandb-project", default=None, help="W&B project (default: rlgrid-<suite>)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for this run (default: 1)")
    parser.add_argument("--checkpoint-every-steps", type=int, default=None, help="also checkpoint every N env steps")
    parser.add_argument(
        "--checkpoint-every-seconds", type=float, default=300.0, help="checkpoint every S seconds (default: 300)"
    )
    parser.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoint files kept (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    if algo is not None:
        group = parser.add_argument_group(f"{algo} Config fields (default in brackets)")
        for field in config_fields(load_algorithm(algo).Config).values():
            group.add_argument(f"--{field.name.replace('_', '-')}", metavar="VALUE", help=f"{field.doc} [{field.default}]")
    return parser


def parse_config_overrides(algo: str, args: list[str]) -> dict[str, Any]:
    """`--field value`, `--field=value`, `--flag`, `--no-flag` -> {field: raw value}; unknown names are errors."""
    config_cls = load_algorithm(algo).Config
    fields = config_fields(config_cls)
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r} (config fields are given as --name value)")
        name, _, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        bool_field = name in fields and fields[name].default in (True, False) and not inline
        if name.startswith("no_") and name[3:] in fields and not inline:
            overrides[name[3:]] = False
            i += 1
            continue
        if name not in fields:
            raise ValueError(unknown_field_message(config_cls, name, algo))
        if inline:
            overrides[name] = inline
            i += 1
        elif bool_field and (i + 1 == len(args) or args[i + 1].startswith("--")):
            overrides[name] = True
            i += 1
        elif i + 1 < len(args):
            overrides[name] = args[i + 1]
            i += 2
        else:
            raise ValueError(f"--{name.replace('_', '-')} needs a value")
    return overrides


def cmd_train(argv: list[str]) -> int:
    from experiments.execute import RunOptions, execute_run

    if not argv or argv[0].startswith("-"):
        _train_parser(None).print_help()
        print(f"\nalgorithms: {', '.join(list_algorithms())}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    algo = argv[0]
    try:
        load_algorithm(algo)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        _train_parser(algo).print_help()
        return 0
    try:
        runner_args, rest = _train_parser(None).parse_known_args(argv[1:])
    except SystemExit as exc:  # argparse has printed the problem
        return int(exc.code or 0)
    try:
        overrides = parse_config_overrides(algo, rest)
        defaults = load_algorithm(algo).Config()
        spec = RunSpec.create(algo, overrides.pop("env_id", defaults.env_id), overrides.pop("seed", defaults.seed), overrides)
        options = RunOptions(
            runs_dir=runner_args.runs_dir, track=runner_args.track, wandb_mode=runner_args.wandb_mode,
            wandb_project=runner_args.wandb_project, threads=runner_args.threads,
            checkpoint_every_steps=runner_args.checkpoint_every_steps,
            checkpoint_every_seconds=runner_args.checkpoint_every_seconds,
            keep_checkpoints=runner_args.keep_checkpoints, progress=not runner_args.quiet,
        )  # fmt: skip
        if options.threads < 1 or options.keep_checkpoints < 1:
            raise ValueError("--threads and --keep-checkpoints must be >= 1")
        outcome = execute_run(spec, options)
    except (ValueError, RunDirectoryMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"\n{exc}; run the same command again to resume.", file=sys.stderr)
        return 130
    result = outcome["result"]
    verb = "already finished, nothing to do" if outcome["status"] == "skipped" else "finished"
    print(f"{verb}: {outcome['run_dir']}")
    print(f"  final eval return {result['final_eval_return']:.2f} at step {result['global_step']:,}"
          f" ({result['steps_per_second']:,.0f} steps/s)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": cmd_train}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: rlgrid COMMAND ...\n\ncommands:\n  train   train one run (rlgrid train --help)")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
