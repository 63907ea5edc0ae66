"""Proximal Policy Optimization (PPO): the clipped surrogate objective, or the adaptive KL penalty (`ppo_kl`).

Paper: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization Algorithms",
arXiv:1707.06347 -- Algorithm 1, the clipped objective L^CLIP (eq. 7) and the combined loss (eq. 9);
advantages by GAE (Schulman et al. 2016, arXiv:1506.02438, eq. 16). `objective="kl"` is the paper's other
objective (section 4, registered as `ppo_kl`): maximise L^KLPEN = E_t[r_t(theta) A_t - beta KL[pi_old, pi]] (eq. 8)
for K epochs of minibatches, then compute d = E_t[KL[pi_old, pi]] over the rollout and halve beta if
d < d_targ / 1.5, double it if d > d_targ * 1.5; the new beta is used in the next update.

The defaults are CleanRL's `ppo_continuous_action.py` MuJoCo setting (2048 steps x 1 env, 10 epochs,
32 minibatches, lr 3e-4 annealed, clip 0.2). Like CleanRL (and the OpenAI baselines the paper used) it
adds details the paper leaves out: orthogonal init, a state-independent log-std, observation
normalisation and reward scaling, per-minibatch advantage normalisation, value-loss clipping, global
gradient-norm clipping, Adam eps 1e-5, linear learning-rate annealing. PPO-KL keeps all of them, so the two
differ in the policy objective alone; its own defaults are d_targ = 0.01, the best adaptive-KL setting of the
paper's Table 1 (section 6.1), and beta_0 = 1, our choice: the paper gives none and calls it "not important in
practice because the algorithm quickly adjusts it" (section 4); 1 is one of Table 1's fixed-beta values.

Deviations from CleanRL, each on purpose:
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation);
  CleanRL treats every episode end as terminal.
- Reward scaling resets its discounted return at every episode end (gymnasium's resets on termination only).
- Acting runs under inference_mode, and the rollout's log-probs and values are computed after it in one batched
  pass (the policy is fixed during the rollout): the same quantities, fewer calls.
- PPO-KL: the KL in the loss and in d is the exact KL between the old and new action distributions at each sampled
  state (closed form), not a sample estimate; beta has no bounds (the paper gives none either), so late in an
  annealed run, where d falls below d_targ / 1.5, it halves every update. Logged: `charts/kl_beta` (the beta an
  update used) and `losses/kl` (its d).
Image observations (Atari frames, MinAtar grids) get a shared CNN torso with linear actor and critic heads
(`ActorCritic`); observation normalisation then does nothing. CleanRL's `ppo_atari.py` settings (8 envs x 128
steps, 4 minibatches, 4 epochs, lr 2.5e-4, clip 0.1, entropy 0.01, no normalisation: Atari rewards are
clipped) are the suites' `[algo.ppo.atari]` overrides.
`compile=True` wraps acting and the loss in torch.compile.
`train_seeds` trains K seeds of one config in one process (algorithms.common.packing): every tensor carries a
leading seed axis, noted in the shapes below; `train` is the pack of one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.common import Checkpointer, Logger, TrainResult
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.distributions import categorical_kl, gaussian_kl
from algorithms.common.networks import ActorCritic
from algorithms.common.packing import (
    OptimizerSlice,
    SeedPack,
    SeedStack,
    clip_grad_norm_per_seed,
    lone,
    same_run_but_seed,
    seeded_members,
    take_rows,
)
from algorithms.common.policy_gradient import clipped_surrogate_loss, compute_gae, value_loss
from algorithms.common.rollout import RolloutBatch, RolloutStorage
from algorithms.common.run import RunState, numpy_policy
from envs import make_vec_env

SMOKE = {
    "total_timesteps": 1024,
    "num_envs": 2,
    "num_steps": 128,
    "update_epochs": 2,
    "num_minibatches": 4,
    "eval_every": 512,
    "eval_episodes": 2,
}
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector", "image")  # image: the CNN torsos of algorithms.common.torsos
VARIANTS = {"ppo_kl": {"objective": "kl"}}
"""Registered names of the paper's alternatives (suites and run directories use them): name -> Config values."""
OBJECTIVES = ("clip", "kl")


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 1
    """parallel env copies"""
    num_steps: int = 2048
    """steps per env copy in each rollout"""
    learning_rate: float = 3e-4
    """Adam learning rate (start value when annealed)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over training"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 32
    """minibatches per epoch"""
    update_epochs: int = 10
    """passes over each rollout (K in the paper)"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    objective: str = "clip"
    """policy objective: clip (L^CLIP, eq. 7) or kl (L^KLPEN, eq. 8, the adaptive KL penalty: ppo_kl)"""
    clip_coef: float = 0.2
    """clipping epsilon of the surrogate (objective clip) and of the value loss (clip_vloss)"""
    kl_target: float = 0.01
    """objective kl: d_targ, the mean KL[pi_old, pi] per policy update that beta is adapted towards (nats)"""
    kl_coef: float = 1.0
    """objective kl: initial KL penalty coefficient beta (per nat of KL, against unit-scale advantages)"""
    adaptive_kl: bool = True
    """objective kl: adapt beta after every update (False: the paper's fixed-beta variant, beta = kl_coef)"""
    clip_vloss: bool = True
    """clip the value loss around the old values"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    target_kl: float | None = None
    """stop the epochs of an update early once approx. KL exceeds this (None: never)"""
    normalize_obs: bool = True
    """normalise vector observations by running mean/std (images are left as they are)"""
    normalize_reward: bool = True
    """scale rewards by the running std of the discounted return"""
    hidden_size: int = 64
    """units in each of the two hidden layers (actor and critic)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if min(self.learning_rate, self.clip_coef, self.max_grad_norm, self.kl_target) <= 0:
            raise ValueError("learning_rate, clip_coef, max_grad_norm and kl_target must be > 0")
        if min(self.ent_coef, self.vf_coef, self.kl_coef) < 0:
            raise ValueError("ent_coef, vf_coef and kl_coef must be >= 0")
        if self.objective == "kl" and self.adaptive_kl and self.kl_coef == 0:
            raise ValueError("adaptive_kl needs kl_coef > 0 (halving and doubling 0 leaves it at 0)")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_envs * num_steps = {self.batch_size} is not divisible by num_minibatches = {self.num_minibatches}"
            )
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or None, got {self.target_kl}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- pure maths --------------------------------------------------------------------------------------
def kl_penalty_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: torch.Tensor | float
) -> torch.Tensor:
    """-L^KLPEN (eq. 8): the mean over the last axis of -r_t A_t + beta KL_t, all (..., B); beta (...) or a float."""
    return (-advantages * ratio).mean(-1) + beta * kl.mean(-1)


