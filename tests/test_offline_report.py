"""Reports and suites of offline runs, whose task is a dataset: `--normalize d4rl` by each dataset's own reference
returns (else D4RL's row of its env, also for a dataset that is not on this machine), D4RL's table (a row per dataset,
a column per method), and suites that name datasets in env_ids. No training: the runs are synthetic (tests/helpers.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.report import _families
from analysis.scores import dataset_env_guess, env_bounds, task_env
from experiments.cli import main
from experiments.suite import SUITES_DIR, SuiteError, load_suite
from tests.helpers import write_synthetic_runs

minari = pytest.importorskip("minari")
h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.mujoco  # a Hopper-v5 dataset, and the shipped suite's MuJoCo datasets

SMOKE_DATASET = "rlgrid/pendulum-v1/smoke-v0"  # tests/conftest.py makes it: no reference returns
PENDULUM = "rlgrid/pendulum-v1/report-refs-v0"
PENDULUM_REFS = (-1200.0, -200.0)  # its own: Pendulum has no D4RL row
HOPPER = "rlgrid/hopper-v5/report-refs-v0"
HOPPER_REFS = (-50.0, 950.0)  # its own, which win over D4RL's Hopper row
D4RL_HOPPER = (-20.272305, 3234.3)  # analysis/reference/d4rl_reference_min_max.csv
D4RL_WALKER = (1.629008, 4592.3)
ELSEWHERE = "rlgrid/walker2d-v5/medium-v0"  # runs of a dataset that is not on this machine
METHODS = {"bc": 0.0, "td3_bc": 100.0, "iql": 150.0, "cql": 50.0}  # added to each dataset's level


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two tiny Minari datasets with known reference returns in the session's scratch Minari root (tests/conftest.py),
    and a D4RL file of Hopper without any (its env from its D4RL name)."""
    from experiments.dataset_recipes import make_random

    make_random("Pendulum-v1", transitions=200, seed=0, name=PENDULUM, ref_min_score=PENDULUM_REFS[0], ref_max_score=-200.0)
    make_random("Hopper-v5", transitions=200, seed=0, name=HOPPER, ref_min_score=HOPPER_REFS[0], ref_max_score=950.0)
    path = tmp_path_factory.mktemp("d4rl") / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as file:  # what dataset_info reads: attributes only (none here: no reference returns)
        file["observations"] = np.zeros((2, 11), np.float32)
    return {"pendulum": PENDULUM, "hopper": HOPPER, "hdf5": str(path), "elsewhere": ELSEWHERE}


@pytest.fixture(scope="module")
def offline_report(datasets, tmp_path_factory):
    levels = {datasets["pendulum"]: -700.0, datasets["hopper"]: 600.0, datasets["hdf5"]: 1000.0, ELSEWHERE: 2000.0}
    cells = {(algo, "default", task): level + extra for task, level in levels.items() for algo, extra in METHODS.items()}
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_runs(root, cells, seeds=[1, 2, 3], points=20, total_steps=20_000, noise=5.0, suite="offline")
    out = tmp_path_factory.mktemp("report")
    code = main(["report", str(root), "--out", str(out), "--normalize", "d4rl", "--reps", "200", "--reference", "none"])
    assert code == 0
    return out


