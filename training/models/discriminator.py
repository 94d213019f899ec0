"""Small discriminators: a PatchGAN for the autoencoder's optional adversarial loss, and the RSD head
that scores the fake ResShift's bottleneck features (Algorithm 1's GAN term)."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN: strided 4x4 convs, one logit per overlapping patch; (B,3,H,W) -> (B,1,h,w)."""

    def __init__(self, in_channels: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = width
        for i in range(1, layers):
            out = width * min(2**i, 8)
            blocks += [nn.Conv2d(channels, out, 4, 2, 1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2, True)]
            channels = out
        blocks += [nn.Conv2d(channels, 1, 4, 1, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BottleneckHead(nn.Module):
    """Logits from the fake model's middle-block features (B,C,h,w) -> (B,): GN, SiLU, 3x3 conv, SiLU,
    global average pool, linear. Small on purpose: the fake UNet is the feature extractor."""

    def __init__(self, channels: int, width: int = 128):
        super().__init__()
        groups = 32 if channels % 32 == 0 else 1
        self.net = nn.Sequential(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, width, 3, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)[:, 0]
