"""The algorithm contract: every algorithm module (and each variant it registers) is discovered, has smoke settings,
runs, and is deterministic."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import math
import pkgutil

import pytest
from helpers import COMPILED_DRIFT, smoke_settings

import algorithms
from algorithms.common import RecordingLogger, TrainResult
from experiments.registry import config_fields, list_algorithms, load_algorithm

ALGOS = list_algorithms()
REQUIRED_KEYS = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"}
SMOKE_ENVS = {"discrete": "CartPole-v1", "continuous": "Pendulum-v1"}


def supported(algo: str) -> tuple[str, ...]:
    return load_algorithm(algo).ACTION_SPACES


CASES = [(algo, kind) for algo in ALGOS for kind in sorted(SMOKE_ENVS) if kind in supported(algo)]
IMAGE_ENV = "MinAtar/Breakout-v1"
"""the image smoke task: MinAtar's 10 x 10 grids run the CNN branch in seconds (Atari frames are in test_resume)"""
IMAGE_ALGOS = [algo for algo in ALGOS if "image" in load_algorithm(algo).OBSERVATIONS]
TABULAR_ALGOS = [algo for algo in ALGOS if load_algorithm(algo).OBSERVATIONS == ("discrete",)]


def MODEL_BASED(algo: str) -> bool:  # noqa: N802
    return getattr(load_algorithm(algo).module, "MODEL_BASED", False)


def OFFLINE(algo: str) -> bool:  # noqa: N802
    return load_algorithm(algo).OBSERVATIONS == ("dataset",)


def TEXT(algo: str) -> bool:  # noqa: N802
    """Learning from preferences: the task is text, a step a gradient update, no env copies and no training episodes."""
    return load_algorithm(algo).OBSERVATIONS == ("text",)


def smoke_env(algo: str, kind: str) -> str:
    """The smoke task of an algorithm for an action kind: classic control, or its own finite-state env (tabular),
    dataset (offline: tests/conftest.py makes it) or text task (learning from preferences)."""
    module = load_algorithm(algo)
    return SMOKE_ENVS[kind] if "vector" in module.OBSERVATIONS else module.SMOKE["env_id"]


def smoke_config(algo: str, env_id: str, seed: int = 1):
    module = load_algorithm(algo)
    return module, module.Config(**{**smoke_settings(algo), "env_id": env_id, "seed": seed})


