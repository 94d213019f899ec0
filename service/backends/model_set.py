"""One model as graphs for several tile sizes: a JSON manifest beside them, one backend per graph.

    {"format": "rsd-graph-set", "tile_size": 128, "graphs": ["m-t64.onnx", "m-t128.onnx", "m-t256.onnx"]}

(rsd/contract.py, SET_FORMAT). A graph takes one fixed tile size, so the tiler (service/tiling.py) can only
fit an image closely when it has several sizes to choose from. Each graph is an ordinary single-size model
(RSD_MODEL_PATH may name one alone); the set checks that they are the same model and runs a batch on the
graph of its tiles' size. `tile_size`, one of the graphs' sizes, is the unit the service counts work in
(ModelInfo.tile_size). `rsd export onnx --extra-tile` writes such a set (model_export/onnx_export.py).
"""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rsd.contract import read_set
from service.backends.base import Backend, BackendError


class ModelSet:
    def __init__(self, members: Sequence[Backend], tile_size: int):
        same = ("name", "version", "scale", "precision", "backend", "config_hash")
        first = members[0].info
        for member in members[1:]:
            differ = [key for key in same if getattr(member.info, key) != getattr(first, key)]
            if differ:
                raise BackendError(f"the graphs of a set must be one model; they differ in {differ}")
        self.members = {member.info.tile_size: member for member in members}
        if len(self.members) != len(members):
            raise BackendError("a model set has two graphs of the same tile size")
        if tile_size not in self.members:
            sizes = sorted(self.members)
            raise BackendError(f"the set's tile_size {tile_size} is none of its graphs' sizes {sizes}")
        self.members = dict(sorted(self.members.items()))
        limits = [member.info.max_batch for member in members if member.info.max_batch]
        self.info = dataclasses.replace(
            self.members[tile_size].info,
            tile_sizes=tuple(self.members),
            max_batch=min(limits) if limits else None,
        )

    @classmethod
    def load(cls, manifest: Path, load_graph: Callable[[Path], Backend]) -> "ModelSet":
        try:
            tile_size, graphs = read_set(manifest)
        except (OSError, ValueError, KeyError) as e:
            raise BackendError(f"cannot read the model set {manifest}: {e}") from None
        return cls([load_graph(graph) for graph in graphs], tile_size)

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        return self.members[lq.shape[-1]].run(lq, noise_prior, noise_student)

    def close(self) -> None:
        for member in self.members.values():
            member.close()
