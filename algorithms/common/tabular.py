"""What the tabular methods (dynamic_programming.py, monte_carlo.py, temporal_difference.py) share: Bellman backups
through an env's transition model, the exact values they are measured against, and acting from a table.

Notation of Sutton & Barto (2018): V (S,) state values, Q (S, A) action values, a policy as a table pi (S, A) of action
probabilities. Models are `envs.tabular.TransitionModel` arrays: outcome k of (s, a) leads to next_state[s, a, k] with
prob[s, a, k] and reward[s, a, k]; done[s, a, k] ends the episode, so the next state's value is not added.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from envs.tabular import TransitionModel


# --- model-based maths -------------------------------------------------------------------------------------------
def q_from_v(model: TransitionModel, V: np.ndarray, gamma: float) -> np.ndarray:  # noqa: N803 (the book's letters)
    """One-step lookahead (eq. 4.6 inside): Q(s, a) = sum_{s', r} p(s', r | s, a) [r + gamma V(s')], with V(s') = 0 where
    the step terminates. Returns (S, A)."""
    bootstrap = np.where(model.done, 0.0, V[model.next_state])
    return (model.prob * (model.reward + gamma * bootstrap)).sum(-1)


def policy_value(model: TransitionModel, pi: np.ndarray, gamma: float) -> np.ndarray:
    """v_pi exactly: the Bellman equation (eq. 4.4) V = r_pi + gamma P_pi V as one linear solve, (S,) from pi (S, A).
    ValueError when the system is singular: undiscounted, and pi never ends its episodes from some state."""
    S = model.num_states  # noqa: N806
    weights = pi[:, :, None] * model.prob  # (S, A, K): probability of each outcome under pi
    r_pi = (weights * model.reward).sum((1, 2))
    P_pi = np.zeros((S, S))  # noqa: N806
    continuing = weights * ~model.done
    np.add.at(P_pi, (np.broadcast_to(np.arange(S)[:, None, None], model.next_state.shape), model.next_state), continuing)
    system = np.eye(S) - gamma * P_pi
    if np.linalg.cond(system) > 1e12:
        raise ValueError(
            "the policy's Bellman equation has no unique solution: undiscounted (gamma = 1) and the policy never ends "
            "its episodes from some states; use gamma < 1"
        )
    return np.linalg.solve(system, r_pi)


def optimal_value(model: TransitionModel, gamma: float, tolerance: float = 1e-12, max_sweeps: int = 1_000_000) -> np.ndarray:
    """v_* to `tolerance` by the Bellman optimality backup (eq. 4.10) repeated until it stops changing: the oracle the
    learners' `eval/value_rmse` is measured against (dynamic_programming.py is the instrumented algorithm)."""
    V = np.zeros(model.num_states)  # noqa: N806
    for _ in range(max_sweeps):
        new = q_from_v(model, V, gamma).max(1)
        if np.abs(new - V).max() < tolerance:
            return new
        V = new  # noqa: N806
    raise ValueError(f"value iteration did not converge in {max_sweeps} sweeps (gamma = {gamma})")


def exact_values(model: TransitionModel, gamma: float, prediction: bool) -> np.ndarray:
    """What a method's values are measured against: v_pi of the equiprobable policy (prediction), or v_* (control)."""
    return policy_value(model, uniform_policy(model), gamma) if prediction else optimal_value(model, gamma)


def uniform_policy(model: TransitionModel) -> np.ndarray:
    """The equiprobable random policy, (S, A): the policy the prediction methods evaluate (the book's examples)."""
    return np.full((model.num_states, model.num_actions), 1.0 / model.num_actions)


def value_rmse(estimate: np.ndarray, truth: np.ndarray, live: np.ndarray) -> float:
    """Root mean squared error over the states an episode can be in (the book's RMS error, e.g. Figure 6.2)."""
    return float(np.sqrt(np.mean((estimate[live] - truth[live]) ** 2)))


# --- acting from a table ------------------------------------------------------------------------------------------
def greedy_action(q_row: list[float]) -> int:
    """argmax_a Q(s, a), the first of equal maxima (a list row: 5-10x faster than numpy on a handful of actions)."""
    return q_row.index(max(q_row))


def epsilon_greedy_action(q_row: list[float], epsilon: float) -> int:
    """A uniformly random action with probability epsilon, else the greedy one. Draws from Python's `random` (seeded by
    `seed_everything`, saved and restored with every checkpoint), one draw per choice plus one when exploring."""
    if random.random() < epsilon:
        return random.randrange(len(q_row))
    return greedy_action(q_row)


def linear_schedule(start: float, end: float | None, fraction: float, step: int, total: int) -> float:
    """`start` falling linearly to `end` over the first `fraction` of `total` steps, then `end`; constant if end is None."""
    if end is None:
        return start
    progress = min(step / max(fraction * total, 1.0), 1.0)
    return start + progress * (end - start)


def table_policy(table: Table, num_actions: int, equiprobable: bool) -> Callable[[np.ndarray], np.ndarray]:
    """A table learner's evaluation policy, numpy state numbers in, actions out: greedy over the table's rows, or the
    equiprobable policy a prediction method evaluates (drawn from Python's `random`, which `envs.evaluate` seeds)."""

    def policy(obs: np.ndarray) -> np.ndarray:
        if equiprobable:
            return np.array([random.randrange(num_actions) for _ in obs])
        return np.array([greedy_action(table.rows[int(s)]) for s in obs])

    return policy


def value_error_metrics(model: TransitionModel, table: Table, truth: np.ndarray) -> Callable[[], dict[str, float]]:
    """`RunState`'s eval_metrics for a table of V (S, 1) or Q (S, A): the RMS error of its state values (V, or max_a Q)
    against `truth` over the live states."""
    return lambda: {"eval/value_rmse": value_rmse(table.array().max(1), truth, model.live)}


class Table:
    """A table of numbers kept as python lists, row per state, for the per-step updates of the learning loops (a list
    element is read and written several times faster than a numpy one), saved and restored as a numpy array."""

    def __init__(self, num_states: int, width: int, initial: float = 0.0) -> None:
        self.rows = [[initial] * width for _ in range(num_states)]

    def array(self) -> np.ndarray:
        """(S, width) float64 copy."""
        return np.array(self.rows, np.float64)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"values": self.array()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        values = state["values"]
        if values.shape != (len(self.rows), len(self.rows[0])):
            raise ValueError(f"saved table has shape {values.shape}, this run's is {(len(self.rows), len(self.rows[0]))}")
        self.rows = values.tolist()
