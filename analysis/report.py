"""`rlgrid report`: run directories -> figures, tables (Markdown, LaTeX, CSV) and a standalone report.html.

The steps are the analysis layer's, in order: load the tidy frame, score every run by one protocol,
optionally min-max normalise, rliable aggregates and probability of improvement, reference verdicts,
figures. Everything a reader needs is inside `report.html` (figures embedded as PNG), so it opens offline.
"""

from __future__ import annotations

import argparse
import base64
import html
import itertools
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures
from analysis.figures import X_AXES
from analysis.load import find_videos, load_runs, load_wandb
from analysis.scores import (
    CELL_KEYS,
    PROTOCOLS,
    RUN_KEYS,
    TaskEnv,
    env_bounds,
    eval_curves,
    normalize_by_bounds,
    per_run_scores,
    task_env,
)
from analysis.stats import aggregate_table, method_name, performance_profiles, probability_of_improvement, sample_efficiency
from analysis.verdicts import SOURCES, bootstrap_ci, compare_to_references, eval_max_ci

METRIC_OF = {
    "eval-last": "eval/episodic_return",
    "eval-max": "eval/episodic_return",
    "train-last100": "charts/episodic_return",
}
VALUE_ERROR = "eval/value_rmse"  # tabular methods: RMS error of the value estimate against the exact values
MAX_DEFAULT_PAIRS = 6  # probability of improvement for every pair of up to this many methods sharing their envs


@dataclass(frozen=True)
class ReportOptions:
    protocol: str = "eval-last"
    last_n: int = 10  # evaluations averaged by eval-last
    references: tuple[str, ...] = ("auto",)  # shipped source names, CSV paths; "auto": every shipped source
    normalize: str = "none"  # none, human, d4rl, TABLE:LOW_ALGO:HIGH_ALGO
    pairs: tuple[tuple[str, str], ...] = ()  # probability of improvement; empty: every pair of methods run on the same
    # envs, where up to MAX_DEFAULT_PAIRS methods share them
    reps: int = 2000  # bootstrap resamples
    seed: int = 0
    smooth: int = 20  # training-return curves: each run's rolling mean over this many episodes
    x_axis: str = "steps"  # learning curves against environment steps, or training episodes (the tabular books' axis)


@dataclass
class Report:
    out_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # numbers (CSV)
    shown: dict[str, pd.DataFrame] = field(default_factory=dict)  # formatted strings (Markdown, LaTeX, HTML)
    figures: dict[str, list[Path]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # the comparison in sentences: who wins, by how much, verdicts
    videos: dict[tuple[str, str], dict] = field(default_factory=dict)  # (method, env) -> last video (load.find_videos)
    title: str = "rlgrid report"


def fmt(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}" if abs(x) >= 10 or digits > 1 else f"{x:.3g}"


def _families(tasks: dict[str, TaskEnv]) -> dict[str, str]:
    """{task: env family}; a dataset's is its env's (read from its name where the dataset is not here: `task_env`)."""
    from envs import env_family

    families = {}
    for task, where in tasks.items():
        try:
            families[task] = env_family(where.env_id) if where.env_id is not None else "other"
        except Exception:  # not registered here (e.g. W&B runs of envs this machine lacks)
            families[task] = "other"
    return families


def score_table(
    frame: pd.DataFrame, scores: pd.DataFrame, protocol: str, normalized: bool, reps: int, seed: int
) -> pd.DataFrame:
    """One row per cell: seeds, budget, the protocol's score with its 95% bootstrap CI, std over seeds."""
    rows = []
    budgets = frame.groupby(CELL_KEYS)["step"].max()
    for cell, group in scores.groupby(CELL_KEYS):
        values = group["score"].to_numpy(float)
        if protocol == "eval-max":
            low, high = eval_max_ci(eval_curves(frame, cell), reps, seed)
        else:
            low, high = bootstrap_ci(values, reps, seed)
        row = {
            "method": method_name(cell[1], cell[2]),
            "env_id": cell[3],
            "suite": cell[0],
            "seeds": len(values),
            "steps": int(budgets.loc[cell]),
            "score": values.mean(),
            "ci_low": low,
            "ci_high": high,
            "std": values.std(ddof=1) if len(values) > 1 else np.nan,
        }
        if normalized:
            row["normalized"] = group["normalized"].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["env_id", "method"], ignore_index=True)


