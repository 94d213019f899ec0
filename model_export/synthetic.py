"""Random-weight model directories from a preset: export and benchmark the architecture before (or
without) a trained model. Speed does not depend on the weights; parity tests need every path active."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.checkpoint import save_model_dir
from training.diffusion import ScheduleConfig
from training.models import CorrectorConfig, LRCorrector, build_autoencoder, build_student, build_unet
from training.presets import load_preset


@torch.no_grad()
def write_random_model_dir(
    path: str | Path,
    preset: str = "tiny-x4",
    *,
    student: bool = True,
    seed: int = 0,
    corrector: CorrectorConfig | None = None,
) -> Path:
    """A model directory with seeded random weights (and an LR corrector of that config, if given).

    Tensors the constructors zero on purpose (ResBlock output convs, the student's noise slice, the
    resample_skip convs, the corrector's output conv) get small random values, so that every branch, the
    student noise included, reaches the output.
    """
    spec = load_preset(preset)
    torch.manual_seed(seed)
    unet, unet_kwargs = build_unet(spec["unet"]), dict(spec["unet"])
    autoencoder = build_autoencoder(spec["autoencoder"])
    if student:
        unet = build_student(unet)
        unet_kwargs["noise_channels"] = unet.noise_channels
        first = unet.input_blocks[0][0]
        nn.init.normal_(first.weight[:, -unet.noise_channels :], std=0.02)  # the zeroed noise slice
    lr_corrector = LRCorrector(corrector) if corrector is not None else None
    for module in (unet, autoencoder, lr_corrector or nn.Identity()):
        for parameter in module.parameters():
            if not parameter.any():
                nn.init.normal_(parameter, std=0.02)
    return save_model_dir(
        path,
        unet=unet,
        unet_kwargs=unet_kwargs,
        autoencoder=autoencoder,
        autoencoder_kwargs=spec["autoencoder"],
        schedule=ScheduleConfig(**spec["diffusion"]),
        corrector=lr_corrector,
        meta={
            "stage": "student" if student else "teacher",
            "preset": preset,
            "weights": f"random seed {seed}",
        },
    )
