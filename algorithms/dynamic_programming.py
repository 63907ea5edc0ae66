"""Dynamic programming: iterative policy evaluation, policy iteration and value iteration, from the env's model.

Sutton & Barto (2018), "Reinforcement Learning: An Introduction", 2nd ed., chapter 4 (Bellman 1957; Howard 1960):
every method sweeps the whole state space with expected one-step backups through the model p(s', r | s, a),
    policy evaluation (4.1, eq. 4.5)  V(s) <- sum_a pi(a|s) sum_{s', r} p(s', r | s, a) [r + gamma V(s')]
    policy iteration  (4.3)           evaluate pi as above until the largest change < theta, then make pi greedy with
                                      respect to V (eq. 4.9); repeat until pi is stable
    value iteration   (4.4, eq. 4.10) V(s) <- max_a sum_{s', r} p(s', r | s, a) [r + gamma V(s')] until the largest
                                      change < theta; the policy is greedy with respect to V
One file, one `method` option; `policy_evaluation` (the equiprobable policy on Example 4.1's 4 x 4 gridworld, Figure
4.1), `policy_iteration` and `value_iteration` (Example 3.5's 5 x 5 gridworld, gamma 0.9: Figure 3.5's v_*) are its
registered names. The model comes from the env (`envs.tabular.transition_model`: toy text's `P`); an env without one is
refused before any compute.

Details the book leaves open, or that a benchmark adds:
- A step is one sweep (a backup of every state), or one policy improvement: total_timesteps caps them, and a run ends
  earlier when it converges. There are no training episodes (no charts/episodic_return).
- Sweeps are synchronous (the two-array version the book describes first, section 4.1), vectorised over states.
- Policy iteration starts from the equiprobable policy rather than an arbitrary deterministic one: that policy ends
  its episodes on every registered env, so its evaluation converges even undiscounted; the greedy step keeps the old
  action unless another is better by more than 1e-12 (so equal actions cannot make it cycle, the book's Exercise 4.4).
- Evaluation: the greedy policy in the real env (policy evaluation: the evaluated equiprobable policy), and
  `eval/value_rmse` against the exact values (v_pi by a linear solve; v_* for the control methods).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.config import RunConfig
from algorithms.common.run import RunState
from algorithms.common.tabular import exact_values, q_from_v, uniform_policy, value_rmse
from envs import check_env_support, make_vec_env
from envs.tabular import GRIDWORLD_4X4, GRIDWORLD_5X5, TransitionModel, transition_model

SMOKE = {"env_id": "FrozenLake-v1", "gamma": 0.9, "total_timesteps": 20, "theta": 0.0, "eval_every": 10, "eval_episodes": 2}
"""Tiny settings for the contract tests (a finite-state env with a model; theta 0 runs every step)."""
ACTION_SPACES = ("discrete",)
OBSERVATIONS = ("discrete",)
METHODS = ("policy_evaluation", "policy_iteration", "value_iteration")
VARIANTS = {
    "policy_evaluation": {"method": "policy_evaluation", "env_id": GRIDWORLD_4X4, "gamma": 1.0},
    "policy_iteration": {"method": "policy_iteration"},
    "value_iteration": {"method": "value_iteration"},
}
FAMILY = True
"""the file registers its variants only"""
MODEL_BASED = True
"""plans with the env's model: no training episodes, a step is a sweep"""
TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Config(RunConfig):
    env_id: str = GRIDWORLD_5X5
    """gymnasium environment id with a transition model (FrozenLake-v1, CliffWalking-v1, Taxi-v4, rlgrid/...)"""
    total_timesteps: int = 100_000
    """sweeps (and policy improvements) at most; the run ends earlier when it converges"""
    eval_every: int = 0
    """sweeps between evaluations (0: only at the end)"""
    num_envs: int = 1
    """env copies (the model is read from one; evaluations run their own)"""
    method: str = "value_iteration"
    """policy_evaluation (of the equiprobable policy), policy_iteration or value_iteration"""
    gamma: float = 0.9
    """discount factor (Example 3.5's 0.9; Example 4.1 is undiscounted)"""
    theta: float = 1e-10
    """a sweep whose largest change is below this ends an evaluation (or value iteration)"""
    eval_max_steps: int = 1_000
    """steps after which an evaluation episode counts with its return so far (a greedy policy can walk in circles)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile:
            raise ValueError("compile: a tabular method has no network to compile")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.num_envs != 1:
            raise ValueError(f"dynamic programming reads one env's model: num_envs must be 1, got {self.num_envs}")
        if not 0.0 <= self.gamma <= 1.0 or self.theta < 0 or self.eval_max_steps < 1:
            raise ValueError(
                f"need 0 <= gamma <= 1, theta >= 0, eval_max_steps >= 1; got {self.gamma}, {self.theta}, {self.eval_max_steps}"
            )


# --- pure maths ----------------------------------------------------------------------------------------------------
def greedy_improvement(q: np.ndarray, policy: np.ndarray) -> np.ndarray:
    """pi'(s) = argmax_a Q(s, a) (eq. 4.9), keeping pi(s) where it is within TIE_TOLERANCE of the best. (S,) ints."""
    best = q.argmax(1)
    keep = q[np.arange(len(policy)), policy] >= q.max(1) - TIE_TOLERANCE
    return np.where(keep, policy, best)


