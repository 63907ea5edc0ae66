"""Weights & Biases mirror of a run (optional; local run directories stay the source of truth).

Conventions: project from the suite, group `<suite>/<algo>/<env>`, flat config keys `env_id`, `exp_name`
(= algorithm) and `seed`, and a deterministic run id with resume="allow", so a resumed run continues the
same W&B run. Metrics are plotted against `global_step` (environment steps), logged as a metric rather
than as W&B's own step, so points logged again after a resume are accepted.
"""

from __future__ import annotations

import dataclasses
import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from experiments.runs import RunSpec, env_slug

WANDB_MODES = ("online", "offline", "disabled")


def wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str | None) -> str:
    """The explicit mode, else WANDB_MODE, else online with a configured key and offline without."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("dryrun",):
        mode = "offline"
    if mode is None:
        mode = "online" if wandb_key_configured() else "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"unknown W&B mode {mode!r}; choose one of {', '.join(WANDB_MODES)}")
    return mode


def wandb_run_id(spec: RunSpec) -> str:
    return f"{env_slug(spec.suite)}-{spec.algo}-{spec.hash}-s{spec.seed}"[:128]


class WandbLogger:
    def __init__(
        self,
        spec: RunSpec,
        config: Any,
        run_dir: Path,
        mode: str,
        project: str | None = None,
        job_type: str = "train",
        group: str | None = None,
        quiet: bool = False,
    ) -> None:
        import wandb

        self.mode = mode
        flat = {
            **dataclasses.asdict(config),
            "env_id": spec.env_id,
            "exp_name": spec.algo,
            "seed": spec.seed,
            "suite": spec.suite,
            "variant": spec.variant,
            "run_hash": spec.hash,
        }
        self.run = wandb.init(
            project=project or f"rlgrid-{env_slug(spec.suite)}",
            group=group or f"{spec.suite}/{spec.algo}/{spec.env_id}",
            job_type=job_type,
            name=f"{spec.algo}__{env_slug(spec.env_id)}__seed{spec.seed}__{spec.hash}",
            id=wandb_run_id(spec),
            resume="allow",
            config=flat,
            dir=str(run_dir),
            mode=mode,
            tags=[spec.algo, spec.env_id, spec.variant],
            settings=wandb.Settings(quiet=quiet, silent=quiet),
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        if mode == "offline" and not quiet:
            print(f"W&B is offline; upload later with: wandb sync {self.run.dir.rsplit('/files', 1)[0]}", file=sys.stderr)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "global_step": step})

    def log_video(self, step: int, path: Path) -> None:
        """An evaluation video (`--capture-video`), as W&B media under `eval/video` at its step."""
        import wandb

        self.run.log({"eval/video": wandb.Video(str(path), format="mp4"), "global_step": step})

    def close(self) -> None:
        self.run.finish()
