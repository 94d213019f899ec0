"""`rsd export triton`: a Triton model repository for teams that already run Triton Inference Server.

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx   (platform onnxruntime_onnx)  or  1/model.plan (platform tensorrt_plan)

A model set (.json, graphs for several tile sizes) becomes one such model per size, `<name>_t<size>`.

Requests are tiles: every input has the fixed tile shape, so Triton's dynamic batcher can merge tiles of
different requests (it only merges equal non-batch shapes) up to max_batch_size. The `rsd.*` metadata is
copied into the config's `parameters`, so it shows in Triton's model-config endpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from model_export import ExportError
from model_export.metadata import read_metadata
from model_export.tensorrt import sidecar_path
from rsd import contract

KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def _tensor(name: str, dims: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims))} ] }}'


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string literal is a valid text-format string


def config_pbtxt(
    *,
    name: str,
    platform: str,
    tile: int,
    max_batch: int,
    max_queue_delay_us: int,
    instances: int,
    kind: str,
    metadata: dict[str, str],
) -> str:
    """The text of config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    s = contract.SCALE
    inputs = ",\n".join(
        _tensor(n, [c, tile, tile])
        for n, c in (
            (contract.INPUT_LQ, 3),
            (contract.INPUT_NOISE_PRIOR, 3),
            (contract.INPUT_NOISE_STUDENT, 1),
        )
    )
    warmup_inputs = "\n".join(
        f'    inputs {{ key: "{n}" value: {{ data_type: TYPE_FP32 dims: [ {c}, {tile}, {tile} ] '
        "zero_data: true } }"
        for n, c in (
            (contract.INPUT_LQ, 3),
            (contract.INPUT_NOISE_PRIOR, 3),
            (contract.INPUT_NOISE_STUDENT, 1),
        )
    )
    parameters = "\n".join(
        f"parameters {{ key: {_string(k)} value: {{ string_value: {_string(v)} }} }}"
        for k, v in sorted(metadata.items())
    )
    return f"""name: {_string(name)}
platform: "{platform}"
max_batch_size: {max_batch}
input [
{inputs}
]
output [
{_tensor(contract.OUTPUT_SR, [3, s * tile, s * tile])}
]
instance_group [ {{ kind: {KINDS[kind]} count: {instances} }} ]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
model_warmup [
  {{
    name: "zeros"
    batch_size: 1
{warmup_inputs}
  }}
]
{parameters}
"""


def export_triton(
    source: str | Path,
    repo: str | Path,
    *,
    name: str = "rsd_x4",
    max_batch: int = 16,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "gpu",
) -> Path:
    """Copy an exported .onnx (or a .plan and its sidecar) into a new model repository; returns its dir.

    For a .plan, max_batch must fit the engine's profile, and Triton must run on the GPU type and TensorRT
    version the sidecar names.
    """
    source, repo = Path(source), Path(repo)
    if kind not in KINDS:
        raise ExportError(f"kind must be one of {sorted(KINDS)}, got {kind!r}", exit_code=2)
    if max_batch < 1 or instances < 1 or max_queue_delay_us < 0:
        raise ExportError("max_batch and instances must be >= 1 and the queue delay >= 0", exit_code=2)
    if not source.is_file():
        raise ExportError(f"{source} does not exist", exit_code=2)
    if source.suffix == ".onnx":
        platform, filename = "onnxruntime_onnx", "model.onnx"
        metadata = read_metadata(source)
    elif source.suffix == ".plan":
        if kind != "gpu":
            raise ExportError("a TensorRT engine runs on the GPU only (kind gpu)", exit_code=2)
        platform, filename = "tensorrt_plan", "model.plan"
        if not sidecar_path(source).is_file():
            raise ExportError(
                f"{source} has no sidecar {sidecar_path(source).name}; rebuild it with rsd export trt"
            )
        facts = json.loads(sidecar_path(source).read_text())
        engine_max = facts["tensorrt.profile"]["max"]
        if max_batch > engine_max:
            raise ExportError(
                f"max_batch {max_batch} exceeds the engine profile's max batch {engine_max}", exit_code=2
            )
        metadata = {k: v for k, v in facts.items() if isinstance(v, str)}
    else:
        raise ExportError(f"{source} is neither an .onnx nor a .plan file", exit_code=2)
    if contract.META_TILE not in metadata:
        raise ExportError(f"{source} carries no {contract.META_TILE}; export it with rsd export onnx")

    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    if contract.META_EXTERNAL_DATA in metadata:  # a graph of a set: Triton gets it with its weights inside
        onnx.save(onnx.load(str(source)), str(model_dir / "1" / filename))
    else:
        shutil.copyfile(source, model_dir / "1" / filename)
    (model_dir / "config.pbtxt").write_text(
        config_pbtxt(
            name=name,
            platform=platform,
            tile=int(metadata[contract.META_TILE]),
            max_batch=max_batch,
            max_queue_delay_us=max_queue_delay_us,
            instances=instances,
            kind=kind,
            metadata=metadata,
        )
    )
    return model_dir


def export_triton_set(
    manifest: str | Path, repo: str | Path, *, name: str = "rsd_x4", **options: object
) -> list[Path]:
    """One Triton model per graph of a model set (`<name>_t<size>`); Triton batches each size on its own.
    The client picks the model by tile size, as service/tiling.py lays an image out."""
    try:
        _, graphs = contract.read_set(Path(manifest))
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"cannot read the model set {manifest}: {e}", exit_code=2) from None
    models = []
    for tile, graph in graphs.items():
        models.append(export_triton(graph, repo, name=f"{name}_t{tile}", **options))
    return models
