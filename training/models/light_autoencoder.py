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

from training.models.autoencoder import VQModelTorch
from training.resample import upscale, upscale_average

ARCHITECTURE = "light"  # the `architecture` kwarg that makes build_autoencoder build this model
LIGHT_ENCODER_VQ = "light_encoder+vq"  # ... and the one for LightEncoderVQ


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
        return light_encode_lr(self.encoder, lq, self.cfg.factor)

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """z (B,3,h,w) -> (B,3,4h,4w) in about [-1,1]; force_not_quantize is accepted for the VQ interface
        (this model never quantises)."""
        return upscale(z, self.cfg.factor) + self.decoder(z)


def light_encode_lr(encoder: nn.Module, lq: torch.Tensor, factor: int) -> torch.Tensor:
    """The light encoder's z_y: the resampling bypass box_f(bicubic_f(lq)) plus the convolutions' residual."""
    return upscale_average(lq, factor) + encoder(lq)


class LightEncoderVQ(nn.Module):
    """The light autoencoder's LR encoder in front of a VQ model: `encode_lr` at LR resolution, `decode`
    (and `encode` of HR photos) the VQ model's own. The light encoder matches the VQ encoder's z_y (on the
    validation photos the student scores the same through either), the light decoder trails the VQ
    decoder (docs/distillation.md, "A light autoencoder"), so this pairs the one that is free with the
    one that is not. State: `lr_encoder.*` (the light model's `encoder.*`) and `vq.*`."""

    def __init__(self, light: dict, vq: dict, architecture: str = LIGHT_ENCODER_VQ):
        super().__init__()
        if architecture != LIGHT_ENCODER_VQ:
            raise ValueError(f"LightEncoderVQ builds architecture {LIGHT_ENCODER_VQ!r}, got {architecture!r}")
        self.light_cfg = LightConfig.from_dict({k: v for k, v in light.items() if k != "architecture"})
        cfg = self.light_cfg
        self.lr_encoder = Residual(3, cfg.encoder_width, cfg.encoder_blocks, cfg.latent_channels)
        self.vq = VQModelTorch(**vq)
        self.vq_kwargs = dict(vq)
        if cfg.latent_channels != self.vq.latent_channels or cfg.factor != self.vq.cfg.factor:
            raise ValueError("the light encoder and the VQ model must share the latent shape")

    @property
    def decode_quantized(self) -> bool:
        return self.vq.decode_quantized

    @property
    def quantize(self) -> nn.Module:
        return self.vq.quantize

    @property
    def latent_channels(self) -> int:
        return self.vq.latent_channels

    def kwargs(self) -> dict:
        return {"architecture": LIGHT_ENCODER_VQ, "light": asdict(self.light_cfg), "vq": self.vq_kwargs}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(x)

    def encode_lr(self, lq: torch.Tensor) -> torch.Tensor:
        return light_encode_lr(self.lr_encoder, lq, self.light_cfg.factor)

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        return self.vq.decode(z, force_not_quantize=force_not_quantize)
