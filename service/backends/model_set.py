"""One model as graphs for several tile sizes: a JSON manifest beside them, one backend per graph.

    {"format": "rsd-graph-set", "tile_size": 128, "graphs": {"64": "m-t64.onnx", "128": "m-t128.onnx"}}

(rsd/contract.py, SET_FORMAT). A graph takes one fixed tile size, so the tiler (service/tiling.py) can only
fit an image closely when it has several sizes to choose from. Each graph is an ordinary single-size model
(RSD_MODEL_PATH may name one alone); the set checks that they are the same model and runs a batch on the
graph of its tiles' size. `tile_size`, one of the graphs' sizes, is the unit the service counts work in
(ModelInfo.tile_size). `rsd export onnx --extra-tile` writes such a set (model_export/onnx_export.py).

The service loads every graph at start, so a broken set fails there. `rsd upscale` loads them lazily,
starting with the one its first photo needs: a session costs about 0.1 s to create, and a photo needs one
or two of the sizes.
"""

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from rsd.contract import read_set
from service.backends.base import Backend, BackendError

SAME_MODEL = ("name", "version", "scale", "precision", "backend", "config_hash", "max_batch")


class ModelSet:
    def __init__(
        self,
        graphs: Mapping[int, Callable[[], Backend]],
        tile_size: int,
        *,
        lazy: bool = False,
        first: int | None = None,
    ):
        """`graphs`: a loader per tile size. The `first` graph (default: `tile_size`'s) loads now and
        describes the set; the others now too, unless `lazy`, in which case each loads on its first batch."""
        first = tile_size if first is None else first
        for size, role in ((tile_size, "tile_size"), (first, "first graph")):
            if size not in graphs:
                raise BackendError(f"the set's {role} {size} is none of its graphs' sizes {sorted(graphs)}")
        self._loaders = dict(sorted(graphs.items()))
        self.members: dict[int, Backend] = {}
        described = self.member(first).info
        self.info = dataclasses.replace(described, tile_size=tile_size, tile_sizes=tuple(self._loaders))
        if not lazy:
            for size in self._loaders:
                self.member(size)

    @classmethod
    def load(
        cls,
        manifest: Path,
        load_graph: Callable[[Path], Backend],
        *,
        lazy: bool = False,
        first: int | None = None,
    ) -> "ModelSet":
        try:
            tile_size, graphs = read_set(manifest)
        except (OSError, ValueError, KeyError) as e:
            raise BackendError(f"cannot read the model set {manifest}: {e}") from None
        loaders = {size: (lambda graph=graph: load_graph(graph)) for size, graph in graphs.items()}
        return cls(loaders, tile_size, lazy=lazy, first=first)

    def member(self, size: int) -> Backend:
        """The backend of one tile size, loaded (and checked against the set) on first use."""
        if size not in self.members:
            member = self._loaders[size]()
            if member.info.tile_size != size:
                raise BackendError(f"the set lists a graph of tile {member.info.tile_size} as tile {size}")
            if self.members:
                first = next(iter(self.members.values())).info
                differ = [key for key in SAME_MODEL if getattr(member.info, key) != getattr(first, key)]
                if differ:
                    raise BackendError(f"the graphs of a set must be one model; they differ in {differ}")
            self.members[size] = member
        return self.members[size]

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        return self.member(lq.shape[-1]).run(lq, noise_prior, noise_student)

    def close(self) -> None:
        for member in self.members.values():
            member.close()
