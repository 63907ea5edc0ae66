"""Networks that two or more algorithms borrow, and the target-network update.

- `tanh_mlp` and `ActorCritic`: the 64-64 tanh actor and critic with orthogonal initialisation of OpenAI baselines'
  MuJoCo policies (CleanRL's `ppo_continuous_action.py`): PPO and PPO-KL, A2C and ACKTR use `ActorCritic`; TRPO and
  NPG build their policy and value function from `tanh_mlp`; REINFORCE builds its own from it with PyTorch's default
  initialisation. Image observations get a CNN torso (`algorithms.common.torsos`) shared by actor and critic.
- `QEnsemble`: K independent Q(s, a) MLPs with stacked weights, one batched matmul per layer: TD3's twin critics
  (one critic for its DDPG ablation) and SAC's.
- `DeterministicActor`: mu(s), a 256-256 ReLU MLP with a tanh output scaled to the action box: TD3's and DDPG's
  actor, and the policy of BC and TD3+BC.
- `SquashedGaussianActor`: SAC's tanh-squashed Gaussian policy, also CQL's and (without its squash) not IQL's.
- `StateValue`: V(s), a 256-256 ReLU MLP: SAC's first variant and IQL.
- `soft_update`: Polyak averaging of target networks (DQN with tau = 1 is a copy).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.common.distributions import (
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
    squashed_gaussian_log_prob,
)
from algorithms.common.torsos import ImageTorso, image_kind


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear | nn.Conv2d:
    """Orthogonal weights with gain `std`, constant bias (baselines' `ortho_init`)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def tanh_mlp(in_dim: int, hidden: int, out_dim: int, out_std: float | None = None) -> nn.Sequential:
    """Linear-tanh-linear-tanh-linear. With `out_std`, every layer is orthogonally initialised (gain sqrt(2) for the
    hidden layers, `out_std` for the output: 0.01 for a policy head, 1 for a value head); without, PyTorch's default."""

    def init(layer: nn.Linear, std: float = np.sqrt(2)) -> nn.Linear:
        return layer if out_std is None else layer_init(layer, std)

    return nn.Sequential(
        init(nn.Linear(in_dim, hidden)),
        nn.Tanh(),
        init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        init(nn.Linear(hidden, out_dim), out_std),
    )


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs; a Gaussian policy with a learned state-independent log-std (Box actions) or a
    categorical one over logits (Discrete). Image observations (Atari frames, MinAtar grids): actor and critic are
    linear heads on one shared CNN torso (orthogonal init, as CleanRL's `ppo_atari.py`), evaluated once for both."""

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, continuous: bool, hidden: int) -> None:
        super().__init__()
        self.continuous, self.action_dim = continuous, action_dim
        if image_kind(obs_shape) is None:
            obs_dim = int(np.prod(obs_shape))
            self.torso = None
            self.critic = tanh_mlp(obs_dim, hidden, 1, out_std=1.0)
            self.actor = tanh_mlp(obs_dim, hidden, action_dim, out_std=0.01)
        else:
            self.torso = ImageTorso(obs_shape)
            for layer in self.torso.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer_init(layer)
            self.actor = nn.Sequential(self.torso, layer_init(nn.Linear(self.torso.out_features, action_dim), std=0.01))
            self.critic = nn.Sequential(self.torso, layer_init(nn.Linear(self.torso.out_features, 1), std=1.0))
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim)) if continuous else None

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): (B, *O) -> (B,)."""
        return self.critic(obs).squeeze(-1)

    def actor_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actor output (B, A): Gaussian means or logits, V(s) (B,)), the torso evaluated once."""
        if self.torso is None:
            return self.actor(obs), self.value(obs)
        features = self.torso(obs)
        return self.actor[1](features), self.critic[1](features).squeeze(-1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions (N, *A) drawn with pre-drawn `noise`: (N, A) standard normal (Box) or (N, 1) uniform (Discrete),
        so a rollout's randomness is drawn in one call."""
        if self.continuous:
            return self.actor(obs) + torch.exp(self.actor_logstd) * noise
        return categorical_sample(self.actor(obs), noise)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(actor output (B, A), log pi(a|s) (B,), entropy of pi(.|s) (B,), V(s) (B,)) for obs (B, *O), actions (B, *A)."""
        out, values = self.actor_and_value(obs)
        if self.continuous:
            entropy = gaussian_entropy(self.actor_logstd, obs.shape[0])
            return out, gaussian_log_prob(actions, out, self.actor_logstd), entropy, values
        log_probs = torch.log_softmax(out, -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return out, log_probs.gather(-1, actions[:, None]).squeeze(-1), entropy, values

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean, or the most probable action: what evaluation acts with."""
        out = self.actor(obs)
        return out if self.continuous else out.argmax(-1)


class QEnsemble(nn.Module):
    """Q_1(s, a) ... Q_K(s, a): K independent 3-layer ReLU MLPs whose weights are stacked (K, in, out), so all of them
    are evaluated by one batched matmul per layer. Initialised like K separate nn.Linear stacks, in order."""

    def __init__(self, in_dim: int, hidden: int, members: int = 2) -> None:
        super().__init__()
        self.members = members
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in [(in_dim, hidden), (hidden, hidden), (hidden, 1)]:
            layers = [nn.Linear(fan_in, fan_out) for _ in range(members)]
            self.weights.append(nn.Parameter(torch.stack([layer.weight.T.detach() for layer in layers])))
            self.biases.append(nn.Parameter(torch.stack([layer.bias.detach()[None] for layer in layers])))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, obs), (B, act) -> (K, B): every member's value. `frozen`: gradients reach the inputs, not the weights
        (a policy loss, whose gradients into the critics' weights would be discarded)."""
        weights, biases = self.weights, self.biases
        if frozen:
            weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
        x = torch.cat([obs, actions], -1).expand(self.members, -1, -1)  # (K, B, in)
        x = F.relu(torch.baddbmm(biases[0], x, weights[0]))  # (K, B, H)
        x = F.relu(torch.baddbmm(biases[1], x, weights[1]))  # (K, B, H)
        return (x * weights[2].mT).sum(-1) + biases[2].squeeze(-1)  # (K, B): a width-1 layer as a dot product

    def first(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_1 alone with frozen weights, (B,): TD3's actor loss, which needs one member and no weight gradients."""
        weights, biases = [w[0].detach() for w in self.weights], [b[0].detach() for b in self.biases]
        x = F.relu(torch.addmm(biases[0], torch.cat([obs, actions], -1), weights[0]))  # (B, H)
        x = F.relu(torch.addmm(biases[1], x, weights[1]))  # (B, H)
        return x @ weights[2].squeeze(-1) + biases[2].squeeze()  # (B,)


class DeterministicActor(nn.Module):
    """mu(s): a 3-layer ReLU MLP with a tanh output scaled to the action box."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, action_dim),
            nn.Tanh(),
        )
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""the log-std range of `SquashedGaussianActor` (CleanRL's SAC)"""


class SquashedGaussianActor(nn.Module):
    """pi(.|s): a Gaussian over pre-squash actions u with state-dependent mean and log-std (squashed by tanh
    into [-1, 1], then scaled to the action box)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, 2 * action_dim)  # mean and log-std heads side by side: one matmul
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (B, A), log_std (B, A)), log_std squashed into [LOG_STD_MIN, LOG_STD_MAX] as CleanRL."""
        mean, log_std = self.heads(self.trunk(obs)).chunk(2, dim=-1)
        log_std = torch.tanh(log_std)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised a = tanh(mean + std * noise) * scale + bias and log pi(a|s); both (B, A), (B,)."""
        mean, log_std = self(obs)
        pre_squash = mean + log_std.exp() * noise
        return (
            torch.tanh(pre_squash) * self.action_scale + self.action_bias,
            squashed_gaussian_log_prob(pre_squash, mean, log_std, self.action_scale),
        )

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0]) * self.action_scale + self.action_bias


class StateValue(nn.Module):
    """V(s): a 3-layer ReLU MLP (SAC's 2018a variant, IQL's value function)."""

    def __init__(self, obs_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, in one fused op over all parameters (tau = 1: a copy)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
