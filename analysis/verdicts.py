"""Reference comparison: each (algo, variant, env) cell against a published number, with a verdict.

A cell is matched to a reference row by algorithm (a per-source map from our algorithm names to the
source's, per env family where the source has several scripts) and by env name across versions
(`scores.env_key`: our Hopper-v5 meets CleanRL's Hopper-v4 and TD3's Hopper-v1; the versions are stated in
the output). Our scores are recomputed under the source's protocol, whatever protocol the report uses
elsewhere, so a verdict always compares like with like.

Verdicts (`reproduced`, `below`, `above`; `inconclusive` with fewer than 2 seeds; `budget differs` when our step
budget is more than 10% away from the reference's, where the test's statistic is still shown but the two numbers
are not the same experiment, so neither `reproduced` nor `below` would be honest):
- the reference gives a spread across seeds and its seed count: Welch's t-test of our per-seed scores
  against the reference mean, std (converted to ddof=1 where the source used ddof=0, and from a standard error
  of the mean, se * sqrt(n), where the source gave that) and n, at the 5% level;
- otherwise: our 95% bootstrap CI of the mean (for `eval-max`, of the max over steps of the seed-average)
  against the reference value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.scores import CELL_KEYS, env_key, eval_curves, load_reference, per_run_scores

SEED_SPREAD = re.compile(r"(across|over) (seeds|trials)")
STANDARD_ERROR = re.compile(r"(?i:standard error|std\.? ?err)|\bs\.e\.|\bSEM?\b")


@dataclass(frozen=True)
class Source:
    """How a reference table's numbers were measured, and which of its algorithms each of ours is."""

    protocol: str
    algorithms: dict[str, str | dict[str, str]] = field(default_factory=dict)  # ours -> theirs (or per env family)
    metric_contains: str = ""  # keep only rows whose metric text contains this (one table per protocol)
    metric_excludes: str = ""  # and drop rows whose metric text contains this
    any_algorithm: bool = False  # rows apply to every algorithm (e.g. a "solved" threshold)
    same_version: bool = False  # rows apply only to the exact env id (version included)
    label: str = ""  # what a row is, where its algorithm column does not say


SOURCES = {
    # CleanRL's docs: mean over 3 seeds of each seed's last 100 training episodes, std ddof=0.
    "cleanrl_benchmarks": Source(
        "train-last100",
        {
            "ppo": {
                "mujoco": "CleanRL ppo_continuous_action.py",
                "classic_control": "CleanRL ppo.py",
                "atari": "CleanRL ppo_atari.py",
            },
            "dqn": {"classic_control": "CleanRL dqn.py", "atari": "CleanRL dqn_atari.py"},
            "sac": "CleanRL sac_continuous_action.py",
            "td3": "CleanRL td3_continuous_action.py",
            "ddpg": "CleanRL ddpg_continuous_action.py",
        },
    ),
    # TD3 paper Table 1: max over evaluations (every 5k steps) of the 10-seed average.
    "mujoco_td3_paper_2018": Source(
        "eval-max",
        {
            "td3": "TD3",
            "ddpg": "Our DDPG (sfujim OurDDPG.py)",
            "ppo": "PPO (openai/baselines)",
            "trpo": "TRPO (openai/baselines)",
            "acktr": "ACKTR (openai/baselines)",
            "sac": "SAC (author code)",
        },
        metric_contains="max average return",
    ),
    # Atari papers: Nature DQN and Double DQN are evaluation scores (no-op starts); the PPO paper's
    # A2C/PPO columns are the last 100 training episodes.
    # Double DQN's human-start scores are a different protocol from our no-op starts: left out.
    "atari_paper_scores": Source(
        "eval-last",
        {"dqn": "DQN (Nature)", "double_dqn": "Double DQN"},
        metric_contains="evaluation score",
        metric_excludes="Human start",
    ),
    "atari_paper_scores_training": Source(
        "train-last100", {"ppo": "PPO", "a2c": "A2C (PPO paper)"}, metric_contains="last 100 training episodes"
    ),
    # gymnasium's reward_threshold: "solved" for every algorithm; `above` or `reproduced` means solved.
    "gymnasium_reward_thresholds": Source(
        "eval-last", any_algorithm=True, same_version=True, label="gymnasium reward_threshold (solved)"
    ),
}
SOURCE_FILES = {"atari_paper_scores_training": "atari_paper_scores"}


