"""What every inference backend offers the batcher: model facts and one synchronous batched call."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rsd import contract


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
        )


def _json_or_none(meta: Mapping[str, str], key: str) -> Any:
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise BackendError(f"metadata {key} is not JSON: {e}") from None


class Backend(Protocol):
    """The whole interface; `run` is called from one worker thread, never concurrently."""

    info: ModelInfo

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        """(B,3,t,t), (B,3,t,t), (B,1,t,t) float32 -> sr (B,3,s*t,s*t) float32 in [0, 1]."""
        ...

    def close(self) -> None: ...
