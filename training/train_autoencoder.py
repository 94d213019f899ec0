"""`rsd train autoencoder`: the VQ-f4 autoencoder (L1 + LPIPS reconstruction, VQ codebook/commitment
losses with beta 0.25, optional PatchGAN).

The autoencoder is the ceiling of every model built on it, so validation always reports the gap to
plain bicubic upsampling of the clean x4 LR of the same photos.

With `reference` (a trained autoencoder's model directory) it instead re-trains that autoencoder in a
cheaper architecture (say `model.ddconfig.mid_attention=false`) that keeps its latent space: it starts
from the reference's weights, keeps the reference's codebook frozen, and `loss.latent` pulls its encoder
output to the reference's on the two things diffusion models encode: HR crops and bicubic-upsampled LR.
A teacher and student trained on the reference then run on the new autoencoder unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoint import load_model_dir, save_model_dir
from training.data.degradations import bicubic_degradation, build_degradation, make_lr
from training.data.loader import DataConfig
from training.data.valset import load_val_set
from training.diffusion import ScheduleConfig
from training.metrics import LPIPS
from training.models import build_autoencoder
from training.models.discriminator import PatchDiscriminator
from training.pipeline import SCALE
from training.presets import load_preset
from training.resample import upscale
from training.trainer import OptimConfig, RunConfig, Trainer
from training.validation import Scorer, bicubic_up, save_grid


@dataclass
class AutoencoderLossConfig:
    l1: float = 1.0
    lpips: float = 1.0
    lpips_net: str = "alex"
    vq: float = 1.0  # weight of the legacy VQ loss (commitment + 0.25 codebook)
    codebook_init_from_data: bool = True  # seed the codebook with encoder outputs of the first batch
    dead_code_restart_every: int = 200  # re-seed codes unused over that many steps (0 = never)
    gan: float = 0.0  # PatchGAN hinge loss weight (0 = off)
    gan_start: int = 0
    latent: float = 0.0  # MSE to the reference encoder's latents (needs `reference`)


@dataclass
class AutoencoderTrainConfig:
    preset: str = "tiny-x4"
    model: dict = field(default_factory=dict)  # overrides of the preset's autoencoder kwargs
    reference: str = ""  # model directory of an autoencoder whose latent space to keep (see module doc)
    lr_mode: str | dict[str, float] = "realesrgan"  # LR synthesis for the reference's latents of upsampled LR
    degradation: dict = field(default_factory=dict)  # DegradationConfig overrides
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=4e-4, betas=[0.9, 0.99], warmup_steps=100)
    )
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/autoencoder"))

    def model_kwargs(self) -> dict:
        kwargs = load_preset(self.preset)["autoencoder"]
        for key, value in self.model.items():
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                kwargs[key] = {**kwargs[key], **value}
            else:
                kwargs[key] = value
        return kwargs


class ReconstructionForward(nn.Module):
    """One forward for DDP: encode, quantize (straight-through), decode."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, lq_up: torch.Tensor | None = None):
        z = self.autoencoder.encode(x)
        z_q, vq_loss, (_, _, indices) = self.autoencoder.quantize(z)
        z_lq = None if lq_up is None else self.autoencoder.encode(lq_up)
        return self.autoencoder.decode(z_q, force_not_quantize=True), vq_loss, indices, z, z_lq


