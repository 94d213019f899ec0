"""`rsd train light`: fit the light serving autoencoder (training/models/light_autoencoder.py) to a fitted
VQ autoencoder and a frozen one-step student.

Two targets, one optimiser:
  * its encoder, `encode_lr(lq)`, learns the VQ encoder's z_y (MSE, weight `loss.latent`), so the frozen
    student sees the condition it was trained on;
  * its decoder learns to decode the student's one-step latents, drawn from the light encoder's own z_y
    (what serving computes), with the decoder stage's MSE + L1 + LPIPS against `loss.target`: `fitted`,
    the fitted VQ decoder's output for the same latent (distillation: a deterministic target the small
    decoder can reach), or `hr`, the photo, as the decoder stage trains (docs/distillation.md, "A light
    autoencoder", has both).
The export holds only the light autoencoder; `copy_model_dir(student, dst, autoencoder_from=<this>/model)`
makes the servable model directory, as for the decoder stage (scripts/default_model.sh).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.checkpoint import load_model_dir, save_model_dir
from training.data.degradations import build_degradation, make_lr
from training.data.loader import DataConfig
from training.diffusion import ScheduleConfig
from training.metrics import LPIPS
from training.models import LightAutoencoder
from training.pipeline import SRPipeline
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class LightLossConfig:
    latent: float = 1000.0  # z_y MSE is ~1e-4 once fitted: this weight keeps it as large as the L1 term
    mse: float = 20.0
    l1: float = 1.0
    lpips: float = 0.1
    target: str = "fitted"  # what the decoder's output is scored against: fitted (the VQ decoder's) or hr

    def __post_init__(self):
        if self.target not in ("fitted", "hr"):
            raise ValueError(f"loss.target must be fitted or hr, got {self.target!r}")


@dataclass
class LightTrainConfig:
    student: str = "runs/tiny-x4/distill-tmix-fid10/model"  # its UNet makes the latents (frozen)
    # the fitted VQ autoencoder: its encoder is the target
    autoencoder: str = "runs/tiny-x4/decoder-tmix-fid10/model"
    model: dict = field(default_factory=dict)  # LightConfig fields; {} = its defaults
    lr_mode: str | dict[str, float] = "realesrgan"
    degradation: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, betas=[0.9, 0.99]))
    loss: LightLossConfig = field(default_factory=LightLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/light", steps=1000))


class LightTrainer(Trainer):
    cfg: LightTrainConfig
    single_process_stage = "light"

    def build(self) -> None:
        cfg = self.cfg
        student = load_model_dir(cfg.student, self.device)
        self.schedule = student.schedule
        self.student_config = student.config
        self.unet = student.unet.requires_grad_(False).eval()
        self.fitted = load_model_dir(cfg.autoencoder, self.device).autoencoder.requires_grad_(False).eval()
        light = LightAutoencoder(**cfg.model).to(self.device)
        self.modules["light"] = light
        self.add_optimizer("light", list(light.parameters()), cfg.optim)
        self.tracked_ema("light")
        self.lpips = LPIPS("alex").to(self.device) if cfg.loss.lpips > 0 else None
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        light = self.modules["light"]
        hr01 = self.next_hr_batch(cfg.data, step, self.run.steps)
        hr = hr01 * 2 - 1  # (B,3,S,S)
        with torch.no_grad():
            lq = make_lr(hr01, cfg.lr_mode, self.degradation, generator) * 2 - 1  # (B,3,S/4,S/4)
            z_y_target = self.fitted.encode_lr(lq)  # (B,3,S/4,S/4)
            z0 = SRPipeline(self.unet, light, self.schedule).draw_one_step_latent(lq, generator)
            target = hr if loss_cfg.target == "hr" else self.fitted.decode(z0).clamp(-1, 1)  # (B,3,S,S)
        latent = (light.encode_lr(lq) - z_y_target).pow(2).mean()
        sr = light.decode(z0).clamp(-1, 1)  # (B,3,S,S)
        mse, l1 = (sr - target).pow(2).mean(), (sr - target).abs().mean()
        loss = loss_cfg.latent * latent + loss_cfg.mse * mse + loss_cfg.l1 * l1
        stats = {"latent_mse": latent.item(), "mse": mse.item(), "l1": l1.item()}
        if self.lpips is not None:
            lp = self.lpips(sr, target).mean()
            loss = loss + loss_cfg.lpips * lp
            stats["lpips"] = lp.item()
        stats["grad_norm"] = self.optimizer_step("light", loss, light.parameters(), cfg.optim.grad_clip)
        stats["loss"] = loss.item()
        return stats

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """The student on the EMA light autoencoder, one step, on the fixed validation set vs bicubic."""
        pipe = SRPipeline(self.unet, self.ema.module, self.schedule).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, "one", "student")

    def export(self) -> None:
        """Write the EMA light autoencoder as a model directory (`out_dir/model`)."""
        save_model_dir(
            self.out_dir / "model",
            unet=None,
            unet_kwargs=None,
            autoencoder=self.ema.module,
            autoencoder_kwargs=self.ema.module.kwargs(),
            schedule=ScheduleConfig(**self.student_config["diffusion"]),
            meta={"stage": "light", "step": self.step, "cpu_seconds": self.cpu_seconds},
        )
