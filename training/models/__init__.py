"""Model definitions with the official ResShift parameter names (see README, "Official checkpoints")."""

from torch import nn

from training.models.autoencoder import VQModelTorch
from training.models.corrector import CorrectorConfig, LRCorrector, build_corrector
from training.models.light_autoencoder import ARCHITECTURE as LIGHT
from training.models.light_autoencoder import LIGHT_ENCODER_VQ, LightAutoencoder, LightEncoderVQ
from training.models.unet import UNetModelSwin, build_student, build_unet


def build_autoencoder(kwargs: dict) -> nn.Module:
    """Build from a kwargs dict as stored in configs/checkpoints (e.g. the official `autoencoder.params`):
    the VQ model, the light serving model (`architecture: light`) or the light encoder in front of a VQ model
    (`architecture: light_encoder+vq`)."""
    if kwargs.get("architecture") == LIGHT:
        return LightAutoencoder(**kwargs)
    if kwargs.get("architecture") == LIGHT_ENCODER_VQ:
        return LightEncoderVQ(**kwargs)
    return VQModelTorch(**kwargs)


__all__ = [
    "CorrectorConfig",
    "LRCorrector",
    "LightAutoencoder",
    "LightEncoderVQ",
    "UNetModelSwin",
    "VQModelTorch",
    "build_autoencoder",
    "build_corrector",
    "build_student",
    "build_unet",
]
