"""The LR corrector: pulls the x4 output's low frequencies towards the LR input.

The one-step student's fidelity deficit against bicubic on clean and lightly degraded photos is mostly
low-frequency drift (the tone and colour of whole regions), not texture (docs/distillation.md, "The LR
corrector"). Back-projection (Irani and Peleg, 1991) removes drift: downscale the output, take the
residual to the LR, upscale it and add it. A fixed back-projection also puts the blur, noise and JPEG
blocks of a degraded LR back, which the model had removed; so a small network at LR resolution, which
sees the LR, the output's downscale and their residual, scales that residual per pixel and channel and
adds its own. With `detail`, it also scales the output's detail, the part above the LR's band
(sr - upscale(low)): where the LR cannot tell what texture was there, keeping less of the invented one is
the more faithful answer. Its last layer starts at zero, so training starts from the plain back-projection:

    low          = downscale(sr)                        (B,3,h,w)  torch's antialiased bicubic
    fixed        = gaussian_blur(lq - low, sigma_lr)    (B,3,h,w)  the back-projection residual
    gain, own[, detail_gain] = conv3x3 stack([lq, low, fixed])   (B,3,h,w) each; 0 at initialisation
    sr'          = clamp(sr + upscale((1 + gain) fixed + own)
                       [+ upscale(detail_gain) (sr - upscale(low))], 0, 1)   (B,3,fh,fw), bicubic upscale

(width 0: no network, the plain back-projection.)

Images are in [0, 1]. All of it is convolutions, so an exported tile graph carries it at little cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.resample import downscale, gaussian_blur, upscale


@dataclass(frozen=True)
class CorrectorConfig:
    sigma_lr: float = 0.5  # Gaussian on the back-projection residual, in LR pixels; 0 = none
    width: int = 32  # channels of the learned residual's convolutions; 0 = plain back-projection
    blocks: int = 3  # 3x3 convolutions between the input and output ones
    detail: bool = False  # also learn a per-pixel gain on the output's detail above the LR band
    factor: int = 4

    def __post_init__(self):
        if self.sigma_lr < 0 or self.width < 0 or self.blocks < 0:
            raise ValueError(f"corrector sizes must be >= 0, got {self}")
        if self.detail and not self.width:
            raise ValueError("a detail gain needs the network: width > 0")


class LRCorrector(nn.Module):
    """forward(sr (B,3,fh,fw), lq (B,3,h,w)) -> sr (B,3,fh,fw), all in [0, 1]."""

    def __init__(self, config: CorrectorConfig):
        super().__init__()
        self.config = config
        self.net = None
        if config.width:
            layers: list[nn.Module] = [nn.Conv2d(9, config.width, 3, padding=1)]
            for _ in range(config.blocks):
                layers += [nn.SiLU(), nn.Conv2d(config.width, config.width, 3, padding=1)]
            layers += [nn.SiLU(), nn.Conv2d(config.width, 9 if config.detail else 6, 3, padding=1)]
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            self.net = nn.Sequential(*layers)

    def forward(self, sr: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        factor = self.config.factor
        low = downscale(sr, factor)  # (B,3,h,w)
        residual = gaussian_blur(lq - low, self.config.sigma_lr)  # (B,3,h,w)
        if self.net is None:
            return (sr + upscale(residual, factor)).clamp(0, 1)
        gain, own, *detail_gain = self.net(torch.cat([lq, low, residual], dim=1)).split(3, dim=1)  # (B,3,h,w)
        out = sr + upscale((1 + gain) * residual + own, factor)
        if detail_gain:
            out = out + upscale(detail_gain[0], factor) * (sr - upscale(low, factor))
        return out.clamp(0, 1)

    def kwargs(self) -> dict:
        """What a model directory's config.json stores to rebuild this corrector."""
        return asdict(self.config)


def build_corrector(kwargs: dict) -> LRCorrector:
    return LRCorrector(CorrectorConfig(**kwargs))
