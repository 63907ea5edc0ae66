"""Finite MDPs for the tabular methods: the book's small worlds, and the transition model of an env.

Sutton & Barto (2018) use three small worlds that gymnasium lacks; they are registered here as gymnasium envs in the
style of its toy-text ones (an integer state `s`, the model `P[s][a] = [(probability, next state, reward, terminated),
...]`, an initial-state distribution):

- `rlgrid/GridWorld4x4-v0`, Example 4.1: a 4 x 4 grid whose two opposite corners are terminal; every move costs -1;
  a move off the grid leaves the state unchanged. Episodes start in a uniformly drawn non-terminal cell.
- `rlgrid/GridWorld5x5-v0`, Example 3.5: a continuing 5 x 5 grid; every action from A = (0, 1) gives +10 and moves to
  A' = (4, 1), from B = (0, 3) +5 and to B' = (2, 3); a move off the grid costs -1 and leaves the state unchanged;
  other moves 0. It has no terminal state: episodes (uniform start) are cut by the time limit, and the book's
  values are discounted with gamma = 0.9.
- `rlgrid/RandomWalk-v0`, Example 6.2: states 0 .. 6 with A .. E = 1 .. 5 and both ends terminal; episodes start in
  C = 3; actions left (0) and right (1); reaching 6 gives +1, every other reward is 0. The book's walk, which moves
  left or right with equal probability, is this env under the equiprobable policy (true values 1/6 .. 5/6).

`rlgrid/FrozenLakeNotSlippery-v1` and `rlgrid/FrozenLake8x8NotSlippery-v1` are gymnasium's FrozenLake with
`is_slippery=False` (its own ids are slippery, and an env id cannot pass keyword arguments).

Actions of the grids: 0 up, 1 right, 2 down, 3 left. `transition_model` turns any env with such a `P` (these and
gymnasium's FrozenLake, CliffWalking and Taxi) into arrays; an env without one is refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from envs.vector import VecEnv

GRIDWORLD_4X4 = "rlgrid/GridWorld4x4-v0"
GRIDWORLD_5X5 = "rlgrid/GridWorld5x5-v0"
RANDOM_WALK = "rlgrid/RandomWalk-v0"
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left as (row, column) steps

Transition = tuple[float, int, float, bool]


class TabularEnv(gym.Env):
    """A finite MDP given by its model `P`, stepped like gymnasium's toy-text envs (integer observations). Its states
    are the cells of a `shape` grid, row by row; `rgb_array` rendering draws them (dark: terminal, red: the agent)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    CELL = 32  # pixels per cell

    def __init__(
        self,
        P: dict[int, dict[int, list[Transition]]],  # noqa: N803 (toy-text's name)
        initial: np.ndarray,
        shape: tuple[int, int],
        terminal: frozenset[int] = frozenset(),
        render_mode: str | None = None,
    ) -> None:
        self.P = P
        self.initial_state_distrib = initial
        self.shape, self.terminal, self.render_mode = shape, terminal, render_mode
        self.observation_space = gym.spaces.Discrete(len(P))
        self.action_space = gym.spaces.Discrete(len(P[0]))
        self.s = 0

    def render(self) -> np.ndarray:
        """The grid as RGB uint8 (rows * 32, columns * 32, 3)."""
        rows, cols = self.shape
        colours = np.full((rows * cols, 3), 235, np.uint8)
        colours[list(self.terminal)] = 90
        colours[self.s] = (200, 40, 40)
        image = colours.reshape(rows, cols, 3).repeat(self.CELL, 0).repeat(self.CELL, 1)
        image[:: self.CELL], image[:, :: self.CELL] = 0, 0  # grid lines
        return image

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.s = int(self.np_random.choice(len(self.initial_state_distrib), p=self.initial_state_distrib))
        return self.s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        transitions = self.P[self.s][int(action)]
        i = 0 if len(transitions) == 1 else int(self.np_random.choice(len(transitions), p=[t[0] for t in transitions]))
        _, self.s, reward, terminated = transitions[i]
        return self.s, reward, terminated, False, {}


def _grid_model(size: int, outcome: Any) -> dict[int, dict[int, list[Transition]]]:
    """P of a size x size grid where `outcome(row, col, next_row, next_col, off_grid)` gives (next state, reward,
    terminated) of a move, or None for a terminal cell (which then stays where it is, terminated, reward 0)."""
    P: dict[int, dict[int, list[Transition]]] = {}  # noqa: N806
    for row in range(size):
        for col in range(size):
            s = row * size + col
            P[s] = {}
            for action, (dr, dc) in enumerate(_MOVES):
                r, c = row + dr, col + dc
                off = not (0 <= r < size and 0 <= c < size)
                if off:
                    r, c = row, col
                result = outcome(row, col, r, c, off)
                P[s][action] = [(1.0, s, 0.0, True)] if result is None else [(1.0, *result)]
    return P


def gridworld_4x4(render_mode: str | None = None) -> TabularEnv:
    terminal = {0, 15}

    def outcome(row: int, col: int, r: int, c: int, off: bool) -> tuple[int, float, bool] | None:
        if row * 4 + col in terminal:
            return None
        return r * 4 + c, -1.0, r * 4 + c in terminal

    initial = np.array([0.0 if s in terminal else 1.0 for s in range(16)])
    return TabularEnv(_grid_model(4, outcome), initial / initial.sum(), (4, 4), frozenset(terminal), render_mode)