def test_d4rl_normalisation_uses_each_datasets_own_reference_returns_else_d4rls_row(datasets, offline_report):
    scores = pd.read_csv(offline_report / "tables" / "scores.csv").set_index(["method", "env_id"])
    assert len(scores) == 16 and (scores["seeds"] == 3).all()
    by_hand = {  # (low, high) per task, written out
        datasets["pendulum"]: (-1200.0, -200.0),  # the dataset's own
        datasets["hopper"]: (-50.0, 950.0),  # the dataset's own, not D4RL's Hopper row
        datasets["hdf5"]: (-20.272305, 3234.3),  # no refs of its own: D4RL's Hopper row
        ELSEWHERE: (1.629008, 4592.3),  # not here: D4RL's Walker2d row, its env read from its name
    }
    for (method, task), row in scores.iterrows():
        low, high = by_hand[task]
        assert np.isclose(row["normalized"], (row["score"] - low) / (high - low)), (method, task)
    # e.g. iql on the Pendulum dataset scores about -550: 65% of the way from its random return to its expert one
    assert abs(scores.loc[("iql", datasets["pendulum"]), "normalized"] - 0.65) < 0.02

    d4rl = pd.read_csv(offline_report / "tables" / "d4rl_scores.csv").set_index(["dataset", "method"])
    for (task, method), row in d4rl.iterrows():
        low, high = by_hand[task]
        raw = scores.loc[(method, task)]
        assert (row["ref_min_score"], row["ref_max_score"]) == pytest.approx((low, high))
        for ours, theirs in (("normalized_score", "score"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
            assert np.isclose(row[ours], 100 * (raw[theirs] - low) / (high - low)), (task, method, ours)
        assert row["ci_low"] <= row["normalized_score"] <= row["ci_high"]


def test_the_report_has_d4rls_table_a_row_per_dataset_and_says_where_bounds_came_from(datasets, offline_report):
    table = (offline_report / "tables" / "d4rl_scores.md").read_text().splitlines()
    assert table[0] == "| dataset | bc | cql | iql | td3_bc |"
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table[2:]}
    assert set(rows) == set(datasets.values())
    d4rl = pd.read_csv(offline_report / "tables" / "d4rl_scores.csv").set_index(["dataset", "method"])
    cell = d4rl.loc[(PENDULUM, "iql")]
    assert f"{cell['normalized_score']:.1f} [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]" in rows[PENDULUM]
    markdown = (offline_report / "report.md").read_text()
    assert "## D4RL normalised scores" in markdown
    assert markdown.index("## Scores per cell") < markdown.index("## D4RL normalised scores")
    notes = markdown[markdown.index("## Notes") :]
    assert f"Datasets not on this machine (nothing is downloaded): {ELSEWHERE} (env Walker2d-v5)" in notes
    assert f"dataset {ELSEWHERE} is not on this machine" in notes and "D4RL's row of its env Walker2d-v5" in notes
    assert f"dataset {datasets['hdf5']} has no reference returns of its own" in notes
    assert "a step is a gradient update" in notes
    assert PENDULUM not in notes and HOPPER not in notes  # their own refs: nothing to say
    assert "D4RL normalised scores" in (offline_report / "report.html").read_text()


def test_bounds_fall_back_and_fail_as_before_and_env_ids_are_unchanged(datasets):
    notes: list[str] = []
    bounds = env_bounds(["Hopper-v5", datasets["hopper"], datasets["hdf5"], ELSEWHERE], "d4rl", notes)
    assert bounds == {
        "Hopper-v5": D4RL_HOPPER,  # an env id: D4RL's row, as always, and no note
        HOPPER: HOPPER_REFS,
        datasets["hdf5"]: D4RL_HOPPER,
        ELSEWHERE: D4RL_WALKER,
    }
    assert len(notes) == 2
    with pytest.raises(KeyError, match=f"{SMOKE_DATASET} \\(dataset .* has no reference returns of its own.*Pendulum-v1"):
        env_bounds([SMOKE_DATASET], "d4rl")  # no refs, and Pendulum has no D4RL row
    with pytest.raises(KeyError, match="nobody/knows/what-v0 .*not on this machine.*its env is unknown"):
        env_bounds(["nobody/knows/what-v0"], "d4rl")
    with pytest.raises(KeyError, match="Pendulum-v1"):
        env_bounds(["Pendulum-v1"], "d4rl")  # unchanged for env ids


def test_a_datasets_env_and_family_come_from_its_metadata_or_else_its_name(datasets):
    assert dataset_env_guess("rlgrid/halfcheetah-v5/medium-v0") == "HalfCheetah-v5"
    assert dataset_env_guess("mujoco/hopper/medium-v0") == "Hopper-v5"  # Minari's own D4RL ids: D4RL's env names
    assert dataset_env_guess("/data/walker2d-medium-replay-v2.hdf5") == "Walker2d-v5"
    assert dataset_env_guess("nobody/knows/what-v0") is None
    here, elsewhere = task_env(PENDULUM), task_env(ELSEWHERE)
    assert (here.env_id, here.here, here.ref_min_score, here.ref_max_score) == ("Pendulum-v1", True, *PENDULUM_REFS)
    assert (elsewhere.env_id, elsewhere.here, elsewhere.is_dataset) == ("Walker2d-v5", False, True)
    tasks = [PENDULUM, ELSEWHERE, "nobody/knows/what-v0", "CartPole-v1"]
    families = _families({task: task_env(task) for task in tasks})
    assert families == {
        PENDULUM: "classic_control",
        ELSEWHERE: "mujoco",
        "nobody/knows/what-v0": "other",
        "CartPole-v1": "classic_control",
    }


def test_a_suite_of_datasets_expands_to_runs_whose_task_is_the_dataset(datasets, tmp_path):
    path = tmp_path / "offline.toml"
    path.write_text(
        f"""
algorithms = ["bc", "iql"]
env_ids = ["{PENDULUM}", "{HOPPER}"]
seeds = 2
total_timesteps = 1_000
eval_every = 500
[algo.bc]
env_ids = ["{HOPPER}"]
[algo.iql.mujoco]
batch_size = 64
"""
    )
    suite = load_suite(str(path))
    cells = {(spec.algo, spec.env_id, spec.seed): spec for spec in suite.specs}
    iql = {("iql", task, s) for task in (PENDULUM, HOPPER) for s in (1, 2)}
    assert set(cells) == {("bc", HOPPER, s) for s in (1, 2)} | iql  # bc narrowed to the Hopper dataset
    assert cells[("iql", HOPPER, 1)].config().batch_size == 64  # the dataset's family is its env's: mujoco
    assert cells[("iql", PENDULUM, 1)].config().batch_size != 64
    assert cells[("bc", HOPPER, 2)].config().env_id == HOPPER
    assert cells[("bc", HOPPER, 2)].run_dir(tmp_path).parent == tmp_path / "offline" / "bc" / "rlgrid-hopper-v5-report-refs-v0"


def test_the_shipped_offline_suite_is_refused_before_anything_runs_where_its_datasets_are_not(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "offline_mujoco", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "9 problem(s)" in err and not runs.exists()
    assert "env_ids[0]: no Minari dataset 'rlgrid/hopper-v5/medium-v0'" in err
    assert "To make it: `rlgrid dataset make medium --run RUN_DIR`, RUN_DIR a sac/td3/ddpg run of Hopper-v5" in err
    assert "`rlgrid dataset make medium-replay --run RUN_DIR`" in err
    medium_expert = "rlgrid dataset make medium-expert --from rlgrid/walker2d-v5/medium-v0 rlgrid/walker2d-v5/expert-v0"
    assert medium_expert in err
    with pytest.raises(SuiteError, match="no Minari dataset 'rlgrid/halfcheetah-v5/medium-replay-v0'"):
        load_suite("offline_mujoco")


def test_the_shipped_offline_suite_expands_where_its_datasets_are(tmp_path, monkeypatch):
    from experiments.dataset_recipes import make_random

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    text = (SUITES_DIR / "offline_mujoco.toml").read_text()
    tasks = [line.strip().strip('",') for line in text.splitlines() if line.strip().startswith('"rlgrid/')]
    assert len(tasks) == 9
    for task in tasks:  # stand-ins of the right envs (random data under the medium names: only the names matter here)
        make_random(dataset_env_guess(task), transitions=20, seed=0, name=task, ref_min_score=0.0, ref_max_score=1.0)
    suite = load_suite("offline_mujoco")
    assert len(suite.specs) == 4 * 9 * 3
    assert {(spec.algo, spec.env_id) for spec in suite.specs} == {
        (algo, task) for algo in ("bc", "td3_bc", "iql", "cql") for task in tasks
    }
    configs = [spec.config() for spec in suite.specs[:: 4 * 9]]
    assert all((c.total_timesteps, c.eval_every, c.eval_episodes) == (1_000_000, 5_000, 10) for c in configs)


def test_the_shipped_cpu_sized_hopper_suite_expands_where_its_datasets_are(tmp_path, monkeypatch):
    from experiments.dataset_recipes import make_random

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    tasks = ["rlgrid/hopper-v5/medium-v0", "rlgrid/hopper-v5/medium-replay-v0", "rlgrid/hopper-v5/medium-expert-v0"]
    for task in tasks:  # stand-ins under the suite's names
        make_random("Hopper-v5", transitions=20, seed=0, name=task, ref_min_score=0.0, ref_max_score=1.0)
    suite = load_suite("offline_hopper")
    assert {(spec.algo, spec.env_id, spec.seed) for spec in suite.specs} == {
        (algo, task, seed) for algo in ("bc", "td3_bc", "iql", "cql") for task in tasks for seed in (1, 2, 3)
    }
    assert all((s.config().total_timesteps, s.config().eval_every) == (10_000, 5_000) for s in suite.specs)
