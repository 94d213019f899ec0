"""`rsd train distill`: RSD, Algorithm 1 (PAPER.md 2.7).

    student G = teacher copy + zero-initialised noise channel; fake f_phi = teacher copy; teacher f* frozen
    repeat K times (fresh batch each): fake step  L_fake + lambda2 L_GAN_D  (phi and the D head)
    fresh batch: student step  L_theta (SiD-normalised, no stop-gradient) + lambda1 LPIPS + lambda2 L_GAN_G
    EMA of the student

Choices the paper leaves open (all in the config): the N student timesteps (`evenly_spaced_timesteps`), the
D head (`BottleneckHead` on the fake's middle-block features at t = 0, inputs scaled as at t = 0), independent
student noises for the multistep branch and the LPIPS branch (from x_T at t = T), and the non-saturating loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from training.checkpoint import load_model_dir, save_model_dir
from training.data.degradations import LR_MODES, build_degradation, make_lr_with_modes
from training.data.loader import DataConfig
from training.distill import (
    evenly_spaced_timesteps,
    fake_loss,
    gan_discriminator_loss,
    gan_generator_loss,
    student_distillation_loss,
)
from training.metrics import LPIPS
from training.models import build_student
from training.models.discriminator import BottleneckHead
from training.pipeline import SRPipeline
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class DistillLossConfig:
    lpips: float = 2.0  # lambda1, LPIPS-alex on the decoded one-step output
    gan: float = 3e-3  # lambda2, both in the fake/D step and the student step
    # Not in the paper (0 = off): ||G(x_T) - z_0||^2 on the one-step latent, the teacher's own regression
    # loss at t = T, to hold the student's PSNR against the sharpening of the other terms.
    mse: float = 0.0
    # Not in the paper (0 = off): ||D(G(x_T)) - x_HR||^2 on the decoded one-step output in [-1, 1]. The latent
    # MSE above aims at the mean latent, whose decoding is not the mean image; this aims at PSNR itself.
    pixel_mse: float = 0.0
    sid_normalization: bool = True
    stop_gradient: bool = False  # True = detach f* and f_phi (the VSD-like ablation)
    # Not in the paper ([] = off): on samples whose LR drew one of these modes (lr_mode a mixture), the two
    # MSE terms are scaled by fidelity_mse_scale and the distribution terms (L_theta, LPIPS, GAN) by
    # fidelity_perceptual_scale: a clean or lightly degraded LR already holds most of the detail, so there
    # the student should keep it rather than draw new texture (issue #19).
    fidelity_modes: list[str] = field(default_factory=list)
    fidelity_mse_scale: float = 1.0
    fidelity_perceptual_scale: float = 1.0


@dataclass
class DistillTrainConfig:
    teacher: str = "runs/tiny-x4/teacher-mix/model"  # model dir: teacher UNet, autoencoder, schedule
    noise_channels: int = 1
    fake_updates: int = 5  # K
    multistep: int = 4  # N
    student_timesteps: list[int] = field(default_factory=list)  # 0-based; empty = evenly spaced ending at T
    gan_head_width: int = 128
    lr_mode: str | dict[str, float] = "realesrgan"
    degradation: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, betas=[0.9, 0.95]))
    fake_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, betas=[0.9, 0.95]))
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/distill", steps=3000))

    def validate(self) -> None:
        if self.fake_updates < 0 or self.noise_channels < 0:
            raise ValueError("fake_updates and noise_channels must be >= 0")
        unknown = sorted(set(self.loss.fidelity_modes) - set(LR_MODES))
        if unknown:
            raise ValueError(f"loss.fidelity_modes: unknown LR modes {unknown}; expected some of {LR_MODES}")


@dataclass
class Sample:
    """One `SampleEverything()` of Algorithm 1."""

    hr: torch.Tensor  # (B,3,H,W) in [-1,1]
    lq: torch.Tensor  # (B,3,H/4,W/4) in [-1,1]
    z0: torch.Tensor  # Enc(HR)
    z_y: torch.Tensor  # Enc(bicubic x4 LR)
    t_n: torch.Tensor  # student timesteps (B,)
    z_tn: torch.Tensor  # q(z_{t_n} | z0, z_y)
    t: torch.Tensor  # (B,) uniform in 0..T-1
    noise_t: torch.Tensor  # for z_t ~ q(z_t | x0_hat, z_y)
    modes: tuple[str, ...]  # the LR mode each sample drew


class DistillTrainer(Trainer):
    cfg: DistillTrainConfig

    def build(self) -> None:
        cfg = self.cfg
        bundle = load_model_dir(cfg.teacher, self.device)
        self.teacher_config = bundle.config
        self.schedule = bundle.schedule
        self.autoencoder = bundle.autoencoder.requires_grad_(False).eval()
        self.teacher = bundle.unet.requires_grad_(False).eval()
        self.timesteps = cfg.student_timesteps or evenly_spaced_timesteps(
            self.schedule.num_timesteps, cfg.multistep
        )
        if max(self.timesteps) != self.schedule.num_timesteps - 1:
            raise ValueError(
                f"student_timesteps {self.timesteps} must include T-1 = {self.schedule.num_timesteps - 1}"
            )
        self._say(f"student timesteps (0-based): {self.timesteps}")

        student = build_student(self.teacher, cfg.noise_channels).requires_grad_(True).train()
        fake = copy.deepcopy(self.teacher).requires_grad_(True).train()
        head = BottleneckHead(fake.bottleneck_channels, cfg.gan_head_width).to(self.device)
        self.modules.update(student=student, fake=fake, gan_head=head)
        self.ddp = {name: self.wrap_ddp(module) for name, module in self.modules.items()}
        self.add_optimizer("student", student.parameters(), cfg.optim)
        self.add_optimizer("fake", [*fake.parameters(), *head.parameters()], cfg.fake_optim)
        self.tracked_ema("student")
        self.lpips = LPIPS("alex").to(self.device) if cfg.loss.lpips > 0 else None
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)
        self.unet_kwargs = {
            **self.teacher_config["components"]["unet"]["kwargs"],
            "noise_channels": cfg.noise_channels,
        }

    # -- data ------------------------------------------------------------------------------------
    def _randn(
        self, like: torch.Tensor, generator: torch.Generator, channels: int | None = None
    ) -> torch.Tensor:
        shape = (like.shape[0], channels or like.shape[1], *like.shape[2:])
        return torch.randn(shape, generator=generator, device=generator.device).to(like)

    @torch.no_grad()
    def sample_everything(self, batch_index: int, generator: torch.Generator) -> Sample:
        hr = self.next_hr_batch(self.cfg.data, batch_index, self.run.steps * (self.cfg.fake_updates + 1))
        lr, modes = make_lr_with_modes(hr, self.cfg.lr_mode, self.degradation, generator)
        hr, lq = hr * 2 - 1, lr * 2 - 1
        z0 = self.autoencoder.encode(hr)
        z_y = self.autoencoder.encode_lr(lq)
        b, device = hr.shape[0], generator.device
        choice = torch.randint(len(self.timesteps), (b,), generator=generator, device=device)
        t_n = torch.tensor(self.timesteps, device=device)[choice].to(self.device)
        z_tn = self.schedule.q_sample(z0, z_y, t_n, self._randn(z0, generator))
        t = torch.randint(self.schedule.num_timesteps, (b,), generator=generator, device=device).to(
            self.device
        )
        return Sample(hr, lq, z0, z_y, t_n, z_tn, t, self._randn(z0, generator), modes)

    # -- networks as functions of (x, t) --------------------------------------------------------
    def _x0(self, unet, x_t, t, lq, noise=None):
        scaled = self.schedule.scale_input(x_t, t)
        return unet(scaled, t, lq=lq, noise=noise) if noise is not None else unet(scaled, t, lq=lq)

    def _logits(self, fake: nn.Module, head: nn.Module, z: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """D(f_phi^enc(z, y, t=0)): the head on the fake's middle-block features of a clean latent."""
        t0 = self.schedule.timesteps(z.shape[0], 0, z.device)
        features, _, _ = fake.encode(self.schedule.scale_input(z, t0), t0, lq=lq)
        return head(features)

    # -- Algorithm 1 -----------------------------------------------------------------------------
    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, stats = self.cfg, {}
        per_step = cfg.fake_updates + 1
        for k in range(cfg.fake_updates):
            stats.update(self.fake_step(self.sample_everything(step * per_step + k, generator), generator))
        stats.update(
            self.student_step(
                self.sample_everything(step * per_step + cfg.fake_updates, generator), generator
            )
        )
        return stats

    def fake_step(self, s: Sample, generator: torch.Generator) -> dict[str, float]:
        student, fake, head = self.modules["student"], self.ddp["fake"], self.ddp["gan_head"]
        with torch.no_grad(), self.autocast():
            x0_hat = self._x0(
                student, s.z_tn, s.t_n, s.lq, self._randn(s.z_tn, generator, self.cfg.noise_channels)
            )
        with self.autocast():
            z_t = self.schedule.q_sample(x0_hat, s.z_y, s.t, s.noise_t)
            loss_fake = fake_loss(self._x0(fake, z_t, s.t, s.lq), x0_hat).mean()
            loss = loss_fake
            stats = {"fake_mse": loss_fake.item()}
            if self.cfg.loss.gan > 0:
                # real and fake in one pass; the fake's down path is called on the bare module (its
                # gradients still reach the DDP reducer, which waits for the accumulated grads)
                both = torch.cat([s.z0, x0_hat])
                logits = self._logits(self.modules["fake"], head, both, torch.cat([s.lq, s.lq]))
                real, fake_logits = logits.chunk(2)
                loss_d = gan_discriminator_loss(real.float(), fake_logits.float())
                loss = loss + self.cfg.loss.gan * loss_d
                stats["gan_d"] = loss_d.item()
        params = [*self.modules["fake"].parameters(), *self.modules["gan_head"].parameters()]
        stats["fake_grad_norm"] = self.optimizer_step("fake", loss, params, self.cfg.fake_optim.grad_clip)
        return stats

    def student_step(self, s: Sample, generator: torch.Generator) -> dict[str, float]:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        student = self.ddp["student"]
        fake, head = self.modules["fake"], self.modules["gan_head"]
        fake.requires_grad_(False)
        head.requires_grad_(False)
        try:
            with self.autocast():
                # One student forward for the multistep branch (x_{t_n}) and the LPIPS branch (x_T).
                t_last = self.schedule.timesteps(s.z0.shape[0], self.schedule.num_timesteps - 1, self.device)
                x_T = self.schedule.prior_sample(s.z_y, self._randn(s.z_y, generator))
                x_in = torch.cat([s.z_tn, x_T])
                t_in = torch.cat([s.t_n, t_last])
                noise = self._randn(x_in, generator, cfg.noise_channels)
                x0_all = self._x0(student, x_in, t_in, torch.cat([s.lq, s.lq]), noise)
                x0_hat, x0_one = x0_all.chunk(2)

                # per-sample weights of the MSE and the distribution terms (loss.fidelity_modes)
                fidelity = torch.tensor([m in loss_cfg.fidelity_modes for m in s.modes], device=self.device)
                mse_w = torch.where(fidelity, loss_cfg.fidelity_mse_scale, 1.0)
                perceptual_w = torch.where(fidelity, loss_cfg.fidelity_perceptual_scale, 1.0)
                theta = student_distillation_loss(
                    self.schedule,
                    x0_hat,
                    s.z_y,
                    s.lq,
                    s.t,
                    s.noise_t,
                    teacher=lambda x, t, lq: self._x0(self.teacher, x, t, lq),
                    fake=lambda x, t, lq: self._x0(fake, x, t, lq),
                    sid_normalization=loss_cfg.sid_normalization,
                    stop_gradient=loss_cfg.stop_gradient,
                )  # (B,)
                terms = {
                    "theta": (1.0, perceptual_w, theta)
                }  # name: (weight, per-sample weights, (B,) values)
                if loss_cfg.lpips > 0 or loss_cfg.pixel_mse > 0:
                    # straight-through quantisation
                    decoded = self.autoencoder.decode(x0_one).clamp(-1, 1).float()
                if loss_cfg.lpips > 0:
                    lp = self.lpips(decoded, s.hr.float()).reshape(len(decoded), -1).mean(1)
                    terms["lpips"] = (loss_cfg.lpips, perceptual_w, lp)
                if loss_cfg.pixel_mse > 0:
                    pixel_mse = (decoded - s.hr.float()).pow(2).flatten(1).mean(1)
                    terms["pixel_mse"] = (loss_cfg.pixel_mse, mse_w, pixel_mse)
                if loss_cfg.mse > 0:
                    mse = (x0_one.float() - s.z0.float()).pow(2).flatten(1).mean(1)
                    terms["mse"] = (loss_cfg.mse, mse_w, mse)
                if loss_cfg.gan > 0:
                    loss_g = gan_generator_loss(self._logits(fake, head, x0_hat, s.lq).float())
                    terms["gan_g"] = (loss_cfg.gan, perceptual_w, loss_g)
                loss = sum(
                    weight * (per_sample * values).mean() for weight, per_sample, values in terms.values()
                )
                stats = {name: values.mean().item() for name, (_, _, values) in terms.items()}
            stats["student_grad_norm"] = self.optimizer_step(
                "student", loss, self.modules["student"].parameters(), cfg.optim.grad_clip
            )
        finally:
            fake.requires_grad_(True)
            head.requires_grad_(True)
        stats["student_loss"] = loss.item()
        return stats

    # -- validation and export -------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """EMA student, one step, on the fixed validation set vs bicubic."""
        pipe = SRPipeline(self.ema.module, self.autoencoder, self.schedule).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, "one", "student")

    def export(self) -> None:
        """Write the EMA student with the autoencoder as a model directory (`out_dir/model`)."""
        from training.diffusion import ScheduleConfig

        save_model_dir(
            self.out_dir / "model",
            unet=self.ema.module,
            unet_kwargs=self.unet_kwargs,
            autoencoder=self.autoencoder,
            autoencoder_kwargs=self.teacher_config["components"]["autoencoder"]["kwargs"],
            schedule=ScheduleConfig(**self.teacher_config["diffusion"]),
            meta={
                "stage": "student",
                "step": self.step,
                "cpu_seconds": self.cpu_seconds,
                "student_timesteps": self.timesteps,
                "teacher_meta": self.teacher_config.get("meta", {}),
            },
        )
