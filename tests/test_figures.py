"""Figures are written as PNG and PDF, with a fixed colour per method across figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.image import imread

from analysis import figures
from analysis.stats import aggregate_table, performance_profiles, probability_of_improvement, sample_efficiency


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for algo, rate in (("ppo", 1.0), ("a2c", 0.6)):
        for env in ("A-v0", "B-v0"):
            for seed in range(4):
                for step in range(0, 1001, 100):
                    value = rate * step / 1000 + rng.normal(0, 0.05)
                    rows.append(("s", algo, "default", env, seed, f"{algo}{env}{seed}", step, "eval/episodic_return", value))
    return pd.DataFrame(rows, columns=["suite", "algo", "variant", "env_id", "seed", "run_id", "step", "metric", "value"])


def _assert_image(path):
    assert path.exists() and path.stat().st_size > 5000
    pixels = imread(path) if path.suffix == ".png" else None
    if pixels is not None:
        assert pixels.std() > 0.01, "image is blank"


def test_every_figure_is_written(tmp_path):
    frame = _frame()
    last = frame[frame["step"] == 1000].rename(columns={"value": "score"})
    table = aggregate_table(last, reps=100)
    written = [
        *figures.learning_curves(frame, tmp_path, reps=100),
        *figures.aggregate_intervals(table, tmp_path),
        *figures.performance_profile_plot(performance_profiles(last, np.linspace(0, 1.2, 25), reps=100), tmp_path),
        *figures.sample_efficiency_plot(sample_efficiency(frame, points=11, reps=100), tmp_path),
        *figures.improvement_plot(probability_of_improvement(last, [("ppo", "a2c")], reps=100), tmp_path),
    ]
    per_env = pd.concat([aggregate_table(last[last["env_id"] == e], reps=100).assign(env_id=e) for e in ("A-v0", "B-v0")])
    variants = pd.concat([last, last.assign(variant="lr_x3", score=last["score"] - 0.3)])
    written += figures.aggregate_intervals(per_env, tmp_path / "per_env") + figures.variant_comparison(variants, tmp_path)
    assert len(written) == 14 and {p.suffix for p in written} == {".png", ".pdf"}
    assert figures.variant_comparison(last, tmp_path / "none") == [], "no algorithm with several variants: no figure"
    for path in written:
        _assert_image(path)


def test_method_colours_are_fixed_whatever_the_order():
    assert figures.method_colors(["ppo", "a2c", "sac"]) == figures.method_colors(["sac", "ppo", "a2c", "ppo"])
    colours = figures.method_colors(["ppo", "a2c"])
    assert colours["ppo"] != colours["a2c"]