def field_docstrings(config_cls: type) -> dict[str, str]:
    """The string literal under each field of a Config and of the dataclasses it extends (what `--help` shows)."""
    docs: dict[str, str] = {}
    for cls in reversed([c for c in config_cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            body = ast.parse(inspect.getsource(cls)).body[0].body
        except (OSError, TypeError):  # a variant's generated Config: its fields' docstrings are its base's
            continue
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
            ):
                docs[node.target.id] = str(following.value.value).strip()
    return docs


def test_every_algorithm_module_and_variant_is_discovered():
    modules = {m.name for m in pkgutil.iter_modules(algorithms.__path__) if not m.ispkg and not m.name.startswith("_")}
    assert modules, "no algorithm modules found"
    loaded = {name: importlib.import_module(f"algorithms.{name}") for name in modules}
    variants = {name for module in loaded.values() for name in getattr(module, "VARIANTS", {})}
    families = {name for name, module in loaded.items() if getattr(module, "FAMILY", False)}
    assert set(ALGOS) == (modules - families) | variants, f"modules without Config/train: {modules - set(ALGOS)}"
    assert families == {"dynamic_programming", "monte_carlo", "temporal_difference"}, "a family registers its variants only"
    assert {"ppo_kl", "npg", "ddpg", "double_dqn"} <= variants, "the registered names suites and run directories use"
    tabular = {"policy_evaluation", "policy_iteration", "value_iteration", "mc_control", "mc_prediction", "td0", "sarsa"}
    assert tabular | {"expected_sarsa", "q_learning"} <= variants


@pytest.mark.parametrize("algo", ALGOS)
def test_config_contract(algo):
    module = load_algorithm(algo)
    assert isinstance(module.SMOKE, dict) and module.SMOKE, f"{algo} has no smoke settings"
    assert set(module.ACTION_SPACES) <= set(SMOKE_ENVS) and module.ACTION_SPACES, f"{algo}: ACTION_SPACES"
    # Networks take vector features (and images, with a CNN); tabular methods take a state number and nothing else;
    # offline methods take a dataset (of vector observations) as their task, preference methods a text task.
    allowed = (("vector",), ("vector", "image"), ("discrete",), ("dataset",), ("text",))
    assert module.OBSERVATIONS in allowed, f"{algo}: OBSERVATIONS"
    config = module.Config()
    assert dataclasses.is_dataclass(config) and module.Config.__dataclass_params__.frozen
    fields = config_fields(module.Config)
    for common in ("env_id", "seed", "total_timesteps", "num_envs", "eval_every", "eval_episodes", "device", "compile"):
        if common == "num_envs" and (OFFLINE(algo) or TEXT(algo)):  # an offline or text run steps no env copies
            continue
        assert common in fields, f"{algo}.Config lacks {common}"
    docs = field_docstrings(module.Config)
    undocumented = [name for name in fields if not docs.get(name)]
    assert not undocumented, f"fields without a docstring: {undocumented}"
    with pytest.raises(ValueError):
        module.Config(total_timesteps=0)


@pytest.mark.parametrize(("algo", "kind"), CASES)
def test_smoke_run(algo, kind):
    module, cfg = smoke_config(algo, smoke_env(algo, kind))
    logger = RecordingLogger()
    result = module.train(cfg, logger)
    assert isinstance(result, TrainResult)
    assert result.global_step >= cfg.total_timesteps * 0.9
    keys = {k for _, m in logger.records for k in m}
    # Model-based planning (dynamic programming), offline learning and learning from preferences play no training
    # episodes.
    episodic = {"charts/episodic_return", "charts/episodic_length"}
    required = REQUIRED_KEYS - episodic if MODEL_BASED(algo) or OFFLINE(algo) or TEXT(algo) else REQUIRED_KEYS
    if not getattr(module.module, "TRAINS", True):  # best_of_n selects, it does not learn: its evaluation is all it logs
        required = {"eval/episodic_return"}
    assert required <= keys, f"missing metric keys {required - keys}"
    if getattr(module.module, "TRAINS", True):
        assert any(k.startswith("losses/") for k in keys)
    for step, metrics in logger.records:
        assert 0 < step <= result.global_step
        for key, value in metrics.items():
            assert math.isfinite(value) or key == "losses/explained_variance", f"{key}={value} at step {step}"
    assert math.isfinite(result.final_eval_return)


def _deterministic_records(logger: RecordingLogger) -> list:
    return [(step, {k: v for k, v in m.items() if k != "charts/SPS"}) for step, m in logger.records]


@pytest.mark.parametrize(("algo", "kind"), CASES + [(algo, "image") for algo in IMAGE_ALGOS])
def test_same_seed_same_numbers_other_seed_differs(algo, kind):
    if kind == "image":
        pytest.importorskip("minatar")
    env_id = IMAGE_ENV if kind == "image" else smoke_env(algo, kind)
    runs = []
    for seed in (3, 3, 4):
        module, cfg = smoke_config(algo, env_id, seed)
        logger = RecordingLogger()
        module.train(cfg, logger)
        runs.append(_deterministic_records(logger))
    assert runs[0] == runs[1]
    if MODEL_BASED(algo):  # planning from the model draws nothing: only its evaluation episodes depend on the seed
        planning = [[(step, {k: v for k, v in m.items() if not k.startswith("eval/")}) for step, m in run] for run in runs]
        assert planning[0] == planning[2]
    else:
        assert runs[0] != runs[2]


@pytest.mark.parametrize("algo", TABULAR_ALGOS)
def test_a_tabular_method_refuses_compile_and_feature_observations(algo):
    module = load_algorithm(algo)
    with pytest.raises(ValueError, match="no network to compile"):
        module.Config(compile=True)
    with pytest.raises(ValueError, match="tabular method: it needs a finite state set"):
        module.train(module.Config(**{**module.SMOKE, "env_id": "CartPole-v1"}))


@pytest.mark.parametrize("algo", [a for a in ALGOS if "discrete" in supported(a) and a not in TABULAR_ALGOS and not TEXT(a)])
def test_a_network_method_refuses_a_finite_state_set_before_it_starts(algo):
    with pytest.raises(ValueError, match="use a tabular method"):
        load_algorithm(algo).check_env("FrozenLake-v1")


@pytest.mark.parametrize("algo", ALGOS)
def test_text_tasks_and_envs_do_not_mix(algo):
    """A preference algorithm learns from a text task only, and no other algorithm takes one."""
    if TEXT(algo):
        with pytest.raises(ValueError, match=f"{algo} learns from preferences: its task is a text task"):
            load_algorithm(algo).check_env("CartPole-v1")
    else:
        with pytest.raises(ValueError, match=f"SyntheticSentiment-v0 is a text task .* and {algo} learns in an env"):
            load_algorithm(algo).check_env("SyntheticSentiment-v0")


VARIANTS = [algo for algo in ALGOS if algo in getattr(load_algorithm(algo).module, "VARIANTS", {})]
"""registered variants (ddpg, npg, ...): their file's train() with other Config defaults"""


TRAINS_NOTHING = [algo for algo in ALGOS if not getattr(load_algorithm(algo).module, "TRAINS", True)]
"""best_of_n: a selection, no update (it refuses compile=True)"""


@pytest.mark.slow
@pytest.mark.parametrize("algo", [a for a in ALGOS if a not in TABULAR_ALGOS + VARIANTS + TRAINS_NOTHING])
def test_a_compiled_run_logs_the_losses_of_an_eager_one(algo):
    """compile=True wraps the hot paths in torch.compile (CPU inductor here): TorchDynamo compiles frames (its counters,
    reset first, say so; an ignored flag leaves them at zero), and the compiled steps compute what the eager ones do: the
    run's first logged losses equal an eager run's of the same seed within float tolerance (inductor may fuse and
    reorder float operations; random draws inside a compiled step fall back to torch's eager generator, so both runs
    draw the same numbers). Once per algorithm file: a variant compiles the same functions."""
    import torch
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    module, cfg = smoke_config(algo, smoke_env(algo, supported(algo)[-1]))

    def first_losses(compile: bool) -> dict[str, float]:
        logger = RecordingLogger()
        result = module.train(dataclasses.replace(cfg, compile=compile), logger)
        assert math.isfinite(result.final_eval_return)
        rows = [{k: v for k, v in m.items() if k.startswith("losses/")} for _, m in logger.records]
        return next(row for row in rows if row)

    eager = first_losses(compile=False)
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(fallback_random=True):
        compiled = first_losses(compile=True)
    assert counters["frames"]["ok"] >= 1 and counters["stats"]["unique_graphs"] >= 1, {k: dict(v) for k, v in counters.items()}
    assert compiled.keys() == eager.keys() and eager
    assert compiled == pytest.approx(eager, **COMPILED_DRIFT)


@pytest.mark.parametrize("algo", [a for a in ALGOS if len(supported(a)) < len(SMOKE_ENVS) and not TEXT(a)])
def test_an_unsupported_action_space_is_refused_clearly(algo):
    """(A preference algorithm's actions are tokens: an env of any kind is refused, test_text_tasks_and_envs_do_not_mix.)"""
    (missing,) = set(SMOKE_ENVS) - set(supported(algo))
    module, cfg = smoke_config(algo, SMOKE_ENVS[missing])
    with pytest.raises(ValueError, match="needs"):
        module.train(cfg)


@pytest.mark.minatar
@pytest.mark.parametrize("algo", IMAGE_ALGOS)
def test_smoke_run_on_images_with_the_cnn_torso(algo):
    module, cfg = smoke_config(algo, IMAGE_ENV)
    logger = RecordingLogger()
    result = module.train(cfg, logger)
    assert result.global_step >= cfg.total_timesteps * 0.9 and math.isfinite(result.final_eval_return)
    losses = [v for _, m in logger.records for k, v in m.items() if k.startswith("losses/") and "explained" not in k]
    assert losses and all(math.isfinite(v) for v in losses)


@pytest.mark.minatar
@pytest.mark.parametrize(
    "algo", [a for a in ALGOS if a not in IMAGE_ALGOS + TABULAR_ALGOS and "discrete" in supported(a) and not TEXT(a)]
)
def test_an_algorithm_without_a_cnn_refuses_image_observations_before_it_starts(algo):
    """(The continuous-action-only ones are refused MinAtar by the action check already.)"""
    with pytest.raises(ValueError, match="no CNN"):
        load_algorithm(algo).check_env(IMAGE_ENV)
