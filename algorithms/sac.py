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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.common import Checkpointer, Logger, TrainResult, seed_everything
from algorithms.common.cli import run_algorithm_cli
from algorithms.common.config import RunConfig
from algorithms.common.networks import QEnsemble, SquashedGaussianActor, StateValue, soft_update
from algorithms.common.replay import ReplayBuffer
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
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')), next_q (2, B); truncation bootstraps."""
    return rewards + gamma * (1.0 - terminated) * (next_q.min(dim=0).values - alpha * next_log_prob)


# --- training ----------------------------------------------------------------------------------------
def train(cfg: Config, logger: Logger | None = None, checkpoint: Checkpointer | None = None) -> TrainResult:
    seed_everything(cfg.seed, cfg.torch_deterministic)
    device = torch.device(cfg.device)
    envs, _ = make_vec_env(cfg.env_id, cfg.num_envs, cfg.seed)
    try:
        # 1. Policy, twin soft Q-functions and targets (or V and V' in the 2018a variant), temperature, replay.
        if not envs.is_continuous:
            raise ValueError(f"SAC needs continuous (Box) actions; {cfg.env_id} has {envs.single_action_space}")
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        action_shape, action_dim, N = envs.action_shape, envs.action_dim, cfg.num_envs
        low_np, high_np = envs.single_action_space.low, envs.single_action_space.high
        actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden_size, low_np, high_np).to(device)
        qf = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target = QEnsemble(obs_dim + action_dim, cfg.hidden_size).to(device)
        qf_target.load_state_dict(qf.state_dict())
        vf = StateValue(obs_dim, cfg.hidden_size).to(device) if cfg.value_network else None
        vf_target = StateValue(obs_dim, cfg.hidden_size).to(device) if cfg.value_network else None
        if vf is not None:
            vf_target.load_state_dict(vf.state_dict())
        fused = device.type in ("cpu", "cuda")
        critic_params = list(qf.parameters()) + (list(vf.parameters()) if vf is not None else [])
        q_optimizer = torch.optim.Adam(critic_params, lr=cfg.q_lr, fused=fused)
        autotune = cfg.autotune and not cfg.value_network
        log_alpha = torch.tensor(math.log(max(cfg.alpha, 1e-8)), device=device, requires_grad=autotune)
        # The temperature shares the policy's optimizer (same learning rate; Adam is per parameter, so this is the
        # same update as a separate optimizer, with one backward pass and one fused step for both losses).
        policy_params = list(actor.parameters()) + ([log_alpha] if autotune else [])
        actor_optimizer = torch.optim.Adam(policy_params, lr=cfg.policy_lr, fused=fused)
        target_entropy = -float(action_dim)
        buffer = ReplayBuffer(cfg.buffer_size, envs.single_observation_space.shape, action_shape, torch.float32, device)

        def update_critics(obs, actions, rewards, next_obs, terminated) -> tuple[torch.Tensor, torch.Tensor]:
            """One step on the soft Bellman residuals (eq. 5 and 8 of 2018a with V; eq. 3 of 2018b without)."""
            alpha = log_alpha.detach().exp()
            with torch.no_grad():
                if vf is None:
                    next_actions, next_log_prob = actor.sample(next_obs, torch.randn_like(actions))
                    target = soft_q_target(
                        rewards, terminated, qf_target(next_obs, next_actions), next_log_prob, alpha, cfg.gamma
                    )
                else:
                    target = rewards + cfg.gamma * (1.0 - terminated) * vf_target(next_obs)
            q_values = qf(obs, actions)
            loss = F.mse_loss(q_values, target.expand(2, -1), reduction="none").mean(1).sum()
            if vf is not None:  # V(s) towards E_a~pi[min_j Q_j(s, a) - alpha log pi(a|s)] (2018a, eq. 5)
                with torch.no_grad():
                    new_actions, log_prob = actor.sample(obs, torch.randn_like(actions))
                    v_target = qf(obs, new_actions).min(dim=0).values - alpha * log_prob
                loss = loss + F.mse_loss(vf(obs), v_target)
            q_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            q_optimizer.step()
            return loss.detach(), q_values.detach()

        def update_actor(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Policy loss E[alpha log pi(a|s) - min_j Q_j(s, a)] (eq. 7), then the temperature (eq. 18)."""
            actions, log_prob = actor.sample(obs, torch.randn(obs.shape[0], action_dim, device=device))
            loss = (log_alpha.detach().exp() * log_prob - qf(obs, actions, frozen=True).min(dim=0).values).mean()
            total = loss
            if autotune:  # eq. 18 on the same sample's log pi (detached: this term moves alpha alone)
                total = total + (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()
            actor_optimizer.zero_grad(set_to_none=True)
            total.backward()
            actor_optimizer.step()
            return loss.detach(), log_prob.detach().mean()

        def explore(obs: torch.Tensor) -> torch.Tensor:
            return actor.sample(obs, torch.randn(obs.shape[0], action_dim, device=device))[0]

        if cfg.compile:
            update_critics, update_actor, explore = map(torch.compile, (update_critics, update_actor, explore))

        deterministic_policy = numpy_policy(actor.mean_action, device)

        # 2. State: fresh, or restored from the newest checkpoint (replay memory included).
        random_actions = np.random.default_rng(cfg.seed)  # the uniform warm-up actions
        state = {
            "actor": actor,
            "qf": qf,
            "qf_target": qf_target,
            "q_optimizer": q_optimizer,
            "actor_optimizer": actor_optimizer,
            "envs": envs,
            "log_alpha": log_alpha,
            "random_actions": random_actions,
        }
        if vf is not None:
            state.update(vf=vf, vf_target=vf_target)
        run = RunState(cfg, envs, logger, checkpoint, state, extras={"replay": buffer})
        global_step, saved = run.restore(updates=0)
        updates = saved["updates"]
        next_obs = envs.observation()
        while global_step < cfg.total_timesteps:
            # 3. Act: uniform random before learning starts, then a ~ pi(.|s).
            global_step += N
            if global_step <= cfg.learning_starts:
                actions = random_actions.uniform(low_np, high_np, (N, action_dim)).astype(np.float32)
            else:
                with torch.inference_mode():
                    actions = explore(torch.from_numpy(next_obs).to(device)).cpu().numpy()
            obs = next_obs
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            buffer.add(obs, actions, rewards, info["final_obs"], terminated, truncated)
            run.record_episodes(info["episodes"], global_step)

            # 4. Critics every step; the policy (and alpha) policy_frequency times every policy_frequency steps.
            if global_step > cfg.learning_starts:
                for _ in range(N):  # one critic update per environment step
                    batch = buffer.sample(cfg.batch_size)
                    q_loss, q_values = update_critics(*batch[:5])
                    updates += 1
                    if updates % cfg.policy_frequency == 0:
                        for _ in range(cfg.policy_frequency):
                            actor_loss, mean_log_prob = update_actor(batch.obs)
                    if updates % cfg.target_network_frequency == 0:
                        soft_update(qf_target, qf, cfg.tau)
                        if vf is not None:
                            soft_update(vf_target, vf, cfg.tau)
                if updates % 100 < N and updates >= cfg.policy_frequency:  # CleanRL logs every 100 steps
                    q_means = q_values.mean(1).tolist()
                    run.logger.log(
                        global_step,
                        {
                            "losses/qf_loss": q_loss.item() / 2,
                            "losses/qf1_values": q_means[0],
                            "losses/qf2_values": q_means[1],
                            "losses/actor_loss": actor_loss.item(),
                            "losses/alpha": log_alpha.exp().item(),
                            "losses/entropy": -mean_log_prob.item(),
                            "charts/SPS": run.steps_per_second(global_step),
                        },
                    )

            # 5. Evaluate, checkpoint.
            run.evaluate_if_due(global_step, deterministic_policy)
            run.checkpoint_if_due(global_step, updates=updates)

        return run.finish(global_step, deterministic_policy)
    finally:
        envs.close()


if __name__ == "__main__":
    run_algorithm_cli(__name__)
