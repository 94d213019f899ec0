"""`rsd train corrector`: fit the LR corrector (training/models/corrector.py) behind a frozen, servable
model directory.

The student, its encoder and its decoder stay as they are; on (HR crop, LR of the mixture) pairs the
corrector learns, from the decoded one-step output and the LR, the low-frequency residual that brings the
output closer to the HR, on -PSNR per sample plus LPIPS. It starts as plain back-projection,
which already removes most of the student's drift on clean photos but puts a degraded LR's noise back;
the learned part decides from the LR how much of it to trust (docs/distillation.md, "The LR corrector").
The export holds only the corrector; `copy_model_dir(model, dst, corrector_from=<this>/model)` adds it
(scripts/default_model.sh).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.checkpoint import load_model_dir, save_model_dir
from training.data.degradations import build_degradation, make_lr
from training.data.loader import DataConfig
from training.diffusion import ScheduleConfig
from training.metrics import LPIPS
from training.models import CorrectorConfig, LRCorrector
from training.pipeline import SRPipeline
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class CorrectorLossConfig:
    """-PSNR per sample, averaged: what `rsd eval` scores. An MSE over the batch would let the heavily
    degraded samples, whose errors are several times larger, decide how much the LR is trusted."""

    psnr: float = 1.0  # mean over samples of 10 log10(MSE), in dB on [-1, 1] images
    lpips: float = 0.2  # LPIPS-alex


@dataclass
class CorrectorTrainConfig:
    model: str = "runs/tiny-x4/served-base/model"  # the servable model it corrects (frozen)
    corrector: CorrectorConfig = field(default_factory=CorrectorConfig)
    lr_mode: str | dict[str, float] = "realesrgan"
    degradation: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, betas=[0.9, 0.99]))
    loss: CorrectorLossConfig = field(default_factory=CorrectorLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/corrector", steps=600))


class CorrectorTrainer(Trainer):
    cfg: CorrectorTrainConfig
    single_process_stage = "corrector"

    def build(self) -> None:
        cfg = self.cfg
        base = load_model_dir(cfg.model, self.device)
        if base.unet is None or base.autoencoder is None:
            raise ValueError(f"{cfg.model} needs a unet and an autoencoder to be corrected")
        if base.corrector is not None:
            raise ValueError(f"{cfg.model} has a corrector already; train on the model without it")
        self.schedule, self.base_config = base.schedule, base.config
        self.pipe = SRPipeline(base.unet, base.autoencoder, base.schedule).eval().requires_grad_(False)
        corrector = LRCorrector(cfg.corrector).to(self.device)
        self.modules["corrector"] = corrector
        self.add_optimizer("corrector", list(corrector.parameters()), cfg.optim)
        self.tracked_ema("corrector")
        self.lpips = LPIPS("alex").to(self.device) if cfg.loss.lpips > 0 else None
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        corrector = self.modules["corrector"]
        hr01 = self.next_hr_batch(cfg.data, step, self.run.steps)  # (B,3,S,S)
        with torch.no_grad():
            lq01 = make_lr(hr01, cfg.lr_mode, self.degradation, generator)  # (B,3,S/4,S/4)
            z0 = self.pipe.draw_one_step_latent(lq01 * 2 - 1, generator)  # (B,3,S/4,S/4)
            sr01 = (self.pipe.autoencoder.decode(z0).clamp(-1, 1) + 1) / 2  # (B,3,S,S), uncorrected
        sr, hr = corrector(sr01, lq01) * 2 - 1, hr01 * 2 - 1  # (B,3,S,S) in [-1, 1]
        mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))  # (B,)
        neg_psnr = (10 * torch.log10(mse + 1e-10)).mean()
        loss = loss_cfg.psnr * neg_psnr
        stats = {"mse": mse.mean().item(), "neg_psnr_db": neg_psnr.item()}
        if self.lpips is not None:
            lp = self.lpips(sr, hr).mean()
            loss = loss + loss_cfg.lpips * lp
            stats["lpips"] = lp.item()
        grad_clip = cfg.optim.grad_clip
        stats["grad_norm"] = self.optimizer_step("corrector", loss, corrector.parameters(), grad_clip)
        stats["loss"] = loss.item()
        return stats

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """The model with the EMA corrector, one step, on the fixed validation set vs bicubic."""
        pipe = SRPipeline(self.pipe.unet, self.pipe.autoencoder, self.schedule, self.ema.module).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, "one", "student")

    def export(self) -> None:
        """Write the EMA corrector as a model directory (`out_dir/model`), for copy_model_dir's
        `corrector_from`."""
        save_model_dir(
            self.out_dir / "model",
            unet=None,
            unet_kwargs=None,
            autoencoder=None,
            autoencoder_kwargs=None,
            corrector=self.ema.module,
            schedule=ScheduleConfig(**self.base_config["diffusion"]),
            meta={"stage": "corrector", "step": self.step, "cpu_seconds": self.cpu_seconds},
        )
