"""`rlgrid eval RUN_DIR`: evaluate a run's newest checkpoint (or a kept one, `--step`) under the run's own evaluation
protocol, changing nothing.

Every algorithm builds its networks and its deterministic policy inside its own `train()`, so that is what evaluates:
`train()` runs with the run's Config (config.json), `total_timesteps` set to the checkpoint's step, and a
`CheckpointEvaluation` (algorithms/common/run.py) as its checkpoint handle. It restores the networks and the env's
observation statistics, runs no iteration (a loop that would train stops before any save), and goes straight to
`RunState.finish`, which evaluates as the run does (`envs.evaluate`: a deterministic policy, frozen observation
statistics, unclipped returns), on the episodes asked for. The checkpoint is read without moving a damaged file or
reading the replay memory, and the logger is a null one: the run directory is left byte for byte as it was.

By default the episodes are the run's own: `eval_episodes` of them, seeded as the run's evaluation at the checkpoint's
step was (or would be), so on a finished run whose newest checkpoint is at its final step the mean is the run's
`final_eval_return`. The interval is Student's t (mean +/- t(0.975, n-1) * s / sqrt(n)): fitting for the few episodes
an evaluation usually has, where a bootstrap interval is too narrow.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from algorithms.common.checkpoint import CheckpointRefused
from algorithms.common.run import CheckpointEvaluation
from envs import check_rendering, validate_env_id
from experiments.registry import config_fields, load_algorithm, make_config
from experiments.runs import RunDirectory


class NotEvaluable(ValueError):
    """RUN_DIR is not a run directory, or has no checkpoint to evaluate, or cannot be evaluated here (one line)."""


@dataclasses.dataclass
class RunEvaluation:
    """What `rlgrid eval` found."""

    run_dir: Path
    algo: str
    env_id: str
    run_seed: int
    status: str  # the run's: done / partial / diverged
    step: int  # of the checkpoint evaluated
    episodes: int
    seed: int  # the first episode's; episode i is seeded seed + i
    own_seed: bool  # the seed of the run's own evaluation at this step
    returns: list[float]
    run_eval_episodes: int  # the run's own `eval_episodes`
    final_step: int | None = None  # result.json's global_step (a finished run)
    final_eval_return: float | None = None  # result.json's

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.returns)


# --- Student's t interval (no scipy needed: the core install has none) -------------------------------------------
def _t_density_integral(x: float, df: int, points: int = 4001) -> float:
    """The integral of Student's t density with `df` degrees of freedom from 0 to x >= 0 (composite Simpson)."""
    grid = np.linspace(0.0, x, points)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
    h = x / (points - 1)
    return float(h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution, 0.5 <= p < 1 (bisection on the integrated density; ~1e-9)."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    target, low, high = p - 0.5, 0.0, 1.0
    while _t_density_integral(high, df) < target:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_density_integral(middle, df) < target else (low, middle)
    return (low + high) / 2


def t_interval(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student's t confidence interval of the mean (None for fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


# --- the evaluation ------------------------------------------------------------------------------------------------
def open_run(
    run_dir: str | Path,
    episodes: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    video: Path | None = None,
    step: int | None = None,
):
    """Everything checked before compute: (algorithm, Config to run, CheckpointEvaluation with the checkpoint read,
    spec dict). `step`: the kept checkpoint at that env step instead of the newest. Raises NotEvaluable with a one-line
    reason."""
    path = Path(run_dir)
    run = RunDirectory(path)
    if not path.is_dir():
        raise NotEvaluable(f"{path} is not a run directory: {'it is a file' if path.exists() else 'no such directory'}")
    missing = [f.name for f in (run.spec_file, run.config_file) if not f.is_file()]
    if missing:
        raise NotEvaluable(
            f"{path} is not a run directory: it has no {' or '.join(missing)} (a run directory is "
            "RUNS_DIR/<suite>/<algo>/<env>/seed<k>-<hash>/)"
        )
    try:
        spec = json.loads(run.spec_file.read_text())
        saved_config = json.loads(run.config_file.read_text())
        algorithm = load_algorithm(spec["algo"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotEvaluable(f"{path}: cannot read its spec.json / config.json: {type(exc).__name__}: {exc}") from None
    if episodes is not None and episodes < 1:
        raise NotEvaluable(f"--episodes must be >= 1, got {episodes}")
    if seed is not None and seed < 0:
        raise NotEvaluable(f"--seed must be >= 0, got {seed}")
    if video is not None and Path(video).resolve().is_relative_to(path.resolve()):
        raise NotEvaluable(f"--video {video} is inside the run directory, which rlgrid eval leaves untouched")
    handle = CheckpointEvaluation(run.checkpoint_dir, episodes=1, seed=seed, video=video, step=step)
    if step is not None and step not in handle.kept_steps():
        kept = ", ".join(f"{s:,}" for s in handle.kept_steps()) or "none"
        raise NotEvaluable(f"{path} has no checkpoint at step {step:,}; the steps of its kept checkpoints: {kept}")
    try:
        latest = handle.latest()
    except CheckpointRefused as exc:
        raise NotEvaluable(str(exc)) from None
    if latest is None and step is not None:
        raise NotEvaluable(f"{path}: its checkpoint at step {step:,} is damaged")
    if latest is None:
        damaged = len(handle.paths())
        reason = f"all {damaged} in checkpoints/ are damaged" if damaged else "it stopped before its first checkpoint"
        raise NotEvaluable(f"{path} has no checkpoint to evaluate: {reason}")
    # The run's own values for the fields today's Config has (one it lacks was added since, at its default then).
    fields = config_fields(algorithm.Config)
    values = {name: value for name, value in saved_config.items() if name in fields}
    values["total_timesteps"] = latest["step"]  # restore, then straight to the evaluation: no step is trained
    if device is not None:
        values["device"] = device
    try:
        config = make_config(algorithm.name, values)
        validate_env_id(config.env_id)
        algorithm.check_env(config.env_id)
        if video is not None:
            check_rendering(config.env_id)
    except ValueError as exc:
        raise NotEvaluable(f"{path}: {exc}") from None
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise NotEvaluable(f"{path}: device {config.device} is not available here (no CUDA device): use --device cpu")
    handle.episodes = episodes or config.eval_episodes
    return algorithm, config, handle, spec


def evaluate_run(
    run_dir: str | Path,
    episodes: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    threads: int = 1,
    video: Path | None = None,
    step: int | None = None,
) -> RunEvaluation:
    """Evaluate the newest checkpoint of `run_dir`, or the kept one at `step` (see the module docstring). `episodes`
    defaults to the run's `eval_episodes`, `seed` to the seed of the run's own evaluation at the checkpoint's step;
    `video`: the first episode as an MP4 file there (outside the run directory)."""
    import torch

    algorithm, config, handle, spec = open_run(run_dir, episodes, seed, device, video, step)
    run = RunDirectory(Path(run_dir))
    step = handle.latest()["step"]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        algorithm.train(config, None, handle)
    finally:
        torch.set_num_threads(previous_threads)
    result = json.loads(run.result_file.read_text()) if run.status == "done" and run.result_file.is_file() else {}
    saved_config = json.loads(run.config_file.read_text())
    return RunEvaluation(
        run_dir=Path(run_dir),
        algo=algorithm.name,
        env_id=config.env_id,
        run_seed=config.seed,
        status=run.status,
        step=step,
        episodes=handle.episodes,
        seed=int(handle.seed_used),
        own_seed=seed is None,
        returns=[float(r) for r in handle.returns],
        run_eval_episodes=int(saved_config.get("eval_episodes", config.eval_episodes)),
        final_step=result.get("global_step"),
        final_eval_return=result.get("final_eval_return"),
    )


def describe(evaluation: RunEvaluation) -> str:
    """The report `rlgrid eval` prints."""
    e = evaluation
    lines = [f"{e.algo} on {e.env_id}, seed {e.run_seed} ({e.status} run): {e.run_dir}"]
    where = f"checkpoint at step {e.step:,}"
    if e.final_step is not None:
        where += " (its final step)" if e.final_step == e.step else f" (before its final step {e.final_step:,})"
    lines.append(where)
    seeds = f"seeds {e.seed}..{e.seed + e.episodes - 1}" if e.episodes > 1 else f"seed {e.seed}"
    if e.own_seed:
        seeds += ", as in the run's own evaluation at this step"
    lines.append(
        f"{e.episodes} episode{'s' if e.episodes > 1 else ''} ({seeds}): deterministic policy, frozen observation "
        "statistics, unclipped returns"
    )
    interval = e.interval
    if interval is None:
        lines.append(f"return {e.mean:.2f} (one episode: no interval)")
    else:
        lines.append(
            f"mean return {e.mean:.2f}, 95% CI [{interval[0]:.2f}, {interval[1]:.2f}] (Student t, {e.episodes - 1} "
            "degrees of freedom)"
        )
    lines.append("episode returns: " + ", ".join(f"{r:.2f}" for r in e.returns))
    if e.final_eval_return is not None and e.final_step == e.step:
        same = e.own_seed and e.episodes == e.run_eval_episodes
        lines.append(
            f"the run's final evaluation: {e.final_eval_return:.2f} over {e.run_eval_episodes} episodes"
            + (" (the same episodes)" if same else "")
        )
    elif e.final_step is not None:
        lines.append(
            f"note: the run's newest checkpoint precedes its final step (checkpoints are kept by time or steps): "
            f"this is the policy at step {e.step:,}, not the final one"
        )
    return "\n".join(lines)
