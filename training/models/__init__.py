"""Model definitions with the official ResShift parameter names (see README, "Official checkpoints")."""

from training.models.autoencoder import VQModelTorch, build_autoencoder
from training.models.unet import UNetModelSwin, build_student, build_unet

__all__ = ["UNetModelSwin", "VQModelTorch", "build_autoencoder", "build_student", "build_unet"]
