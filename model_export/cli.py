"""Plain functions behind `rsd export onnx|trt|triton` (wired in rsd/cli.py).

Each returns the lines to print and raises model_export.ExportError (one-line message, exit_code) for
anything the user can fix; rsd/cli.py prints `error: <message>` and exits with that code. Heavy imports
happen inside, so `rsd export trt` on a machine without TensorRT or a GPU fails before loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from model_export import ExportError
from rsd import contract


def export_onnx(
    model_dir: Path,
    out: Path,
    tile: int = contract.DEFAULT_TILE,
    precision: str = "fp32",
    simplify: bool = False,
    opset: int = 17,
    name: str | None = None,
) -> list[str]:
    from model_export.metadata import read_metadata
    from model_export.onnx_export import export_onnx as run

    if not (Path(model_dir) / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model directory (no config.json)", exit_code=2)
    path = run(
        model_dir, out, tile=tile, precision=precision, simplify_graph=simplify, opset=opset, name=name
    )
    meta = read_metadata(path)
    return [
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {meta[contract.META_NAME]} "
        f"{meta[contract.META_PRECISION]}, tile {meta[contract.META_TILE]} -> {contract.SCALE * tile}, "
        f"dynamic batch, opset {opset}"
    ]


def export_trt(
    source: Path,
    out: Path,
    tile: int = contract.DEFAULT_TILE,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 16,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    verify: bool = False,
    tolerance: float = 1e-2,
) -> list[str]:
    from model_export.tensorrt import BatchProfile, require_tensorrt, sidecar_path
    from model_export.tensorrt import export_trt as run

    require_tensorrt()  # before anything slow: exit code 2 with one line where TensorRT or the GPU is missing
    profile = BatchProfile(min_batch, opt_batch, max_batch)

    plan, result = run(
        source,
        out,
        tile=tile,
        profile=profile,
        workspace_gib=workspace_gib,
        timing_cache=timing_cache,
        verify=verify,
        tolerance=tolerance,
    )
    lines = [f"wrote {plan} ({plan.stat().st_size / 2**20:.1f} MiB) and {sidecar_path(plan)}"]
    if result is not None:
        if not result["ok"]:
            raise ExportError(
                f"engine {plan} differs from ONNX Runtime: {json.dumps(result, sort_keys=True)}"
            )
        lines.append("verify: " + json.dumps(result, sort_keys=True))
    return lines


def export_triton(
    source: Path,
    repo: Path,
    name: str = "rsd_x4",
    max_batch: int = 16,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "gpu",
) -> list[str]:
    from model_export.triton import export_triton as run

    model_dir = run(
        source,
        repo,
        name=name,
        max_batch=max_batch,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        kind=kind,
    )
    return [f"wrote Triton model {model_dir} (config.pbtxt, 1/{next((model_dir / '1').iterdir()).name})"]
