"""Advantage Actor-Critic (A2C): the synchronous form of A3C.

Paper: Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver, Kavukcuoglu (2016), "Asynchronous Methods for
Deep Reinforcement Learning", ICML, arXiv:1602.01783 -- Algorithm S3 (advantage actor-critic): each actor runs
t_max steps, forms n-step returns R_t = sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}) (eq. in section 4,
"asynchronous advantage actor-critic"), and follows grad log pi(a_t|s_t) (R_t - V(s_t)) + beta grad H(pi(s_t))
for the policy and grad (R_t - V(s_t))^2 for the value, with shared RMSProp (section 4, "Optimization").
A2C replaces the asynchronous actor-learners by `num_envs` env copies stepped in lockstep whose t_max-step
rollouts make one batch per synchronous update (the synchronous variant of OpenAI baselines and of Wu et al.
2017, the ACKTR paper, which named it A2C).

Defaults: the paper's t_max = 5 with 16 env copies (its 16 actor-learner threads), as baselines' and SB3's
A2C (RMSProp lr 7e-4, decay alpha 0.99, eps 1e-5, value coefficient 0.5, gradient-norm clip 0.5; baselines
anneals the learning rate linearly to 0, and so does this). Everything else follows the MuJoCo practice of
this repository's PPO, since the default task is a MuJoCo one: separate tanh MLP actor and critic (64-64,
orthogonal init: `ActorCritic`, the same networks as PPO), a state-independent log-std for Box actions, observation and
reward normalisation, no entropy bonus (the paper's beta = 0.01 is its Atari value; SB3 uses 0).
Details and deviations:
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation).
- gae_lambda = 1 gives exactly the paper's n-step returns (the GAE sum of TD errors telescopes to
  R_t - V(s_t)); gae_lambda < 1 gives GAE (Schulman et al. 2016), as SB3 allows.
- torch's RMSprop adds eps outside the square root and starts its mean square at 0; TensorFlow's (baselines)
  adds it inside and starts at 1. `optimizer="adam"` swaps in Adam.
- The rollout's log-probs and values are computed after the rollout in one batched pass (the policy is
  fixed during it), which also builds the graph of the single gradient step.
`compile=True` wraps acting and the loss in torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.compiling import compiled
from algorithms.common.config import RunConfig
from algorithms.common.networks import ActorCritic
from algorithms.common.policy_gradient import a2c_loss, compute_gae
from algorithms.common.rollout import RolloutStorage
from algorithms.common.run import RunState, numpy_policy
from envs import make_vec_env

SMOKE = {"total_timesteps": 1000, "num_envs": 4, "num_steps": 5, "eval_every": 500, "eval_episodes": 2}
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector", "image")  # image: the CNN torsos of algorithms.common.torsos
LOG_EVERY = 100
"""updates between loss logs (A2C updates every num_envs * num_steps steps, so every update would flood logs)"""


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 16
    """parallel env copies (the paper's actor-learner threads)"""
    num_steps: int = 5
    """steps per env copy in each rollout (t_max in the paper)"""
    optimizer: str = "rmsprop"
    """rmsprop (the paper) or adam"""
    learning_rate: float = 7e-4
    """learning rate (start value when annealed)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over training"""
    rmsprop_alpha: float = 0.99
    """RMSProp decay of the mean squared gradient"""
    optimizer_eps: float = 1e-5
    """epsilon of RMSProp/Adam"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: the paper's n-step returns)"""
    norm_adv: bool = False
    """normalise the advantages of each batch"""
    ent_coef: float = 0.0
    """entropy bonus coefficient (beta in the paper)"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    normalize_obs: bool = True
    """normalise vector observations by running mean/std (images are left as they are)"""
    normalize_reward: bool = True
    """scale rewards by the running std of the discounted return"""
    hidden_size: int = 64
    """units in each of the two hidden layers (actor and critic)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "num_steps", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if self.optimizer not in ("rmsprop", "adam"):
            raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {self.optimizer!r}")
        if min(self.learning_rate, self.optimizer_eps, self.max_grad_norm) <= 0 or not 0 < self.rmsprop_alpha < 1:
            raise ValueError("learning_rate, optimizer_eps and max_grad_norm must be > 0, rmsprop_alpha in (0, 1)")
        if self.ent_coef < 0 or self.vf_coef < 0:
            raise ValueError("ent_coef and vf_coef must be >= 0")
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, _ = make_vec_env(
        cfg.env_id,
        cfg.num_envs,
        cfg.seed,
        normalize_obs=cfg.normalize_obs,
        normalize_reward=cfg.normalize_reward,
        gamma=cfg.gamma,
    )
    try:
        # 1. Actor-critic, optimizer, rollout storage (T = num_steps, N = num_envs).
        obs_shape, continuous = envs.single_observation_space.shape, envs.is_continuous
        action_shape, action_dim = envs.action_shape, envs.action_dim
        agent = ActorCritic(obs_shape, action_dim, continuous, cfg.hidden_size).to(device)
        if cfg.optimizer == "rmsprop":
            optimizer = torch.optim.RMSprop(
                agent.parameters(), lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha, eps=cfg.optimizer_eps
            )
        else:
            fused = device.type in ("cpu", "cuda")
            optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=cfg.optimizer_eps, fused=fused)
        T, N = cfg.num_steps, cfg.num_envs
        rollout = RolloutStorage(T, N, obs_shape, action_shape, continuous)

        act, loss_fn = agent.sample, a2c_loss
        act, loss_fn = compiled(act, cfg), compiled(loss_fn, cfg)
        deterministic_policy = numpy_policy(agent.deterministic_action, device)

        # 2. State: fresh, or restored from the newest checkpoint.
        run = RunState(cfg, envs, logger, checkpoint, {"agent": agent, "optimizer": optimizer, "envs": envs})
        global_step, _ = run.restore()
        next_obs = envs.observation()
        for iteration in range(global_step // cfg.batch_size + 1, cfg.num_iterations + 1):
            # 3. Learning rate: linear annealing to 0 over the iterations.
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            # 4. Rollout: t_max steps in each of the N env copies with the current policy (Algorithm S3, "repeat").
            noise = torch.randn(T, N, action_dim) if continuous else torch.rand(T, N, 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise[t].to(device)).cpu().numpy()
                next_obs, episodes = rollout.step(envs, t, next_obs, action)
                run.record_episodes(episodes, global_step)

            # 5. n-step returns R_t (or GAE): bootstrap from V(s_{t+n}) at the rollout's end, from V(true final obs)
            # at a truncation, from nothing at a termination (Algorithm S3, "R = 0 for terminal s_t").
            batch = rollout.tensors(device)
            obs = batch.obs.reshape(T * N, *obs_shape)
            actions = batch.actions.reshape(T * N, *action_shape)
            _, log_probs, entropy, values = agent.evaluate_actions(obs, actions)
            with torch.no_grad():
                next_values = agent.value(batch.final_obs)
            advantages, returns = compute_gae(
                batch.rewards,
                values.detach().reshape(T, N),
                next_values,
                batch.terminated,
                batch.episode_ends,
                cfg.gamma,
                cfg.gae_lambda,
            )
            advantages, returns = advantages.reshape(-1), returns.reshape(-1)
            if cfg.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            # 6. One synchronous gradient step on policy, value and entropy terms (Algorithm S3, "perform update").
            loss, stats = loss_fn(log_probs, entropy, values, advantages, returns, cfg.ent_coef, cfg.vf_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm, foreach=True)
            optimizer.step()

            # 7. Log (every LOG_EVERY updates), evaluate, checkpoint.
            if iteration % LOG_EVERY == 1:
                pg_loss, v_loss, entropy_mean = stats.tolist()
                var_returns, residual = returns.var(), returns - values.detach()
                explained_var = (1 - residual.var() / var_returns).item() if var_returns > 0 else float("nan")
                run.logger.log(
                    global_step,
                    {
                        "charts/learning_rate": optimizer.param_groups[0]["lr"],
                        "losses/policy_loss": pg_loss,
                        "losses/value_loss": v_loss,
                        "losses/entropy": entropy_mean,
                        "losses/explained_variance": explained_var,
                        "charts/SPS": run.steps_per_second(global_step),
                    },
                )
            run.evaluate_if_due(global_step, deterministic_policy)
            run.checkpoint_if_due(global_step)

        return run.finish(global_step, deterministic_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
