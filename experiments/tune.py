"""Hyperparameter search with Optuna: `optuna_worker` runs trials of a study until it has `n_trials`.

Any number of workers (processes here, Ray tasks, Slurm jobs, or `rlgrid tune` started again on other
machines) join one study by name in one storage: a journal file (one machine, no server) or PostgreSQL.

A trial samples a config from the study's search space and runs every seed x env instance as an ordinary
rlgrid run (`<runs>/tune-<study>/trial-<n>/...`, so its curves load like any grid's). The instances advance
in lockstep segments, one evaluation interval at a time: each run is paused with a checkpoint at the next
evaluation (runs resume bit-exactly), the trial reports the aggregate normalised evaluation so far, and the
pruner can stop it there, mid-run. With the Wilcoxon pruner the instances instead run to the end one after
another and each finished instance is reported (Optuna's multi-instance protocol).

Trials that a dead worker left RUNNING are failed when a worker starts (journal storage: same host and the
process is gone, or no heartbeat attribute for `stale_after_s`; PostgreSQL: Optuna's heartbeats too), and
the search goes on; finished trials are never run again. `n_trials` counts trials that reached a verdict on
their config: complete, pruned, or failed because the config itself failed (diverged, invalid).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments.execute import RunOptions, execute_pack
from experiments.grid import packs
from experiments.runs import RunSpec
from experiments.study import Param, Study, load_study

CONFIG_FAULTS = ("diverged", "invalid config")
HEARTBEAT_EVERY_S = 30.0


class TrialConfigError(Exception):
    """The sampled config cannot run (rejected by Config validation, or its losses diverged)."""


def default_storage(study: Study, runs_dir: Path) -> str:
    """A journal file next to the study file; for a shipped study, in the runs directory instead."""
    from experiments.study import STUDIES_DIR

    if study.path.parent.resolve() == STUDIES_DIR.resolve():
        return str(runs_dir / f"tune-{study.name}" / f"{study.name}.journal")
    return str(study.path.with_suffix(".journal"))


def open_storage(url: str, heartbeat_interval: int = 30, grace_period: int = 120) -> Any:
    """`postgresql://...` (any SQLAlchemy URL) -> RDBStorage with heartbeats; anything else is a journal file path."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        if url.startswith("sqlite"):
            raise ValueError(
                "SQLite storage breaks under several writer processes; use a journal file (the default) or postgresql://"
            )
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, engine_kwargs={"pool_pre_ping": True}
        )
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(study: Study, worker_index: int = 0) -> Any:
    """Samplers are not stored: every worker builds its own. Worker i is seeded seed + 1000 i, so workers do not
    propose the same startup trials; worker 0 alone reproduces a single-worker search."""
    import optuna

    options = {k: v for k, v in study.sampler.items() if k != "name"}
    if "seed" in options:
        options["seed"] = int(options["seed"]) + 1000 * worker_index
    name = study.sampler["name"]
    if name == "tpe":
        return optuna.samplers.TPESampler(**{"multivariate": True, "constant_liar": True, **options})
    if name == "random":
        return optuna.samplers.RandomSampler(**options)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(**options)
    return optuna.samplers.GPSampler(**options)


def make_pruner(study: Study) -> Any:
    import optuna

    options = {k: v for k, v in study.pruner.items() if k != "name"}
    name = study.pruner["name"]
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=options.get("n_startup_trials", 5), n_warmup_steps=options.get("n_warmup_evals", 1)
        )
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(**options)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=study.n_evals, **options)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(**options)
    return optuna.pruners.NopPruner()


def sample_params(trial: Any, params: tuple[Param, ...]) -> dict[str, Any]:
    """One config from the search space; a conditional parameter is sampled only when its condition holds."""
    values: dict[str, Any] = {}
    for p in params:
        if any(values.get(other) != value for other, value in p.when.items()):
            continue
        if p.type == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return values


def read_evals(run_dir: Path) -> list[float]:
    """The run's evaluation returns in order, from metrics.jsonl (the source of truth, also after resumes)."""
    import json

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [
        row["eval/episodic_return"] for row in map(json.loads, path.read_text().splitlines()) if "eval/episodic_return" in row
    ]


def aggregate(values: list[float], how: str) -> float:
    from scipy import stats

    return float(np.mean(values) if how == "mean" else stats.trim_mean(values, 0.25))


