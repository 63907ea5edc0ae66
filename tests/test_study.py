"""Study files: complete validation before anything runs, and sampling from the search space."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from experiments.study import StudyError, load_study  # noqa: E402
from experiments.tune import make_pruner, make_sampler, sample_params  # noqa: E402

VALID = """
algorithm = "ppo"
env_ids = ["CartPole-v1", "Acrobot-v1"]
seeds = [1, 2]
total_timesteps = 4096
eval_every = 1024
n_trials = 4
export_seeds = [7, 8]
normalize = { "CartPole-v1" = [0, 500], "Acrobot-v1" = [-500, -100] }
[fixed]
num_envs = 2
[params.learning_rate]
type = "float"
low = 1e-4
high = 1e-2
log = true
[params.anneal_lr]
type = "categorical"
choices = [true, false]
[params.max_grad_norm]
type = "float"
low = 0.3
high = 1.0
when = { anneal_lr = true }
[params.update_epochs]
type = "int"
low = 2
high = 8
"""


def write(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return str(path)


def test_a_valid_study_parses(tmp_path):
    study = load_study(write(tmp_path, VALID))
    assert study.name == "study" and study.n_evals == 4 and study.bounds["Acrobot-v1"] == (-500.0, -100.0)
    assert [p.name for p in study.params] == ["learning_rate", "anneal_lr", "max_grad_norm", "update_epochs"]
    assert study.sampler == {"name": "tpe"} and study.pruner == {"name": "median"}
    assert study.overrides({"learning_rate": 1e-3}) == {
        "num_envs": 2,
        "learning_rate": 1e-3,
        "total_timesteps": 4096,
        "eval_every": 1024,
        "eval_episodes": 10,
    }


def test_every_problem_is_listed_at_once(tmp_path):
    bad = VALID.replace('"Acrobot-v1" = [-500, -100]', '"Acrobot-v1" = [-100, -500]').replace(
        "export_seeds = [7, 8]", "export_seeds = [2, 8]"
    )
    bad = bad.replace(
        "[params.update_epochs]", '[params.learnig_rate]\ntype = "float"\nlow = 1.0\nhigh = 0.5\n[params.update_epochs]'
    )
    bad = bad.replace("when = { anneal_lr = true }", "when = { clip_coef = 0.2 }").replace(
        "high = 8", "high = 8\nlog = true\nstep = 2"
    )
    bad += (
        '\n[params.num_envs]\ntype = "int"\nlow = 1\nhigh = 4\n[sampler]\nname = "tpe"\nsead = 1\n[pruner]\nname = "medain"\n'
    )
    with pytest.raises(StudyError) as info:
        load_study(write(tmp_path, bad))
    text = str(info.value)
    for expected in (
        "normalize.Acrobot-v1: need [low, high] with low < high",
        "export_seeds: [2] were tuned on",
        "params.learnig_rate: ppo has no Config field 'learnig_rate' (did you mean 'learning_rate'?)",
        "params.max_grad_norm.when: 'clip_coef' is not a parameter defined before",
        "params.update_epochs: step and log cannot be combined",
        "params.num_envs: num_envs is set by the study",
        "sampler.sead: not an option of the tpe sampler",
        "pruner.name: unknown pruner 'medain'",
    ):
        assert expected in text, expected
    assert len(info.value.problems) == 8


def test_several_envs_need_a_normalisation_and_fixed_values_are_checked(tmp_path):
    text = VALID.replace('normalize = { "CartPole-v1" = [0, 500], "Acrobot-v1" = [-500, -100] }\n', "")
    with pytest.raises(StudyError, match="several envs need min-max bounds"):
        load_study(write(tmp_path, text))
    with pytest.raises(StudyError, match="no 'Random'/'Human' scores for CartPole-v1"):
        load_study(write(tmp_path, text.replace("seeds = [1, 2]", 'seeds = [1, 2]\nnormalize = "human"')))
    with pytest.raises(StudyError, match="fixed: invalid ppo config"):
        load_study(write(tmp_path, VALID.replace("num_envs = 2", "num_envs = 2\nnum_minibatches = 3")))


def test_conditional_parameters_are_sampled_only_when_their_condition_holds(tmp_path):
    study = load_study(write(tmp_path, VALID))
    search = optuna.create_study(sampler=make_sampler(study), pruner=make_pruner(study))
    seen = []
    for _ in range(12):
        trial = search.ask()
        params = sample_params(trial, study.params)
        search.tell(trial, 0.0)
        assert ("max_grad_norm" in params) == params["anneal_lr"]
        assert 1e-4 <= params["learning_rate"] <= 1e-2 and 2 <= params["update_epochs"] <= 8
        seen.append(params["anneal_lr"])
    assert set(seen) == {True, False}


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "gp"])
def test_every_sampler_proposes_trials_and_workers_get_distinct_seeds(tmp_path, name):
    study = load_study(write(tmp_path, VALID.replace("[fixed]", f'[sampler]\nname = "{name}"\nseed = 3\n[fixed]')))
    first = [make_sampler(study, worker) for worker in (0, 1)]
    proposals = []
    for sampler in first:
        search = optuna.create_study(sampler=sampler)
        trial = search.ask()
        proposals.append(sample_params(trial, study.params)["learning_rate"])
    assert proposals[0] != proposals[1], "two workers with one seed would propose the same first trial"


@pytest.mark.parametrize("name", ["quickstart", "mujoco_ppo"])
def test_shipped_studies_are_valid(name):
    study = load_study(name)
    assert study.params and not set(study.seeds) & set(study.export_seeds)
    assert study.bounds is not None and set(study.bounds) == set(study.env_ids)
