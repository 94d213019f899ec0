"""Photo folders (scan, decode, crop) and the batch-level training-pair pool.

The trainers' batches of clean HR crops in [0, 1] come from `loader.py`, which uses these helpers.
LR synthesis (`degradations.make_lr`) runs on collated batches, on the training device. The model sees
images in [-1, 1] (`to_model_range`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def scan_images(root: str | Path) -> list[Path]:
    """Every png/jpg/jpeg/webp file under root (recursive, any suffix case), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    paths = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def load_rgb(path: str | Path) -> Image.Image:
    """Decoded 8-bit RGB image, EXIF orientation applied. Raises on unreadable or truncated files."""
    with Image.open(path) as im:
        im.load()
        return ImageOps.exif_transpose(im).convert("RGB")


def crop_hr(im: Image.Image, size: int, rng: np.random.Generator | None, rescale: bool) -> Image.Image:
    """A size x size HR crop: random position from rng, or the centre when rng is None.

    Images whose short side is below `size` are first upscaled (bicubic) to fit. With rescale, the crop is
    the largest square (side = short side) area-resized to size, like the reference's `rescale_gt`: the
    crop then shows the whole scene rather than a detail of it."""
    w, h = im.size
    if min(w, h) < size:
        f = size / min(w, h)
        im = im.resize((max(size, round(w * f)), max(size, round(h * f))), Image.Resampling.BICUBIC)
        w, h = im.size
    side = min(w, h) if rescale else size
    if rng is None:
        x, y = (w - side) // 2, (h - side) // 2
    else:
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    im = im.crop((x, y, x + side, y + side))
    return im.resize((size, size), Image.Resampling.BOX) if side != size else im


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3,H,W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float() / 255


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of every image the networks see."""
    return x * 2 - 1


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


class TrainingPairPool:
    """Real-ESRGAN's training-pair queue: a pool of `capacity` (HR, LR) pairs on the training device.

    Each degraded batch goes into the pool and a random batch of older pairs comes out, which mixes pairs
    from different degradation batches (whose resize factor and mode are drawn once per batch). While the
    pool fills, batches pass through unchanged. capacity must be a multiple of the batch size."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.hr: torch.Tensor | None = None
        self.lr: torch.Tensor | None = None
        self.count = 0

    def __call__(
        self, hr: torch.Tensor, lr: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = hr.shape[0]
        if self.capacity % b:
            raise ValueError(f"pool capacity {self.capacity} is not a multiple of the batch size {b}")
        if self.hr is None:
            self.hr = hr.new_empty((self.capacity, *hr.shape[1:]))
            self.lr = lr.new_empty((self.capacity, *lr.shape[1:]))
        if self.count < self.capacity:
            self.hr[self.count : self.count + b] = hr
            self.lr[self.count : self.count + b] = lr
            self.count += b
            return hr, lr
        idx = torch.randperm(self.capacity, generator=generator, device=generator.device)[:b].to(hr.device)
        out = self.hr[idx], self.lr[idx]  # advanced indexing copies
        self.hr[idx] = hr
        self.lr[idx] = lr
        return out