def adapt_beta(beta: float, kl: float, kl_target: float) -> float:
    """Section 4's rule, applied after each policy update with d = kl: halve beta if d < d_targ / 1.5,
    double it if d > d_targ * 1.5, else keep it."""
    if kl < kl_target / 1.5:
        return beta / 2.0
    if kl > kl_target * 1.5:
        return beta * 2.0
    return beta


# --- training ----------------------------------------------------------------------------------------
def packs(cfg: Config) -> bool:
    """Whether seeds of `cfg` can train as a pack: not with target_kl, which stops each seed's epochs at its own time
    (their shared Adam step count would then differ)."""
    return cfg.target_kl is None


def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    """One seed: a pack of one."""
    return lone(train_seeds([cfg], [logger], [checkpoint]))


def train_seeds(
    cfgs: Sequence[Config], loggers: Sequence[Logger | None], checkpoints: Sequence[Checkpointer | None]
) -> list[TrainResult | Exception]:
    """K seeds of one config in lockstep (algorithms.common.packing): every tensor below has a leading seed axis K
    (rollouts: (T, K, N, ...)). Returns each seed's result, or the FloatingPointError it diverged with."""
    cfg = same_run_but_seed(cfgs)
    if len(cfgs) > 1 and not packs(cfg):
        raise ValueError("target_kl stops each seed's epochs at its own time: train these seeds apart")
    K, device = len(cfgs), torch.device(cfg.device)
    normalize = {"normalize_obs": cfg.normalize_obs, "normalize_reward": cfg.normalize_reward, "gamma": cfg.gamma}
    envs = [make_vec_env(cfg.env_id, cfg.num_envs, c.seed, **normalize)[0] for c in cfgs]
    try:
        # 1. Networks, optimizer, rollout storage (T = num_steps, N = num_envs), per seed.
        obs_shape, continuous = envs[0].single_observation_space.shape, envs[0].is_continuous
        action_shape, action_dim = envs[0].action_shape, envs[0].action_dim

        def network() -> ActorCritic:
            return ActorCritic(obs_shape, action_dim, continuous, cfg.hidden_size)

        # The seeds' streams stay on the CPU, where the rollout noise and the minibatch order are drawn.
        members, streams = seeded_members([c.seed for c in cfgs], network, torch.device("cpu"), cfg.torch_deterministic)
        agent = SeedStack(members).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=device.type in ("cpu", "cuda"))
        T, N = cfg.num_steps, cfg.num_envs
        # Host-side rollout storage, filled step by step and moved to the device once per rollout.
        rollouts = [RolloutStorage(T, N, obs_shape, action_shape, continuous) for _ in cfgs]

        def policy_kl(old_out: torch.Tensor, old_logstd: torch.Tensor, new_out: torch.Tensor) -> torch.Tensor:
            """KL[pi_old(.|s), pi(.|s)] per state (K, B), in closed form, from actor outputs (K, B, A) (means or
            logits); log-stds (K, 1, A)."""
            if continuous:
                return gaussian_kl(old_out, old_logstd, new_out, agent.stacked("actor_logstd"))
            return categorical_kl(old_out, new_out)

        def loss_fn(obs, actions, old_out, old_logstd, old_logprobs, advantages, returns, old_values, beta):
            """Combined loss (eq. 9; signs for minimisation) per seed (K,) and diagnostics (K, 6) [policy, value,
            entropy, old_approx_kl, approx_kl, clipfrac]; minibatch tensors (K, M, ...). `beta` is a (K,) tensor, so a
            compiled loss is not re-traced when it changes."""
            new_out, new_logprobs, entropy, new_values = agent.call("evaluate_actions", obs, actions)
            log_ratio = new_logprobs - old_logprobs
            ratio = log_ratio.exp()
            if cfg.norm_adv:  # per seed, over its minibatch
                advantages = (advantages - advantages.mean(-1, keepdim=True)) / (advantages.std(-1, keepdim=True) + 1e-8)
            if cfg.objective == "clip":
                pg_loss = clipped_surrogate_loss(ratio, advantages, cfg.clip_coef).mean(-1)
            else:
                pg_loss = kl_penalty_loss(ratio, advantages, policy_kl(old_out, old_logstd, new_out), beta)
            v_loss = value_loss(new_values, old_values, returns, cfg.clip_coef if cfg.clip_vloss else None).mean(-1)
            entropy_loss = entropy.mean(-1)
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
            with torch.no_grad():  # "approx_kl" is the (r - 1) - log r estimator, http://joschu.net/blog/kl-approx.html
                clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean(-1)
                approx_kl = ((ratio - 1) - log_ratio).mean(-1)
                stats = torch.stack([pg_loss, v_loss, entropy_loss, (-log_ratio).mean(-1), approx_kl, clipfrac], -1)
            return loss, stats

        def act(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return agent.call("sample", obs, noise)  # (K, N, *A)

        act, loss_fn = compiled(act, cfg), compiled(loss_fn, cfg)
        policies = [numpy_policy(agent.member(k, "deterministic_action"), device) for k in range(K)]

        # 2. State: fresh, or restored from each seed's newest checkpoint. beta (objective kl) carries between updates.
        def state(k: int) -> dict[str, Any]:
            return {"agent": agent.seed(k), "optimizer": OptimizerSlice(optimizer, k), "envs": envs[k]}

        pack = SeedPack(
            RunState(c, envs[k], loggers[k], checkpoints[k], state(k), stream=streams[k]) for k, c in enumerate(cfgs)
        )
        global_step, saved = pack.restore(beta=cfg.kl_coef)
        betas = [values["beta"] for values in saved]  # (K,) floats
        next_obs = [e.observation() for e in envs]  # K x (N, *obs_shape) float32, numpy
        for iteration in range(global_step // cfg.batch_size + 1, cfg.num_iterations + 1):
            if not pack.live:
                break
            # 3. Learning rate: linear annealing to 0 over the iterations.
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            # 4. Rollout: T steps in N env copies with pi_old (Algorithm 1, "run policy"); only the action per step.
            shape = (T, N, action_dim) if continuous else (T, N, 1)
            draw = torch.randn if continuous else torch.rand
            noise = torch.stack([draw(shape, generator=stream) for stream in streams], 1)  # (T, K, N, A or 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    actions = act(torch.from_numpy(np.stack(next_obs)).to(device), noise[t].to(device)).cpu().numpy()
                for k in pack.live:
                    next_obs[k], episodes = rollouts[k].step(envs[k], t, next_obs[k], actions[k])
                    pack.record_episodes(k, episodes, global_step)

            # 5. pi_old on the rollout in one batched pass: actor outputs (the KL's reference), log-probs and values;
            # advantages by GAE, bootstrapping from V(s_{t+1}) with s_{t+1} the true final observation where an
            # episode ended (only termination zeroes it).
            per_seed = [rollout.tensors(device) for rollout in rollouts]
            batch = RolloutBatch(*(torch.stack(field, 1) for field in zip(*(vars(b).values() for b in per_seed))))
            b_obs = batch.obs.transpose(0, 1).reshape(K, T * N, *obs_shape)  # (K, T N, *O)
            b_actions = batch.actions.transpose(0, 1).reshape(K, T * N, *action_shape)
            with torch.no_grad():
                b_old_out, b_logprobs, _, b_values = agent.call("evaluate_actions", b_obs, b_actions)  # (K, T N, ...)
                old_logstd = (
                    agent.stacked("actor_logstd").detach().clone() if continuous else torch.zeros(K, 1, 1, device=device)
                )
                next_values = agent.call("value", batch.final_obs.transpose(0, 1)).transpose(0, 1)  # (T, K, N)
            values = b_values.reshape(K, T, N).transpose(0, 1)  # (T, K, N)
            advantages, returns = compute_gae(
                batch.rewards, values, next_values, batch.terminated, batch.episode_ends, cfg.gamma, cfg.gae_lambda
            )

            # 6. Optimise the objective for K epochs of minibatches (Algorithm 1, "optimize surrogate").
            b_advantages, b_returns = (x.transpose(0, 1).reshape(K, T * N) for x in (advantages, returns))  # (K, T N)
            beta_t = torch.tensor(betas, dtype=torch.float32, device=device)
            for _epoch in range(cfg.update_epochs):
                permutations = torch.stack([torch.randperm(cfg.batch_size, generator=s) for s in streams]).to(device)
                for start in range(0, cfg.batch_size, cfg.minibatch_size):
                    mb = permutations[:, start : start + cfg.minibatch_size]  # (K, M): each seed's own minibatch
                    rows = functools.partial(take_rows, index=mb)

                    loss, stats = loss_fn(
                        rows(b_obs),
                        rows(b_actions),
                        rows(b_old_out),
                        old_logstd,
                        rows(b_logprobs),
                        rows(b_advantages),
                        rows(b_returns),
                        rows(b_values),
                        beta_t,
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.sum().backward()  # each seed's network gets its own loss's gradient
                    clip_grad_norm_per_seed(list(agent.parameters()), cfg.max_grad_norm)
                    optimizer.step()
                if cfg.target_kl is not None and stats[0, 4].item() > cfg.target_kl:  # one seed: packs() refuses more
                    break

            # 7. Objective kl: d = E_t[KL[pi_old, pi]] over the whole rollout after the update; adapt beta (section 4).
            kl_stats: list[dict[str, float]] = [{} for _ in range(K)]
            if cfg.objective == "kl":
                with torch.no_grad():
                    rollout_kls = policy_kl(b_old_out, old_logstd, agent.call("actor", b_obs)).mean(-1).tolist()
                kl_stats = [{"losses/kl": d, "charts/kl_beta": beta} for d, beta in zip(rollout_kls, betas)]
                if cfg.adaptive_kl:
                    betas = [adapt_beta(beta, d, cfg.kl_target) for beta, d in zip(betas, rollout_kls)]

            # 8. Log (the last minibatch's diagnostics, as CleanRL), evaluate, checkpoint.
            var_returns = b_returns.var(-1)
            explained = (1 - (b_returns - b_values).var(-1) / var_returns).tolist()
            learning_rate, sps = optimizer.param_groups[0]["lr"], pack.steps_per_second(global_step)
            names = ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")
            rows_logged = []
            for k, (diagnostics, has_var) in enumerate(zip(stats.tolist(), (var_returns > 0).tolist())):
                row = {"charts/learning_rate": learning_rate, **{f"losses/{n}": v for n, v in zip(names, diagnostics)}}
                row["losses/explained_variance"] = explained[k] if has_var else float("nan")
                rows_logged.append({**row, "charts/SPS": sps, **kl_stats[k]})
            pack.log(global_step, rows_logged)
            pack.evaluate_if_due(global_step, policies)
            pack.checkpoint_if_due(global_step, per_seed=[{"beta": beta} for beta in betas])

        return pack.finish(global_step, policies)
    finally:
        for e in envs:
            e.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
