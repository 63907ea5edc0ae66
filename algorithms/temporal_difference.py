"""Temporal-difference learning: TD(0) prediction, SARSA, Expected SARSA and Q-learning, tabular.

Sutton & Barto (2018), "Reinforcement Learning: An Introduction", 2nd ed., chapter 6, which treats them as one family:
each moves an estimate towards a one-step bootstrapped target with step size alpha,
    TD(0)           (Sutton 1988; eq. 6.2)          V(S)    += alpha [R + gamma V(S')                       - V(S)]
    SARSA           (Rummery & Niranjan 1994; 6.7)  Q(S, A) += alpha [R + gamma Q(S', A')                   - Q(S, A)]
    Expected SARSA  (van Seijen et al. 2009; 6.9)   Q(S, A) += alpha [R + gamma sum_a pi(a|S') Q(S', a)     - Q(S, A)]
    Q-learning      (Watkins 1989; eq. 6.8)         Q(S, A) += alpha [R + gamma max_a Q(S', a)              - Q(S, A)]
where A' is the action SARSA takes next, pi the epsilon-greedy policy it acts with. One file, one `method` Config option;
the registered names `td0`, `sarsa`, `expected_sarsa` and `q_learning` are its variants (defaults: the book's Figure
6.4 cliff-walking setting for the control methods, epsilon 0.1, alpha 0.5, undiscounted; Example 6.2's random walk
for TD(0), alpha 0.1, V = 0.5 at the start).

Details the book leaves open, or that a benchmark adds:
- TD(0) evaluates the equiprobable random policy (the book's examples); its evaluation episodes play that policy.
  The control methods act epsilon-greedily (ties to the first action) and are evaluated greedily.
- A time limit is not the end of the task: at a truncation the target bootstraps from the true final state.
- Step size alpha_n(s, a) = step_size / n(s, a) ** step_size_decay, n counting this visit: 0 (the default) is the
  book's constant alpha; 1 with step_size 1 is the sample average; a decay in (0.5, 1] meets the Robbins-Monro
  conditions under which Q-learning converges to Q* (Watkins & Dayan 1992).
- epsilon may fall linearly (final_epsilon, exploration_fraction); one env copy (the methods are online, step by step).
- `eval/value_rmse`: the RMS error over the states an episode can be in, against v_pi of the equiprobable policy
  (TD(0)) or v_* (control: max_a Q; SARSA and Expected SARSA learn the epsilon-greedy policy's values, which stay
  below v_* while epsilon > 0), from the env's model where it has one (`envs.tabular.transition_model`).
- An iteration is an episode: returns, evaluations and checkpoints happen at episode ends; total_episodes can end the
  run by episodes (as the book counts) before total_timesteps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.config import RunConfig
from algorithms.common.run import RunState
from algorithms.common.tabular import (
    Table,
    epsilon_greedy_action,
    exact_values,
    linear_schedule,
    table_policy,
    value_error_metrics,
)
from envs import check_env_support, make_vec_env
from envs.tabular import RANDOM_WALK, find_transition_model

SMOKE = {"env_id": "FrozenLake-v1", "total_timesteps": 2000, "eval_every": 1000, "eval_episodes": 2}
"""Tiny settings for the contract tests (a finite-state env)."""
ACTION_SPACES = ("discrete",)
OBSERVATIONS = ("discrete",)
METHODS = ("td0", "sarsa", "expected_sarsa", "q_learning")
VARIANTS = {
    "td0": {"method": "td0", "env_id": RANDOM_WALK, "step_size": 0.1, "initial_value": 0.5, "eval_every": 100},
    "sarsa": {"method": "sarsa"},
    "expected_sarsa": {"method": "expected_sarsa"},
    "q_learning": {"method": "q_learning"},
}
FAMILY = True
"""the file registers its variants only (each method by its own name)"""


@dataclass(frozen=True)
class Config(RunConfig):
    env_id: str = "CliffWalking-v1"
    """gymnasium environment id with a finite state set (toy text, rlgrid/GridWorld4x4-v0, ...)"""
    total_timesteps: int = 100_000
    """environment steps"""
    total_episodes: int = 0
    """stop after this many training episodes, if sooner (0: no episode limit)"""
    eval_every: int = 5_000
    """environment steps between evaluations (at the end of the episode that passes the multiple; 0: only at the end)"""
    num_envs: int = 1
    """env copies (tabular TD learns online from one)"""
    method: str = "q_learning"
    """td0 (prediction of the equiprobable policy), sarsa, expected_sarsa or q_learning"""
    gamma: float = 1.0
    """discount factor (the book's episodic tasks are undiscounted)"""
    step_size: float = 0.5
    """alpha, or its scale when step_size_decay > 0"""
    step_size_decay: float = 0.0
    """alpha_n(s, a) = step_size / n(s, a) ** step_size_decay (0: constant; 1: sample average with step_size 1)"""
    epsilon: float = 0.1
    """exploration rate of the epsilon-greedy behaviour policy (control methods)"""
    final_epsilon: float | None = None
    """epsilon at the end of its linear schedule (None: epsilon stays constant)"""
    exploration_fraction: float = 0.5
    """fraction of total_timesteps over which epsilon falls to final_epsilon"""
    initial_value: float = 0.0
    """initial V(s) or Q(s, a) of every state (Example 6.2 starts at 0.5)"""
    eval_max_steps: int = 1_000
    """steps after which an evaluation episode counts with its return so far (a greedy policy can walk in circles for
    ever where the env has no time limit, as CliffWalking)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile:
            raise ValueError("compile: a tabular method has no network to compile")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.num_envs != 1:
            raise ValueError(f"tabular TD learns online from one env copy: num_envs must be 1, got {self.num_envs}")
        if self.eval_max_steps < 1:
            raise ValueError(f"eval_max_steps must be >= 1, got {self.eval_max_steps}")
        if self.total_episodes < 0:
            raise ValueError(f"total_episodes must be >= 0, got {self.total_episodes}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"need 0 <= gamma <= 1, got {self.gamma}")
        if not 0.0 < self.step_size <= 1.0 or self.step_size_decay < 0:
            raise ValueError(f"need 0 < step_size <= 1 and step_size_decay >= 0, got {self.step_size}, {self.step_size_decay}")
        for name in ("epsilon", "final_epsilon", "exploration_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


# --- pure maths ----------------------------------------------------------------------------------------------------
def expected_value(q_row: list[float], epsilon: float) -> float:
    """sum_a pi(a|s) Q(s, a) under the epsilon-greedy policy (Expected SARSA's target, eq. 6.9)."""
    best = max(q_row)
    return (1.0 - epsilon) * best + epsilon * sum(q_row) / len(q_row)


def step_size(cfg: Config, visits: float) -> float:
    """alpha_n for the n-th update of an entry (see the module docstring)."""
    return cfg.step_size if cfg.step_size_decay == 0 else cfg.step_size / visits**cfg.step_size_decay


# --- training ------------------------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    check_env_support(cfg.env_id, cfg.method, ACTION_SPACES, OBSERVATIONS)  # a finite state set, before anything runs
    seed_everything(cfg.seed, cfg.torch_deterministic)
    envs, _ = make_vec_env(cfg.env_id, 1, cfg.seed, gamma=cfg.gamma)
    try:
        # 1. Tables: V (S, 1) for TD(0), Q (S, A) otherwise; visit counts n(s, a) for a decaying step size.
        num_states, num_actions = int(envs.single_observation_space.n), envs.action_dim
        prediction = cfg.method == "td0"
        values = Table(num_states, 1 if prediction else num_actions, cfg.initial_value)
        visits = Table(num_states, 1 if prediction else num_actions)

        # 2. The exact values the estimates are measured against, where the env has a model.
        model = find_transition_model(cfg.env_id)
        eval_metrics = value_error_metrics(model, values, exact_values(model, cfg.gamma, prediction)) if model else None
        evaluation_policy = table_policy(values, num_actions, equiprobable=prediction)

        # 3. State: fresh, or restored from the newest checkpoint (tables, env, RNGs).
        saved_state = {"values": values, "visits": visits, "envs": envs}
        run = RunState(
            cfg, envs, logger, checkpoint, saved_state, eval_metrics=eval_metrics, eval_max_steps=cfg.eval_max_steps
        )
        global_step, saved = run.restore(episodes=0)
        episodes = saved["episodes"]
        action_buffer = np.zeros(1, np.int64)
        gamma, decaying = cfg.gamma, cfg.step_size_decay > 0
        while global_step < cfg.total_timesteps and (cfg.total_episodes == 0 or episodes < cfg.total_episodes):
            # 4. One episode, step by step (cut short only by the step budget).
            q, n = values.rows, visits.rows
            state = int(envs.observation()[0])
            epsilon = linear_schedule(
                cfg.epsilon, cfg.final_epsilon, cfg.exploration_fraction, global_step, cfg.total_timesteps
            )
            action = random.randrange(num_actions) if prediction else epsilon_greedy_action(q[state], epsilon)
            abs_td_error, length, info = 0.0, 0, {"episodes": []}
            while global_step < cfg.total_timesteps:
                action_buffer[0] = action
                obs, reward, terminated, truncated, info = envs.step(action_buffer)
                global_step += 1
                length += 1
                ended = bool(terminated[0] or truncated[0])
                next_state = int(info["final_obs"][0] if ended else obs[0])
                if cfg.final_epsilon is not None:
                    epsilon = linear_schedule(
                        cfg.epsilon, cfg.final_epsilon, cfg.exploration_fraction, global_step, cfg.total_timesteps
                    )

                # 5. The method's target, and the next action (SARSA's A' is the one it takes).
                if prediction:
                    next_action = random.randrange(num_actions)
                    bootstrap = q[next_state][0]
                    a = 0
                else:
                    next_action = epsilon_greedy_action(q[next_state], epsilon) if cfg.method == "sarsa" else -1
                    a = action
                    if cfg.method == "sarsa":
                        bootstrap = q[next_state][next_action]
                    elif cfg.method == "expected_sarsa":
                        bootstrap = expected_value(q[next_state], epsilon)
                    else:
                        bootstrap = max(q[next_state])
                target = float(reward[0]) + (0.0 if terminated[0] else gamma * bootstrap)

                # 6. The TD update of the entry just visited.
                if decaying:
                    n[state][a] += 1.0
                td_error = target - q[state][a]
                q[state][a] += step_size(cfg, n[state][a]) * td_error
                abs_td_error += abs(td_error)
                if ended:
                    break
                state = next_state
                if next_action < 0:
                    next_action = epsilon_greedy_action(q[state], epsilon)
                action = next_action

            # 7. Log the episode, evaluate, checkpoint.
            if info["episodes"]:
                episodes += 1
                run.record_episodes(info["episodes"], global_step)
            run.logger.log(
                global_step,
                {
                    "losses/abs_td_error": abs_td_error / max(length, 1),
                    "charts/epsilon": 0.0 if prediction else epsilon,
                    "charts/SPS": run.steps_per_second(global_step),
                },
            )
            run.evaluate_if_due(global_step, evaluation_policy)
            run.checkpoint_if_due(global_step, episodes=episodes)

        return run.finish(global_step, evaluation_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
