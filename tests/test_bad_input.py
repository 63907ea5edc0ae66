"""Bad input to `rlgrid train`: a clear message, exit code 2, no run directory made, nothing existing touched.

Also the two "directory already there" cases: a directory made for another config is refused without
being touched, and a finished run is skipped without being touched.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from experiments.cli import main

# A tiny PPO CartPole run (a few seconds): 1024 steps, checkpoints every 256 so checkpoints/ is not empty.
TINY = {
    "env-id": "CartPole-v1",
    "total-timesteps": "1024",
    "num-envs": "2",
    "num-steps": "128",
    "update-epochs": "2",
    "num-minibatches": "4",
    "eval-every": "512",
    "eval-episodes": "2",
}
RUNNER = ["--quiet", "--checkpoint-every-steps", "256"]


def train_argv(runs_dir: Path, algo: str = "ppo", extra: tuple[str, ...] = (), **changes: str) -> list[str]:
    """argv for `rlgrid train ALGO` with TINY's fields, `changes` replacing some (keys with '-' as '_')."""
    fields = {**TINY, **{k.replace("_", "-"): v for k, v in changes.items()}}
    argv = ["train", algo]
    for name, value in fields.items():
        argv += [f"--{name}", value]
    return [*argv, *RUNNER, *extra, "--runs-dir", str(runs_dir)]


@contextlib.contextmanager
def _restore_process_state():
    """execute_run installs SIGINT/SIGTERM handlers and sets torch's thread count in the calling process;
    put both back so that running the CLI in-process does not change the rest of the test session."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture | None = None) -> tuple[int, str, str]:
    """`experiments.cli.main(argv)` in-process: (exit code, stdout, stderr)."""
    if capsys is not None:
        capsys.readouterr()  # drop anything printed before
    with _restore_process_state():
        code = main(argv)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under `root` -> (bytes, mtime_ns) for files, None for directories."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def assert_no_run_directory(runs_dir: Path) -> None:
    leftovers = sorted(str(p) for p in runs_dir.rglob("*")) if runs_dir.exists() else []
    assert leftovers == [], f"bad input left files behind: {leftovers}"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A runs dir holding one finished tiny run (trained once for the module); tests copy it."""
    runs_dir = tmp_path_factory.mktemp("finished") / "runs"
    code, _, _ = run_cli(train_argv(runs_dir))
    assert code == 0
    (run_dir,) = runs_dir.glob("single/ppo/CartPole-v1/seed1-*")
    assert (run_dir / "DONE").is_file() and (run_dir / "result.json").is_file()
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt")), "the fixture run should have checkpoints"
    assert (run_dir / "metrics.jsonl").stat().st_size > 0
    return runs_dir


def copy_runs(finished_run: Path, dest: Path) -> tuple[Path, Path]:
    """A private copy (mtimes kept) of the finished runs dir: (runs_dir, run_dir)."""
    runs_dir = dest / "runs"
    shutil.copytree(finished_run, runs_dir)  # copy2: contents and mtimes
    (run_dir,) = runs_dir.glob("single/ppo/CartPole-v1/seed1-*")
    return runs_dir, run_dir


