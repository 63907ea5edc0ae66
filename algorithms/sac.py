"""Soft Actor-Critic (SAC) with twin soft Q-functions and automatic entropy temperature.

Papers: Haarnoja, Zhou, Hartikainen, et al. (2018b), "Soft Actor-Critic Algorithms and Applications",
arXiv:1812.05905 -- Algorithm 1: soft Q targets y = r + gamma (min_j Q'_j(s', a') - alpha log pi(a'|s')),
a' ~ pi(.|s') (eq. 3 with the clipped double-Q trick), the policy loss E[alpha log pi(a|s) - min_j Q_j(s, a)]
(eq. 7, reparameterised), and the temperature loss -alpha (log pi(a|s) + target entropy) (eq. 18).
The policy is a tanh-squashed Gaussian; its log-density carries the change-of-variables correction
(Haarnoja et al. 2018a, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep RL with a Stochastic Actor",
ICML, arXiv:1801.01290, Appendix C, eq. 21). `value_network=True` gives that first paper's variant: a
separate soft state-value network V(s) trained towards E[min_j Q_j(s, a) - alpha log pi(a|s)] (eq. 5), whose
Polyak-averaged target V' replaces the next-state term of the Q target (eq. 8); alpha is then fixed.

The defaults are CleanRL's `sac_continuous_action.py` MuJoCo setting (256-256 ReLU MLPs, Adam 3e-4 for the
policy and 1e-3 for the critics, batch 256, tau 0.005, target entropy -dim(A), 5k random steps first, the
policy updated `policy_frequency` times every `policy_frequency` steps as in TD3's delay). Deviations:
- Time-limit truncation is not termination: the target bootstraps from the true final observation, as in CleanRL
  (which stores `terminations` with the real final observation).
- The two critics are one module with stacked weights evaluated by batched matmuls (`QEnsemble`: two independent
  networks, one kernel per layer); the policy loss differentiates through the critics' values only, not
  into their weights (their gradients would be discarded anyway).
- The temperature loss (eq. 18) uses the log-probabilities of the policy step's own sample, as the authors'
  softlearning code does; CleanRL draws a fresh sample from the updated policy for it (one more forward pass).
  The policy and the temperature take one Adam step together (one optimizer, the same learning rate).
`compile=True` wraps the update and acting functions in torch.compile.
`train_seeds` trains K seeds of one config in one process (algorithms.common.packing): every tensor carries a
leading seed axis, noted in the shapes below; `train` is the pack of one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.networks import QEnsemble, SquashedGaussianActor, StateValue, soft_update
from algorithms.common.packing import (
    OptimizerSlice,
    SeedPack,
    SeedStack,
    draw_normal,
    lone,
    same_run_but_seed,
    seeded_members,
)
from algorithms.common.replay import ReplayBuffer, sample_seeds
from algorithms.common.run import RunState, numpy_policy
from envs import make_vec_env

SMOKE = {
    "total_timesteps": 600,
    "learning_starts": 200,
    "buffer_size": 1000,
    "batch_size": 32,
    "eval_every": 300,
    "eval_episodes": 2,
}
"""Tiny settings for the contract tests."""
ACTION_SPACES = ("continuous",)
OBSERVATIONS = ("vector",)


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 1
    """parallel env copies"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient (Polyak averaging)"""
    batch_size: int = 256
    """transitions per gradient step"""
    learning_starts: int = 5_000
    """environment steps of uniform random actions before learning"""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (and of the temperature)"""
    q_lr: float = 1e-3
    """Adam learning rate of the soft Q-functions (and of V with value_network)"""
    policy_frequency: int = 2
    """the policy is updated policy_frequency times every policy_frequency steps"""
    target_network_frequency: int = 1
    """critic updates between target updates"""
    alpha: float = 0.2
    """entropy temperature (the start value with autotune)"""
    autotune: bool = True
    """learn alpha towards the target entropy -dim(A) (eq. 18); ignored with value_network"""
    value_network: bool = False
    """Haarnoja et al. 2018a: a separate soft V(s) and its target supply the next-state value"""
    hidden_size: int = 256
    """width of the two hidden layers of every network"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            min(
                self.num_envs,
                self.buffer_size,
                self.batch_size,
                self.policy_frequency,
                self.target_network_frequency,
                self.hidden_size,
            )
            < 1
        ):
            raise ValueError(
                "num_envs, buffer_size, batch_size, policy_frequency, target_network_frequency and hidden_size must be >= 1"
            )
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or min(self.policy_lr, self.q_lr) <= 0 or self.alpha < 0:
            raise ValueError("need 0 < gamma <= 1, 0 < tau <= 1, learning rates > 0 and alpha >= 0")
        if self.learning_starts < 0:
            raise ValueError("learning_starts must be >= 0")