class TrialRun:
    """The runs of one trial and the scores they give, under the study's objective and normalisation."""

    def __init__(self, study: Study, trial: Any, params: dict[str, Any], runs_dir: Path, options: RunOptions) -> None:
        from experiments.registry import make_config

        self.study, self.trial = study, trial
        self.root = runs_dir / f"tune-{study.name}" / f"trial-{trial.number:04d}"
        overrides = study.overrides(params)
        try:
            make_config(study.algorithm, {**overrides, "env_id": study.env_ids[0], "seed": study.seeds[0]})
        except ValueError as exc:
            raise TrialConfigError(f"invalid config: {exc}") from None
        self.specs = [
            RunSpec.create(
                study.algorithm, env_id, seed, overrides, suite=f"tune-{study.name}", variant=f"trial-{trial.number:04d}"
            )
            for env_id in study.env_ids
            for seed in study.seeds
        ]
        self.options = options

    def advance(self, specs: tuple[RunSpec, ...], pause_at_step: int | None) -> None:
        """Train `specs` (one run, or seeds of one env as a pack) up to `pause_at_step` (None: to the end)."""
        import dataclasses

        options = dataclasses.replace(self.options, runs_dir=self.root, pause_at_step=pause_at_step)
        outcomes = execute_pack(list(specs), options)
        for spec, outcome in zip(specs, outcomes):
            if outcome["status"] == "diverged":
                raise TrialConfigError(f"diverged: {spec.env_id} seed {spec.seed}: {outcome['error']}")

    def instance_score(self, spec: RunSpec, upto: int | None = None) -> float:
        """Normalised score of one instance from its first `upto` evaluations (all when None)."""
        evals = read_evals(spec.run_dir(self.root))[:upto]
        if not evals:
            raise RuntimeError(f"no evaluation logged in {spec.run_dir(self.root)}")
        values = np.asarray(evals, dtype=float)
        if self.study.bounds is not None:
            low, high = self.study.bounds[spec.env_id]
            values = (values - low) / (high - low)
        return float(values[-1] if self.study.objective == "final" else values.mean())

    def record(self, upto: int | None = None) -> float:
        scores = {f"{s.env_id}/seed{s.seed}": self.instance_score(s, upto) for s in self.specs}
        self.trial.set_user_attr("scores", scores)
        return aggregate(list(scores.values()), self.study.aggregate)

    def run_lockstep(self, prune: Callable[[float, int], bool]) -> float:
        """All instances one evaluation interval at a time (an env's seeds as packs of up to `seeds_per_process`);
        after each interval, report and maybe prune."""
        for k in range(1, self.study.n_evals):
            for group in packs(self.specs, self.options.seeds_per_process, self.root):
                self.advance(group, pause_at_step=k * self.study.eval_every)
            if prune(self.record(upto=k), k):
                return float("nan")
        for group in packs(self.specs, self.options.seeds_per_process, self.root):
            self.advance(group, pause_at_step=None)
        return self.record()

    def run_instances(self, prune: Callable[[float, int], bool]) -> float:
        """Each instance to the end in turn, its score reported as step i (Wilcoxon pruner: one at a time, unpacked)."""
        for i, spec in enumerate(self.specs):
            self.advance((spec,), pause_at_step=None)
            if prune(self.instance_score(spec), i):
                return float("nan")
        return self.record()


def heartbeat_storage(study_obj: Any) -> Any | None:
    """The study's storage if it keeps Optuna heartbeats (an RDBStorage made with heartbeat_interval), else None."""
    import optuna

    backend = getattr(study_obj._storage, "_backend", study_obj._storage)  # RDBStorage sits behind a cache
    return backend if isinstance(backend, optuna.storages.RDBStorage) and backend.get_heartbeat_interval() else None


class Heartbeat:
    """While a trial runs, a thread records that its worker is alive: a `heartbeat` user attribute (any storage)
    and Optuna's own heartbeat where the storage keeps them (PostgreSQL)."""

    def __init__(self, study_obj: Any, trial: Any, every_s: float = HEARTBEAT_EVERY_S) -> None:
        import threading

        self.storage, self.trial_id, self.every_s = study_obj._storage, trial._trial_id, every_s
        self.rdb = heartbeat_storage(study_obj)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
        if self.rdb is not None:
            self.rdb.record_heartbeat(self.trial_id)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self._beat()
            except Exception:  # the trial finished between the wait and the write: nothing to keep alive
                return

    def __enter__(self) -> Heartbeat:
        self._beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def fail_dead_trials(study_obj: Any, stale_after_s: float) -> list[int]:
    """Fail RUNNING trials whose worker is gone: same host and its process no longer exists, or no heartbeat
    for `stale_after_s`. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    if heartbeat_storage(study_obj) is not None:
        optuna.storages.fail_stale_trials(study_obj)  # Optuna's heartbeats (PostgreSQL)
    host = socket.gethostname()
    for trial in study_obj.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        dead = False
        if attrs.get("host") == host and "pid" in attrs:
            try:
                os.kill(int(attrs["pid"]), 0)
            except ProcessLookupError:
                dead = True
            except PermissionError:
                pass
        last = attrs.get("heartbeat", trial.datetime_start.timestamp() if trial.datetime_start else time.time())
        dead = dead or time.time() - float(last) > stale_after_s
        if dead:
            try:
                study_obj._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker died")
                study_obj._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker starting now failed it first
                continue
    return failed


def counted(study_obj: Any, include_running: bool) -> list[Any]:
    """Trials that count towards n_trials (with RUNNING ones if asked; enqueued WAITING ones are still to run)."""
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE, TrialState.PRUNED} | ({TrialState.RUNNING} if include_running else set())
    config_fault = lambda t: t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") in CONFIG_FAULTS  # noqa: E731
    return [t for t in study_obj.get_trials(deepcopy=False) if t.state in states or config_fault(t)]


def load_or_create_study(study: Study, storage_url: str, worker_index: int = 0) -> Any:
    """The Optuna study of this name in the storage; refuses one that was made from a different study file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats are recorded by our own thread (ask/tell, not Study.optimize); Wilcoxon and heartbeats are
    # marked experimental: neither warning is news to a user.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(storage_url)
    study_obj = optuna.create_study(
        study_name=study.name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=make_sampler(study, worker_index),
        pruner=make_pruner(study),
    )
    attrs = study_obj.user_attrs
    if "fingerprint" not in attrs:
        study_obj.set_user_attr("fingerprint", study.fingerprint())
        study_obj.set_user_attr("study_file", study.raw)
    elif attrs["fingerprint"] != study.fingerprint():
        raise ValueError(
            f"study {study.name!r} in {storage_url} was created from a different study file; "
            "give this search another name (or another storage)"
        )
    return study_obj


