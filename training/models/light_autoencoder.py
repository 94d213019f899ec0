"""A light stand-in for the VQ-f4 autoencoder at serving time (issue #20, item 3): same latent space, a
fraction of the arithmetic.

The VQ encoder runs at output resolution on the bicubic-upsampled LR, and its decoder's widest levels run
at output resolution too: at tiny-x4 the two are 77% of a one-step upscale's multiply-adds
(`bench/model_cost.py`). This model computes the same two maps with most of its work at latent (= LR)
resolution:

    encode_lr:  lq (B,3,h,w) in [-1,1] -> box_f(bicubic_f(lq)) + convs at h x w       -> z_y (B,3,h,w)
    decode:     z  (B,3,h,w)           -> bicubic_f(z) + convs at h, 2h, 4h (pixel shuffles) -> (B,3,4h,4w)

Both keep the parameter-free resampling bypass of the VQ model's `resample_skip` (the first term), so
they start as the VQ model's own starting point and learn only residuals. The blocks are EDSR-style
(conv, ReLU, conv, plus the input; no normalisation), which ONNX Runtime fuses into plain convolutions.
`rsd train light` (training/train_light.py) fits both to a fitted VQ autoencoder and a frozen student.
It never quantises, so it only decodes continuous latents, as the decoder stage's output does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from training.models.autoencoder import bicubic_upsample

ARCHITECTURE = "light"  # the `architecture` kwarg that makes build_autoencoder build this model


@dataclass
class LightConfig:
    latent_channels: int = 3  # = image channels: the latent is a small image (resample_skip)
    factor: int = 4
    encoder_width: int = 32
    encoder_blocks: int = 2
    # decoder stages from latent resolution up: one width and block count per resolution (h, 2h, 4h)
    decoder_widths: tuple[int, ...] = (64, 32, 16)
    decoder_blocks: tuple[int, ...] = (2, 1, 1)

    def __post_init__(self):
        self.decoder_widths = tuple(self.decoder_widths)
        self.decoder_blocks = tuple(self.decoder_blocks)
        if 2 ** (len(self.decoder_widths) - 1) != self.factor or len(self.decoder_blocks) != len(
            self.decoder_widths
        ):
            raise ValueError(
                f"decoder_widths needs one entry per resolution from 1x to {self.factor}x "
                f"(log2(factor) + 1 = {self.factor.bit_length()}), decoder_blocks as many"
            )

    @classmethod
    def from_dict(cls, d: dict) -> LightConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown light autoencoder keys: {sorted(unknown)}")
        return cls(**d)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))), channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Residual(nn.Module):
    """conv_in, blocks, conv_out; conv_out starts at zero so the residual starts at zero."""

    def __init__(self, in_channels: int, width: int, blocks: int, out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(F.relu(self.conv_in(x))))


class LightDecoder(nn.Module):
    """z (B,c,h,w) -> residual (B,c,f*h,f*w): blocks at each resolution, x2 pixel shuffles between."""

    def __init__(self, cfg: LightConfig):
        super().__init__()
        widths, blocks = cfg.decoder_widths, cfg.decoder_blocks
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ResBlock(widths[i]) for _ in range(blocks[i]))) for i in range(len(widths))
        )
        # stage i -> i+1: a conv to 4x the next width, then pixel shuffle (B,4w,h,w) -> (B,w,2h,2w)
        self.ups = nn.ModuleList(
            nn.Conv2d(widths[i], 4 * widths[i + 1], 3, padding=1) for i in range(len(widths) - 1)
        )
        self.conv_out = nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv_in(z))  # (B,w0,h,w)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i < len(self.ups):
                h = F.relu(F.pixel_shuffle(self.ups[i](h), 2))  # (B,w_{i+1},2^(i+1) h, 2^(i+1) w)
        return self.conv_out(h)  # (B,c,f*h,f*w)


class LightAutoencoder(nn.Module):
    """encode_lr / decode with the VQ autoencoder's interface as the pipeline uses it (training/pipeline.py).

    decode_quantized is always False: there is no codebook."""

    decode_quantized = False

    def __init__(self, architecture: str = ARCHITECTURE, **kwargs):
        super().__init__()
        if architecture != ARCHITECTURE:
            raise ValueError(f"LightAutoencoder builds architecture {ARCHITECTURE!r}, got {architecture!r}")
        self.cfg = LightConfig.from_dict(kwargs)
        self.encoder = Residual(3, self.cfg.encoder_width, self.cfg.encoder_blocks, self.cfg.latent_channels)
        self.decoder = LightDecoder(self.cfg)

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def kwargs(self) -> dict:
        """What build_autoencoder needs to rebuild this model (stored in a model directory's config)."""
        return {"architecture": ARCHITECTURE, **asdict(self.cfg)}

    def encode_lr(self, lq: torch.Tensor) -> torch.Tensor:
        """lq (B,3,h,w) in [-1,1] -> z_y (B,3,h,w), the VQ encoder's latent of bicubic_f(lq)."""
        f = self.cfg.factor
        return F.avg_pool2d(bicubic_upsample(lq, f), f) + self.encoder(lq)

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """z (B,3,h,w) -> (B,3,4h,4w) in about [-1,1]; force_not_quantize is accepted for the VQ interface
        (this model never quantises)."""
        return bicubic_upsample(z, self.cfg.factor) + self.decoder(z)
