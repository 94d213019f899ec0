"""What every inference backend offers the batcher: model facts and one synchronous batched call."""

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rsd import contract
from service.filecache import file_sha256


class BackendError(RuntimeError):
    """A model that cannot be loaded or does not honour the graph contract; the message is one line."""


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/models shows; read from the model file's `rsd.*` metadata (rsd/contract.py)."""

    name: str
    version: str
    scale: int
    tile_size: int
    precision: str
    backend: str
    max_batch: int | None  # None when the batch axis is dynamic
    config_hash: str | None = None
    schedule: Any = None
    training: Any = field(default=None)
    tile_sizes: tuple[int, ...] = ()  # every size the model has a graph for, ascending; tile_size among them

    def batch_limits(self, max_batch_tiles: int) -> dict[int, int]:
        """Most tiles of each size in one batch: as many as hold the pixels of `max_batch_tiles` tiles of
        tile_size (a batch's memory and time follow its pixels), at least one, at most the backend's limit."""
        limits = {}
        for size in self.tile_sizes:
            tiles = max(1, max_batch_tiles * self.tile_size**2 // size**2)
            limits[size] = min(tiles, self.max_batch) if self.max_batch else tiles
        return limits

    @classmethod
    def from_metadata(
        cls,
        meta: Mapping[str, str],
        *,
        backend: str,
        default_name: str,
        tile_from_shape: int | None,
        precision: str,
        max_batch: int | None,
    ) -> "ModelInfo":
        tile_meta = int(meta[contract.META_TILE]) if contract.META_TILE in meta else None
        if tile_meta is not None and tile_from_shape is not None and tile_meta != tile_from_shape:
            raise BackendError(f"metadata says tile {tile_meta} but the graph input is {tile_from_shape}")
        tile = tile_from_shape or tile_meta
        if tile is None:
            raise BackendError(f"the model has neither a fixed tile size nor {contract.META_TILE} metadata")
        return cls(
            name=meta.get(contract.META_NAME, default_name),
            version=meta.get(contract.META_VERSION, "unknown"),
            scale=int(meta.get(contract.META_SCALE, contract.SCALE)),
            tile_size=tile,
            precision=meta.get(contract.META_PRECISION, precision),
            backend=backend,
            max_batch=max_batch,
            config_hash=meta.get(contract.META_CONFIG_HASH),
            schedule=_json_or_none(meta, contract.META_SCHEDULE),
            training=_json_or_none(meta, contract.META_TRAINING),
            tile_sizes=(tile,),
        )


def _json_or_none(meta: Mapping[str, str], key: str) -> Any:
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise BackendError(f"metadata {key} is not JSON: {e}") from None


def check_external_data(model: Path, meta: Mapping[str, str]) -> None:
    """Refuse a graph whose weights files (ONNX external data, e.g. the model directory's safetensors) changed
    since it was exported: read at the exported offsets they would give wrong weights without an error."""
    for name, digest in (_json_or_none(meta, contract.META_EXTERNAL_DATA) or {}).items():
        data = model.parent / name
        if not data.is_file() or _sha256(data, data.stat().st_mtime_ns, data.stat().st_size) != digest:
            raise BackendError(f"{model} needs {data} as it was exported; export the graph again")


@functools.lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    """Once per file version and process: the graphs of a set share their weights files."""
    return file_sha256(path)


class Backend(Protocol):
    """The whole interface; `run` is called from one worker thread, never concurrently."""

    info: ModelInfo

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        """(B,3,t,t), (B,3,t,t), (B,1,t,t) float32 -> sr (B,3,s*t,s*t) float32 in [0, 1]; t one of
        info.tile_sizes."""
        ...

    def close(self) -> None: ...
