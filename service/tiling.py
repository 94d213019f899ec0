"""Cut an LR image into fixed-size overlapping tiles and blend the upscaled tiles back (numpy only).

The exported graph takes one fixed tile size (its Swin attention masks are traced for it), so any image
is served as a grid of tiles. Rules, each chosen against a known failure of other upscalers:
- tile counts are chosen first and every step is exactly `tile - overlap`, so no ragged last tile;
- the slack between the grid and the image is filled by reflect padding split over both borders, which
  gives border pixels real-looking context instead of the model's zero padding, at no extra tile;
- overlaps are cross-faded with a sin^2 window (never zero, so the normalised sum is exact) instead of
  cropped (Real-ESRGAN: seams) or averaged uniformly (ResShift: visible steps).
The same functions serve the HTTP batcher and the offline `rsd upscale` path (`upscale_tiled`).
"""

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from rsd.contract import LATENT_CHANNELS, SCALE


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one LR image lie, in the coordinates of the reflect-padded image."""

    height: int  # LR image height
    width: int  # LR image width
    tile: int
    overlap: int
    pad_top: int
    pad_left: int
    ys: tuple[int, ...]  # tile origins along y in the padded image
    xs: tuple[int, ...]  # tile origins along x in the padded image

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def padded_height(self) -> int:
        return self.ys[-1] + self.tile

    @property
    def padded_width(self) -> int:
        return self.xs[-1] + self.tile

    def origins(self) -> Iterable[tuple[int, int]]:
        """Tile origins in row-major order, the order of `extract_tiles` and `blend_tiles`."""
        return itertools.product(self.ys, self.xs)


def _axis(length: int, tile: int, overlap: int) -> tuple[int, int, tuple[int, ...]]:
    """(pad_before, pad_after, origins) along one axis."""
    step = tile - overlap
    n = 1 if length <= tile else math.ceil((length - overlap) / step)
    slack = n * step + overlap - length
    return slack // 2, slack - slack // 2, tuple(i * step for i in range(n))


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """The tile grid of an LR image of `height` x `width` pixels."""
    if height < 1 or width < 1:
        raise ValueError(f"empty image {width}x{height}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap {overlap} must be in [0, tile/2] for tile {tile}")
    top, _, ys = _axis(height, tile, overlap)
    left, _, xs = _axis(width, tile, overlap)
    return TileGrid(height, width, tile, overlap, top, left, ys, xs)


def extract_tiles(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W, C) image -> (N, C, tile, tile) float32 tiles of the reflect-padded image."""
    pad_bottom = grid.padded_height - grid.height - grid.pad_top
    pad_right = grid.padded_width - grid.width - grid.pad_left
    padded = np.pad(image, ((grid.pad_top, pad_bottom), (grid.pad_left, pad_right), (0, 0)), mode="reflect")
    t = grid.tile
    tiles = np.empty((grid.count, image.shape[2], t, t), dtype=np.float32)
    for i, (y, x) in enumerate(grid.origins()):
        tiles[i] = padded[y : y + t, x : x + t].transpose(2, 0, 1)
    return tiles


def _ramp(size: int, width: int) -> np.ndarray:
    """1-D window: sin^2 rise over `width` samples at both ends, 1 in between; strictly positive."""
    window = np.ones(size, dtype=np.float32)
    if width > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(width, dtype=np.float32) + 0.5) / width) ** 2
        window[:width] = rise
        window[size - width :] = rise[::-1]
    return window


def _axis_weight(ramp: np.ndarray, origins: tuple[int, ...], scale: int, length: int) -> np.ndarray:
    """Sum of the 1-D windows of all tiles along one axis, (length,)."""
    total = np.zeros(length, np.float32)
    for origin in origins:
        total[scale * origin : scale * origin + len(ramp)] += ramp
    return total


def blend_tiles(tiles: Iterable[np.ndarray], grid: TileGrid, scale: int = SCALE) -> np.ndarray:
    """Upscaled (C, s*tile, s*tile) tiles in grid order -> the (s*H, s*W, C) float32 image."""
    st, so = scale * grid.tile, scale * grid.overlap
    ramp = _ramp(st, so)  # (st,)
    # The window is separable and the grid a product, so the weights sum per axis: each tile's window
    # is divided by those sums up front and the accumulated image needs no normalisation pass.
    wy = _axis_weight(ramp, grid.ys, scale, scale * grid.padded_height)
    wx = _axis_weight(ramp, grid.xs, scale, scale * grid.padded_width)
    acc: np.ndarray | None = None
    weighted = np.empty(0, np.float32)
    for (y, x), tile in zip(grid.origins(), tiles, strict=True):
        if acc is None:
            acc = np.zeros((tile.shape[0], len(wy), len(wx)), np.float32)  # (C, sPH, sPW)
            weighted = np.empty(tile.shape, np.float32)  # (C, st, st), reused
        y0, x0 = scale * y, scale * x
        window = np.outer(ramp / wy[y0 : y0 + st], ramp / wx[x0 : x0 + st])  # (st, st)
        np.multiply(tile, window, out=weighted)
        acc[:, y0 : y0 + st, x0 : x0 + st] += weighted
    assert acc is not None
    top, left = scale * grid.pad_top, scale * grid.pad_left
    out = acc[:, top : top + scale * grid.height, left : left + scale * grid.width]  # (C, sH, sW)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def tile_noise(seed: int, count: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile noise for the graph, a pure function of (seed, tile index).

    So the same seed and image give the same bytes however the tiles were batched with other requests.
    Returns noise_prior (N, 3, t, t) and noise_student (N, 1, t, t), float32 N(0, 1).
    """
    prior = np.empty((count, LATENT_CHANNELS, tile, tile), np.float32)
    student = np.empty((count, 1, tile, tile), np.float32)
    for i in range(count):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, i))))
        prior[i] = rng.standard_normal((LATENT_CHANNELS, tile, tile), dtype=np.float32)
        student[i] = rng.standard_normal((1, tile, tile), dtype=np.float32)
    return prior, student


Infer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def upscale_tiled(
    rgb: np.ndarray, infer: Infer, *, tile: int, overlap: int, seed: int, max_batch: int, scale: int = SCALE
) -> np.ndarray:
    """Synchronous whole-image path (the `rsd upscale` command): (H, W, 3) -> (sH, sW, 3) float32.

    `infer(lq, noise_prior, noise_student) -> sr` is a backend's `run`; tiles go through it in chunks of
    `max_batch`. Gives the same result as the service for the same seed.
    """
    grid = plan_tiles(rgb.shape[0], rgb.shape[1], tile, overlap)
    lq = extract_tiles(rgb, grid)
    prior, student = tile_noise(seed, grid.count, tile)
    chunks = (
        infer(lq[i : i + max_batch], prior[i : i + max_batch], student[i : i + max_batch])
        for i in range(0, grid.count, max_batch)
    )
    return blend_tiles(itertools.chain.from_iterable(chunks), grid, scale)
