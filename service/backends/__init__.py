"""Inference backends behind one interface (base.Backend); each is imported only when selected."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from service.backends.base import Backend, BackendError, ModelInfo

__all__ = ["Backend", "BackendError", "BackendSettings", "ModelInfo", "load_backend"]


class BackendSettings(Protocol):
    """What loading a model reads: the service's Settings, or `rsd upscale`'s (service.offline)."""

    model_path: Path
    backend: str
    threads: int
    cache_dir: Path
    max_batch_tiles: int


def load_backend(settings: BackendSettings, *, lazy: bool = False, first_tile: int | None = None) -> Backend:
    """The backend named by `settings.backend`, loaded from `settings.model_path`: one graph, or a set of
    graphs for several tile sizes (a .json manifest, service/backends/model_set.py) whose graphs load on
    first use when `lazy`, the `first_tile` size's first."""
    path = settings.model_path
    if not path.exists():
        raise BackendError(f"model not found at {path} (set RSD_MODEL_PATH)")
    if path.suffix == ".json":
        if settings.backend == "torch":
            raise BackendError("the torch backend loads a model directory, not a set of graphs")
        from service.backends.model_set import ModelSet

        return ModelSet.load(path, lambda graph: _load_graph(settings, graph), lazy=lazy, first=first_tile)
    return _load_graph(settings, path)


def _load_graph(settings: BackendSettings, path: Path) -> Backend:
    if not path.exists():
        raise BackendError(f"model not found at {path}")
    if settings.backend == "onnxruntime":
        from service.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, threads=settings.threads, cache_dir=settings.cache_dir)
    if settings.backend == "tensorrt":
        try:
            from service.backends.tensorrt import TensorRTBackend
        except ImportError as e:
            raise BackendError(f"the tensorrt backend needs the tensorrt and torch packages ({e})") from None
        return TensorRTBackend(path)
    try:
        from service.backends.torch import TorchBackend
    except ImportError as e:
        raise BackendError(f"the torch backend needs torch installed ({e})") from None
    return TorchBackend.from_model_dir(path, max_batch=settings.max_batch_tiles)