def gridworld_5x5(render_mode: str | None = None) -> TabularEnv:
    def outcome(row: int, col: int, r: int, c: int, off: bool) -> tuple[int, float, bool]:
        if (row, col) == (0, 1):
            return 4 * 5 + 1, 10.0, False  # A -> A'
        if (row, col) == (0, 3):
            return 2 * 5 + 3, 5.0, False  # B -> B'
        return r * 5 + c, -1.0 if off else 0.0, False

    return TabularEnv(_grid_model(5, outcome), np.full(25, 1 / 25), (5, 5), render_mode=render_mode)


def random_walk(render_mode: str | None = None) -> TabularEnv:
    P: dict[int, dict[int, list[Transition]]] = {}  # noqa: N806
    for s in range(7):
        if s in (0, 6):
            P[s] = {a: [(1.0, s, 0.0, True)] for a in (0, 1)}
        else:
            P[s] = {a: [(1.0, s + step, 1.0 if s + step == 6 else 0.0, s + step in (0, 6))] for a, step in ((0, -1), (1, 1))}
    return TabularEnv(P, np.eye(7)[3], (1, 7), frozenset({0, 6}), render_mode)


FROZEN_LAKE = "gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv"
for _env_id, _entry, _limit, _kwargs in (
    (GRIDWORLD_4X4, "envs.tabular:gridworld_4x4", 200, {}),
    (GRIDWORLD_5X5, "envs.tabular:gridworld_5x5", 100, {}),
    (RANDOM_WALK, "envs.tabular:random_walk", 1000, {}),
    # gymnasium registers FrozenLake slippery only (not slippery takes is_slippery=False, which an env id cannot say)
    ("rlgrid/FrozenLakeNotSlippery-v1", FROZEN_LAKE, 100, {"map_name": "4x4", "is_slippery": False}),
    ("rlgrid/FrozenLake8x8NotSlippery-v1", FROZEN_LAKE, 200, {"map_name": "8x8", "is_slippery": False}),
):
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry, max_episode_steps=_limit, kwargs=_kwargs)


# --- the transition model of an env --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TransitionModel:
    """A finite MDP as arrays. Outcome k of action a in state s: `next_state[s, a, k]` with `prob[s, a, k]` (0 pads
    actions with fewer outcomes), `reward[s, a, k]`, and `done[s, a, k]` (the episode terminates: no bootstrap).
    `initial` is the start distribution (S,); `live` (S,) marks the states an episode can be in before it ends (a start
    state, or reached by a step that does not terminate): where value errors are measured."""

    next_state: np.ndarray
    prob: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    initial: np.ndarray
    live: np.ndarray

    @property
    def num_states(self) -> int:
        return self.prob.shape[0]

    @property
    def num_actions(self) -> int:
        return self.prob.shape[1]


def _unwrapped(env_id: str, env_kwargs: dict[str, Any] | None) -> gym.Env:
    return gym.make(env_id, disable_env_checker=True, **(env_kwargs or {})).unwrapped


def transition_model(env_id: str, env_kwargs: dict[str, Any] | None = None) -> TransitionModel:
    """The model of an env that exposes toy-text's `P`; ValueError (before any compute) for one that does not."""
    model = find_transition_model(env_id, env_kwargs)
    if model is None:
        raise ValueError(
            f"{env_id} has no transition model (a toy-text `P` over Discrete states): the model-based methods "
            "(policy_evaluation, policy_iteration, value_iteration) need one, as FrozenLake-v1, CliffWalking-v1, Taxi-v4 "
            f"and {GRIDWORLD_4X4}, {GRIDWORLD_5X5}, {RANDOM_WALK} have; learn from experience with mc_control, sarsa, "
            "expected_sarsa or q_learning instead"
        )
    return model


def find_transition_model(env_id: str, env_kwargs: dict[str, Any] | None = None) -> TransitionModel | None:
    """The model of an env that exposes toy-text's `P`, or None (Blackjack), from one build of the env."""
    env = _unwrapped(env_id, env_kwargs)
    P = getattr(env, "P", None)  # noqa: N806
    if not isinstance(P, dict) or not isinstance(env.observation_space, gym.spaces.Discrete):
        env.close()
        return None
    S, A = int(env.observation_space.n), int(env.action_space.n)  # noqa: N806
    K = max(len(P[s][a]) for s in range(S) for a in range(A))  # noqa: N806
    next_state, done = np.zeros((S, A, K), np.int64), np.zeros((S, A, K), bool)
    prob, reward = np.zeros((S, A, K)), np.zeros((S, A, K))
    for s in range(S):
        for a in range(A):
            for k, (p, s_next, r, terminated) in enumerate(P[s][a]):
                next_state[s, a, k], prob[s, a, k], reward[s, a, k], done[s, a, k] = s_next, p, r, terminated
    initial = np.asarray(env.initial_state_distrib, np.float64)
    live = initial > 0
    reached = (prob > 0) & ~done
    live[next_state[reached]] = True
    env.close()
    return TransitionModel(next_state, prob, reward, done, initial, live)


# --- exploring starts ---------------------------------------------------------------------------------------------
def supports_exploring_starts(env: gym.Env) -> bool:
    """Whether an episode can be started in any state: the env keeps its state in toy-text's integer `s` and has a model
    (gymnasium's FrozenLake, CliffWalking, Taxi, and the book's worlds here)."""
    unwrapped = env.unwrapped
    return isinstance(getattr(unwrapped, "P", None), dict) and isinstance(getattr(unwrapped, "s", None), (int, np.integer))


def start_in(envs: VecEnv, state: int) -> None:
    """Put copy 0 of `envs`, just reset, in `state` (exploring starts): its `s` and the observation the learner acts on
    next. Only for envs where `supports_exploring_starts` holds."""
    envs.envs[0].unwrapped.s = state
    envs._raw_obs[0] = state
