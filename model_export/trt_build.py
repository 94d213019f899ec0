"""The only module that calls the TensorRT builder (TensorRT 10 or 11 Python API).

Kept thin because no CPU-only machine can run it: profiles, sidecar, checks and verification live in
model_export/tensorrt.py and are tested there. The network is built *strongly typed*: precision comes
from the ONNX types (the fp16 export keeps the codebook search and the normalisations in fp32), which
is the only mode TensorRT 11 has and the recommended one since 10.12 (BuilderFlag.FP16 is gone in 11).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import tensorrt as trt

from model_export import ExportError

Shape = tuple[int, ...]


def version() -> str:
    return trt.__version__


def build_engine(
    onnx_path: Path,
    *,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]],
    workspace_bytes: int,
    timing_cache: Path,
) -> bytes:
    """Parse `onnx_path`, build one optimization profile (input name -> (min, opt, max) shape), serialize.

    `timing_cache` is read when present and rewritten afterwards, so rebuilding on the same GPU type and
    TensorRT version skips most kernel timing.
    """
    if int(trt.__version__.split(".")[0]) < 10:
        raise ExportError(f"TensorRT {trt.__version__} is too old; the builder needs TensorRT 10 or newer", 2)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise ExportError(
            f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'no error reported'}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT could not build the engine; its log above says why")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(engine)
