"""Convolutional torsos for image observations: the small in-file observation branch of the CNN algorithms
(DQN, Double DQN, PPO, A2C, ACKTR) builds one of these where an MLP would take a vector.

Two kinds of image observation are told apart by shape:
- stacked frames (K, H, W), K small and H, W >= 36 (Atari: 4 x 84 x 84 uint8, 0..255): the Nature CNN of
  Mnih et al. (2015), "Methods, model architecture": 32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1,
  each with ReLU, then a 512-unit ReLU layer. Pixels are scaled by 1/255 inside the network, so replay memory
  and rollouts keep uint8.
- grids (H, W, C), channels last, H, W < 36 (MinAtar: 10 x 10 x C of 0/1): the network of Young & Tian (2019),
  "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement Learning Experiments",
  section 4: one conv layer of 16 3x3 filters stride 1, ReLU, then a 128-unit ReLU layer. No scaling.
"""

from __future__ import annotations

import torch
import torch.nn as nn

NATURE_MIN_SIZE = 36
"""the smallest height and width the Nature CNN's three convolutions leave a 1x1 map for"""


def image_kind(obs_shape: tuple[int, ...]) -> str | None:
    """ "frames" (K, H, W), "grid" (H, W, C) or None for anything that is not an image observation."""
    if len(obs_shape) != 3:
        return None
    if obs_shape[0] < obs_shape[-1] and min(obs_shape[1:]) >= NATURE_MIN_SIZE:
        return "frames"
    if obs_shape[-1] < obs_shape[0] and max(obs_shape[:2]) < NATURE_MIN_SIZE:
        return "grid"
    return None


class ImageTorso(nn.Module):
    """Image observations, uint8 or float -> features (out_features,), by the architecture of `image_kind`."""

    def __init__(self, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.kind = image_kind(obs_shape)
        if self.kind == "frames":
            channels, height, width = obs_shape
            self.convs = nn.Sequential(
                nn.Conv2d(channels, 32, 8, stride=4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=1),
                nn.ReLU(),
            )
            self.out_features = 512
        elif self.kind == "grid":
            height, width, channels = obs_shape
            self.convs = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU())
            self.out_features = 128
        else:
            size = NATURE_MIN_SIZE
            raise ValueError(
                f"no CNN for observations of shape {obs_shape}: expected stacked frames (K, H, W) with "
                f"H, W >= {size} or a channels-last grid (H, W, C) with H, W < {size}"
            )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, channels, height, width)).numel()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, self.out_features), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., *obs_shape) -> (..., out_features): any leading axes, e.g. a rollout's (T, N)."""
        leading = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:])
        if self.kind == "frames":
            # Channels-last (NHWC) strides on the CPU: oneDNN's convolutions run about 8% faster on them (a DQN update,
            # batch 32, forward and backward, on a 2-core AVX2 machine). GPUs keep the layout they are given, and so does
            # a seed pack's vmap (algorithms.common.packing), whose batched tensor has no 4-d layout to convert.
            channels_last = x.device.type == "cpu" and not torch._C._functorch.is_batchedtensor(x)
            layout = torch.channels_last if channels_last else torch.preserve_format
            x = x.to(torch.float32, memory_format=layout) * (1.0 / 255.0)
        else:
            x = x.float().permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W), channels-last strides already
        return self.fc(self.convs(x)).reshape(*leading, self.out_features)