class AutoencoderTrainer(Trainer):
    cfg: AutoencoderTrainConfig

    def build(self) -> None:
        cfg = self.cfg
        self.model_kwargs = cfg.model_kwargs()
        ae = build_autoencoder(self.model_kwargs).to(self.device)
        self.reference = self._start_from_reference(ae) if cfg.reference else None
        self.modules["autoencoder"] = ae
        self.forward = self.wrap_ddp(ReconstructionForward(ae))
        self.add_optimizer("autoencoder", ae.parameters(), cfg.optim)  # a frozen codebook gets no grad
        self.tracked_ema("autoencoder")
        self.lpips = LPIPS(cfg.loss.lpips_net).to(self.device) if cfg.loss.lpips > 0 else None
        if cfg.loss.gan > 0:
            disc = PatchDiscriminator().to(self.device)
            self.modules["discriminator"] = self.wrap_ddp(disc)
            self.add_optimizer("discriminator", disc.parameters(), cfg.optim)
        self.code_usage = torch.zeros(ae.quantize.n_e, device=self.device)

    def _start_from_reference(self, ae: nn.Module) -> nn.Module:
        """Copy the reference's weights into `ae` (which may only lack layers), freeze the codebook, and
        return the frozen reference."""
        cfg = self.cfg
        if cfg.loss.codebook_init_from_data or cfg.loss.dead_code_restart_every:
            raise ValueError(
                "reference keeps the reference's codebook: set loss.codebook_init_from_data=false "
                "and loss.dead_code_restart_every=0"
            )
        reference = load_model_dir(cfg.reference, self.device).autoencoder.requires_grad_(False).eval()
        missing, _ = ae.load_state_dict(reference.state_dict(), strict=False)
        if missing:
            raise ValueError(
                f"{cfg.reference} has no weights for {missing}: the architecture may only drop layers"
            )
        ae.quantize.embedding.weight.requires_grad_(False)
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)
        return reference

    @torch.no_grad()
    def _seed_codes(self, latents: torch.Tensor, which: torch.Tensor, generator: torch.Generator) -> None:
        """Set the codebook rows `which` to randomly chosen encoder outputs (plus a little jitter)."""
        ae = self.modules["autoencoder"]
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        pick = torch.randint(flat.shape[0], (len(which),), generator=generator, device=generator.device)
        jitter = 1e-3 * torch.randn(len(which), flat.shape[1], generator=generator, device=generator.device)
        ae.quantize.embedding.weight[which] = flat[pick] + jitter
        self.broadcast_(ae.quantize.embedding.weight)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        hr01 = self.next_hr_batch(self.cfg.data, step, self.run.steps)
        hr = hr01 * 2 - 1  # (B,3,S,S) in [-1,1]
        ae = self.modules["autoencoder"]
        lq_up = None
        if self.reference is not None:  # the LR a diffusion model encodes: bicubic x4 of the degraded LR
            lq = make_lr(hr01, cfg.lr_mode, self.degradation, generator) * 2 - 1
            lq_up = upscale(lq, SCALE)
        if step == 0 and loss_cfg.codebook_init_from_data:
            with torch.no_grad():
                z = ae.encode(hr).float()
            self._seed_codes(z, torch.arange(ae.quantize.n_e, device=self.device), generator)
        with self.autocast():
            rec, vq_loss, indices, z, z_lq = self.forward(hr, lq_up)
            l1 = (rec - hr).abs().mean()
            loss = loss_cfg.l1 * l1 + loss_cfg.vq * vq_loss
            stats = {"l1": l1.item(), "vq": vq_loss.item()}
            if self.reference is not None:
                with torch.no_grad():
                    target, target_lq = self.reference.encode(hr), self.reference.encode(lq_up)
                latent = F.mse_loss(z.float(), target) + F.mse_loss(z_lq.float(), target_lq)
                loss = loss + loss_cfg.latent * latent
                stats["latent"] = latent.item()
                kept = indices == self.reference.codebook_indices(target)
                stats["codes_kept"] = kept.float().mean().item()
            if self.lpips is not None:
                lp = self.lpips(rec.float(), hr.float()).mean()
                loss = loss + loss_cfg.lpips * lp
                stats["lpips"] = lp.item()
            use_gan = loss_cfg.gan > 0 and step >= loss_cfg.gan_start
            if use_gan:
                g_loss = -self.modules["discriminator"](rec).mean()
                loss = loss + loss_cfg.gan * g_loss
                stats["g_adv"] = g_loss.item()
        stats["grad_norm"] = self.optimizer_step("autoencoder", loss, ae.parameters(), cfg.optim.grad_clip)
        stats["loss"] = loss.item()
        if use_gan:
            disc = self.modules["discriminator"]
            with self.autocast():
                d_loss = F.relu(1 - disc(hr)).mean() + F.relu(1 + disc(rec.detach())).mean()
            self.optimizer_step("discriminator", d_loss, disc.parameters(), cfg.optim.grad_clip)
            stats["d_hinge"] = d_loss.item()
        self._restart_dead_codes(step, indices, z.detach().float(), generator)
        stats["codes_used"] = float(indices.unique().numel())
        return stats

    def _restart_dead_codes(self, step: int, indices: torch.Tensor, z: torch.Tensor, generator) -> None:
        every = self.cfg.loss.dead_code_restart_every
        if not every:
            return
        self.code_usage.index_add_(
            0, indices.flatten(), torch.ones_like(indices.flatten(), dtype=torch.float)
        )
        if (step + 1) % every == 0:
            dead = (self.code_usage == 0).nonzero().flatten()
            if len(dead):
                self._seed_codes(z, dead, generator)
            self.code_usage.zero_()

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """Reconstruction of the validation HR photos vs bicubic of their clean x4 LR."""
        ae = self.ema.module
        pairs = load_val_set(self.cfg.data.val_dir)[: self.cfg.data.val_max_images or None]
        ours, bicubic = Scorer(self.device), Scorer(self.device)
        grid, kept = [], []
        for _, hr, lr in pairs:
            x = hr[None].to(self.device) * 2 - 1
            z = ae.encode(x)
            rec = (ae.decode(z)[0].clamp(-1, 1) + 1) / 2
            if self.reference is not None:  # share of codes the reference gives the HR and the upsampled LR
                lq_up = upscale(lr[None].to(self.device) * 2 - 1, SCALE)
                for ours_z, image in ((z, x), (ae.encode(lq_up), lq_up)):
                    same = ae.codebook_indices(ours_z) == ae.codebook_indices(self.reference.encode(image))
                    kept.append(same.float().mean().item())
            clean_lr = bicubic_degradation(hr[None])[0]
            bic = bicubic_up(clean_lr)
            ours.add(rec, hr)
            bicubic.add(bic, hr)
            if len(grid) < 4:
                grid.append([bic, rec.cpu(), hr])
        save_grid(self.out_dir / "samples" / f"step_{step:08d}.png", grid)
        metrics = {f"ae_{k}": v for k, v in ours.mean().items()}
        metrics.update({f"bicubic_{k}": v for k, v in bicubic.mean().items()})
        metrics["psnr_gain_db"] = metrics["ae_psnr_y"] - metrics["bicubic_psnr_y"]
        if kept:
            metrics["codes_kept"] = sum(kept) / len(kept)
        self.export()
        return metrics

    def export(self) -> None:
        """Write the EMA autoencoder as a model directory (`out_dir/model`) for the teacher stage."""
        kwargs = copy.deepcopy(self.model_kwargs)
        save_model_dir(
            self.out_dir / "model",
            unet=None,
            unet_kwargs=None,
            autoencoder=self.ema.module,
            autoencoder_kwargs=kwargs,
            schedule=ScheduleConfig(**load_preset(self.cfg.preset)["diffusion"]),
            meta={"stage": "autoencoder", "step": self.step, "cpu_seconds": self.cpu_seconds},
        )
