"""Upscale files without the server (the `rsd upscale` command): same decoding, tiler and encoding."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rsd.contract import read_set
from service.backends import Backend
from service.imageio import OutputFormat, compose, decode, encode, open_image
from service.tiling import plan_tiles, upscale_tiled

SUFFIX_FORMAT: dict[str, OutputFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


@dataclass(frozen=True)
class OfflineSettings:
    """The settings `rsd upscale` loads its backend with (service.backends.BackendSettings); its options read
    them from the RSD_ variables the service's Settings reads."""

    model_path: Path
    backend: str
    threads: int
    cache_dir: Path
    max_batch_tiles: int


def upscale_bytes(
    data: bytes,
    backend: Backend,
    *,
    fmt: OutputFormat = "png",
    seed: int = 0,
    outscale: float = 4.0,
    quality: int | None = None,
    overlap: int = 8,
    max_batch: int = 8,
    max_pixels: int = 1 << 30,
) -> bytes:
    """Encoded image in, encoded upscaled image out; the service's result for the same seed.

    `max_batch` counts tiles of the model's tile size, as RSD_MAX_BATCH_TILES does."""
    decoded = decode(open_image(data, max_pixels))
    sr = upscale_rgb(decoded.rgb, backend, seed=seed, overlap=overlap, max_batch=max_batch)
    return encode(compose(decoded, sr, outscale, backend.info.scale), fmt, quality, decoded.icc_profile)


def upscale_rgb(rgb: np.ndarray, backend: Backend, *, seed: int, overlap: int, max_batch: int) -> np.ndarray:
    """Decoded RGB in, the model's x4 result out, laid out in the backend's tile sizes."""
    info = backend.info
    return upscale_tiled(
        rgb,
        backend.run,
        sizes=info.tile_sizes,
        overlap=overlap,
        seed=seed,
        batch_limits=info.batch_limits(max_batch),
        scale=info.scale,
    )


def upscale_file(
    src: Path,
    dst: Path,
    backend: Backend,
    *,
    seed: int = 0,
    outscale: float = 4.0,
    quality: int | None = None,
    overlap: int = 8,
    max_batch: int = 8,
) -> None:
    """`src` -> `dst`, the format taken from dst's suffix (.png, .jpg, .jpeg, .webp)."""
    fmt = SUFFIX_FORMAT.get(dst.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the output format from {dst.name}; use .png, .jpg or .webp")
    data = upscale_bytes(
        src.read_bytes(),
        backend,
        fmt=fmt,
        seed=seed,
        outscale=outscale,
        quality=quality,
        overlap=overlap,
        max_batch=max_batch,
    )
    dst.write_bytes(data)


def first_graph_size(model: Path, photo: Path, overlap: int) -> int | None:
    """The largest tile size in the layout of `photo` when `model` is a set of graphs (a .json manifest),
    so that a lazy set loads the graph the photo needs first; None when that cannot be told (the backend's
    loading and the photo's decoding then report what is wrong)."""
    if model.suffix != ".json":
        return None
    try:
        _, graphs = read_set(model)
        with Image.open(photo) as image:
            width, height = image.size
        return max(plan_tiles(height, width, graphs, overlap).counts())
    except (OSError, ValueError, KeyError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None
