"""Read and write the `rsd.*` metadata of an exported graph (keys in rsd/contract.py). Torch-free.

The service reads the same strings through onnxruntime's `get_modelmeta().custom_metadata_map`; this
module is for tools that only have `onnx` (Triton repository writer, TensorRT sidecar, tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnx

from rsd import contract

REQUIRED_KEYS = (
    contract.META_NAME,
    contract.META_VERSION,
    contract.META_SCALE,
    contract.META_TILE,
    contract.META_PRECISION,
    contract.META_SCHEDULE,
    contract.META_CONFIG_HASH,
    contract.META_TRAINING,
)


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace the model's metadata_props with `metadata` (every value must already be a string)."""
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ValueError(f"metadata lacks {missing}")
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        if not isinstance(value, str):
            raise TypeError(f"metadata {key} must be a string, got {type(value).__name__}")
        model.metadata_props.add(key=key, value=value)


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