def _show_scores(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame(
        {
            "method": table["method"],
            "env": table["env_id"],
            "seeds": table["seeds"],
            "steps": table["steps"].map(lambda s: f"{s:,}"),
            "score": table["score"].map(fmt),
            "95% CI": [f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(table["ci_low"], table["ci_high"])],
            "std": table["std"].map(fmt),
        }
    )
    if "normalized" in table:
        shown["normalized"] = table["normalized"].map(lambda x: fmt(x, 3))
    return shown


def d4rl_table(scores: pd.DataFrame, bounds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The score table's cells whose task is a dataset, as D4RL reports them: the normalised score
    100 * (return - ref_min) / (ref_max - ref_min) of the seed mean, with the ends of its 95% CI (the map is affine and
    increasing, so it carries the CI of the returns onto that of the normalised score), and the bounds used."""
    from envs.datasets import is_dataset_id

    rows = scores[scores["env_id"].map(is_dataset_id)]
    low = rows["env_id"].map(lambda task: bounds[task][0]).astype(float)
    high = rows["env_id"].map(lambda task: bounds[task][1]).astype(float)
    scale = lambda column: 100.0 * (rows[column] - low) / (high - low)  # noqa: E731
    return pd.DataFrame(
        {
            "dataset": rows["env_id"],
            "method": rows["method"],
            "suite": rows["suite"],
            "seeds": rows["seeds"],
            "steps": rows["steps"],
            "normalized_score": scale("score"),
            "ci_low": scale("ci_low"),
            "ci_high": scale("ci_high"),
            "ref_min_score": low,
            "ref_max_score": high,
        }
    ).reset_index(drop=True)


def _show_d4rl(table: pd.DataFrame) -> pd.DataFrame:
    """D4RL's layout: a row per dataset, a column per method (per method and suite where one method ran a dataset in
    several suites), each cell `mean [95% CI]` ("–" where it was not run)."""
    spans = zip(table["normalized_score"], table["ci_low"], table["ci_high"])
    cells = table.assign(cell=[f"{fmt(m)} [{fmt(a)}, {fmt(b)}]" for m, a, b in spans])
    if cells.duplicated(["dataset", "method"]).any():  # one method on one dataset in several suites: a column each
        cells["method"] = cells["method"] + " (" + cells["suite"] + ")"
    shown = cells.pivot(index="dataset", columns="method", values="cell").fillna("–").reset_index()
    shown.columns.name = None
    return shown


def _show_aggregates(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    shown = pd.DataFrame({"method": table["method"], "runs": table["runs"], "tasks": table["tasks"]})
    if "env_id" in table:
        shown.insert(1, "env", table["env_id"])
    for name in [n for n in ("IQM", "Median", "Mean", "Optimality Gap") if n in table]:
        shown[name] = [
            f"{fmt(p, digits)} [{fmt(a, digits)}, {fmt(b, digits)}]"
            for p, a, b in zip(table[name], table[f"{name} low"], table[f"{name} high"])
        ]
    return shown


def _show_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    spreads = zip(table["reference_value"], table["reference_std"], table["reference_n"].astype(float))
    ref = [f"{fmt(v)} ± {fmt(s)} (n={int(n)})" if not (np.isnan(s) or np.isnan(n)) else fmt(v) for v, s, n in spreads]
    return pd.DataFrame(
        {
            "method": [method_name(a, v) for a, v in zip(table["algo"], table["variant"])],
            "env": table["env_id"],
            "protocol": table["protocol"],
            "ours": [f"{fmt(m)} ± {fmt(s)} ({n} seeds)" for m, s, n in zip(table["ours"], table["ours_std"], table["seeds"])],
            "reference": [f"{a} on {e}" for a, e in zip(table["reference_algorithm"], table["reference_env"])],
            "reference score": ref,
            "statistic": table["statistic"],
            "verdict": table["verdict"],
            "note": table["note"],
        }
    )


def value_error_table(frame: pd.DataFrame, reps: int, seed: int) -> pd.DataFrame:
    """One row per cell that logs `eval/value_rmse`: the RMS error of the value estimate at each run's last evaluation,
    as the seed mean with a 95% bootstrap CI and the std over seeds, after how many steps and training episodes."""
    rows = frame[frame["metric"] == VALUE_ERROR].sort_values([*RUN_KEYS, "step"], kind="stable")
    last = rows.groupby(RUN_KEYS, as_index=False).tail(1)
    episodes = frame[frame["metric"] == "charts/episodic_return"].groupby("run_id").size()
    out = []
    for cell, group in last.groupby(CELL_KEYS):
        values = group["value"].to_numpy(float)
        low, high = bootstrap_ci(values, reps, seed)
        counts = group["run_id"].map(episodes).fillna(0).astype(int)
        out.append(
            {
                "method": method_name(cell[1], cell[2]),
                "env_id": cell[3],
                "suite": cell[0],
                "seeds": len(values),
                "steps": int(group["step"].max()),
                "episodes_min": int(counts.min()),
                "episodes_max": int(counts.max()),
                "value_rmse": values.mean(),
                "ci_low": low,
                "ci_high": high,
                "std": values.std(ddof=1) if len(values) > 1 else np.nan,
            }
        )
    return pd.DataFrame(out).sort_values(["env_id", "value_rmse"], ignore_index=True)


KL = "eval/kl"
"""logged by the preference runs' evaluations (KL(pi || pi_ref) per sequence): their reward-KL frontier"""
LANGUAGE_KL = "eval/language_kl"
"""an sft run's from scratch, whose reference is the task's language: as pi_ref of the others it sits at KL 0"""


def pair_ranking_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs on a text task that log no KL to a reference: reward models, whose `eval/episodic_return` is how often
    they rank a held-out pair as its label does, not the score of a policy. One row per run (RUN_KEYS)."""
    from envs.preferences import is_text_task

    text = frame[[is_text_task(str(env_id)) for env_id in frame["env_id"]]]
    with_kl = text[text["metric"].isin([KL, LANGUAGE_KL])][RUN_KEYS].drop_duplicates()
    runs = text[RUN_KEYS].drop_duplicates()
    return runs.merge(with_kl, how="left", indicator=True).query("_merge == 'left_only'")[RUN_KEYS]


def score_name(env_id: str) -> str:
    """What a text task's `eval/episodic_return` is: a preference file has no true reward."""
    return "held-out preference accuracy" if str(env_id).endswith(".jsonl") else "true reward"


def frontier_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run that logs `eval/kl`: its last evaluation's KL and return (the true reward of a text task). A run
    that logs `eval/language_kl` instead (an sft run from scratch: the reference policy itself) is a point at KL 0."""
    measured = frame[frame["metric"].isin([KL, LANGUAGE_KL])].copy()
    measured.loc[measured["metric"] == LANGUAGE_KL, "value"] = 0.0
    kl = measured.sort_values([*RUN_KEYS, "step"], kind="stable").groupby(RUN_KEYS).tail(1)
    returns = frame[frame["metric"] == "eval/episodic_return"][[*RUN_KEYS, "step", "value"]]
    points = kl.merge(returns, on=[*RUN_KEYS, "step"], suffixes=("_kl", "_return"))
    points = points.rename(columns={"value_kl": "kl", "value_return": "reward"})
    points["method"] = [method_name(a, v) for a, v in zip(points["algo"], points["variant"])]
    return points[["env_id", "method", "seed", "step", "kl", "reward"]].reset_index(drop=True)


def frontier_table(points: pd.DataFrame, reps: int, seed: int) -> pd.DataFrame:
    """Per (env, method): mean KL and mean reward over seeds, each with a 95% bootstrap CI."""
    out = []
    for (env_id, method), group in points.groupby(["env_id", "method"]):
        row = {"env_id": env_id, "method": method, "seeds": len(group)}
        for column in ("kl", "reward"):
            values = group[column].to_numpy(float)
            low, high = bootstrap_ci(values, reps, seed)
            row.update({column: values.mean(), f"{column}_low": low, f"{column}_high": high})
        out.append(row)
    return pd.DataFrame(out).sort_values(["env_id", "kl"], ignore_index=True)


def optimal_frontier(env_id: str) -> pd.DataFrame | None:
    """For a synthetic text task, the exact KL-regularised optimum pi_lang exp(r / beta) / Z over a range of beta: the
    best reward any policy reaches at each KL from the task's language (which the sft policy, pi_ref, approximates)."""
    from envs.preferences import SYNTHETIC_TASKS, synthetic_language

    if env_id not in SYNTHETIC_TASKS:
        return None
    language = synthetic_language(env_id)
    rows = [(beta, *language.policy_reward_and_kl(language.optimal_policy(beta))) for beta in np.geomspace(0.05, 20, 40)]
    return pd.DataFrame(rows, columns=["beta", "reward", "kl"])


def _show_frontier(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": table["method"],
            "env": table["env_id"],
            "seeds": table["seeds"],
            "KL(pi || pi_ref)": table["kl"].map(lambda x: fmt(x, 2)),
            "KL 95% CI": [f"[{fmt(a, 2)}, {fmt(b, 2)}]" for a, b in zip(table["kl_low"], table["kl_high"])],
            "score": table["reward"].map(lambda x: fmt(x, 2)),
            "score 95% CI": [f"[{fmt(a, 2)}, {fmt(b, 2)}]" for a, b in zip(table["reward_low"], table["reward_high"])],
            "score is": table["env_id"].map(score_name),
        }
    )


