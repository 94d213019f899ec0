"""`rsd train teacher`: the ResShift teacher in the latent space of a trained autoencoder.

Loss (ResShift, w_t = 1): || f(x_t / sqrt(kappa^2 eta_t + 1), t, lq) - z_0 ||^2 with t uniform in
0..T-1, z_0 = Enc(HR), z_y = Enc(bicubic x4 of LR), both unquantized; optionally + LPIPS of the decoded
x_0 prediction (quantized, straight-through) against the HR, as the official v3 does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.checkpoint import (
    load_model_dir,
    load_official_state_dict,
    load_state_dict_checked,
    save_model_dir,
)
from training.data.degradations import build_degradation, make_lr
from training.data.loader import DataConfig
from training.diffusion import ResShiftSchedule, ScheduleConfig
from training.metrics import LPIPS
from training.models import build_unet
from training.pipeline import SRPipeline
from training.presets import load_preset
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class TeacherLossConfig:
    mse: float = 1.0
    lpips: float = 0.0  # official v3 uses 1.0 with LPIPS-vgg
    lpips_net: str = "vgg"
    # Exposure-bias fine-tune: with probability rollout_prob a batch's x_t comes from 1..rollout_steps of
    # the model's own reverse steps (ResShiftSchedule.rollout) instead of the forward process; 0 = off.
    rollout_steps: int = 0
    rollout_prob: float = 0.5


@dataclass
class TeacherTrainConfig:
    preset: str = "tiny-x4"
    schedule: str = ""  # one of the preset's schedules; "" = its default
    model: dict = field(default_factory=dict)  # overrides of the preset's UNet kwargs
    autoencoder: str = "runs/tiny-x4/autoencoder/model"  # model directory of a trained autoencoder
    init_unet: str = ""  # optional: official .pth or model directory to start from
    lr_mode: str | dict[str, float] = "realesrgan"  # a mode of LR_MODES or a mixture {mode: weight}
    degradation: dict = field(default_factory=dict)  # overrides of DegradationConfig
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=16))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=200))
    loss: TeacherLossConfig = field(default_factory=TeacherLossConfig)
    val_steps: str = "full"  # full (T steps) or one
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/teacher"))


class TeacherTrainer(Trainer):
    cfg: TeacherTrainConfig

    def build(self) -> None:
        cfg = self.cfg
        preset = load_preset(cfg.preset, cfg.schedule or None)
        self.unet_kwargs = {**preset["unet"], **cfg.model}
        self.schedule_cfg = ScheduleConfig(**preset["diffusion"])
        self.schedule = ResShiftSchedule(self.schedule_cfg)
        bundle = load_model_dir(cfg.autoencoder, self.device)
        self.autoencoder = bundle.autoencoder.requires_grad_(False).eval()
        self.autoencoder_kwargs = bundle.config["components"]["autoencoder"]["kwargs"]
        unet = build_unet(self.unet_kwargs).to(self.device)
        if cfg.init_unet:
            init = cfg.init_unet
            state = (
                load_model_dir(init).unet.state_dict()
                if not init.endswith(".pth")
                else load_official_state_dict(init)
            )
            load_state_dict_checked(unet, state, source=init)
        self.modules["unet"] = unet
        self.ddp_unet = self.wrap_ddp(unet)
        self.add_optimizer("unet", unet.parameters(), cfg.optim)
        self.tracked_ema("unet")
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)
        self.lpips = LPIPS(cfg.loss.lpips_net).to(self.device) if cfg.loss.lpips > 0 else None

    def denoise(self, x, t, lq):
        return self.ddp_unet(x, t, lq=lq)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        hr = self.next_hr_batch(cfg.data, step, self.run.steps)
        lr = make_lr(hr, cfg.lr_mode, self.degradation, generator)
        hr, lq = hr * 2 - 1, lr * 2 - 1
        with torch.no_grad(), self.autocast():
            z0 = self.autoencoder.encode(hr).float()
            z_y = self.autoencoder.encode_lr(lq).float()
        b = hr.shape[0]
        t = torch.randint(self.schedule.num_timesteps, (b,), generator=generator, device=generator.device)
        noise = torch.randn(z0.shape, generator=generator, device=generator.device)
        x_t, stats = None, {}
        loss_cfg, draw = cfg.loss, {"generator": generator, "device": generator.device}
        if loss_cfg.rollout_steps > 0 and torch.rand((), **draw) < loss_cfg.rollout_prob:
            steps = int(torch.randint(1, loss_cfg.rollout_steps + 1, (), **draw))
            with torch.no_grad(), self.autocast():
                x_t = self.schedule.rollout(self.modules["unet"], z0, z_y, lq, t, steps, generator).float()
            stats["rollout_steps"] = float(steps)
        with self.autocast():
            per_sample, x0_pred = self.schedule.training_loss(self.denoise, z0, z_y, lq, t, noise, x_t)
            mse = per_sample.mean()
            loss = cfg.loss.mse * mse
            stats["mse"] = mse.item()
            if self.lpips is not None:
                decoded = self.autoencoder.decode(x0_pred).clamp(-1, 1)
                lp = torch.nan_to_num(self.lpips(decoded.float(), hr.float()).mean(), nan=0.0)
                loss = loss + cfg.loss.lpips * lp
                stats["lpips"] = lp.item()
        stats["grad_norm"] = self.optimizer_step(
            "unet", loss, self.modules["unet"].parameters(), cfg.optim.grad_clip
        )
        stats["loss"] = loss.item()
        return stats

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """EMA teacher on the fixed validation set (T-step sampling by default) vs bicubic."""
        pipe = SRPipeline(self.ema.module, self.autoencoder, self.schedule).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, self.cfg.val_steps, "teacher")

    def export(self) -> None:
        """Write the EMA teacher with its autoencoder as a model directory (`out_dir/model`)."""
        save_model_dir(
            self.out_dir / "model",
            unet=self.ema.module,
            unet_kwargs=self.unet_kwargs,
            autoencoder=self.autoencoder,
            autoencoder_kwargs=self.autoencoder_kwargs,
            schedule=self.schedule_cfg,
            meta={
                "stage": "teacher",
                "step": self.step,
                "cpu_seconds": self.cpu_seconds,
                "preset": self.cfg.preset,
            },
        )
