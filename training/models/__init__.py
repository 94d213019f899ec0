"""Model definitions with the official ResShift parameter names (see README, "Official checkpoints")."""

from torch import nn

from training.models.autoencoder import VQModelTorch
from training.models.light_autoencoder import ARCHITECTURE as LIGHT
from training.models.light_autoencoder import LightAutoencoder
from training.models.unet import UNetModelSwin, build_student, build_unet


def build_autoencoder(kwargs: dict) -> nn.Module:
    """Build from a kwargs dict as stored in configs/checkpoints (e.g. the official `autoencoder.params`):
    the VQ model, or the light serving model when kwargs name `architecture: light`."""
    if kwargs.get("architecture") == LIGHT:
        return LightAutoencoder(**kwargs)
    return VQModelTorch(**kwargs)


__all__ = [
    "LightAutoencoder",
    "UNetModelSwin",
    "VQModelTorch",
    "build_autoencoder",
    "build_student",
    "build_unet",
]
