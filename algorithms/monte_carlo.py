"""Monte Carlo prediction and control: values as averages of the returns that followed each visit, tabular.

Sutton & Barto (2018), "Reinforcement Learning: An Introduction", 2nd ed., chapter 5 (and constant-alpha MC, eq. 6.1):
after every episode S_0, A_0, R_1, ..., S_T the return G_t = R_{t+1} + gamma G_{t+1} is computed backwards and each
visited entry moves towards it,
    V(S_t) += alpha [G_t - V(S_t)]           (prediction: first-visit MC prediction, section 5.1; eq. 6.1)
    Q(S_t, A_t) += alpha [G_t - Q(S_t, A_t)] (control: on-policy first-visit MC control for epsilon-soft policies, 5.4)
with alpha = 1/n the book's sample averages ("Returns(s, a)" of its boxes) and a constant alpha eq. 6.1's constant-alpha
MC. Control acts epsilon-greedily with respect to Q (policy improvement after each episode, as the box's pi update);
`exploring_starts` is the Monte Carlo ES of section 5.3 instead: every episode starts in a uniformly drawn state with a
uniformly drawn first action, then acts greedily (epsilon is not used), on envs that can be started anywhere. One
file, one `control` option; the registered names are `mc_prediction` (evaluates the equiprobable random policy;
Example 6.2's random walk by default, constant alpha 0.02, every visit, V = 0.5 at the start) and `mc_control`
(Blackjack-v1, Example 5.3/5.4, sample averages, first visit).

Details the book leaves open, or that a benchmark adds:
- Step size alpha_n = step_size / n ** step_size_decay, n counting this visit: step_size 1, decay 1 (the mc_control
  default) is the sample average; decay 0 a constant alpha.
- A time limit is not the end of the task: an episode cut by one has its returns bootstrapped from the current estimate
  of the true final state's value (V, or Q under the epsilon-greedy policy). An episode cut by the step budget is not
  used.
- Evaluation: greedy with respect to Q (control); the equiprobable policy itself (prediction). `eval/value_rmse`
  measures V (or max_a Q) against v_pi of the equiprobable policy (prediction) or v_* (control) where the env has a
  model; on-policy epsilon-soft control converges to the best epsilon-soft policy, not to v_*.
- An iteration is an episode; one env copy.
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
    greedy_action,
    linear_schedule,
    table_policy,
    value_error_metrics,
)
from envs import check_env_support, make_vec_env
from envs.tabular import RANDOM_WALK, find_transition_model, start_in, supports_exploring_starts

SMOKE = {"env_id": "FrozenLake-v1", "total_timesteps": 2000, "eval_every": 1000, "eval_episodes": 2}
"""Tiny settings for the contract tests (a finite-state env)."""
ACTION_SPACES = ("discrete",)
OBSERVATIONS = ("discrete",)
VARIANTS = {
    "mc_prediction": {
        "control": False,
        "env_id": RANDOM_WALK,
        "step_size": 0.02,
        "step_size_decay": 0.0,
        "first_visit": False,
        "initial_value": 0.5,
        "eval_every": 100,
    },
    "mc_control": {"control": True},
}
FAMILY = True
"""the file registers its variants only"""


@dataclass(frozen=True)
class Config(RunConfig):
    env_id: str = "Blackjack-v1"
    """gymnasium environment id with a finite state set (toy text, rlgrid/RandomWalk-v0, ...)"""
    total_timesteps: int = 500_000
    """environment steps"""
    total_episodes: int = 0
    """stop after this many training episodes, if sooner (0: no episode limit)"""
    eval_every: int = 50_000
    """environment steps between evaluations (after the episode that passes the multiple; 0: only at the end)"""
    eval_episodes: int = 100
    """episodes per evaluation"""
    num_envs: int = 1
    """env copies (tabular Monte Carlo learns from one)"""
    control: bool = True
    """learn Q and improve an epsilon-greedy policy (False: predict V of the equiprobable random policy)"""
    gamma: float = 1.0
    """discount factor (the book's episodic tasks are undiscounted)"""
    step_size: float = 1.0
    """alpha, or its scale when step_size_decay > 0"""
    step_size_decay: float = 1.0
    """alpha_n = step_size / n ** step_size_decay (1 with step_size 1: the sample average of the returns; 0: constant)"""
    first_visit: bool = True
    """update only at the first visit of an entry in an episode (False: every visit)"""
    exploring_starts: bool = False
    """control: start each episode in a uniformly drawn state and action, then act greedily (Monte Carlo ES)"""
    epsilon: float = 0.1
    """exploration rate of the epsilon-soft policy (control without exploring starts)"""
    final_epsilon: float | None = None
    """epsilon at the end of its linear schedule (None: epsilon stays constant)"""
    exploration_fraction: float = 0.5
    """fraction of total_timesteps over which epsilon falls to final_epsilon"""
    initial_value: float = 0.0
    """initial V(s) or Q(s, a) of every state"""
    eval_max_steps: int = 1_000
    """steps after which an evaluation episode counts with its return so far (a greedy policy can walk in circles)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile:
            raise ValueError("compile: a tabular method has no network to compile")
        if self.num_envs != 1:
            raise ValueError(f"tabular Monte Carlo learns from one env copy: num_envs must be 1, got {self.num_envs}")
        if self.total_episodes < 0 or self.eval_max_steps < 1:
            raise ValueError(
                f"need total_episodes >= 0 and eval_max_steps >= 1, got {self.total_episodes}, {self.eval_max_steps}"
            )
        if self.exploring_starts and not self.control:
            raise ValueError("exploring_starts is for control (control = true)")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"need 0 <= gamma <= 1, got {self.gamma}")
        if not 0.0 < self.step_size <= 1.0 or self.step_size_decay < 0:
            raise ValueError(f"need 0 < step_size <= 1 and step_size_decay >= 0, got {self.step_size}, {self.step_size_decay}")
        for name in ("epsilon", "final_epsilon", "exploration_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


# --- pure maths ----------------------------------------------------------------------------------------------------
def returns_backwards(rewards: list[float], gamma: float, bootstrap: float) -> list[float]:
    """G_t = R_{t+1} + gamma G_{t+1} for t = T-1 .. 0 (the boxes' backward loop), G_T = bootstrap (0 at termination).
    rewards[t] is R_{t+1}; returns [G_0, ..., G_{T-1}]."""
    returns, running = [0.0] * len(rewards), bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def first_visits(entries: list[tuple[int, int]]) -> list[bool]:
    """Whether each (state, action) entry of an episode is its first occurrence there."""
    seen: set[tuple[int, int]] = set()
    first = []
    for entry in entries:
        first.append(entry not in seen)
        seen.add(entry)
    return first


# --- training ------------------------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    check_env_support(
        cfg.env_id, "mc_control" if cfg.control else "mc_prediction", ACTION_SPACES, OBSERVATIONS
    )  # a finite state set, before anything runs
    seed_everything(cfg.seed, cfg.torch_deterministic)
    envs, _ = make_vec_env(cfg.env_id, 1, cfg.seed, gamma=cfg.gamma)
    try:
        # 1. Tables: V (S, 1) or Q (S, A), and the visit counts n behind the step sizes.
        num_states, num_actions = int(envs.single_observation_space.n), envs.action_dim
        values = Table(num_states, num_actions if cfg.control else 1, cfg.initial_value)
        visits = Table(num_states, num_actions if cfg.control else 1)
        model = find_transition_model(cfg.env_id)
        if cfg.exploring_starts and (model is None or not supports_exploring_starts(envs.envs[0])):
            raise ValueError(f"exploring_starts needs an env that can start in any state; {cfg.env_id} cannot")
        start_states = np.flatnonzero(model.live).tolist() if model is not None else []

        # 2. The exact values the estimates are measured against, where the env has a model.
        eval_metrics = value_error_metrics(model, values, exact_values(model, cfg.gamma, not cfg.control)) if model else None
        evaluation_policy = table_policy(values, num_actions, equiprobable=not cfg.control)

        # 3. State: fresh, or restored from the newest checkpoint.
        saved_state = {"values": values, "visits": visits, "envs": envs}
        run = RunState(
            cfg, envs, logger, checkpoint, saved_state, eval_metrics=eval_metrics, eval_max_steps=cfg.eval_max_steps
        )
        global_step, saved = run.restore(episodes=0)
        episodes = saved["episodes"]
        action_buffer = np.zeros(1, np.int64)
        while global_step < cfg.total_timesteps and (cfg.total_episodes == 0 or episodes < cfg.total_episodes):
            # 4. Generate an episode with the current policy: epsilon-greedy (control), greedy after an exploring
            # start (ES), or equiprobable (prediction).
            q = values.rows
            epsilon = linear_schedule(
                cfg.epsilon, cfg.final_epsilon, cfg.exploration_fraction, global_step, cfg.total_timesteps
            )
            if cfg.exploring_starts:
                start_in(envs, random.choice(start_states))
            state = int(envs.observation()[0])
            entries: list[tuple[int, int]] = []  # (S_t, A_t)
            rewards: list[float] = []  # R_{t+1}
            info, terminated, truncated, final_state = {"episodes": []}, False, False, state
            while global_step < cfg.total_timesteps:
                if not cfg.control:
                    action = random.randrange(num_actions)
                elif cfg.exploring_starts:
                    action = random.randrange(num_actions) if not entries else greedy_action(q[state])
                else:
                    action = epsilon_greedy_action(q[state], epsilon)
                action_buffer[0] = action
                obs, reward, term, trunc, info = envs.step(action_buffer)
                global_step += 1
                entries.append((state, action if cfg.control else 0))
                rewards.append(float(reward[0]))
                terminated, truncated = bool(term[0]), bool(trunc[0])
                if terminated or truncated:
                    final_state = int(info["final_obs"][0])
                    break
                state = int(obs[0])
            if not (terminated or truncated):
                break  # the budget ran out mid-episode: its returns are unknown

            # 5. Returns backwards (bootstrapped at a time limit), then move each (first-)visited entry towards its G_t.
            bootstrap = 0.0
            if truncated and not terminated:
                row = q[final_state]
                bootstrap = row[0] if not cfg.control else (1 - epsilon) * max(row) + epsilon * sum(row) / len(row)
            returns = returns_backwards(rewards, cfg.gamma, bootstrap)
            update = first_visits(entries) if cfg.first_visit else [True] * len(entries)
            abs_error = 0.0
            for (s, a), g, use in zip(entries, returns, update):
                if use:
                    visits.rows[s][a] += 1.0
                    alpha = cfg.step_size / visits.rows[s][a] ** cfg.step_size_decay
                    error = g - q[s][a]
                    q[s][a] += alpha * error
                    abs_error += abs(error)

            # 6. Log the episode, evaluate, checkpoint.
            episodes += 1
            run.record_episodes(info["episodes"], global_step)
            run.logger.log(
                global_step,
                {
                    "losses/abs_return_error": abs_error / max(sum(update), 1),
                    "charts/epsilon": epsilon if cfg.control and not cfg.exploring_starts else 0.0,
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
