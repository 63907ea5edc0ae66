"""`rlgrid tune-report STUDY --out DIR`: what a search found, and the best config as a suite to re-measure.

Writes tables (best trials with per-seed scores, every trial), Optuna's matplotlib figures (optimisation
history, intermediate values, parameter importances, parallel coordinates, slices), `report.html`/`report.md`
in the same format as `rlgrid report`, and `<out>/tuned-<study>.toml`: a suite with the best trial's config
and the study's `export_seeds` (seeds it was not tuned on), which `rlgrid run` accepts unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.study import Study


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} to TOML")


def export_suite(study: Study, trial: Any, path: Path) -> Path:
    """The best trial's config (the study's fixed values and the trial's parameters) as a suite file."""
    lines = [
        f"# Exported by rlgrid tune-report from study {study.name!r} ({study.path}), trial {trial.number}.",
        f"# Tuned on seeds {list(study.seeds)}; this suite measures seeds {list(study.export_seeds)}.",
        f"name = {toml_value(f'tuned-{study.name}')}",
        f"description = {toml_value(f'best trial {trial.number} of study {study.name} (objective {trial.value:.4f})')}",
        f"algorithms = {toml_value([study.algorithm])}",
        f"env_ids = {toml_value(list(study.env_ids))}",
        f"seeds = {toml_value(list(study.export_seeds))}",
        f"total_timesteps = {study.total_timesteps}",
        f"eval_every = {study.eval_every}",
        f"eval_episodes = {study.eval_episodes}",
        "",
        f"[algo.{study.algorithm}]",
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in {**study.fixed, **trial.params}.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def trials_table(study_obj: Any) -> pd.DataFrame:
    rows = []
    for t in study_obj.get_trials(deepcopy=False):
        intermediate = t.intermediate_values
        attrs = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "last_step": max(intermediate, default=None),
                **{f"param {k}": v for k, v in t.params.items()},
                "fail_reason": attrs.get("fail_reason", ""),
                "run_dir": attrs.get("run_dir", ""),
            }
        )
    return pd.DataFrame(rows)


def best_table(study_obj: Any, top: int = 5) -> pd.DataFrame:
    from optuna.trial import TrialState

    complete = sorted(study_obj.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)[:top]
    rows = []
    for t in complete:
        scores = t.user_attrs.get("scores", {})
        rows.append(
            {
                "trial": t.number,
                "value": round(t.value, 4),
                **{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in t.params.items()},
                "per-seed scores": ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
            }
        )
    return pd.DataFrame(rows)


def optuna_figures(study_obj: Any, out_dir: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Optuna's matplotlib plots, each saved as PNG and PDF; a plot that needs more trials is skipped with a note."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    from analysis.figures import save

    figures, notes = {}, []
    for name, plot in (
        ("optimization_history", plots.plot_optimization_history),
        ("intermediate_values", plots.plot_intermediate_values),
        ("param_importances", plots.plot_param_importances),
        ("parallel_coordinate", plots.plot_parallel_coordinate),
        ("slice", plots.plot_slice),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                result = plot(study_obj)
            axes = result.flat[0] if hasattr(result, "flat") else result
            figures[name] = save(axes.get_figure(), out_dir, name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"{name} not drawn: {exc}")
    return figures, notes


DESCRIPTION = """\
Report a study: best trials with their per-seed scores, every trial (CSV), Optuna's figures, report.html,
and the best config exported as a suite TOML (on seeds the search did not use) for `rlgrid run`.
The storage defaults to the one `rlgrid tune` uses for this study file.
"""


def cmd_tune_report(argv: list[str]) -> int:
    from analysis.report import TITLES, Report, text_table, write_report
    from experiments.study import StudyError, load_study
    from experiments.tune import default_storage, load_or_create_study
    from experiments.tune_cli import summary

    parser = argparse.ArgumentParser(
        prog="rlgrid tune-report",
        description=DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", help="study file or shipped study name")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--storage", default=None, help="journal file or postgresql:// URL (default: as rlgrid tune)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="runs root (locates the default storage)")
    parser.add_argument("--top", type=int, default=5, help="best trials listed (default 5)")
    try:
        args = parser.parse_args(argv)
        study = load_study(args.study)
    except SystemExit as exc:
        return int(exc.code or 0)
    except (StudyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    storage = args.storage or default_storage(study, args.runs_dir)
    if "://" not in storage and not Path(storage).exists():
        print(
            f"error: no study storage at {storage}; run `rlgrid tune {args.study}` first (or give --storage)", file=sys.stderr
        )
        return 2
    study_obj = load_or_create_study(study, storage)
    best = best_table(study_obj, args.top)
    if best.empty:
        print(f"error: study {study.name} has no complete trial yet", file=sys.stderr)
        return 1
    objective = f"{study.objective} ({study.aggregate} over {len(study.env_ids)} env(s) x {len(study.seeds)} seed(s))"
    report = Report(
        args.out,
        title=f"rlgrid tune report: {study.name}",
        header=[summary(study_obj, study.n_trials), f"study file {study.path}; storage {storage}; objective {objective}"],
    )
    report.tables["best_trials"] = report.shown["best_trials"] = best
    trials = trials_table(study_obj)
    report.tables["trials"] = trials
    report.shown["trials"] = (
        trials.drop(columns=["run_dir"]).map(lambda v: f"{v:.4g}" if isinstance(v, float) else v).fillna("")
    )
    report.figures, report.notes = optuna_figures(study_obj, args.out / "figures")
    exported = export_suite(study, study_obj.best_trial, args.out / f"tuned-{study.name}.toml")
    report.notes.append(f"Best config exported as a suite: {exported} (rlgrid run {exported})")
    write_report(report)
    print(f"{report.header[0]}\n\n{TITLES['best_trials']}\n{text_table(best)}\n")
    print(f"report: {args.out / 'report.html'}\nsuite:  {exported}  ->  rlgrid run {exported}")
    return 0