def parse_steps(text: str) -> float | None:
    """'1M env steps' -> 1e6, '500k' -> 5e5, '40M frames (10M timesteps)' -> 1e7 (frame skip 4); None if absent."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*([kKmM])?\s*(env steps|steps|timesteps|frames|agent steps)?", str(text))
    if not match or not (match.group(2) or match.group(3)):  # a bare number (e.g. max_episode_steps=200) is no budget
        return None
    value = float(match.group(1)) * {"k": 1e3, "m": 1e6}.get((match.group(2) or "").lower(), 1.0)
    return value / 4 if match.group(3) == "frames" else value


def parse_spread(std_text: object, metric_text: str) -> tuple[float | None, bool, bool]:
    """('±271.74 (std across seeds)', metric) -> (271.74, across_seeds, ddof0)."""
    match = re.search(r"±\s*([\d.]+)", str(std_text)) if isinstance(std_text, str) else None
    if not match:
        return None, False, False
    across_seeds = bool(SEED_SPREAD.search(str(std_text)) or SEED_SPREAD.search(metric_text))
    return float(match.group(1)), across_seeds, "ddof=0" in metric_text


def spread_is_standard_error(std_text: object, metric_text: str) -> bool:
    """The spread is a standard error of the mean over the seeds: its text says so ('±62 (standard error)'), or the
    metric's does ('± = standard error over 5 seeds') and the spread does not call itself something else. A standard
    error over evaluation episodes is not one over seeds."""
    spread = std_text if isinstance(std_text, str) else ""
    if "episode" in spread:
        return False
    return bool(STANDARD_ERROR.search(spread) or (STANDARD_ERROR.search(metric_text) and "std" not in spread))


def reference_rows(name: str, algo: str, family: str, env_id: str) -> pd.DataFrame:
    """Rows of reference `name` (shipped source, or a CSV whose `algorithm` column names our algorithms)."""
    source = SOURCES.get(name)
    table = load_reference(SOURCE_FILES.get(name, name))
    if source is None:  # a user table: algorithm names are ours, protocol the report's
        rows = table[table["algorithm"].str.lower() == algo.lower()]
    elif source.any_algorithm:
        rows = table
    else:
        theirs = source.algorithms.get(algo)
        theirs = theirs.get(family) if isinstance(theirs, dict) else theirs
        rows = table[table["algorithm"] == theirs] if theirs else table.iloc[:0]
    rows = rows.assign(value=pd.to_numeric(rows["value"], errors="coerce")).dropna(subset=["value"])  # "None (not defined)"
    if source is not None and source.metric_contains:
        rows = rows[rows["metric"].str.contains(source.metric_contains, regex=False)]
    if source is not None and source.metric_excludes:
        rows = rows[~rows["metric"].str.contains(source.metric_excludes, regex=False)]
    if source is not None and source.same_version:
        return rows[rows["env_id"] == env_id]
    return rows[rows["env_id"].map(lambda e: env_key(str(e)) == env_key(env_id))]


def bootstrap_ci(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean of `values` (seeded: same input, same interval)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def eval_max_ci(curves: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap CI of max over steps of the seed-average; curves (n_seeds, n_steps), seeds resampled."""
    rng = np.random.default_rng(seed)
    resampled = curves[rng.integers(0, len(curves), size=(reps, len(curves)))].mean(axis=1).max(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(low), float(high)


def verdict(
    ours: np.ndarray,
    ref_value: float,
    ref_std: float | None = None,
    ref_n: int | None = None,
    ci: tuple[float, float] | None = None,
    alpha: float = 0.05,
) -> dict[str, object]:
    """Our per-seed scores against a reference (mean, optional seed std with ddof=1, optional n).

    `ci` replaces the bootstrap CI of the mean (for protocols whose statistic is not a mean over seeds)."""
    ours = np.asarray(ours, dtype=float)
    if len(ours) < 2:
        return {"verdict": "inconclusive", "statistic": f"{len(ours)} seed: no spread to test"}
    if ref_std is not None and ref_n is not None and ref_n >= 2:
        result = stats.ttest_ind_from_stats(
            ours.mean(), ours.std(ddof=1), len(ours), ref_value, ref_std, ref_n, equal_var=False
        )
        p = float(result.pvalue)
        outcome = "reproduced" if p >= alpha else ("below" if ours.mean() < ref_value else "above")
        return {"verdict": outcome, "statistic": f"Welch t={result.statistic:.2f}, p={p:.3f}", "p_value": p}
    low, high = ci if ci is not None else bootstrap_ci(ours)
    outcome = "reproduced" if low <= ref_value <= high else ("below" if high < ref_value else "above")
    return {"verdict": outcome, "statistic": f"95% bootstrap CI [{low:.4g}, {high:.4g}] vs reference value"}


def _version(env_id: str, described: str = "?") -> str:
    match = re.search(r"-(v\d+)\b", env_id)
    return match.group(1) if match else described


def _reference_summary(row: pd.Series) -> tuple[float, float | None, int | None]:
    """(value, std across seeds with ddof=1 or None, n or None) of a reference row.

    A standard error over n seeds is converted to their std: se = s / sqrt(n), so s = se * sqrt(n) (ddof=1 already);
    without n it cannot be, and the row is compared by its value alone."""
    std, across_seeds, ddof0 = parse_spread(row["std_or_ci_if_given"], str(row["metric"]))
    n_ref = int(row["n_seeds_if_given"]) if pd.notna(row["n_seeds_if_given"]) else None  # load_reference parsed it
    if std is not None and spread_is_standard_error(row["std_or_ci_if_given"], str(row["metric"])):
        return float(row["value"]), (std * np.sqrt(n_ref) if n_ref else None), n_ref
    if not across_seeds:  # e.g. a std over evaluation episodes of one agent says nothing about seeds
        return float(row["value"]), None, n_ref
    if std is not None and ddof0 and n_ref and n_ref > 1:
        std *= np.sqrt(n_ref / (n_ref - 1))
    return float(row["value"]), std, n_ref


def compare_to_references(
    frame: pd.DataFrame,
    references: list[str],
    families: dict[str, str],
    protocol: str = "eval-last",
    last_n: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (cell, reference row) matched: our score, the reference, the statistic and the verdict.

    `references` are shipped source names or CSV paths; `families` maps each env id to its env family.
    Where several rows of one source match a cell, the same env version wins, then the closest step budget."""
    out = []
    budgets = frame.groupby(CELL_KEYS)["step"].max()
    for name in references:
        source = SOURCES.get(name)
        cell_protocol = source.protocol if source else protocol
        try:
            scores = per_run_scores(frame, cell_protocol, last_n)
        except ValueError:  # the runs lack this protocol's metric (e.g. no evaluations): nothing to compare
            continue
        for cell, group in scores.groupby(CELL_KEYS):
            suite, algo, variant, env_id = cell
            rows = reference_rows(name, algo, families.get(env_id, "other"), env_id)
            if rows.empty:
                continue
            budget = float(budgets.loc[cell])
            distance = (pd.to_numeric(rows["steps_or_frames"].map(parse_steps)).fillna(budget) - budget).abs()
            row = rows.loc[(distance + np.where(rows["env_id"] == env_id, 0.0, 1e18)).idxmin()]
            value, std, n_ref = _reference_summary(row)
            ours = group.sort_values("seed")["score"].to_numpy(float)
            ci = eval_max_ci(eval_curves(frame, cell), seed=seed) if cell_protocol == "eval-max" else None
            notes = []
            outcome = verdict(ours, value, std, n_ref, ci)
            ref_budget = parse_steps(row["steps_or_frames"])
            if ref_budget and abs(ref_budget - budget) > 0.1 * ref_budget:
                notes.append(f"budget differs: ours {budget:,.0f} steps, reference {ref_budget:,.0f}")
                if outcome["verdict"] != "inconclusive":
                    outcome["verdict"] = "budget differs"
            ref_version = _version(str(row["env_id"]), str(row["env_version_in_source"]))
            out.append(
                {
                    "suite": suite,
                    "algo": algo,
                    "variant": variant,
                    "env_id": env_id,
                    "seeds": len(ours),
                    "protocol": cell_protocol,
                    "ours": float(ours.mean()),
                    "ours_std": float(ours.std(ddof=1)) if len(ours) > 1 else float("nan"),
                    "reference": name,
                    "reference_algorithm": (source.label if source else "") or row["algorithm"],
                    "reference_env": row["env_id"],
                    "versions": f"ours {_version(env_id)}, reference {ref_version}",
                    "reference_env_version": row["env_version_in_source"],
                    "reference_value": value,
                    "reference_std": float("nan") if std is None else std,
                    "reference_n": n_ref,
                    "budget": budget,
                    "reference_budget": ref_budget,
                    **outcome,
                    "note": "; ".join(notes),
                    "citation": row["citation"],
                }
            )
    return pd.DataFrame(out)