def ends_episodes(model: TransitionModel, actions: np.ndarray) -> np.ndarray:
    """Which states a deterministic policy (S,) ends its episodes from with positive probability: those with a
    terminating outcome, then backwards along the policy's non-terminating outcomes. (S,) bool."""
    S = model.num_states  # noqa: N806
    chosen = np.arange(S), actions
    prob, done, next_state = model.prob[chosen], model.done[chosen], model.next_state[chosen]  # (S, K)
    ends = ((prob > 0) & done).any(1)
    for _ in range(S):
        grown = ends | ((prob > 0) & ~done & ends[next_state]).any(1)
        if (grown == ends).all():
            break
        ends = grown
    return ends


# --- training ------------------------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    check_env_support(cfg.env_id, cfg.method, ACTION_SPACES, OBSERVATIONS)  # a finite state set, before anything runs
    seed_everything(cfg.seed, cfg.torch_deterministic)
    model = transition_model(cfg.env_id)  # refuses an env without a model before anything runs
    envs, _ = make_vec_env(cfg.env_id, 1, cfg.seed, gamma=cfg.gamma)
    try:
        # 1. V (S,), the policy as a table pi (S, A) (equiprobable at the start), and whether pi is greedy yet.
        S, A = model.num_states, model.num_actions  # noqa: N806
        V = np.zeros(S)  # noqa: N806
        pi = uniform_policy(model)
        progress = np.zeros(2)  # [pi is greedy (policy iteration), converged]
        truth = exact_values(model, cfg.gamma, prediction=cfg.method == "policy_evaluation")

        def evaluation_policy(obs: np.ndarray) -> np.ndarray:
            states = obs.astype(np.int64)
            if cfg.method == "policy_evaluation":  # the evaluated policy itself
                return np.array([random.randrange(A) for _ in states])
            if cfg.method == "value_iteration":  # greedy with respect to V
                return q_from_v(model, V, cfg.gamma)[states].argmax(1)
            return pi[states].argmax(1)

        def eval_metrics() -> dict[str, float]:
            return {"eval/value_rmse": value_rmse(V, truth, model.live)}

        # 2. State: fresh, or restored from the newest checkpoint.
        saved_state = {"V": V, "pi": pi, "progress": progress, "envs": envs}
        run = RunState(
            cfg, envs, logger, checkpoint, saved_state, eval_metrics=eval_metrics, eval_max_steps=cfg.eval_max_steps
        )
        global_step, _ = run.restore()
        while global_step < cfg.total_timesteps and not progress[1]:
            # 3. One sweep of expected backups: under pi (evaluation), or the max (value iteration).
            q = q_from_v(model, V, cfg.gamma)  # (S, A)
            new = q.max(1) if cfg.method == "value_iteration" else (pi * q).sum(1)
            delta = float(np.abs(new - V).max())
            V[:] = new
            global_step += 1
            metrics = {"losses/bellman_residual": delta}

            # 4. Converged: done, or (policy iteration) improve pi greedily; a stable pi is optimal (section 4.3).
            if delta < cfg.theta:
                if cfg.method != "policy_iteration":
                    progress[1] = 1
                else:
                    old = pi.argmax(1)
                    greedy = greedy_improvement(q_from_v(model, V, cfg.gamma), old)
                    stable = bool(progress[0]) and bool((greedy == old).all())
                    pi[:] = np.eye(A)[greedy]
                    looping = model.live & ~ends_episodes(model, greedy)
                    if cfg.gamma == 1.0 and looping.any():
                        raise FloatingPointError(
                            f"policy iteration's greedy policy never ends its episodes from {int(looping.sum())} states: "
                            "undiscounted, their values diverge; use gamma < 1 or value_iteration"
                        )
                    progress[:] = 1, stable
                    metrics["charts/policy_changes"] = float((greedy != old).sum())

            # 5. Log, evaluate, checkpoint.
            run.logger.log(global_step, {**metrics, "charts/SPS": run.steps_per_second(global_step)})
            run.evaluate_if_due(global_step, evaluation_policy)
            run.checkpoint_if_due(global_step)

        return run.finish(global_step, evaluation_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
