"""`rsd train decoder`: fine-tune the VQ decoder on a one-step student's own latents.

The autoencoder learned to decode (quantised) latents of HR photos; a student's one-step latents of
degraded LR are another distribution. This stage freezes the student and the encoder (so z_y and the
latent space stay as they are) and trains only post_quant_conv and the decoder on (student latent ->
HR) pairs with MSE + L1 + LPIPS. With `decode_quantized: false` (the default here) the decoder reads the
continuous latent, without the codebook lookup the official sampler does; the exported autoencoder
records that, so the pipeline, the fused graph and the service decode the same way
(docs/distillation.md, "A decoder adapted to the student"). `decoder_blocks` prunes the decoder first
(fewer ResnetBlocks per level; the remaining ones keep their weights), so that a cheaper decoder is
fitted from the current one (docs/distillation.md, "A pruned decoder").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.checkpoint import load_model_dir, load_pruned_state_dict, save_model_dir
from training.data.degradations import build_degradation, make_lr
from training.data.loader import DataConfig
from training.diffusion import ScheduleConfig
from training.metrics import LPIPS
from training.models import build_autoencoder
from training.pipeline import SRPipeline
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class DecoderLossConfig:
    mse: float = 20.0
    l1: float = 1.0
    lpips: float = 0.1  # LPIPS-alex; more trades PSNR for LPIPS


@dataclass
class DecoderTrainConfig:
    student: str = "runs/tiny-x4/distill-tmix-fid10/model"  # its UNet makes the latents (frozen)
    autoencoder: str = "runs/tiny-x4/autoencoder-slim/model"  # the one to fine-tune; same latent space
    decode_quantized: bool = False
    decoder_blocks: list[int] | None = None  # per level, 0 = full resolution; None keeps the source's
    lr_mode: str | dict[str, float] = "realesrgan"
    degradation: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, betas=[0.9, 0.99]))
    loss: DecoderLossConfig = field(default_factory=DecoderLossConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/decoder", steps=400))


class DecoderTrainer(Trainer):
    cfg: DecoderTrainConfig
    single_process_stage = "decoder"

    def build(self) -> None:
        cfg = self.cfg
        student = load_model_dir(cfg.student, self.device)
        source = load_model_dir(cfg.autoencoder, self.device)
        self.schedule = student.schedule
        kwargs = source.config["components"]["autoencoder"]["kwargs"]
        if cfg.decoder_blocks is not None:
            ddconfig = {**kwargs["ddconfig"], "decoder_blocks": list(cfg.decoder_blocks)}
            kwargs = {**kwargs, "ddconfig": ddconfig}
        self.autoencoder_kwargs = {**kwargs, "decode_quantized": cfg.decode_quantized}
        ae = build_autoencoder(self.autoencoder_kwargs).to(self.device)
        load_pruned_state_dict(
            ae,
            source.autoencoder.state_dict(),
            lambda key: key.startswith("decoder.up.") and ".block." in key,  # a dropped decoder block
            cfg.autoencoder,
        )
        ae.requires_grad_(False)
        self.trained = [*ae.post_quant_conv.parameters(), *ae.decoder.parameters()]
        for p in self.trained:
            p.requires_grad_(True)
        self.unet = student.unet.requires_grad_(False).eval()
        self.pipe = SRPipeline(self.unet, ae, self.schedule).eval()  # encoder and UNet frozen, in eval mode
        self.modules["autoencoder"] = ae
        self.add_optimizer("autoencoder", self.trained, cfg.optim)
        self.tracked_ema("autoencoder")
        self.lpips = LPIPS("alex").to(self.device) if cfg.loss.lpips > 0 else None
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)
        self.student_config = student.config

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        ae = self.modules["autoencoder"]
        hr01 = self.next_hr_batch(cfg.data, step, self.run.steps)
        hr = hr01 * 2 - 1  # (B,3,S,S)
        with torch.no_grad():
            lq = make_lr(hr01, cfg.lr_mode, self.degradation, generator) * 2 - 1  # (B,3,S/4,S/4)
            z0 = self.pipe.draw_one_step_latent(lq, generator)  # (B,3,S/4,S/4)
        with self.autocast():
            sr = ae.decode(z0).clamp(-1, 1).float()  # straight-through quantisation when decode_quantized
            mse, l1 = (sr - hr).pow(2).mean(), (sr - hr).abs().mean()
            loss = loss_cfg.mse * mse + loss_cfg.l1 * l1
            stats = {"mse": mse.item(), "l1": l1.item()}
            if self.lpips is not None:
                lp = self.lpips(sr, hr.float()).mean()
                loss = loss + loss_cfg.lpips * lp
                stats["lpips"] = lp.item()
        stats["grad_norm"] = self.optimizer_step("autoencoder", loss, self.trained, cfg.optim.grad_clip)
        stats["loss"] = loss.item()
        return stats

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """The student on the EMA autoencoder, one step, on the fixed validation set vs bicubic."""
        pipe = SRPipeline(self.unet, self.ema.module, self.schedule).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, "one", "student")

    def export(self) -> None:
        """Write the EMA autoencoder as a model directory (`out_dir/model`), for copy_model_dir's
        `autoencoder_from`."""
        save_model_dir(
            self.out_dir / "model",
            unet=None,
            unet_kwargs=None,
            autoencoder=self.ema.module,
            autoencoder_kwargs=self.autoencoder_kwargs,
            schedule=ScheduleConfig(**self.student_config["diffusion"]),
            meta={"stage": "decoder", "step": self.step, "cpu_seconds": self.cpu_seconds},
        )
