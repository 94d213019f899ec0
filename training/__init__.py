"""Torch side of rsd: model definitions, diffusion, data, metrics and trainers."""
