"""rsd: x4 super-resolution with one-step residual shifting diffusion."""

__version__ = "0.1.0"
