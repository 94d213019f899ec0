"""`rsd train prune`: the student with fewer Swin blocks, fitted to reproduce the full student.

A Swin layer at level 0 attends over every latent pixel; the two of the tiny student's UNet make up about
30% of a served tile. This stage builds the student's UNet with `swin_depths` (Swin blocks per level),
keeps every weight that remains (checkpoint.load_pruned_state_dict), and trains it on the full student's
own one-step latents: same LR, same noises, MSE in latent space. The autoencoder is not touched, so the
decoder fitted to the full student's latents still fits (docs/distillation.md, "A pruned student").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.checkpoint import load_model_dir, load_pruned_state_dict, save_model_dir
from training.data.degradations import build_degradation, make_lr
from training.data.loader import DataConfig
from training.diffusion import ScheduleConfig
from training.models import build_unet
from training.pipeline import SRPipeline
from training.trainer import OptimConfig, RunConfig, Trainer


@dataclass
class PruneTrainConfig:
    student: str = "runs/tiny-x4/distill-tmix-fid10/model"  # the full student: the weights and the target
    swin_depths: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    lr_mode: str | dict[str, float] = "realesrgan"
    degradation: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_sizes=[128], batch_size=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, betas=[0.9, 0.99]))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/prune", steps=400))


class PruneTrainer(Trainer):
    cfg: PruneTrainConfig
    single_process_stage = "prune"

    def build(self) -> None:
        cfg = self.cfg
        source = load_model_dir(cfg.student, self.device)
        self.source = source
        self.unet_kwargs = {**source.config["components"]["unet"]["kwargs"], "swin_depths": cfg.swin_depths}
        unet = build_unet(self.unet_kwargs).to(self.device)
        load_pruned_state_dict(unet, source.unet.state_dict(), lambda key: ".blocks." in key, cfg.student)
        self.full = SRPipeline(source.unet.requires_grad_(False).eval(), source.autoencoder, source.schedule)
        self.full.requires_grad_(False).eval()
        self.pruned = SRPipeline(unet, source.autoencoder, source.schedule)
        self.modules["unet"] = unet
        self.add_optimizer("unet", list(unet.parameters()), cfg.optim)
        self.tracked_ema("unet")
        self.degradation = build_degradation(cfg.lr_mode, cfg.degradation)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        hr01 = self.next_hr_batch(cfg.data, step, self.run.steps)
        with torch.no_grad():
            lq = make_lr(hr01, cfg.lr_mode, self.degradation, generator) * 2 - 1  # (B,3,S/4,S/4)
            noises = generator.get_state()  # both pipelines draw the same prior and student noises
            target = self.full.draw_one_step_latent(lq, generator)  # (B,3,S/4,S/4)
        generator.set_state(noises)
        with self.autocast():
            mse = (self.pruned.draw_one_step_latent(lq, generator).float() - target).pow(2).mean()
        stats = {"latent_mse": mse.item()}
        stats["grad_norm"] = self.optimizer_step("unet", mse, list(self.modules["unet"].parameters()),
                                                 cfg.optim.grad_clip)  # fmt: skip
        stats["loss"] = mse.item()
        return stats

    @torch.no_grad()
    def validate(self, step: int) -> dict[str, float]:
        """The EMA pruned student, one step, on the fixed validation set vs bicubic."""
        pipe = SRPipeline(self.ema.module, self.source.autoencoder, self.source.schedule).eval()
        return self.validate_pipeline(pipe, self.cfg.data, step, "one", "student")

    def export(self) -> None:
        """The pruned student (EMA) with the source's autoencoder, as a model directory (`out_dir/model`)."""
        save_model_dir(
            self.out_dir / "model",
            unet=self.ema.module,
            unet_kwargs=self.unet_kwargs,
            autoencoder=self.source.autoencoder,
            autoencoder_kwargs=self.source.config["components"]["autoencoder"]["kwargs"],
            schedule=ScheduleConfig(**self.source.config["diffusion"]),
            meta={"stage": "prune", "step": self.step, "cpu_seconds": self.cpu_seconds},
        )
