"""Lay an LR image out as overlapping square tiles of the model's sizes and blend the upscaled tiles back.

A graph takes one fixed tile size (its Swin attention masks and bicubic matrices are traced for it), and a
model may have graphs for several sizes (service/backends/model_set.py). Each image gets its own layout,
the one that computes the fewest pixels; rules, each chosen against a known failure of other upscalers:
- the image is cut into rows (or columns, whichever is cheaper) that overlap by `overlap`; a row is a run
  of square tiles of one size, and the row sizes are picked by an exact search (`_cover`, dynamic
  programming), so a 256x256 photo is one 256 tile, not nine overlapping 128 tiles;
- within a run every step is exactly `size - overlap`, so no ragged last tile, and the slack between a
  run and the image is filled by reflect padding split over both ends, which gives border pixels
  real-looking context instead of the model's zero padding;
- overlaps are cross-faded with a sin^2 window (never zero) and normalised by the sum of the windows at
  each pixel, exact for any layout, instead of cropped (Real-ESRGAN: seams) or averaged uniformly
  (ResShift: visible steps);
- the noise the graph takes is cut from one noise image, padded like the image, so overlapping tiles
  agree where they overlap instead of blending two different draws.
The same functions serve the HTTP batcher and `rsd upscale` (`upscale_tiled`).
"""

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rsd.contract import LATENT_CHANNELS, SCALE

# What one more tile costs beyond its own pixels, in LR pixels (a call's fixed work, the border every tile
# pads). Too small to measure on the shared 2-core machine (README, Performance), so 1/16 of a 128 tile,
# which only breaks ties: on typical photo sizes it computes as few pixels as no overhead does, in fewer
# tiles (512x512: 21 instead of 30).
TILE_OVERHEAD = 1024
# Runs longer than this are laid out exactly near their ends only: far from them, only the size that is
# cheapest per covered pixel pays off, and the search stays a few milliseconds for any image.
_EXACT_SPAN = 1024


@dataclass(frozen=True)
class Tile:
    y: int  # origin in the LR image; negative or past the far edge: in the reflect padding
    x: int
    size: int


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one LR image, in the order of `tile_inputs` and `blend_tiles`."""

    height: int  # LR image height
    width: int  # LR image width
    overlap: int
    tiles: tuple[Tile, ...]

    @property
    def count(self) -> int:
        return len(self.tiles)

    def counts(self) -> dict[int, int]:
        """Tile size -> how many tiles of that size."""
        counts: dict[int, int] = {}
        for tile in self.tiles:
            counts[tile.size] = counts.get(tile.size, 0) + 1
        return counts

    @property
    def pixels(self) -> int:
        """LR pixels the model computes for this image."""
        return sum(tile.size**2 for tile in self.tiles)

    def cost(self, unit: int) -> float:
        """The work in tiles of `unit` x `unit` pixels, what the batcher's limits count."""
        return self.pixels / unit**2


class TileBatch(NamedTuple):
    """The graph's inputs for tiles of one size."""

    lq: np.ndarray  # (N, 3, t, t) float32 in [0, 1]
    noise_prior: np.ndarray  # (N, 3, t, t) float32 N(0, 1)
    noise_student: np.ndarray  # (N, 1, t, t) float32 N(0, 1)


def check_overlap(sizes: Iterable[int], overlap: int) -> None:
    smallest = min(sizes)
    if not 0 <= overlap <= smallest // 2:
        raise ValueError(f"overlap {overlap} must be in [0, tile/2] for tile {smallest}")


def _count(length: int, size: int, overlap: int) -> int:
    """Tiles of `size` in a run that covers `length`."""
    return 1 if length <= size else math.ceil((length - overlap) / (size - overlap))


