"""Scoring on the fixed validation set (`rsd data make-val`) and PNG sample grids, shared by trainers
and `rsd eval`. Images are float tensors (3, H, W) in [0, 1]; metrics are PSNR/SSIM on Y and LPIPS-alex."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.metrics import LPIPS, psnr_y, ssim_y
from training.resample import upscale


def bicubic_up(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Plain bicubic x4 (the baseline every model is compared with), clamped to [0, 1]."""
    return upscale(lr[None], scale)[0].clamp(0, 1)


class Scorer:
    """PSNR-Y, SSIM-Y and LPIPS-alex of (sr, hr) pairs, averaged."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.lpips = LPIPS("alex").to(self.device)
        self.rows: list[dict[str, float]] = []

    @torch.no_grad()
    def add(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        sr, hr = sr.clamp(0, 1).cpu(), hr.cpu()
        lp = self.lpips(sr[None].to(self.device) * 2 - 1, hr[None].to(self.device) * 2 - 1)
        row = {"psnr_y": psnr_y(sr, hr), "ssim_y": ssim_y(sr, hr), "lpips_alex": float(lp)}
        self.rows.append(row)
        return row

    def mean(self) -> dict[str, float]:
        return {k: float(np.mean([r[k] for r in self.rows])) for k in self.rows[0]} if self.rows else {}


def save_grid(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """Write rows of equally sized images (3, H, W) in [0, 1] as one PNG."""
    strips = [torch.cat([img.clamp(0, 1).cpu() for img in row], dim=2) for row in rows]
    grid = torch.cat(strips, dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@torch.no_grad()
def score_pipeline(
    pipe, pairs, device: torch.device, steps: str, label: str, grid_path: Path
) -> dict[str, float]:
    """Upscale every validation pair with `pipe` (seeded per image) and score it next to bicubic."""
    ours, bicubic = Scorer(device), Scorer(device)
    grid = []
    for index, pair in enumerate(pairs):
        generator = torch.Generator(device).manual_seed(index)
        sr = pipe.upscale(pair.lr[None].to(device), generator, steps=steps)[0]
        bic = bicubic_up(pair.lr)
        ours.add(sr, pair.hr)
        bicubic.add(bic, pair.hr)
        if len(grid) < 4:
            grid.append([bic, sr.cpu(), pair.hr])
    save_grid(grid_path, grid)
    metrics = {f"{label}_{k}": v for k, v in ours.mean().items()}
    metrics.update({f"bicubic_{k}": v for k, v in bicubic.mean().items()})
    metrics["psnr_gain_db"] = metrics[f"{label}_psnr_y"] - metrics["bicubic_psnr_y"]
    return metrics
