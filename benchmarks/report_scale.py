"""How long `rlgrid report` takes on a large study: 1,000 synthetic runs x 200 evaluation points.

Writes the runs in rlgrid's run-directory format (5 methods x 10 Atari games x 20 seeds, plus 120 training
episodes per run), then times the report end to end in this process, loading included, with human-normalised
scores (so every aggregate, profile and sample-efficiency figure is drawn) and every shipped reference.
Target: under a minute on a 2-core CPU.

    python benchmarks/report_scale.py [--runs-dir /tmp/rlgrid-report-scale] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.cli import main as rlgrid  # noqa: E402
from tests.helpers import write_synthetic_runs  # noqa: E402

GAMES = ["Pong", "Breakout", "BeamRider", "Seaquest", "SpaceInvaders", "Qbert", "Enduro", "Asterix", "Alien", "Boxing"]
METHODS = {
    ("dqn", "default"): 0.8,
    ("double_dqn", "default"): 1.0,
    ("ppo", "default"): 1.2,
    ("ppo", "lr_x3"): 0.9,
    ("a2c", "default"): 0.6,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=None, help="where to write the runs (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the runs and the report")
    args = parser.parse_args()
    root = args.runs_dir or Path(tempfile.mkdtemp(prefix="rlgrid-report-scale-"))
    from analysis.scores import env_bounds

    env_ids = [f"ALE/{game}-v5" for game in GAMES]
    bounds = env_bounds(env_ids, "human")
    # Each method reaches a fixed fraction of the human score on every game (plus seed noise).
    cells = {
        (algo, variant, env_id): bounds[env_id][0] + level * (bounds[env_id][1] - bounds[env_id][0])
        for (algo, variant), level in METHODS.items()
        for env_id in env_ids
    }
    start = time.perf_counter()
    dirs = write_synthetic_runs(
        root / "runs", cells, seeds=list(range(20)), points=200, total_steps=10_000_000, noise=50.0, suite="atari_scale"
    )
    print(f"wrote {len(dirs)} runs x 200 evaluation points in {time.perf_counter() - start:.1f} s -> {root / 'runs'}")

    start = time.perf_counter()
    code = rlgrid(["report", str(root / "runs"), "--out", str(root / "report"), "--normalize", "human"])
    elapsed = time.perf_counter() - start
    print(f"\nrlgrid report: exit {code}, {elapsed:.1f} s for {len(dirs)} runs (target: under 60 s)")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