# (id, algo, changes to TINY, extra args, words the message must contain). Unknown algorithms and envs are the runner's
# messages ("error: ..."); options are parsed by tyro (algorithms.common.cli), whose messages are framed in a box.
BAD_INPUTS = [
    ("algo-typo", "ppoo", {}, (), ["unknown algorithm 'ppoo'", "Did you mean 'ppo'?", "Known algorithms:", "ppo"]),
    ("algo-unknown", "no-such-algorithm", {}, (), ["no-such-algorithm", "Known algorithms:", "dqn", "ppo_kl"]),
    ("field-typo", "ppo", {}, ("--learning-rat", "0.1"), ["Unrecognized options: --learning-rat", "--learning-rate FLOAT"]),
    ("field-typo-inline", "ppo", {}, ("--learning-rat=0.1",), ["Unrecognized options: --learning-rat=0.1", "--learning-rate"]),
    ("runner-typo", "ppo", {}, ("--runs-dirr", "x"), ["Unrecognized options: --runs-dirr", "--runs-dir PATH"]),
    ("int-type", "ppo", {"num_steps": "abc"}, (), ["Error parsing --num-steps", "'abc'", "--num-steps INT"]),
    ("float-type", "ppo", {}, ("--learning-rate", "fast"), ["Error parsing --learning-rate", "'fast'"]),
    ("bool-takes-no-value", "ppo", {}, ("--norm-adv", "maybe"), ["Unrecognized options: maybe"]),
    ("missing-value", "ppo", {}, ("--hidden-size",), ["Missing value for argument '--hidden-size'"]),
    ("missing-float", "ppo", {}, ("--ent-coef",), ["Missing value for argument '--ent-coef'"]),
    ("gamma-range", "ppo", {}, ("--gamma", "1.5"), ["Error parsing config", "gamma", "1.5"]),
    ("minibatch-divisibility", "ppo", {"num_minibatches": "7"}, (), ["not divisible", "num_minibatches = 7", "256"]),
    ("variant-range", "ppo_kl", {}, ("--kl-target", "0"), ["Error parsing config", "kl_target must be > 0"]),
    ("env-typo", "ppo", {"env_id": "CartPol-v1"}, (), ["unknown environment id 'CartPol-v1'", "Did you mean CartPole-v1"]),
    ("threads", "ppo", {}, ("--threads", "0"), ["--threads", ">= 1"]),
    ("seed-type", "ppo", {}, ("--seed", "abc"), ["Error parsing --seed", "'abc'"]),
    ("float-nan", "ppo", {}, ("--learning-rate", "nan"), ["Error parsing config", "learning_rate must be a finite number"]),
    ("float-inf", "ppo", {}, ("--gamma", "inf"), ["Error parsing config", "gamma must be a finite number, got inf"]),
    ("float-minus-inf", "ppo", {}, ("--ent-coef", "-inf"), ["Error parsing config", "ent_coef must be a finite number"]),
    ("optional-float-inf", "ppo", {}, ("--target-kl", "inf"), ["Error parsing config", "target_kl must be a finite"]),
    ("checkpoint-seconds-nan", "ppo", {}, ("--checkpoint-every-seconds", "nan"), ["--checkpoint-every-seconds must be > 0"]),
    ("checkpoint-steps-zero", "ppo", {}, ("--checkpoint-every-steps", "0"), ["--checkpoint-every-steps must be >= 1"]),
]


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def flatten(message: str) -> str:
    """The message's words in one line: tyro draws a box and wraps long lines."""
    return " ".join(re.sub("[\u2500-\u257f|]", " ", message).split())


