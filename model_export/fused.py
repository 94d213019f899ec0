"""The fused one-step upscaler: LR tile in [0, 1] plus noise in, x4 tile in [0, 1] out (rsd/contract.py).

Everything between the two ends is `training.pipeline.SRPipeline`, so the exported graph, the service's
torch backend and validation compute the same thing:

    lq (B,3,t,t) [0,1] -> 2x-1 -> bicubic x4 -> VQ encoder -> z_y (B,3,t,t)
      -> x_T = z_y + kappa sqrt(eta_T) noise_prior -> scale -> one student step at t = T
      -> z_0 (B,3,t,t) -> quantize -> VQ decoder -> clamp -> (x+1)/2 -> sr (B,3,4t,4t) [0,1]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

import rsd
from rsd import contract
from training.checkpoint import CONFIG_FILE, ModelBundle, load_model_dir
from training.pipeline import SRPipeline, lr_multiple


class FusedUpscaler(nn.Module):
    """forward(lq, noise_prior, noise_student) -> sr; a teacher ignores noise_student (one-step x0 guess).

    with_indices adds the codebook indices of z_0 (B,t,t) as a second output, so parity checks can compare
    the quantisation of two implementations; the served graph never has it.
    """

    def __init__(self, pipeline: SRPipeline, with_indices: bool = False):
        super().__init__()
        self.pipeline = pipeline
        self.with_indices = with_indices

    @property
    def tile_multiple(self) -> int:
        return lr_multiple(self.pipeline.unet)

    def forward(
        self, lq: torch.Tensor, noise_prior: torch.Tensor, noise_student: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        student_noise = noise_student if self.pipeline.noise_channels else None
        z0 = self.pipeline.one_step_latent(lq * 2 - 1, noise_prior, student_noise)  # (B,3,t,t)
        sr = self.pipeline.autoencoder.decode(z0).clamp(-1, 1)  # (B,3,4t,4t)
        sr = (sr + 1) / 2
        if self.with_indices:
            return sr, self.pipeline.autoencoder.codebook_indices(z0)
        return sr


def build_fused(bundle: ModelBundle, with_indices: bool = False) -> FusedUpscaler:
    if bundle.unet is None or bundle.autoencoder is None:
        raise ValueError("a model directory for export needs both a unet and an autoencoder")
    pipeline = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule)
    return FusedUpscaler(pipeline, with_indices).eval().requires_grad_(False)


def model_name(model_dir: Path) -> str:
    """The directory's name, or its parent's for the trainers' `<run>/model` layout."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def config_hash(model_dir: Path) -> str:
    """sha256 of config.json: names the training run and architecture a graph was exported from."""
    return hashlib.sha256((Path(model_dir) / CONFIG_FILE).read_bytes()).hexdigest()


def model_metadata(
    model_dir: Path, config: dict, *, tile: int, precision: str, name: str | None = None
) -> dict[str, str]:
    """The `rsd.*` metadata every exported artefact carries (all values strings, rsd/contract.py)."""
    return {
        contract.META_NAME: name or model_name(model_dir),
        contract.META_VERSION: rsd.__version__,
        contract.META_SCALE: str(contract.SCALE),
        contract.META_TILE: str(tile),
        contract.META_PRECISION: precision,
        contract.META_SCHEDULE: json.dumps(config["diffusion"], sort_keys=True),
        contract.META_CONFIG_HASH: config_hash(model_dir),
        contract.META_TRAINING: json.dumps(config.get("meta", {}), sort_keys=True),
    }


def load_fused_module(
    model_dir: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tile: int = contract.DEFAULT_TILE,
) -> tuple[FusedUpscaler, dict[str, str]]:
    """(module, rsd.* metadata) for the service's torch backend.

    In half precision the codebook stays fp32: the quantizer already computes distances in fp32, and a
    rounded codebook would move the Voronoi boundaries.
    """
    model_dir = Path(model_dir)
    bundle = load_model_dir(model_dir)
    module = build_fused(bundle)
    if tile % module.tile_multiple:
        raise ValueError(f"tile {tile} is not a multiple of {module.tile_multiple} for this model")
    quantize = module.pipeline.autoencoder.quantize
    codebook = quantize.embedding.weight.detach().clone()  # (n_e, C) fp32
    module.to(device=device, dtype=dtype)
    quantize.to(dtype=torch.float32).embedding.weight.copy_(codebook)
    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return module, model_metadata(model_dir, bundle.config, tile=tile, precision=precision)
