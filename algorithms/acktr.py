"""ACKTR: actor-critic with a Kronecker-factored approximate natural gradient and a KL trust region.

Paper: Wu, Mansimov, Liao, Grosse, Ba (2017), "Scalable trust-region method for deep reinforcement learning
using Kronecker-factored approximation", NeurIPS, arXiv:1708.05144 -- A2C's n-step actor-critic objective
(section 2.1), optimised by K-FAC (Martens & Grosse 2015, arXiv:1503.05671): each layer's Fisher block is
F_l ~ A_l (x) G_l (section 2.2) with A = E[a a^T] over the layer's inputs and G = E[g g^T] over the
gradients of the log-likelihood w.r.t. its outputs, both as running averages; the natural gradient
Delta = F^-1 grad is then taken with the step size eta = min(eta_max, sqrt(2 delta / (Delta^T F Delta))) so the
predicted KL of a step, 0.5 eta^2 Delta^T F Delta, stays below delta (section 3.2, the trust region). The critic is
fitted by the same K-FAC step, its output read as a Gaussian N(V(s), 1), whose Fisher is the Gauss-Newton matrix
(section 3.1).

Defaults: baselines' ACKTR (eta_max 0.25 annealed linearly to 0, kfac_clip 0.001, damping 0.01, factor decay
0.99, momentum 0.9, 20 steps per env copy), with 16 env copies and the networks and MuJoCo practice of A2C here
(`algorithms/a2c.py`; the actor-critic, GAE and A2C's loss come from `algorithms.common`). Details and deviations:
- Fisher samples: A2C makes one update per rollout, so the rollout's actions are draws from the current policy
  and log pi(a_t|s_t) at them gives the true (not the "empirical") Fisher; the critic's samples are
  V(s) + N(0, 1) noise, weighted by `vf_fisher_coef` (baselines' joint Fisher loss).
- The damped inverse (A (x) G + damping I)^-1 is applied exactly in the factors' eigenbases (as baselines and
  Kostrikov's pytorch-a2c-ppo-acktr do), not with Martens & Grosse's factored Tikhonov damping.
- The Gaussian policy's state-independent log-std has the exact Fisher 2 I (d log N / d log sigma = z^2 - 1
  has second moment 2), used as its own diagonal block instead of a Kronecker one.
- The factor averages start from the first batch's factors (baselines warms up over its first 10 updates
  with plain SGD steps instead), and the eigendecompositions are refreshed every `kfac_inverse_every` updates.
- The trust region is written as baselines codes it, eta = min(eta_max, sqrt(kl_clip / Delta^T F Delta)):
  kl_clip = 2 delta. Momentum averages the trust-region steps, b <- mu b + (1 - mu) eta Delta (baselines'
  momentum optimizer at learning rate eta_max (1 - mu)), so it never lengthens the steady-state step beyond
  the trust region; plain heavy-ball momentum (b <- mu b + eta Delta) made CartPole and InvertedPendulum
  runs collapse in calibration. No gradient clipping: the trust region bounds every step.
- Time-limit truncation is not termination: a truncated step bootstraps from V(true final observation).
- Conv layers (the CNN torso on images) get the KFC factors of Grosse & Martens (2016), as baselines: A over
  the input patches of every output position, G over the output gradients at every position, times the
  number of positions (`conv_factors`). Atari: baselines' setting is 16 env copies x 20 steps, entropy 0.01,
  no normalisation (clipped rewards); the suites' `[algo.acktr.atari]` overrides set it. The first fully
  connected layer of the Nature CNN has a 3137 x 3137 factor: `kfac_inverse_every` > 1 (baselines: 10)
  spreads its eigendecomposition.
`compile=True` wraps acting only (the K-FAC update runs eagerly: it records activations with hooks) in torch.compile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

SMOKE = {
    "total_timesteps": 1000,
    "num_envs": 4,
    "num_steps": 5,
    "kfac_inverse_every": 5,
    "eval_every": 500,
    "eval_episodes": 2,
}
"""Tiny settings for the contract tests (with a discrete and a continuous `env_id`)."""
ACTION_SPACES = ("discrete", "continuous")
OBSERVATIONS = ("vector", "image")  # image: the CNN torsos of algorithms.common.torsos
LOG_EVERY = 100
"""updates between loss logs (one update every num_envs * num_steps steps: every one would flood logs)"""


@dataclass(frozen=True)
class Config(RunConfig):
    num_envs: int = 16
    """parallel env copies"""
    num_steps: int = 20
    """steps per env copy in each rollout (n of the n-step returns)"""
    learning_rate: float = 0.25
    """largest step size eta_max (start value when annealed)"""
    anneal_lr: bool = True
    """anneal eta_max linearly to 0 over training"""
    kl_clip: float = 0.001
    """trust region (baselines' kfac_clip): eta = min(eta_max, sqrt(kl_clip / Delta^T F Delta)); predicted KL <= kl_clip/2"""
    damping: float = 0.01
    """Tikhonov damping added to the Kronecker-factored Fisher before inverting it"""
    stat_decay: float = 0.99
    """decay of the running averages of the Kronecker factors"""
    kfac_inverse_every: int = 1
    """updates between eigendecompositions of the factors"""
    momentum: float = 0.9
    """momentum mu: the parameters move by b <- mu b + (1 - mu) eta Delta, an average of trust-region steps"""
    vf_fisher_coef: float = 1.0
    """weight of the critic's Gaussian log-likelihood in the Fisher"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: n-step returns, as the paper)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    normalize_obs: bool = True
    """normalise vector observations by running mean/std (images are left as they are)"""
    normalize_reward: bool = True
    """scale rewards by the running std of the discounted return"""
    hidden_size: int = 64
    """units in each of the two hidden layers (actor and critic)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_envs", "num_steps", "kfac_inverse_every", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if min(self.learning_rate, self.kl_clip, self.damping) <= 0 or not 0 <= self.stat_decay < 1:
            raise ValueError("learning_rate, kl_clip and damping must be > 0, stat_decay in [0, 1)")
        if not 0 <= self.momentum < 1 or min(self.ent_coef, self.vf_coef, self.vf_fisher_coef) < 0:
            raise ValueError("momentum must be in [0, 1); ent_coef, vf_coef, vf_fisher_coef >= 0")
        if self.total_timesteps < self.batch_size:
            raise ValueError(f"total_timesteps = {self.total_timesteps} is less than one rollout ({self.batch_size})")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


# --- K-FAC maths -------------------------------------------------------------------------------------
def linear_factors(inputs: torch.Tensor, output_grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kronecker factors of a Linear layer from a batch: A = E[a~ a~^T] (in+1, in+1) with a~ = [a, 1] (the bias is
    a weight on a constant input) and G = E[g g^T] (out, out), for inputs a (B, in) and g (B, out) the per-example
    gradients of the sampled log-likelihood w.r.t. the layer's outputs."""
    a = torch.cat([inputs, inputs.new_ones(inputs.shape[0], 1)], 1)
    return a.T @ a / a.shape[0], output_grads.T @ output_grads / output_grads.shape[0]


def conv_factors(inputs: torch.Tensor, output_grads: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kronecker factors of a Conv2d layer (Grosse & Martens 2016, "KFC", with spatially uncorrelated derivatives):
    F ~ sum_t E[a~_t a~_t^T] (x) E[g_t g_t^T] = A (x) G with A = E_{b,t}[a~ a~^T] ((C kh kw + 1)^2, a~_t the input
    patch at output position t with a 1 for the bias) and G = L E_{b,t}[g g^T] (out, out), L output positions.
    inputs (B, C, H, W), output_grads (B, out, H', W'). With L = 1 these are `linear_factors` of the flattened patch."""
    patches = nn.functional.unfold(inputs, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C kh kw, L)
    positions = patches.shape[-1]
    a = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B L, C kh kw)
    g = output_grads.flatten(2).transpose(1, 2).reshape(-1, output_grads.shape[1])  # (B L, out)
    factor_a, factor_g = linear_factors(a, g)
    return factor_a, factor_g * positions


def kfac_precondition(
    grad: torch.Tensor, eig_a: tuple[torch.Tensor, torch.Tensor], eig_g: tuple[torch.Tensor, torch.Tensor], damping: float
) -> torch.Tensor:
    """(G (x) A + damping I)^-1 vec(grad) for grad (out, in+1) in torch's row-major vec, as a matrix.

    With A = Q_A diag(d_A) Q_A^T and G = Q_G diag(d_G) Q_G^T, the Kronecker product's eigenvectors are
    Q_G (x) Q_A with eigenvalues d_G d_A^T, so the damped inverse is exact: Q_G [(Q_G^T grad Q_A) / (d_G d_A^T +
    damping)] Q_A^T.
    """
    (d_a, q_a), (d_g, q_g) = eig_a, eig_g
    return q_g @ ((q_g.T @ grad @ q_a) / (d_g[:, None] * d_a[None, :] + damping)) @ q_a.T


def symmetric_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh, redone in float64 where the float32 solver does not converge: Kronecker factors are often
    rank-deficient with many repeated zero eigenvalues (dead ReLU units, fewer samples than a CNN layer's inputs)."""
    try:
        return torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix.double())
        return eigenvalues.to(matrix.dtype), eigenvectors.to(matrix.dtype)


def trust_region_step_size(quadratic: torch.Tensor, max_step: float, kl_clip: float) -> torch.Tensor:
    """eta = min(eta_max, sqrt(kl_clip / Delta^T F Delta)): the predicted KL 0.5 eta^2 Delta^T F Delta is at most
    delta = kl_clip / 2 (section 3.2 of the paper with 2 delta written as kl_clip, as baselines does)."""
    return torch.sqrt(kl_clip / quadratic.clamp_min(1e-30)).clamp(max=max_step)


class KFAC(torch.optim.Optimizer):
    """K-FAC natural-gradient steps with ACKTR's KL trust region, for the layers of `model`.

    Use: inside `with kfac.record():` run the forward pass of the loss; call `kfac.update_factors(ll)` with the
    summed log-likelihood of targets sampled from the model; backpropagate the loss; `kfac.step()`.
    Each nn.Linear (with bias) gets the Kronecker-factored block G (x) A; parameters in no such layer need a
    closed-form diagonal Fisher in `diagonal_fisher` (e.g. a Gaussian's log-std: 2). The state (factors, their
    eigendecompositions, momentum) lives in the optimizer state, so `state_dict()` checkpoints all of it.
    Weights are handled as (out, rest) matrices with the bias as their last column (a Conv2d's rest is
    C_in x kh x kw, the order of its unfolded patches), so a layer type needs only its entry in LAYER_TYPES and
    its factors in `_factors`.
    """

    LAYER_TYPES = (nn.Linear, nn.Conv2d)

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        kl_clip: float,
        damping: float,
        stat_decay: float,
        momentum: float,
        inverse_every: int = 1,
        diagonal_fisher: dict[nn.Parameter, float] | None = None,
    ) -> None:
        super().__init__(
            model.parameters(),
            {"lr": lr, "kl_clip": kl_clip, "damping": damping, "stat_decay": stat_decay, "momentum": momentum},
        )
        self.layers = [m for m in model.modules() if isinstance(m, self.LAYER_TYPES)]
        self.diagonal_fisher = dict(diagonal_fisher or {})
        self.inverse_every = inverse_every
        self.factor_updates = 0
        covered = {id(p) for m in self.layers for p in m.parameters()} | {id(p) for p in self.diagonal_fisher}
        missing = [name for name, p in model.named_parameters() if id(p) not in covered]
        if missing or any(m.bias is None for m in self.layers):
            supported = ", ".join(t.__name__ for t in self.LAYER_TYPES)
            raise ValueError(
                f"K-FAC has no Fisher block for {missing or 'a layer without bias'} (it has one for "
                f"{supported} layers with bias and for the parameters in diagonal_fisher)"
            )
        self._records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    @contextmanager
    def record(self) -> Iterator[None]:
        """Record each layer's input and output during the forward passes inside the block."""

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._records[module] = (inputs[0].detach(), output)

        handles = [m.register_forward_hook(hook) for m in self.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _factors(self, module: nn.Module, inputs: torch.Tensor, output_grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(module, nn.Linear):
            return linear_factors(inputs, output_grads)
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            return conv_factors(inputs, output_grads, module)
        raise NotImplementedError(f"no Kronecker factors for {type(module).__name__}")

    def update_factors(self, sampled_log_likelihood: torch.Tensor) -> None:
        """Running averages A <- decay A + (1 - decay) A_batch (likewise G) from the recorded forward pass.

        `sampled_log_likelihood`: sum over the batch of log p(y_i | x_i), y_i drawn from the model; its gradient
        w.r.t. a layer's output row i is that example's g_i (a sum, not a mean: no 1/B to undo)."""
        modules = [m for m in self.layers if m in self._records]
        outputs = [self._records[m][1] for m in modules]
        grads = torch.autograd.grad(sampled_log_likelihood, outputs, retain_graph=True)
        decay = self.param_groups[0]["stat_decay"]
        with torch.no_grad():
            for module, output_grads in zip(modules, grads):
                a, g = self._factors(module, self._records[module][0], output_grads)
                state = self.state[module.weight]
                if "A" not in state:
                    state["A"], state["G"] = a, g
                else:
                    state["A"].lerp_(a, 1.0 - decay)
                    state["G"].lerp_(g, 1.0 - decay)
                if self.factor_updates % self.inverse_every == 0 or "QA" not in state:
                    (state["dA"], state["QA"]), (state["dG"], state["QG"]) = map(symmetric_eigh, (state["A"], state["G"]))
        self.factor_updates += 1
        self._records.clear()

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """theta <- theta - b with b <- momentum * b + (1 - momentum) * eta * Delta (an average of the trust-region
        steps, as baselines' momentum optimizer with learning rate eta_max (1 - momentum)); returns eta."""
        group = self.param_groups[0]
        natural: dict[nn.Parameter, torch.Tensor] = {}
        for module in self.layers:
            state = self.state[module.weight]
            eig_a, eig_g = (state["dA"], state["QA"]), (state["dG"], state["QG"])
            weight, bias = module.weight, module.bias
            grad = torch.cat([weight.grad.reshape(weight.shape[0], -1), bias.grad[:, None]], 1)  # (out, rest + 1)
            delta = kfac_precondition(grad, eig_a, eig_g, group["damping"])
            natural[weight], natural[bias] = delta[:, :-1].reshape(weight.shape), delta[:, -1]
        for param, fisher in self.diagonal_fisher.items():
            natural[param] = param.grad / (fisher + group["damping"])
        quadratic = sum((delta * param.grad).sum() for param, delta in natural.items())  # Delta^T (F + damping) Delta
        eta = trust_region_step_size(quadratic, group["lr"], group["kl_clip"])
        for param, delta in natural.items():
            buffer = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
            buffer.lerp_(eta * delta, 1.0 - group["momentum"])
            param.sub_(buffer)
        return eta

    def state_dict(self) -> dict:
        return {**super().state_dict(), "factor_updates": self.factor_updates}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "factor_updates"})
        self.factor_updates = state_dict["factor_updates"]


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
        # 1. Actor-critic, K-FAC optimizer, rollout storage (T = num_steps, N = num_envs).
        obs_shape, continuous = envs.single_observation_space.shape, envs.is_continuous
        action_shape, action_dim = envs.action_shape, envs.action_dim
        agent = ActorCritic(obs_shape, action_dim, continuous, cfg.hidden_size).to(device)
        optimizer = KFAC(
            agent,
            lr=cfg.learning_rate,
            kl_clip=cfg.kl_clip,
            damping=cfg.damping,
            stat_decay=cfg.stat_decay,
            momentum=cfg.momentum,
            inverse_every=cfg.kfac_inverse_every,
            diagonal_fisher={agent.actor_logstd: 2.0} if continuous else None,
        )
        T, N = cfg.num_steps, cfg.num_envs
        rollout = RolloutStorage(T, N, obs_shape, action_shape, continuous)

        act = compiled(agent.sample, cfg)
        deterministic_policy = numpy_policy(agent.deterministic_action, device)

        # 2. State: fresh, or restored from the newest checkpoint (the K-FAC factors are in the optimizer's state).
        run = RunState(cfg, envs, logger, checkpoint, {"agent": agent, "optimizer": optimizer, "envs": envs})
        global_step, _ = run.restore()
        next_obs = envs.observation()
        for iteration in range(global_step // cfg.batch_size + 1, cfg.num_iterations + 1):
            # 3. Step-size bound eta_max: linear annealing to 0 over the iterations.
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / cfg.num_iterations) * cfg.learning_rate

            # 4. Rollout: T steps in each of the N env copies with the current policy.
            noise = torch.randn(T, N, action_dim) if continuous else torch.rand(T, N, 1)
            for t in range(T):
                global_step += N
                with torch.inference_mode():
                    action = act(torch.from_numpy(next_obs).to(device), noise[t].to(device)).cpu().numpy()
                next_obs, episodes = rollout.step(envs, t, next_obs, action)
                run.record_episodes(episodes, global_step)

            # 5. n-step returns (or GAE), bootstrapped from V(true final obs) at truncations, not at terminations.
            batch = rollout.tensors(device)
            obs = batch.obs.reshape(T * N, *obs_shape)
            actions = batch.actions.reshape(T * N, *action_shape)
            with optimizer.record():
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

            # 6. Kronecker factors from the sampled log-likelihood: the policy at its own (on-policy) actions and
            # the critic as N(V(s), 1) at V(s) + noise (section 3.1); their running averages and eigenbases.
            value_targets = values.detach() + torch.randn_like(values)
            sampled_ll = log_probs.sum() - cfg.vf_fisher_coef * 0.5 * (value_targets - values).pow(2).sum()
            optimizer.update_factors(sampled_ll)

            # 7. Natural-gradient step on A2C's loss inside the KL trust region.
            loss, stats = a2c_loss(log_probs, entropy, values, advantages, returns, cfg.ent_coef, cfg.vf_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            eta = optimizer.step()

            # 8. Log (every LOG_EVERY updates), evaluate, checkpoint.
            if iteration % LOG_EVERY == 1:
                pg_loss, v_loss, entropy_mean = stats.tolist()
                var_returns, residual = returns.var(), returns - values.detach()
                explained_var = (1 - residual.var() / var_returns).item() if var_returns > 0 else float("nan")
                run.logger.log(
                    global_step,
                    {
                        "charts/learning_rate": optimizer.param_groups[0]["lr"],
                        "charts/step_size": eta.item(),
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
