"""The fused one-step upscaler: LR tile in [0, 1] plus noise in, x4 tile in [0, 1] out (rsd/contract.py).

Everything between the two ends is `training.pipeline.SRPipeline`, so the exported graph, the service's
torch backend and validation compute the same thing:

    lq (B,3,t,t) [0,1] -> 2x-1 -> bicubic x4 -> VQ encoder -> z_y (B,3,t,t)
      -> x_T = z_y + kappa sqrt(eta_T) noise_prior -> scale -> one student step at t = T
      -> z_0 (B,3,t,t) -> quantize (unless decode_quantized=False) -> VQ decoder -> clamp -> (x+1)/2
      -> LR corrector with lq, if the model directory has one (training/models/corrector.py)
      -> sr (B,3,4t,4t) [0,1]
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
    """forward(lq, noise_prior, noise_student) -> sr; a teacher ignores noise_student (one-step x0 guess)."""

    def __init__(self, pipeline: SRPipeline):
        super().__init__()
        self.pipeline = pipeline

    @property
    def tile_multiple(self) -> int:
        return lr_multiple(self.pipeline.unet)

    def latent(
        self, lq: torch.Tensor, noise_prior: torch.Tensor, noise_student: torch.Tensor
    ) -> torch.Tensor:
        """z_0 (B,3,t,t): the pre-quantisation latent of the one student step."""
        student_noise = noise_student if self.pipeline.noise_channels else None
        with _autocast(lq):
            return self.pipeline.one_step_latent(lq * 2 - 1, noise_prior, student_noise)

    def decode(self, z0: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """z_0 (B,3,t,t) -> sr (B,3,4t,4t) in [0, 1]: quantise in fp32 (if the autoencoder does), decode in
        `dtype`."""
        ae = self.pipeline.autoencoder
        low = dtype != torch.float32
        # Nearest code outside autocast: ||e||^2 - 2 z.e cancels badly in half precision.
        # (Casts only when needed: the tracer would record no-op casts into the fp32 graph.)
        z_q = z0.float() if low else z0  # (B,3,t,t)
        if ae.decode_quantized:
            z_q, _, _ = ae.quantize(z_q)
        with torch.autocast(z0.device.type, dtype=dtype, enabled=low):
            sr = ae.decode(z_q, force_not_quantize=True).clamp(-1, 1)  # (B,3,4t,4t)
        sr = (sr + 1) / 2
        return sr.to(dtype) if low else sr

    def correct(self, sr: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """sr (B,3,4t,4t) corrected towards lq (B,3,t,t) in fp32, if the model has an LR corrector."""
        if self.pipeline.corrector is None:
            return sr
        if sr.dtype == torch.float32:
            return self.pipeline.correct(sr, lq)
        return self.pipeline.correct(sr.float(), lq.float()).to(sr.dtype)

    def forward(
        self, lq: torch.Tensor, noise_prior: torch.Tensor, noise_student: torch.Tensor
    ) -> torch.Tensor:
        """Computes in the inputs' dtype: fp32 exactly, fp16/bf16 under autocast with fp32 quantisation
        and correction."""
        return self.correct(self.decode(self.latent(lq, noise_prior, noise_student), lq.dtype), lq)


def _autocast(x: torch.Tensor) -> torch.autocast:
    """Autocast to x's dtype when it is a half type, off for fp32."""
    return torch.autocast(x.device.type, dtype=x.dtype, enabled=x.dtype != torch.float32)


def build_fused(bundle: ModelBundle) -> FusedUpscaler:
    if bundle.unet is None or bundle.autoencoder is None:
        raise ValueError("a model directory for export needs both a unet and an autoencoder")
    pipeline = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule, bundle.corrector)
    return FusedUpscaler(pipeline).eval().requires_grad_(False)


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

    Weights stay fp32 on `device`; `dtype` is the precision the caller feeds (fp16/bf16 inputs run under
    autocast, see FusedUpscaler.forward) and the one the metadata names.
    """
    model_dir = Path(model_dir)
    bundle = load_model_dir(model_dir, device=device)
    module = build_fused(bundle)
    if tile % module.tile_multiple:
        raise ValueError(f"tile {tile} is not a multiple of {module.tile_multiple} for this model")
    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return module, model_metadata(model_dir, bundle.config, tile=tile, precision=precision)
