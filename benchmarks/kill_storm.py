"""Kill storm: a small grid SIGKILLed (grid and workers at once) at random moments, again and again, then the same
command run to the end; every run's metrics must equal those of its uninterrupted twin.

    python benchmarks/kill_storm.py --kills 25 --out /tmp/kill-storm

Prints how many runs, how many kills landed while runs were in progress, how many run starts resumed from a
checkpoint (not from step 0), and, run by run, whether metrics.jsonl (less wall-clock fields) and result.json's
returns equal the uninterrupted twin's. Exit status 1 if any run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = """
algorithms = ["ppo", "a2c", "dqn"]
env_ids = ["CartPole-v1"]
seeds = [1, 2]
eval_every = 2000
eval_episodes = 3
[algo.ppo]
total_timesteps = 12288
num_envs = 4
num_steps = 128
[algo.a2c]
total_timesteps = 12000
num_envs = 4
[algo.dqn]
total_timesteps = 8000
learning_starts = 1000
buffer_size = 3000
"""
WALL_CLOCK = {"time", "charts/SPS"}


def grid_command(suite: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments", "run", str(suite), "--runs-dir", str(runs), "--progress-interval", "600",
            "--checkpoint-every-steps", "1000", *extra]  # fmt: skip


def descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return [grandchild for child in children for grandchild in descendants(child)] + children


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("storm/*/*/*/spec.json"))


def newest_checkpoint(run_dir: Path) -> int:
    steps = [int(p.name[5:17]) for p in (run_dir / "checkpoints").glob("ckpt-*[0-9].pt")]
    return max(steps, default=0)


def metrics(run_dir: Path) -> list[dict]:
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(row).items() if k not in WALL_CLOCK} for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=25, help="SIGKILLs to deliver (default 25)")
    parser.add_argument("--min-wait", type=float, default=1.0, help="shortest time between a start and its kill (s)")
    parser.add_argument("--max-wait", type=float, default=8.0, help="longest time between a start and its kill (s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--out", type=Path, default=Path("kill-storm"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "storm.toml"
    suite.write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference, storm = args.out / "reference", args.out / "storm"

    started = time.monotonic()
    subprocess.run(grid_command(suite, reference, "--executor", "inline"), env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"reference grid: {time.monotonic() - started:.0f} s", flush=True)

    kills = resumes = starts = 0
    started = time.monotonic()
    while kills < args.kills:
        # Runs that will resume from a checkpoint when this start reaches them: unfinished, with a checkpoint.
        partial = {d: newest_checkpoint(d) for d in run_dirs(storm) if not (d / "DONE").exists() and newest_checkpoint(d)}
        grid = subprocess.Popen(grid_command(suite, storm, "--workers", str(args.workers)), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        starts += 1
        try:
            grid.wait(timeout=rng.uniform(args.min_wait, args.max_wait))
            print(f"start {starts}: the grid finished before its kill", flush=True)
            break
        except subprocess.TimeoutExpired:
            pass
        for pid in descendants(grid.pid) + [grid.pid]:  # workers first: none gets its grid's death signal first
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        grid.wait()
        kills += 1
        # Resumed from its checkpoint and got further (a newer checkpoint, or the end) before this kill.
        resumes += sum((d / "DONE").exists() or newest_checkpoint(d) > step for d, step in partial.items())
        states = [("done" if (d / "DONE").exists() else newest_checkpoint(d)) for d in run_dirs(storm)]
        print(f"kill {kills}: newest checkpoint per run {states}", flush=True)
    final = subprocess.run(grid_command(suite, storm, "--workers", str(args.workers)), env=env, capture_output=True, text=True)
    if final.returncode != 0:
        print(final.stdout + final.stderr)
        return 1
    print(f"storm: {time.monotonic() - started:.0f} s", flush=True)

    same = 0
    dirs = run_dirs(storm)
    for run_dir in dirs:
        twin = reference / run_dir.relative_to(storm)
        result, twin_result = (json.loads((d / "result.json").read_text()) for d in (run_dir, twin))
        equal = metrics(run_dir) == metrics(twin) and result["eval_returns"] == twin_result["eval_returns"]
        same += equal
        print(
            f"  {run_dir.relative_to(storm)}: final return {result['final_eval_return']:.1f} (twin "
            f"{twin_result['final_eval_return']:.1f}), last start resumed from step {result['resumed_from_step']:,}, "
            f"{'identical' if equal else 'DIFFERENT'}"
        )
    resumed_last = sum(json.loads((d / "result.json").read_text())["resumed_from_step"] > 0 for d in dirs)
    print(
        f"{len(dirs)} runs, {starts + 1} grid starts, {kills} SIGKILLs; {resumes} run starts resumed from a checkpoint "
        f"(and got to a newer checkpoint or the end before the next kill), {resumed_last} runs' last start resumed from one; "
        f"{same}/{len(dirs)} runs identical to their uninterrupted twin"
    )
    return 0 if same == len(dirs) else 1


if __name__ == "__main__":
    sys.exit(main())