@pytest.mark.parametrize("case_id, algo, changes, extra, words", BAD_INPUTS, ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys, case_id, algo, changes, extra, words):
    runs_dir = tmp_path / "runs"
    code, out, err = run_cli(train_argv(runs_dir, algo, extra, **changes), capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    message = flatten(err + out)
    for word in words:
        assert word in message, f"{word!r} missing from the message: {message!r}"
    assert "finished" not in out
    assert_no_run_directory(runs_dir)


def test_bad_input_exit_code_through_a_real_process(tmp_path):
    """`python -m experiments` (what the `rlgrid` script runs) exits 2 with the message on stderr."""
    runs_dir = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", *train_argv(runs_dir, "ppoo")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "Did you mean 'ppo'?" in proc.stderr
    assert proc.stdout == ""
    assert_no_run_directory(runs_dir)


def test_bad_input_leaves_existing_runs_untouched(tmp_path, capsys, finished_run):
    runs_dir, _ = copy_runs(finished_run, tmp_path)
    before = snapshot(runs_dir)
    for case in BAD_INPUTS:
        _, algo, changes, extra, _ = case.values if hasattr(case, "values") else case
        code, _, err = run_cli(train_argv(runs_dir, algo, extra, **changes), capsys)
        assert code == 2, err
    assert snapshot(runs_dir) == before


def _change_value(config: dict) -> str:
    config["clip_coef"] = 0.25  # as if the default had changed from 0.2
    return "clip_coef"


def _add_removed_field(config: dict) -> str:
    config["old_field"] = 3  # as if the Config had lost a field since the run was made
    return "old_field"


def _drop_new_field(config: dict) -> str:
    del config["hidden_size"]  # as if the Config had gained a field since the run was made
    return "hidden_size"


@pytest.mark.parametrize("state", ["partial", "finished"])
def test_directory_of_another_config_is_refused_untouched(tmp_path, capsys, finished_run, state):
    runs_dir, run_dir = copy_runs(finished_run, tmp_path)
    if state == "partial":  # as a run killed before it finished: checkpoints and metrics, no result, no DONE
        (run_dir / "DONE").unlink()
        (run_dir / "result.json").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    field = _change_value(config)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    before = snapshot(runs_dir)
    assert any(name.startswith("checkpoints/") for name in snapshot(run_dir)), "nothing to protect"

    code, out, err = run_cli(train_argv(runs_dir), capsys)

    assert code == 2, (out, err)
    assert "different config" in err
    assert f"  {field}: directory has" in err, err  # names the field that differs
    assert "left untouched" in err
    assert str(run_dir) in err
    assert snapshot(runs_dir) == before  # metrics.jsonl, config.json, checkpoints: same bytes, same mtimes


@pytest.mark.parametrize("edit", [_add_removed_field, _drop_new_field], ids=["removed-field", "new-field"])
def test_a_field_added_or_removed_since_the_directory_was_made_does_not_orphan_it(tmp_path, capsys, finished_run, edit):
    """The directory's name hashes every non-default value, so a field only one side has was at its default for both
    (e.g. ppo's `objective`, which runs of ppo and ppo_kl made before it existed lack): the partial run resumes."""
    runs_dir, run_dir = copy_runs(finished_run, tmp_path)
    (run_dir / "DONE").unlink()
    (run_dir / "result.json").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    code, out, err = run_cli(train_argv(runs_dir), capsys)

    assert code == 0, err
    assert f"finished: {run_dir}" in out and (run_dir / "DONE").is_file()
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_step"] > 0


def test_finished_run_is_skipped_untouched(tmp_path, capsys, finished_run):
    runs_dir, run_dir = copy_runs(finished_run, tmp_path)
    before = snapshot(runs_dir)
    result = json.loads((run_dir / "result.json").read_text())

    code, out, err = run_cli(train_argv(runs_dir), capsys)

    assert code == 0, err
    assert f"already finished, nothing to do: {run_dir}" in out
    assert f"final eval return {result['final_eval_return']:.2f} at step {result['global_step']:,}" in out
    after = snapshot(runs_dir)
    assert after == before
    for name in ("metrics.jsonl", "result.json"):  # the two the brief names, explicitly
        rel = str((run_dir / name).relative_to(runs_dir))
        assert after[rel] == before[rel]


def test_an_algorithm_on_an_action_space_it_cannot_handle_is_refused_before_anything_runs(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    code, _, err = run_cli(["train", "dqn", "--env-id", "Pendulum-v1", "--runs-dir", str(runs_dir), "--quiet"], capsys)
    assert code == 2 and "dqn needs discrete actions; Pendulum-v1 has continuous actions" in err
    assert_no_run_directory(runs_dir)
    suite = tmp_path / "mixed.toml"
    suite.write_text('algorithms = ["ppo", "td3"]\nenv_ids = ["CartPole-v1", "Pendulum-v1"]\nseeds = [1]\n')
    code, _, err = run_cli(["run", str(suite), "--runs-dir", str(runs_dir)], capsys)
    assert code == 2 and "td3 x CartPole-v1 x default: td3 needs continuous actions" in err
    assert_no_run_directory(runs_dir)


# --- NaN and infinity in any float field -------------------------------------------------------------
def _float_fields() -> list[tuple[str, str]]:
    """(algorithm, field) for every float (or float | None) field of every registered algorithm's Config."""
    from experiments.registry import config_fields, list_algorithms, load_algorithm

    return [
        (algo, name)
        for algo in list_algorithms()
        for name, info in config_fields(load_algorithm(algo).Config).items()
        if float in (info.type, *typing.get_args(info.type))
    ]


FLOAT_FIELDS = _float_fields()


def test_the_float_field_discovery_finds_every_algorithms_fields():
    algos = {algo for algo, _ in FLOAT_FIELDS}
    from experiments.registry import list_algorithms

    assert algos == set(list_algorithms())
    assert ("ppo", "learning_rate") in FLOAT_FIELDS and ("dqn", "max_grad_norm") in FLOAT_FIELDS
    assert ("trpo", "backtrack_coef") in FLOAT_FIELDS and ("sac", "alpha") in FLOAT_FIELDS


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("algo, field", FLOAT_FIELDS, ids=[f"{a}.{f}" for a, f in FLOAT_FIELDS])
def test_a_non_finite_number_in_any_float_field_is_refused_naming_the_field(algo, field, value):
    """At Config construction, so the command line, suites and studies' fixed values all get it; no field gives
    inf a meaning (optional limits say "none" with None)."""
    from experiments.registry import load_algorithm

    with pytest.raises(ValueError, match=rf"^{field} must be a finite number, got {value}$"):
        load_algorithm(algo).Config(**{field: value})


def test_a_suite_with_a_nan_value_is_refused_before_anything_runs(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    suite = tmp_path / "nan.toml"
    suite.write_text(
        'algorithms = ["ppo", "dqn"]\nenv_ids = ["CartPole-v1"]\nseeds = [1]\n'
        "[algo.ppo]\nlearning_rate = nan\n[algo.dqn]\ngamma = -inf\n"
    )
    code, out, err = run_cli(["run", str(suite), "--runs-dir", str(runs_dir)], capsys)
    assert code == 2, (out, err)
    assert "ppo x CartPole-v1 x default: invalid ppo config: learning_rate must be a finite number, got nan" in err
    assert "dqn x CartPole-v1 x default: invalid dqn config: gamma must be a finite number, got -inf" in err
    assert "Traceback" not in err and out == ""
    assert_no_run_directory(runs_dir)


TINY_STUDY = """\
algorithm = "ppo"
env_ids = ["CartPole-v1"]
seeds = [1]
total_timesteps = 2048
eval_every = 1024
n_trials = 1
export_seeds = [2]
[fixed]
num_envs = 2
num_steps = 128
[params.learning_rate]
type = "float"
low = 1e-4
high = 1e-2
"""


def test_a_study_with_an_infinite_fixed_value_is_refused(tmp_path):
    from experiments.study import StudyError, load_study

    study = tmp_path / "study.toml"
    study.write_text(TINY_STUDY.replace("[fixed]\n", "[fixed]\nmax_grad_norm = inf\n"))
    with pytest.raises(StudyError, match="fixed: invalid ppo config: max_grad_norm must be a finite number, got inf"):
        load_study(str(study))


# --- an unusable --runs-dir ---------------------------------------------------------------------------
# A runs dir whose parent is a regular file cannot be made by anyone, root included (permission bits do not stop
# root, and these tests may run as root), so it stands for every unwritable runs dir: the command refuses it with
# one line and exit code 2 after validating its input and before any compute.
def _runs_dir_under_a_file(tmp_path: Path) -> tuple[Path, Path]:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file, where the runs dir's parent should be\n")
    return blocker, blocker / "runs"


def _assert_refused(code: int, out: str, err: str, blocker: Path, runs_dir: Path) -> None:
    assert code == 2, (out, err)
    assert err == f"error: --runs-dir {runs_dir} cannot be created or written to: {blocker} is a file, not a directory\n"
    assert out == ""  # nothing started: no plan, no study line
    assert blocker.read_text() == "a file, where the runs dir's parent should be\n"


def test_train_refuses_a_runs_dir_that_cannot_be_made(tmp_path, capsys):
    blocker, runs_dir = _runs_dir_under_a_file(tmp_path)
    _assert_refused(*run_cli(train_argv(runs_dir), capsys), blocker, runs_dir)
    # a runs dir that is itself a file
    _assert_refused(*run_cli(train_argv(blocker), capsys), blocker, blocker)


def test_train_checks_its_input_before_the_runs_dir(tmp_path, capsys):
    """Bad input is reported as such, not as an unusable runs dir, and an unusable runs dir is not made."""
    code, _, err = run_cli(train_argv(tmp_path / "runs", env_id="CartPol-v1"), capsys)
    assert code == 2 and "unknown environment id 'CartPol-v1'" in err and "--runs-dir" not in err
    assert not (tmp_path / "runs").exists()


def test_run_refuses_a_runs_dir_that_cannot_be_made(tmp_path, capsys):
    blocker, runs_dir = _runs_dir_under_a_file(tmp_path)
    suite = tmp_path / "tiny.toml"
    suite.write_text('algorithms = ["ppo"]\nenv_ids = ["CartPole-v1"]\nseeds = [1]\ntotal_timesteps = 2048\n')
    _assert_refused(
        *run_cli(["run", str(suite), "--runs-dir", str(runs_dir), "--executor", "inline"], capsys), blocker, runs_dir
    )
    code, out, _ = run_cli(["run", str(suite), "--runs-dir", str(runs_dir), "--dry-run"], capsys)  # a dry run only reads
    assert code == 0 and "1 runs: 1 new" in out


def test_run_refuses_a_checkpoint_interval_that_is_not_a_number(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text('algorithms = ["ppo"]\nenv_ids = ["CartPole-v1"]\nseeds = [1]\ntotal_timesteps = 2048\n')
    runs_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", str(suite), "--runs-dir", str(runs_dir), "--checkpoint-every-seconds", "nan"], capsys)
    assert code == 2 and "--checkpoint-every-seconds must be > 0" in err and not runs_dir.exists()


def test_tune_refuses_a_runs_dir_that_cannot_be_made(tmp_path, capsys):
    blocker, runs_dir = _runs_dir_under_a_file(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text(TINY_STUDY)
    _assert_refused(*run_cli(["tune", str(study), "--runs-dir", str(runs_dir)], capsys), blocker, runs_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-directory", "study.toml"]  # no journal either
