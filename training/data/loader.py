"""Resumable, DDP-aware batches of random HR crops.

Batch k of rank r depends only on (seed, k, r): which files, where each crop sits, its flip and the
crop size. A resumed run therefore sees exactly the batches it would have seen, with any number of
DataLoader workers, and no sampler state has to be checkpointed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from training.data.dataset import load_rgb, scan_images

AUGMENTATIONS = ("rot90", "rgb_permute")
_RGB_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass
class DataConfig:
    train_dir: str = "data/demo/train"
    extra_train_dirs: list[str] = field(default_factory=list)  # more photos, train only (data/more/train)
    val_dir: str = "data/demo/val-realesrgan"
    crop_sizes: list[int] = field(default_factory=lambda: [64])  # HR crop side, one drawn per step
    # Photo scales, one drawn per crop: a crop at scale s covers size/s pixels of the photo, Lanczos-shrunk
    # to size. Real-ESRGAN trains on such a multi-scale copy of DF2K (1, 0.75, 0.5, 1/3): more views of
    # few photos. [1.0] = plain crops.
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Extra views of every crop, drawn per crop. Off, a crop is only mirrored left-right (as Real-ESRGAN).
    # "rot90": any of the 8 rotations and mirrorings; "rgb_permute": one of the 6 orders of the colour
    # channels (an orange forest becomes a blue or a green one): new colours for few photos.
    augment: list[str] = field(default_factory=list)
    batch_size: int = 16
    num_workers: int = 0
    val_max_images: int = 0  # 0 = all

    def validate(self) -> None:
        if not self.crop_sizes or any(s % 4 for s in self.crop_sizes):
            raise ValueError("data.crop_sizes must be non-empty multiples of 4")
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise ValueError("data.scales must be non-empty, each in (0, 1]")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"data.augment: unknown {sorted(unknown)}; choose from {list(AUGMENTATIONS)}")


def read_rgb(path: Path) -> np.ndarray | None:
    """HWC uint8 RGB, or None (with a warning) when the file cannot be decoded."""
    try:
        return np.asarray(load_rgb(path))
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
        warnings.warn(f"skipping unreadable image {path}: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


class CropDataset(Dataset):
    """Random crops addressed by (file index, crop size, seed); decoded images cached per worker."""

    def __init__(
        self,
        files: Sequence[Path],
        cache: bool = True,
        scales: Sequence[float] = (1.0,),
        augment: Sequence[str] = (),
    ):
        self.files = list(files)
        self.cache = cache
        self.scales = list(scales)
        self.augment = frozenset(augment)
        self._images: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, index: int) -> np.ndarray | None:
        if index in self._images:
            return self._images[index]
        image = read_rgb(self.files[index])
        if self.cache:
            self._images[index] = image
        return image

    def __getitem__(self, key: tuple[int, int, int]) -> torch.Tensor:
        index, size, seed = key
        rng = np.random.default_rng(seed)
        # With one scale nothing is drawn, so plain runs keep the exact crops they had before scales existed.
        scale = self.scales[int(rng.integers(len(self.scales)))] if len(self.scales) > 1 else self.scales[0]
        side = round(size / scale)  # photo pixels under the crop
        image = self._image(index)
        tries = 0
        while image is None or min(image.shape[:2]) < side:
            tries += 1  # unreadable or too small: deterministically pick another file
            if tries > len(self.files):
                raise RuntimeError(f"no readable image of at least {side}px among {len(self.files)} files")
            index = int(rng.integers(len(self.files)))
            image = self._image(index)
        h, w = image.shape[:2]
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = image[top : top + side, left : left + side]
        if side != size:
            crop = np.array(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        # Drawn after the flip, only when asked, so runs without them keep their exact crops.
        if "rot90" in self.augment:
            crop = np.rot90(crop, k=int(rng.integers(4)))
        if "rgb_permute" in self.augment:
            crop = crop[:, :, list(_RGB_ORDERS[int(rng.integers(6))])]
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0)


class StepBatchSampler(Sampler):
    """Yields, for steps start..end-1, the list of (file, crop size, seed) keys of this rank's batch."""

    def __init__(
        self,
        num_files: int,
        batch_size: int,
        crop_sizes: Sequence[int],
        seed: int,
        start: int,
        end: int,
        rank: int,
    ):
        self.num_files, self.batch_size, self.crop_sizes = num_files, batch_size, list(crop_sizes)
        self.seed, self.start, self.end, self.rank = seed, start, end, rank

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, step, self.rank, 0xC0DE])
        size = int(self.crop_sizes[int(rng.integers(len(self.crop_sizes)))])
        files = rng.integers(self.num_files, size=self.batch_size)
        seeds = rng.integers(2**31, size=self.batch_size)
        return [(int(f), size, int(s)) for f, s in zip(files, seeds, strict=True)]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start, self.end):
            yield self.keys(step)


def step_batches(
    roots: Sequence[str | Path],
    *,
    batch_size: int,
    crop_sizes: Sequence[int],
    seed: int,
    start: int,
    end: int,
    rank: int = 0,
    num_workers: int = 0,
    scales: Sequence[float] = (1.0,),
    augment: Sequence[str] = (),
) -> Iterator[torch.Tensor]:
    """Iterate HR batches (B, 3, S, S) in [0, 1] for steps start..end-1, over the photos of all roots."""
    files = [f for root in roots for f in scan_images(root)]
    if not files:
        raise FileNotFoundError(f"no png/jpg/webp images under {', '.join(map(str, roots))}")
    sampler = StepBatchSampler(len(files), batch_size, crop_sizes, seed, start, end, rank)
    loader = DataLoader(
        CropDataset(files, scales=scales, augment=augment),
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    return iter(loader)