def run_trial(
    study: Study, study_obj: Any, trial: Any, runs_dir: Path, options: RunOptions, log: Callable[[str], None]
) -> None:
    """Sample, run and tell one trial: complete, pruned, or failed (config's fault, or re-raised interrupt)."""
    from optuna.trial import TrialState

    started = time.perf_counter()
    params = sample_params(trial, study.params)
    reported: list[int] = []

    def prune(value: float, step: int) -> bool:
        trial.report(value, step)
        reported.append(step)
        return trial.should_prune()

    try:
        with Heartbeat(study_obj, trial):
            runner = TrialRun(study, trial, params, runs_dir, options)
            trial.set_user_attr("run_dir", str(runner.root))
            value = (runner.run_instances if study.pruner["name"] == "wilcoxon" else runner.run_lockstep)(prune)
    except TrialConfigError as exc:
        trial.set_user_attr("fail_reason", str(exc).split(":")[0])
        trial.set_user_attr("error", str(exc))
        study_obj.tell(trial, state=TrialState.FAIL)
        log(f"trial {trial.number} failed: {exc}")
        return
    except BaseException as exc:  # interrupted or crashed: not a verdict on the config, the search redoes it
        trial.set_user_attr("fail_reason", f"interrupted: {type(exc).__name__}")
        study_obj.tell(trial, state=TrialState.FAIL)
        raise
    seconds = time.perf_counter() - started
    if np.isnan(value):
        study_obj.tell(trial, state=TrialState.PRUNED)
        wilcoxon = study.pruner["name"] == "wilcoxon"
        at = f"instance {reported[-1] + 1}/{len(runner.specs)}" if wilcoxon else f"evaluation {reported[-1]}/{study.n_evals}"
        log(f"trial {trial.number} pruned after {at} ({seconds:.0f} s): {params}")
    else:
        study_obj.tell(trial, value)
        log(f"trial {trial.number}: {value:.4f} ({seconds:.0f} s): {params}")


def optuna_worker(
    study_ref: str,
    storage_url: str,
    n_trials: int | None = None,
    runs_dir: str | Path = "runs",
    worker_index: int = 0,
    options: RunOptions | None = None,
    stale_after_s: float = 180.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run trials of the study until `n_trials` count (default: the study file's); returns counts."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(study_ref)
    n_trials = n_trials or study.n_trials
    runs_dir = Path(runs_dir)
    options = options or RunOptions(progress=False)
    options = RunOptions(
        **{
            **vars(options),
            "runs_dir": runs_dir,
            "progress": False,
            "keep_checkpoints": 1,
            "wandb_group": f"tune/{study.name}",
            "wandb_job_type": "trial",
            "wandb_project": options.wandb_project or f"rlgrid-tune-{study.name}",
        }
    )
    study_obj = load_or_create_study(study, storage_url, worker_index)
    failed = fail_dead_trials(study_obj, stale_after_s)
    if failed:
        log(f"[worker {worker_index}] failed trials {failed}: left RUNNING by a worker that is gone")
    ran = 0
    while len(counted(study_obj, include_running=True)) < n_trials:
        trial = study_obj.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        ahead = [t for t in counted(study_obj, include_running=True) if t.number < trial.number]
        if len(ahead) >= n_trials:  # another worker took the last slot between our check and ask()
            trial.set_user_attr("fail_reason", "surplus: the study had its trials")
            study_obj.tell(trial, state=TrialState.FAIL)
            break
        run_trial(study, study_obj, trial, runs_dir, options, lambda message: log(f"[worker {worker_index}] {message}"))
        ran += 1
    done = counted(study_obj, include_running=False)
    return {
        "worker": worker_index,
        "ran": ran,
        "counted": len(done),
        "best": max((t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE), default=None),
    }