def _show_value_errors(table: pd.DataFrame) -> pd.DataFrame:
    episodes = [f"{a:,}" if a == b else f"{a:,}-{b:,}" for a, b in zip(table["episodes_min"], table["episodes_max"])]
    return pd.DataFrame(
        {
            "method": table["method"],
            "env": table["env_id"],
            "seeds": table["seeds"],
            "episodes": episodes,
            "final value RMSE": table["value_rmse"].map(lambda x: fmt(x, 4)),
            "95% CI": [f"[{fmt(a, 4)}, {fmt(b, 4)}]" for a, b in zip(table["ci_low"], table["ci_high"])],
            "std": table["std"].map(lambda x: fmt(x, 4)),
        }
    )


def method_envs(scores: pd.DataFrame) -> dict[str, frozenset[str]]:
    """{method: the envs it was run on}."""
    return {
        method_name(algo, variant): frozenset(group["env_id"])
        for (algo, variant), group in scores.groupby(["algo", "variant"], sort=True)
    }


def default_pairs(envs_of: dict[str, frozenset[str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Every pair of methods run on the same envs (P(X > Y) compares them env by env), within each group of 2 to
    MAX_DEFAULT_PAIRS such methods; and a note for each larger group, whose pairs are left to --pair."""
    groups: dict[frozenset[str], list[str]] = {}
    for method, envs in sorted(envs_of.items()):
        groups.setdefault(envs, []).append(method)
    pairs, notes = [], []
    for envs, methods in sorted(groups.items(), key=lambda item: sorted(item[0])):
        if 2 <= len(methods) <= MAX_DEFAULT_PAIRS:
            pairs += list(itertools.combinations(methods, 2))
        elif len(methods) > MAX_DEFAULT_PAIRS:
            notes.append(
                f"Probability of improvement not drawn for the {len(methods)} methods run on {', '.join(sorted(envs))}: "
                f"every pair is drawn for at most {MAX_DEFAULT_PAIRS} methods; name the pairs you want with --pair X,Y."
            )
    return pairs, notes


def tau_grid(values: pd.Series | np.ndarray, points: int = 50) -> np.ndarray:
    """Thresholds of a performance profile: the scores' range and 5% either side (the profile starts at 1 and ends
    at 0); scores without spread (every seed scored 500) get 5% of their value either side."""
    low, high = float(np.min(values)), float(np.max(values))
    span = high - low
    pad = 0.05 * span if span > 1e-9 * max(1.0, abs(low), abs(high)) else max(0.05 * abs(high), 0.05)
    return np.linspace(low - pad, high + pad, points)


def _ranking(cell: pd.DataFrame, column: str, higher_is_better: bool, digits: int) -> tuple[str, str]:
    """The methods of one env ranked by `column` (best first) with their CIs, and whether the best one's 95% CI clears
    the others'."""
    ranked = cell.sort_values(column, ascending=not higher_is_better, kind="stable")
    best, others = ranked.iloc[0], ranked.iloc[1:]
    listing = ", ".join(
        f"{method} {fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"
        for method, value, low, high in zip(ranked["method"], ranked[column], ranked["ci_low"], ranked["ci_high"])
    )
    tied = others[others[column] == best[column]]
    if higher_is_better:
        overlapping, word, side = others[others["ci_high"] >= best["ci_low"]], "scores highest", "above"
    else:
        overlapping, word, side = others[others["ci_low"] <= best["ci_high"]], "has the lowest error", "below"
    if len(tied):
        reading = f"{' and '.join([best['method'], *tied['method']])} tie"
    elif overlapping.empty:
        reading = f"{best['method']} {word}, and its 95% CI lies {side} every other method's"
    else:
        names = ", ".join(overlapping["method"])
        seeds = int(cell["seeds"].min())
        reading = f"{best['method']} {word}, but its 95% CI overlaps that of {names}: not separated with {seeds} seeds"
    return listing, reading


def comparison_summary(
    scores: pd.DataFrame,
    improvement: pd.DataFrame | None,
    verdicts: pd.DataFrame,
    protocol: str,
    value_errors: pd.DataFrame | None = None,
) -> list[str]:
    """The comparison in sentences, the loser named as plainly as the winner: per env the methods ranked by score with
    whether the best one's 95% CI clears the others', the same for the final value error where runs log one (lowest
    first), each probability of improvement read against 0.5, and per method its reference verdicts (any `below`
    spelled out)."""
    lines = []
    for env_id, cell in scores.groupby("env_id"):
        if cell["method"].nunique() < 2:
            continue
        listing, reading = _ranking(cell, "score", True, 1)
        lines.append(f"{env_id} ({protocol}, mean [95% CI]): {listing}. {reading}.")
    for env_id, cell in value_errors.groupby("env_id") if value_errors is not None else []:
        if cell["method"].nunique() < 2:
            continue
        listing, reading = _ranking(cell, "value_rmse", False, 4)
        lines.append(
            f"{env_id} (RMS error of the value estimate at the last evaluation, mean [95% CI]): {listing}. {reading}."
        )
    if improvement is not None:
        for _, row in improvement.iterrows():
            x, y, p, low, high = row["X"], row["Y"], row["P(X > Y)"], row["low"], row["high"]
            if low > 0.5:
                reading = f"{x} is better (the 95% CI lies above 0.5)"
            elif high < 0.5:
                reading = f"{y} is better (the 95% CI lies below 0.5)"
            else:
                reading = "no clear difference (the 95% CI contains 0.5)"
            lines.append(f"P({x} > {y}) = {p:.2f} [{low:.2f}, {high:.2f}] over envs: {reading}.")
    if verdicts is not None and not verdicts.empty:
        methods = [method_name(a, v) for a, v in zip(verdicts["algo"], verdicts["variant"])]
        for method, rows in verdicts.assign(method=methods).groupby("method", sort=True):
            counts = rows["verdict"].value_counts()
            parts = [f"{n} {name}" for name, n in counts.items()]
            below = [
                f"{r['env_id']} ({r['reference_algorithm']}: ours {fmt(r['ours'])}, reference {fmt(r['reference_value'])})"
                for _, r in rows[rows["verdict"] == "below"].iterrows()
            ]
            text = f"{method} against published scores: {', '.join(parts)}"
            if below:
                text += f"; below the reference on {'; '.join(below)}"
            if "budget differs" in counts:
                text += "; 'budget differs': the reference ran a different number of steps (see the notes column)"
            lines.append(text + ".")
    return lines


def build_report(frame: pd.DataFrame, out_dir: str | Path, options: ReportOptions, log=print) -> Report:
    """Compute every table and figure of the report from a tidy frame; write nothing but the figures."""
    report = Report(Path(out_dir))
    figure_dir = report.out_dir / "figures"
    metric = METRIC_OF[options.protocol]
    rankers = pair_ranking_runs(frame)
    if not rankers.empty:  # a reward model's return is a pair-ranking accuracy: not comparable with the policies' scores
        frame = frame.merge(rankers, how="left", indicator=True).query("_merge == 'left_only'").drop(columns="_merge")
        report.notes.append(
            f"{len(rankers)} reward-model runs ({', '.join(sorted(set(rankers['algo'])))}) are left out of the scores, "
            "aggregates and comparisons: their evaluation return is how often they rank a held-out pair as its label does, "
            "not a policy's score (their runs' eval/label_accuracy and eval/episodic_return say it)."
        )
    scores = per_run_scores(frame, options.protocol, options.last_n)
    env_ids = sorted(scores["env_id"].unique())
    methods = sorted({method_name(a, v) for a, v in zip(scores["algo"], scores["variant"])})
    unknown = sorted({m for pair in options.pairs for m in pair} - set(methods))
    if unknown:
        raise ValueError(f"--pair names unknown methods {unknown}; the runs have {methods}")
    normalized = options.normalize != "none"
    tasks = {env_id: task_env(env_id) for env_id in env_ids}
    datasets = [env_id for env_id, task in tasks.items() if task.is_dataset]
    if datasets:
        report.notes.append(
            f"{len(datasets)} of the tasks are datasets (offline runs): there a step is a gradient update, not an env step, "
            "and a return is that of an evaluation episode in the env the dataset was collected in."
        )
    elsewhere = [f"{task} (env {tasks[task].env_id or 'unknown'})" for task in datasets if not tasks[task].here]
    if elsewhere:
        report.notes.append(
            f"Datasets not on this machine (nothing is downloaded): {', '.join(elsewhere)}; their envs are read from their "
            "names (for their env family, and for D4RL's reference returns under --normalize d4rl)."
        )
    bounds = env_bounds(env_ids, options.normalize, report.notes) if normalized else None
    if bounds is not None:
        scores["normalized"] = normalize_by_bounds(scores, bounds).to_numpy()
    column = "normalized" if normalized else "score"
    pooled = normalized or len(env_ids) == 1  # aggregating raw returns across envs would mix their scales

    log(f"scores: {len(scores)} runs, {len(methods)} methods x {len(env_ids)} envs, protocol {options.protocol}")
    report.tables["scores"] = score_table(frame, scores, options.protocol, normalized, options.reps, options.seed)
    report.shown["scores"] = _show_scores(report.tables["scores"])
    if options.normalize == "d4rl" and datasets:
        report.tables["d4rl_scores"] = d4rl_table(report.tables["scores"], bounds)
        report.shown["d4rl_scores"] = _show_d4rl(report.tables["d4rl_scores"])
    has_value_error = frame["metric"].eq(VALUE_ERROR).any()
    if has_value_error:
        report.tables["value_error"] = value_error_table(frame[frame["env_id"].isin(env_ids)], options.reps, options.seed)
        report.shown["value_error"] = _show_value_errors(report.tables["value_error"])

    log(f"aggregates: stratified bootstrap, {options.reps} resamples")
    if pooled:
        aggregates = aggregate_table(scores, column, options.reps, options.seed)
    else:
        aggregates = pd.concat(
            [
                aggregate_table(scores[scores["env_id"] == e], column, options.reps, options.seed).assign(env_id=e)
                for e in env_ids
            ],
            ignore_index=True,
        )
        report.notes.append(
            "Scores are not normalised, so the aggregates are per env (rliable across envs needs --normalize)."
        )
    if not normalized:  # the optimality gap is measured against a normalised target of 1.0
        aggregates = aggregates.drop(columns=[c for c in aggregates if c.startswith("Optimality Gap")])
    report.tables["aggregates"] = aggregates
    report.shown["aggregates"] = _show_aggregates(aggregates, 3 if normalized else 1)

    envs_of = method_envs(scores)
    for x, y in options.pairs:
        if envs_of[x] != envs_of[y]:
            raise ValueError(
                f"--pair {x},{y}: {x} ran on {', '.join(sorted(envs_of[x]))} and {y} on {', '.join(sorted(envs_of[y]))}; "
                "P(X > Y) compares two methods env by env, so they need the same envs"
            )
    if options.pairs:
        pairs = list(options.pairs)
    else:
        pairs, skipped = default_pairs(envs_of)
        report.notes.extend(skipped)
    if pairs:
        try:
            improvement = probability_of_improvement(scores, pairs, column, options.reps, options.seed)
            report.tables["probability_of_improvement"] = improvement
            report.shown["probability_of_improvement"] = pd.DataFrame(
                {
                    "X": improvement["X"],
                    "Y": improvement["Y"],
                    "P(X > Y)": improvement["P(X > Y)"].map(lambda x: fmt(x, 3)),
                    "95% CI": [f"[{a:.3f}, {b:.3f}]" for a, b in zip(improvement["low"], improvement["high"])],
                }
            )
        except ValueError as exc:
            report.notes.append(f"Probability of improvement not computed: {exc}")

    references = list(SOURCES) if "auto" in options.references else [r for r in options.references if r != "none"]
    verdicts = pd.DataFrame()
    if references:
        log(f"reference comparison: {', '.join(references)}")
        verdicts = compare_to_references(frame, references, _families(tasks), options.protocol, options.last_n, options.seed)
        if verdicts.empty:
            report.notes.append(f"No reference row matched any (algorithm, env) cell in: {', '.join(references)}.")
        else:
            report.tables["reference_verdicts"] = verdicts
            report.shown["reference_verdicts"] = _show_verdicts(verdicts)

    if frame["metric"].eq(KL).any():
        points = frontier_points(frame[frame["env_id"].isin(env_ids)])
        report.tables["frontier"] = frontier_table(points, options.reps, options.seed)
        report.shown["frontier"] = _show_frontier(report.tables["frontier"])

    report.summary = comparison_summary(
        report.tables["scores"],
        report.tables.get("probability_of_improvement"),
        verdicts,
        options.protocol,
        report.tables.get("value_error"),
    )

    log("figures")
    cells = frame[["algo", "variant"]].drop_duplicates()
    colors = figures.method_colors([method_name(a, v) for a, v in zip(cells["algo"], cells["variant"])])  # in every figure
    protocols_of = lambda m: [p for p, shown in METRIC_OF.items() if shown == m]  # noqa: E731
    report.figures["learning_curves"] = figures.learning_curves(
        frame,
        figure_dir,
        metric,
        reps=options.reps // 2,
        seed=options.seed,
        smooth=options.smooth if metric == "charts/episodic_return" else 1,
        references=figures.reference_lines(verdicts, protocols_of(metric)),
        colors=colors,
        x_axis=options.x_axis,
    )
    training = "charts/episodic_return"
    if metric != training and frame["metric"].eq(training).any():  # CleanRL's view, where its references belong
        report.figures["training_curves"] = figures.learning_curves(
            frame,
            figure_dir,
            training,
            name="training_curves",
            reps=options.reps // 2,
            seed=options.seed,
            smooth=options.smooth,
            references=figures.reference_lines(verdicts, protocols_of(training)),
            colors=colors,
            x_axis=options.x_axis,
        )
    if has_value_error:
        report.figures["value_error_curves"] = figures.learning_curves(
            frame[frame["env_id"].isin(env_ids)],
            figure_dir,
            VALUE_ERROR,
            name="value_error_curves",
            reps=options.reps // 2,
            seed=options.seed,
            colors=colors,
            x_axis=options.x_axis,
        )
        if options.x_axis == "steps":
            report.notes.append(
                "The learning curves are drawn against environment steps; Sutton & Barto's tabular figures count "
                "episodes, and methods whose episodes differ in length do not line up on steps: --x-axis episodes "
                "draws every learning curve against the number of training episodes finished."
            )
    report.figures["aggregate_intervals"] = figures.aggregate_intervals(aggregates, figure_dir, colors)
    if "probability_of_improvement" in report.tables:
        report.figures["probability_of_improvement"] = figures.improvement_plot(
            report.tables["probability_of_improvement"], figure_dir
        )
    label = "normalised score tau" if normalized else "score tau"
    if pooled:
        profiles = performance_profiles(scores, tau_grid(scores[column]), column, options.reps, options.seed)
    else:  # raw returns: a panel per env, each on its own scale
        profiles = pd.concat(
            [
                performance_profiles(group, tau_grid(group[column]), column, options.reps, options.seed).assign(env_id=env_id)
                for env_id, group in scores.groupby("env_id")
            ],
            ignore_index=True,
        )
    report.figures["performance_profiles"] = figures.performance_profile_plot(profiles, figure_dir, label, colors)
    if pooled:
        if frame["metric"].eq("eval/episodic_return").any():
            curves = sample_efficiency(
                frame[frame["env_id"].isin(env_ids)], bounds=bounds, reps=max(200, options.reps // 4), seed=options.seed
            )
            report.figures["sample_efficiency"] = figures.sample_efficiency_plot(curves, figure_dir, colors)
    else:
        report.notes.append(
            "The sample-efficiency curve (IQM over envs) pools envs, so it needs --normalize (or a single env); "
            "the learning curves show each env, and the performance profiles are per env."
        )
    if "frontier" in report.tables:
        optimum = {env_id: optimal_frontier(env_id) for env_id in sorted(points["env_id"].unique())}
        report.figures["frontier"] = figures.frontier_plot(points, report.tables["frontier"], optimum, figure_dir, colors)
    variants = figures.variant_comparison(scores, figure_dir, column, options.reps, options.seed, colors)
    if variants:
        report.figures["variant_comparison"] = variants
    if has_value_error:
        values = frame[(frame["metric"] == VALUE_ERROR) & frame["env_id"].isin(env_ids)]
        last = values.sort_values([*RUN_KEYS, "step"], kind="stable").groupby(RUN_KEYS, as_index=False).tail(1)
        label = "final value RMS error (lower is better)"
        variants = figures.variant_comparison(
            last.rename(columns={"value": label}), figure_dir, label, options.reps, options.seed, colors, "variant_value_error"
        )
        if variants:
            report.figures["variant_value_error"] = variants
    return report


def markdown_table(table: pd.DataFrame) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in table.astype(str).to_numpy()]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def latex_table(table: pd.DataFrame) -> str:
    def escape(text: object) -> str:
        out = str(text).replace("\\", r"\textbackslash{}")
        for char in "&%$#_{}":
            out = out.replace(char, "\\" + char)
        return out.replace("±", r"$\pm$").replace("–", "--").replace("·", r"$\cdot$").replace("~", r"\textasciitilde{}")

    lines = [
        r"\begin{tabular}{" + "l" * len(table.columns) + "}",
        r"\toprule",
        " & ".join(escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(escape(c) for c in row) + r" \\" for row in table.astype(str).to_numpy()]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def text_table(table: pd.DataFrame, max_width: int = 48) -> str:
    """Aligned plain-text table for the terminal (long cells cut with an ellipsis)."""
    cut = table.astype(str).map(lambda s: s if len(s) <= max_width else s[: max_width - 1] + "…")
    widths = [max(len(str(c)), *(len(v) for v in cut[c])) for c in cut.columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(cut.columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cut.to_numpy()]
    return "\n".join(lines)


TITLES = {
    "scores": "Scores per cell",
    "d4rl_scores": "D4RL normalised scores (a row per dataset: 100 x (return - ref_min) / (ref_max - ref_min) with the "
    "dataset's own reference returns where it has them; mean over seeds [95% bootstrap CI])",
    "reference_verdicts": "Reference comparison",
    "frontier": "Reward against KL to the reference (learning from preferences: each run's last evaluation; its score, the "
    "true reward of sampled completions (a preference file: the held-out preference accuracy), and KL(pi || pi_ref) per "
    "sequence, mean over seeds with 95% bootstrap CIs)",
    "value_error": "Final value error per cell (RMS error of the value estimate at each run's last evaluation, "
    "against the exact values; lower is better; mean over seeds, 95% bootstrap CI)",
    "aggregates": "Aggregates (rliable, 95% stratified bootstrap CIs)",
    "probability_of_improvement": "Probability of improvement",
    "best_trials": "Best trials (tuning)",
    "trials": "All trials (tuning)",
}
FIGURE_TITLES = {
    "learning_curves": "Learning curves (mean over seeds, 95% bootstrap band; dashed: published reference scores)",
    "training_curves": "Training returns (smoothed per run as the axis says; mean over seeds, 95% bootstrap band; "
    "dashed: published reference scores)",
    "value_error_curves": "Value error (RMS error of the value estimate against the exact values, over the states an "
    "episode can be in: v_pi of the evaluated policy for prediction, v_* for control, where max_a Q of Sarsa and Expected "
    "SARSA approaches the epsilon-greedy policy's values instead; lower is better; mean over seeds, 95% bootstrap band)",
    "aggregate_intervals": "Aggregate intervals",
    "performance_profiles": "Performance profiles (fraction of runs above each score, 95% bootstrap band)",
    "sample_efficiency": "Sample efficiency (IQM over runs and envs)",
    "probability_of_improvement": "Probability of improvement",
    "variant_comparison": "Hyperparameter variants",
    "frontier": "Reward-KL frontier (the DPO paper's Figure 2, left): dots are runs, markers method means with 95% "
    "bootstrap CIs (sft trained from scratch, pi_ref itself, at KL 0); dashed, where the task knows it, the exact optimum "
    "pi_ref exp(r / beta) / Z with the task's language as pi_ref",
    "variant_value_error": "Hyperparameter variants: final value error (each run's last evaluation; lower is better)",
    "optimization_history": "Optimisation history",
    "intermediate_values": "Intermediate values (what the pruner saw)",
    "param_importances": "Parameter importances (fANOVA)",
    "parallel_coordinate": "Parallel coordinates",
    "slice": "Slice plots",
}
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border-bottom:1px solid #ddd;padding:4px 10px;
text-align:left}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.meta{color:#555}
video{max-width:480px;border:1px solid #eee}figure{display:inline-block;margin:0.5em 1em 0.5em 0}
td.reproduced{color:#176c2c;font-weight:600}td.below{color:#a31515;font-weight:600}td.above{color:#1b4fa0;font-weight:600}"""


def html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.astype(str).to_numpy():
        cells = [
            f'<td class="{html.escape(v)}">{html.escape(v)}</td>' if c == "verdict" else f"<td>{html.escape(v)}</td>"
            for c, v in zip(table.columns, row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report) -> str:
    title = html.escape(report.title)
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title><style>{CSS}</style>"
        f"</head><body><h1>{title}</h1>"
    ]
    parts += [f'<p class="meta">{html.escape(line)}</p>' for line in report.header]
    if report.summary:
        parts.append("<h2>Summary</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in report.summary) + "</ul>")
    for name, shown in report.shown.items():
        parts.append(f"<h2>{TITLES.get(name, name)}</h2>{html_table(shown)}")
    for name, paths in report.figures.items():
        png = next(p for p in paths if p.suffix == ".png")
        data = base64.b64encode(png.read_bytes()).decode()
        title = FIGURE_TITLES.get(name, name)
        parts.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">')
    if report.videos:
        parts.append(f"<h2>{html.escape(VIDEOS_TITLE)}</h2>")
        for (method, env_id), video in report.videos.items():
            data = base64.b64encode(video["path"].read_bytes()).decode()
            caption = html.escape(_video_caption(method, env_id, video))
            parts.append(
                f'<figure><video controls muted preload="metadata" src="data:video/mp4;base64,{data}"></video>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    return "".join(parts) + "</body></html>\n"


VIDEOS_TITLE = "Agents at their last evaluation (first episode; runs made with --capture-video)"


def _video_caption(method: str, env_id: str, video: dict) -> str:
    return f"{method} on {env_id}, seed {video['seed']}, step {video['step']:,}"


def write_report(report: Report) -> list[Path]:
    out, written = report.out_dir, []
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in report.tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
        written.append(out / "tables" / f"{name}.csv")
    markdown = [f"# {report.title}", ""] + [f"{line}  " for line in report.header] + [""]
    if report.summary:
        markdown += ["## Summary", ""] + [f"- {line}" for line in report.summary] + [""]
    for name, shown in report.shown.items():
        (out / "tables" / f"{name}.md").write_text(markdown_table(shown))
        (out / "tables" / f"{name}.tex").write_text(latex_table(shown))
        markdown += [f"## {TITLES.get(name, name)}", "", markdown_table(shown)]
    for name, paths in report.figures.items():
        png = next(p for p in paths if p.suffix == ".png")
        markdown += [f"## {FIGURE_TITLES.get(name, name)}", "", f"![{name}]({png.relative_to(out)})", ""]
    if report.videos:
        (out / "videos").mkdir(exist_ok=True)
        markdown += [f"## {VIDEOS_TITLE}", ""]
        for (method, env_id), video in report.videos.items():
            copy = out / "videos" / f"{method}-{env_id.replace('/', '-')}.mp4"
            shutil.copyfile(video["path"], copy)
            markdown += [f"- [{_video_caption(method, env_id, video)}]({copy.relative_to(out)})"]
        markdown += [""]
    if report.notes:
        markdown += ["## Notes", ""] + [f"- {n}" for n in report.notes]
    (out / "report.md").write_text("\n".join(markdown) + "\n")
    (out / "report.html").write_text(render_html(report))
    return written + [out / "report.md", out / "report.html"]


DESCRIPTION = """\
Write a report of finished runs: tables (Markdown, LaTeX, CSV), figures (PNG and PDF) and a standalone
report.html (figures embedded, opens offline); the main table and the reference verdicts are printed.

RUNS are run directories or folders holding them (e.g. runs/quickstart); incomplete runs are left out
unless --include-incomplete. Protocols: eval-last (mean of the last N deterministic evaluations),
train-last100 (mean of the last 100 training episodes, CleanRL's), eval-max (max over evaluations of the
seed-average, TD3 Table 1's). Reference verdicts always use the protocol of the reference they compare to.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rlgrid report", description=DESCRIPTION, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run directories or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="eval-last", help="final-score protocol (default eval-last)")
    parser.add_argument("--last-n", type=int, default=10, help="evaluations averaged by eval-last (default 10)")
    parser.add_argument(
        "--reference",
        action="append",
        default=None,
        metavar="NAME|FILE",
        help=f"reference table to compare with (repeatable): auto (default: every shipped source), none, "
        f"a shipped name ({', '.join(SOURCES)}) or a CSV in the same format whose algorithm "
        f"column uses our algorithm names",
    )
    parser.add_argument(
        "--normalize",
        default="none",
        metavar="KIND",
        help="none (default), human (Atari), d4rl (MuJoCo), or TABLE:LOW_ALGO:HIGH_ALGO to min-max "
        "normalise by two algorithms' rows of a reference table",
    )
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="X,Y",
        help="P(X > Y) for methods X and Y (repeatable; default: all pairs)",
    )
    parser.add_argument("--include-incomplete", action="store_true", help="keep runs that did not finish")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (same seed, same intervals)")
    parser.add_argument(
        "--smooth",
        type=int,
        default=20,
        metavar="EPISODES",
        help="training-return curves: each run's rolling mean over this many episodes (default 20; 1: raw)",
    )
    parser.add_argument(
        "--x-axis",
        choices=X_AXES,
        default="steps",
        help="x-axis of the learning curves: environment steps (default) or training episodes finished (the axis of "
        "Sutton & Barto's tabular figures)",
    )
    parser.add_argument("--wandb-project", default=None, help="also load the runs of this W&B project (needs network)")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-group", default=None)
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    """Check every option before anything is loaded or computed; ValueError says what is wrong."""
    from analysis.scores import load_reference

    problems = []
    if not args.runs and not args.wandb_project:
        problems.append("give run directories (e.g. runs/quickstart) or --wandb-project")
    for path in args.runs:
        if not path.exists():
            hint = f" (did you mean runs/{path}?)" if Path("runs", path).exists() else ""
            problems.append(f"no such run directory or folder: {path}{hint}")
    references = tuple(args.reference or ["auto"])
    for name in references:
        if name not in ("auto", "none") and name not in SOURCES:
            try:
                load_reference(name)
            except (FileNotFoundError, ValueError) as exc:  # ValueError: a cell it cannot read (file, row, column)
                problems.append(str(exc))
    pairs = []
    for pair in args.pair:
        if pair.count(",") != 1:
            problems.append(f"--pair {pair!r}: expected X,Y (two method names)")
        else:
            pairs.append(tuple(pair.split(",")))
    if args.normalize not in ("none", "human", "d4rl") and args.normalize.count(":") < 2:
        problems.append(f"--normalize {args.normalize!r}: use none, human, d4rl or TABLE:LOW_ALGO:HIGH_ALGO")
    if args.last_n < 1 or args.reps < 100 or args.smooth < 1:
        problems.append("--last-n and --smooth must be >= 1 and --reps >= 100")
    if args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} exists and is not a folder")
    if problems:
        raise ValueError("\n  ".join(["bad report options:", *problems]))
    return ReportOptions(
        args.protocol, args.last_n, references, args.normalize, tuple(pairs), args.reps, args.seed, args.smooth, args.x_axis
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    log = lambda message: print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)  # noqa: E731
    frames = []
    if args.runs:
        log(f"loading runs from {', '.join(map(str, args.runs))}")
        frames.append(load_runs(args.runs, include_incomplete=args.include_incomplete))
    if args.wandb_project:
        log(f"loading W&B project {args.wandb_project}")
        frames.append(
            load_wandb(args.wandb_project, args.wandb_entity, args.wandb_group, include_incomplete=args.include_incomplete)
        )
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        print("error: no finished runs found (unfinished ones are kept with --include-incomplete)", file=sys.stderr)
        return 1
    n_runs = frame["run_id"].nunique()
    try:
        report = build_report(frame, args.out, options, log)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    suites = ", ".join(sorted(frame["suite"].unique()))
    incomplete = int((~frame.groupby("run_id")["complete"].first()).sum())
    source = ", ".join(map(str, args.runs)) or args.wandb_project
    kept = f"; {incomplete} of them incomplete (kept by --include-incomplete)" if incomplete else ""
    protocol = options.protocol + (f" (last {options.last_n} evaluations)" if options.protocol == "eval-last" else "")
    report.header = [
        f"{n_runs} runs from {source} (suites: {suites}){kept}",
        f"protocol: {protocol}; normalisation: {options.normalize}; bootstrap: {options.reps} resamples, seed {options.seed}",
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    if args.runs:
        report.videos = find_videos(args.runs)
    write_report(report)
    print(f"\n{TITLES['scores']} ({options.protocol})\n{text_table(report.shown['scores'])}")
    if "d4rl_scores" in report.shown:
        print(f"\nD4RL normalised scores (mean [95% CI], 0 random, 100 expert)\n{text_table(report.shown['d4rl_scores'])}")
    if "frontier" in report.shown:
        print(f"\nReward against KL to the reference (mean [95% CI])\n{text_table(report.shown['frontier'])}")
    if "value_error" in report.shown:
        print(f"\nFinal value error (RMS, lower is better)\n{text_table(report.shown['value_error'])}")
    if report.summary:
        print("\nSummary\n" + "\n".join(f"- {line}" for line in report.summary))
    if "reference_verdicts" in report.shown:
        shown = report.shown["reference_verdicts"].drop(columns=["statistic", "note"])
        print(f"\n{TITLES['reference_verdicts']} (statistics and notes in the report)\n{text_table(shown)}")
    for note in report.notes:
        print(f"note: {note}")
    log(f"report written: {args.out / 'report.html'} (tables in {args.out / 'tables'}, figures in {args.out / 'figures'})")
    return 0
