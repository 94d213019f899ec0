"""LR image -> x4 image with a ResShift teacher (T steps, or its own one-step x0 guess) or an RSD student
(one step). Used by validation, `rsd eval` and, through `one_step_latent`, by the exported graph.

Images enter and leave in [0, 1]; inside, as in the official code, images are in [-1, 1], the LR is
bicubic-upsampled x4 and encoded (not quantized) to z_y, and the UNet sees the LR itself as `lq`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.diffusion import ResShiftSchedule

SCALE = 4


def lr_multiple(unet: nn.Module) -> int:
    """LR (= latent) sizes must be divisible by this: every UNet level halves, and the Swin windows tile."""
    return 2 ** (len(unet.config.channel_mult) - 1) * unet.config.window_size


class SRPipeline(nn.Module):
    """Teacher or student plus the autoencoder and the schedule, and the LR corrector of the output
    (training/models/corrector.py) if the model directory has one."""

    def __init__(
        self,
        unet: nn.Module,
        autoencoder: nn.Module,
        schedule: ResShiftSchedule,
        corrector: nn.Module | None = None,
    ):
        super().__init__()
        self.unet, self.autoencoder, self.schedule = unet, autoencoder, schedule
        self.corrector = corrector
        self.noise_channels = int(getattr(unet, "noise_channels", 0))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, noise: torch.Tensor | None = None):
        if self.noise_channels:
            return self.unet(x, t, lq=lq, noise=noise)
        return self.unet(x, t, lq=lq)

    def encode_lr(self, lq: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode_lr(lq)

    def one_step_latent(
        self, lq: torch.Tensor, prior_noise: torch.Tensor, student_noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_0 = f(scale(x_T), T-1, lq [, noise]) with x_T = z_y + kappa sqrt(eta_T) prior_noise."""
        z_y = self.encode_lr(lq)
        x_T = self.schedule.prior_sample(z_y, prior_noise)
        t = self.schedule.timesteps(lq.shape[0], self.schedule.num_timesteps - 1, lq.device)
        return self.denoise(self.schedule.scale_input(x_T, t), t, lq, student_noise)

    def draw_one_step_latent(self, lq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """one_step_latent with its noises drawn from `generator`: the prior's, then the student's."""
        b, _, h, w = lq.shape

        def randn(channels: int) -> torch.Tensor:
            shape = (b, channels, h, w)
            return torch.randn(shape, generator=generator, device=generator.device).to(lq.device)

        prior_noise = randn(self.autoencoder.latent_channels)
        student_noise = randn(self.noise_channels) if self.noise_channels else None
        return self.one_step_latent(lq, prior_noise, student_noise)

    def correct(self, sr01: torch.Tensor, lq01: torch.Tensor) -> torch.Tensor:
        """sr (B,3,4h,4w) and lq (B,3,h,w) in [0, 1] -> sr, corrected if the model has a corrector."""
        return sr01 if self.corrector is None else self.corrector(sr01, lq01)

    @torch.no_grad()
    def upscale(self, lq01: torch.Tensor, generator: torch.Generator, steps: str = "one") -> torch.Tensor:
        """(B,3,h,w) in [0,1] -> (B,3,4h,4w) in [0,1]. steps: "one" (1 NFE) or "full" (T NFE, teacher).

        The LR is reflect-padded to the UNet's size multiple and the result cropped back, as the
        official sampler does.
        """
        b, _, h, w = lq01.shape
        m = lr_multiple(self.unet)
        pad_h, pad_w = (-h) % m, (-w) % m
        lq = lq01 * 2 - 1
        if pad_h or pad_w:
            lq = F.pad(lq, (0, pad_w, 0, pad_h), mode="reflect")
        if steps == "one":
            z0 = self.draw_one_step_latent(lq, generator)
        elif steps == "full":
            if self.noise_channels:
                raise ValueError("T-step sampling is for the teacher; the student is a one-step model")
            z_y = self.encode_lr(lq)
            shape = (b, self.autoencoder.latent_channels, lq.shape[2], lq.shape[3])
            prior_noise = torch.randn(shape, generator=generator, device=generator.device).to(lq.device)
            z0 = self.schedule.sample(self.denoise, z_y, lq, prior_noise, generator=generator)
        else:
            raise ValueError(f"steps must be 'one' or 'full', got {steps!r}")
        sr = self.correct((self.autoencoder.decode(z0).clamp(-1, 1) + 1) / 2, (lq + 1) / 2)
        return sr[:, :, : h * SCALE, : w * SCALE]