def _origins(length: int, sizes: Sequence[int], overlap: int) -> list[int]:
    """Where a run of overlapping segments of `sizes` starts each one, its slack split over both ends."""
    slack = sum(sizes) - overlap * (len(sizes) - 1) - length
    origins = [-(slack // 2)]
    for size in sizes[:-1]:
        origins.append(origins[-1] + size - overlap)
    return origins


def _cover(length: int, costs: Mapping[int, float], overlap: int) -> tuple[float, list[int]]:
    """(cost, sizes) of the cheapest run of overlapping segments that covers `length`, where `costs` maps
    each segment size to the cost of one segment: dynamic programming over the covered extent, exact up
    to _EXACT_SPAN."""
    cheapest = min(costs, key=lambda s: costs[s] / (s - overlap))
    lead = max(0, (length - _EXACT_SPAN) // (cheapest - overlap))
    rest = length - lead * (cheapest - overlap)  # each lead segment adds (size - overlap) to a run
    limit = rest + max(costs)
    best = [math.inf] * (limit + 1)  # best[e]: cost of the cheapest run covering exactly [0, e)
    parent = [0] * (limit + 1)  # covered extent before the last segment, 0 for the first
    last = [0] * (limit + 1)  # size of the last segment
    for size, cost in costs.items():
        if cost < best[size]:
            best[size], last[size] = cost, size
    for extent in range(1, rest):
        if best[extent] == math.inf:
            continue
        for size, cost in costs.items():
            nxt = extent + size - overlap
            if best[extent] + cost < best[nxt]:
                best[nxt], parent[nxt], last[nxt] = best[extent] + cost, extent, size
    end = min(range(rest, limit + 1), key=best.__getitem__)
    sizes = [cheapest] * lead
    total = best[end] + lead * costs[cheapest]
    while end:
        sizes.append(last[end])
        end = parent[end]
    return total, sorted(sizes, reverse=True)


def plan_tiles(
    height: int, width: int, sizes: Iterable[int], overlap: int, tile_overhead: float = TILE_OVERHEAD
) -> TilePlan:
    """The cheapest layout of an LR image of `height` x `width` in square tiles of `sizes`.

    Cost: the pixels the model computes plus `tile_overhead` per tile. Rows (or columns) are ordered
    largest first; a row's tiles go left to right."""
    sizes = tuple(sizes)
    if height < 1 or width < 1:
        raise ValueError(f"empty image {width}x{height}")
    check_overlap(sizes, overlap)

    def runs(length: int, across: int) -> tuple[float, list[int]]:
        """The cheapest rows along `length`, each a run of tiles across `across`."""
        row_cost = {s: _count(across, s, overlap) * (s * s + tile_overhead) for s in sizes}
        return _cover(length, row_cost, overlap)

    (row_cost, rows), (column_cost, columns) = runs(height, width), runs(width, height)
    transposed = column_cost < row_cost
    length, across, run = (width, height, columns) if transposed else (height, width, rows)
    tiles = []
    for start, size in zip(_origins(length, run, overlap), run, strict=True):
        for offset in _origins(across, [size] * _count(across, size, overlap), overlap):
            tiles.append(Tile(offset, start, size) if transposed else Tile(start, offset, size))
    return TilePlan(height, width, overlap, tuple(tiles))


def tile_inputs(image: np.ndarray, plan: TilePlan, seed: int) -> dict[int, TileBatch]:
    """(H, W, 3) image -> the graph inputs of every tile of `plan`, grouped by size, each size in plan order.

    The noise is drawn from `seed` as an image of its own, reflect-padded with the image and cut with it:
    overlapping tiles see the same noise where they overlap, every layout sees the same noise at a pixel
    (tiles disagree only where their context differs), and batching cannot change the result."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    noise = rng.standard_normal((plan.height, plan.width, LATENT_CHANNELS + 1), dtype=np.float32)
    margin = max(
        max(-t.y, -t.x, t.y + t.size - plan.height, t.x + t.size - plan.width, 0) for t in plan.tiles
    )
    stacked = np.concatenate([image.astype(np.float32, copy=False), noise], axis=2)
    padded = np.pad(stacked, ((margin, margin), (margin, margin), (0, 0)), mode="reflect").transpose(2, 0, 1)
    channels = (3, LATENT_CHANNELS, 1)  # lq, noise_prior, noise_student
    bounds = np.cumsum((0, *channels))
    counts = plan.counts()
    out = {s: TileBatch(*(np.empty((n, c, s, s), np.float32) for c in channels)) for s, n in counts.items()}
    filled = dict.fromkeys(out, 0)
    for t in plan.tiles:
        y, x, k = t.y + margin, t.x + margin, filled[t.size]
        for start, stop, tiles in zip(bounds[:-1], bounds[1:], out[t.size], strict=True):
            tiles[k] = padded[start:stop, y : y + t.size, x : x + t.size]
        filled[t.size] += 1
    return out


def _ramp(size: int, width: int) -> np.ndarray:
    """1-D window: sin^2 rise over `width` samples at both ends, 1 in between; strictly positive."""
    window = np.ones(size, dtype=np.float32)
    if width > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(width, dtype=np.float32) + 0.5) / width) ** 2
        window[:width] = rise
        window[size - width :] = rise[::-1]
    return window


def blend_tiles(tiles: Mapping[int, Iterable[np.ndarray]], plan: TilePlan, scale: int = SCALE) -> np.ndarray:
    """Upscaled (C, s*t, s*t) tiles, per size in plan order -> the (s*H, s*W, C) float32 image."""
    sources = {size: iter(chunks) for size, chunks in tiles.items()}
    windows = {
        size: np.outer(_ramp(scale * size, scale * plan.overlap), _ramp(scale * size, scale * plan.overlap))
        for size in plan.counts()
    }  # (st, st) per size
    height, width = scale * plan.height, scale * plan.width
    weight = np.zeros((height, width), np.float32)
    acc: np.ndarray | None = None
    for t in plan.tiles:
        tile, window = next(sources[t.size]), windows[t.size]
        if acc is None:
            acc = np.zeros((tile.shape[0], height, width), np.float32)  # (C, sH, sW)
        y0, x0, st = scale * t.y, scale * t.x, scale * t.size
        ty, tx = slice(max(0, -y0), min(st, height - y0)), slice(max(0, -x0), min(st, width - x0))
        oy, ox = slice(y0 + ty.start, y0 + ty.stop), slice(x0 + tx.start, x0 + tx.stop)
        acc[:, oy, ox] += tile[:, ty, tx] * window[ty, tx]
        weight[oy, ox] += window[ty, tx]
    assert acc is not None
    acc /= weight
    return np.ascontiguousarray(acc.transpose(1, 2, 0))


Infer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def upscale_tiled(
    rgb: np.ndarray,
    infer: Infer,
    *,
    sizes: Iterable[int],
    overlap: int,
    seed: int,
    batch_limits: Mapping[int, int],
    scale: int = SCALE,
) -> np.ndarray:
    """Synchronous whole-image path (the `rsd upscale` command): (H, W, 3) -> (sH, sW, 3) float32.

    `infer(lq, noise_prior, noise_student) -> sr` is a backend's `run`; tiles of each size go through it
    in chunks of `batch_limits[size]`. Gives the same result as the service for the same seed.
    """
    plan = plan_tiles(rgb.shape[0], rgb.shape[1], sizes, overlap)
    results = {}
    for size, batch in tile_inputs(rgb, plan, seed).items():
        step = batch_limits[size]
        chunks = [infer(*(a[i : i + step] for a in batch)) for i in range(0, len(batch.lq), step)]
        results[size] = itertools.chain.from_iterable(chunks)
    return blend_tiles(results, plan, scale)