# --- pure maths --------------------------------------------------------------------------------------
def soft_q_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')), next_q (..., 2, B) for the others
    (..., B) (a seed pack's leading axis); truncation bootstraps."""
    return rewards + gamma * (1.0 - terminated) * (next_q.min(dim=-2).values - alpha * next_log_prob)


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    """One seed: a pack of one."""
    return lone(train_seeds([cfg], [logger], [checkpoint]))


def train_seeds(
    cfgs: Sequence[Config], loggers: Sequence[Logger | None], checkpoints: Sequence[Checkpointer | None]
) -> list[TrainResult | Exception]:
    """K seeds of one config in lockstep (algorithms.common.packing): every tensor below has a leading seed axis K.
    Returns each seed's result, or the FloatingPointError it diverged with."""
    cfg = same_run_but_seed(cfgs)
    K, N, device = len(cfgs), cfg.num_envs, torch.device(cfg.device)
    envs = [make_vec_env(cfg.env_id, N, seed_cfg.seed)[0] for seed_cfg in cfgs]
    try:
        # 1. Policy, twin soft Q-functions and targets (or V and V' in the 2018a variant), temperature, replay; per seed.
        if not envs[0].is_continuous:
            raise ValueError(f"SAC needs continuous (Box) actions; {cfg.env_id} has {envs[0].single_action_space}")
        obs_dim = int(np.prod(envs[0].single_observation_space.shape))
        action_shape, action_dim = envs[0].action_shape, envs[0].action_dim
        low_np, high_np = envs[0].single_action_space.low, envs[0].single_action_space.high

        def networks() -> tuple[torch.nn.Module, ...]:
            actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np)
            qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size)
            qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size)
            qf_target.load_state_dict(qf.state_dict())
            if not cfg.value_network:
                return actor, qf, qf_target
            vf, vf_target = StateValue(obs_dim, cfg.hidden_size), StateValue(obs_dim, cfg.hidden_size)
            vf_target.load_state_dict(vf.state_dict())
            return actor, qf, qf_target, vf, vf_target

        members, streams = seeded_members([c.seed for c in cfgs], networks, device, cfg.torch_deterministic)
        stacks = [SeedStack(nets).to(device) for nets in zip(*members)]
        actor, qf, qf_target = stacks[:3]
        vf, vf_target = stacks[3:] if cfg.value_network else (None, None)
        fused = device.type in ("cpu", "cuda")
        critic_params = list(qf.parameters()) + (list(vf.parameters()) if vf is not None else [])
        q_optimizer = torch.optim.Adam(critic_params, lr=cfg.q_lr, fused=fused)
        autotune = cfg.autotune and not cfg.value_network
        log_alpha = torch.full((K,), math.log(max(cfg.alpha, 1e-8)), device=device, requires_grad=autotune)
        # The temperature shares the policy's optimizer (same learning rate; Adam is per parameter, so this is the
        # same update as a separate optimizer, with one backward pass and one fused step for both losses).
        policy_params = list(actor.parameters()) + ([log_alpha] if autotune else [])
        actor_optimizer = torch.optim.Adam(policy_params, lr=cfg.policy_lr, fused=fused)
        target_entropy = -float(action_dim)
        shape = envs[0].single_observation_space.shape
        buffers = [ReplayBuffer(cfg.buffer_size, shape, action_shape, torch.float32, device) for _ in cfgs]

        def update_critics(obs, actions, rewards, next_obs, terminated, noise) -> tuple[torch.Tensor, torch.Tensor]:
            """One step on the soft Bellman residuals (eq. 5 and 8 of 2018a with V; eq. 3 of 2018b without), per seed:
            obs (K, B, O), actions (K, B, A), rewards and terminated (K, B), noise (K or 2K with V, B, A) for the
            policy's samples. Returns (losses (K,), Q values (K, 2, B))."""
            alpha = log_alpha.detach().exp()[:, None]  # (K, 1)
            with torch.no_grad():
                if vf is None:
                    next_actions, next_log_prob = actor.call("sample", next_obs, noise)
                    target = soft_q_target(
                        rewards, terminated, qf_target(next_obs, next_actions), next_log_prob, alpha, cfg.gamma
                    )
                else:
                    target = rewards + cfg.gamma * (1.0 - terminated) * vf_target(next_obs)
            q_values = qf(obs, actions)  # (K, 2, B)
            loss = F.mse_loss(q_values, target[:, None].expand_as(q_values), reduction="none").mean(-1).sum(-1)  # (K,)
            if vf is not None:  # V(s) towards E_a~pi[min_j Q_j(s, a) - alpha log pi(a|s)] (2018a, eq. 5)
                with torch.no_grad():
                    new_actions, log_prob = actor.call("sample", obs, noise)
                    v_target = qf(obs, new_actions).min(dim=-2).values - alpha * log_prob
                loss = loss + F.mse_loss(vf(obs), v_target, reduction="none").mean(-1)
            q_optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # each seed's parameters get its own loss's gradient
            q_optimizer.step()
            return loss.detach(), q_values.detach()

        def update_actor(obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Policy loss E[alpha log pi(a|s) - min_j Q_j(s, a)] (eq. 7), then the temperature (eq. 18); obs (K, B, O),
            noise (K, B, A). Returns (losses (K,), mean log pi (K,))."""
            actions, log_prob = actor.call("sample", obs, noise)  # (K, B, A), (K, B)
            min_q = qf(obs, actions, frozen=True).min(dim=-2).values  # (K, B)
            loss = (log_alpha.detach().exp()[:, None] * log_prob - min_q).mean(-1)
            total = loss
            if autotune:  # eq. 18 on the same sample's log pi (detached: this term moves alpha alone)
                total = total + (-log_alpha.exp()[:, None] * (log_prob.detach() + target_entropy)).mean(-1)
            actor_optimizer.zero_grad(set_to_none=True)
            total.sum().backward()
            actor_optimizer.step()
            return loss.detach(), log_prob.detach().mean(-1)

        def explore(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return actor.call("sample", obs, noise)[0]  # (K, N, A)

        update_critics, update_actor, explore = [compiled(f, cfg) for f in (update_critics, update_actor, explore)]
        policies = [numpy_policy(actor.member(k, "mean_action"), device) for k in range(K)]

        # 2. State: fresh, or restored from each seed's newest checkpoint (replay memory included).
        random_actions = [np.random.default_rng(c.seed) for c in cfgs]  # the uniform warm-up actions

        def state(k: int) -> dict[str, Any]:
            nets = {"actor": actor, "qf": qf, "qf_target": qf_target}
            if vf is not None:
                nets.update(vf=vf, vf_target=vf_target)
            optimizers = {"q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer}
            return {
                **{name: net.seed(k) for name, net in nets.items()},
                **{name: OptimizerSlice(optimizer, k) for name, optimizer in optimizers.items()},
                "envs": envs[k],
                "log_alpha": log_alpha[k],  # a view: restored in place
                "random_actions": random_actions[k],
            }

        pack = SeedPack(
            RunState(c, envs[k], loggers[k], checkpoints[k], state(k), extras={"replay": buffers[k]}, stream=streams[k])
            for k, c in enumerate(cfgs)
        )
        global_step, saved = pack.restore(updates=0)
        updates = saved[0]["updates"]  # the same for every seed
        next_obs = [e.observation() for e in envs]  # K x (N, O)
        while global_step < cfg.total_timesteps and pack.live:
            # 3. Act: uniform random before learning starts, then a ~ pi(.|s).
            global_step += N
            if global_step <= cfg.learning_starts:
                actions = np.stack([r.uniform(low_np, high_np, (N, action_dim)).astype(np.float32) for r in random_actions])
            else:
                with torch.inference_mode():
                    noise = draw_normal(streams, (N, action_dim), device)
                    actions = explore(torch.from_numpy(np.stack(next_obs)).to(device), noise).cpu().numpy()
            for k in pack.live:
                obs = next_obs[k]
                next_obs[k], rewards, terminated, truncated, info = envs[k].step(actions[k])
                buffers[k].add(obs, actions[k], rewards, info["final_obs"], terminated, truncated)
                pack.record_episodes(k, info["episodes"], global_step)

            # 4. Critics every step; the policy (and alpha) policy_frequency times every policy_frequency steps.
            if global_step > cfg.learning_starts:
                for _ in range(N):  # one critic update per environment step
                    batch = sample_seeds(buffers, cfg.batch_size, streams)
                    noise = draw_normal(streams, (cfg.batch_size, action_dim), device)  # a' ~ pi(.|s') or, with V, a ~ pi(.|s)
                    q_loss, q_values = update_critics(*batch[:5], noise)
                    updates += 1
                    if updates % cfg.policy_frequency == 0:
                        for _ in range(cfg.policy_frequency):
                            noise = draw_normal(streams, (cfg.batch_size, action_dim), device)
                            actor_loss, mean_log_prob = update_actor(batch.obs, noise)
                    if updates % cfg.target_network_frequency == 0:
                        soft_update(qf_target, qf, cfg.tau)
                        if vf is not None:
                            soft_update(vf_target, vf, cfg.tau)
                if updates % 100 < N and updates >= cfg.policy_frequency:  # CleanRL logs every 100 steps
                    columns = (q_loss / 2, *q_values.mean(-1).T, actor_loss, log_alpha.exp(), -mean_log_prob)  # each (K,)
                    names = ("qf_loss", "qf1_values", "qf2_values", "actor_loss", "alpha", "entropy")
                    values, sps = torch.stack(columns, 1).tolist(), pack.steps_per_second(global_step)
                    rows = [{**{f"losses/{n}": v for n, v in zip(names, values[k])}, "charts/SPS": sps} for k in range(K)]
                    pack.log(global_step, rows)

            # 5. Evaluate, checkpoint.
            pack.evaluate_if_due(global_step, policies)
            pack.checkpoint_if_due(global_step, updates=updates)

        return pack.finish(global_step, policies)
    finally:
        for e in envs:
            e.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
