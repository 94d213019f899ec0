"""Plain functions behind `rsd export onnx|trt|triton` (wired in rsd/cli.py).

Each returns the lines to print and raises model_export.ExportError (one-line message, exit_code) for
anything the user can fix; rsd/cli.py prints `error: <message>` and exits with that code. Heavy imports
happen inside, so `rsd export trt` on a machine without TensorRT or a GPU fails before loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from model_export import ExportError
from rsd import contract


def export_onnx(
    model_dir: Path,
    out: Path,
    tile: int = contract.DEFAULT_TILE,
    extra_tiles: Sequence[int] = (),
    precision: str = "fp32",
    simplify: bool = False,
    opset: int = 17,
    name: str | None = None,
    calibration: Path | None = None,
) -> list[str]:
    from model_export.metadata import read_metadata
    from model_export.onnx_export import export_onnx as run

    if not (Path(model_dir) / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model directory (no config.json)", exit_code=2)
    path = run(
        model_dir,
        out,
        tile=tile,
        extra_tiles=extra_tiles,
        precision=precision,
        simplify_graph=simplify,
        opset=opset,
        name=name,
        calibration=calibration,
    )
    graphs = list(contract.read_set(path)[1].values()) if extra_tiles else [path]
    lines = []
    for graph in graphs:
        meta = read_metadata(graph)
        size = int(meta[contract.META_TILE])
        lines.append(
            f"wrote {graph} ({graph.stat().st_size / 2**20:.1f} MiB): {meta[contract.META_NAME]} "
            f"{meta[contract.META_PRECISION]}, tile {size} -> {contract.SCALE * size}, dynamic batch, "
            f"opset {opset}"
        )
    if extra_tiles:
        data = json.loads(read_metadata(graphs[0])[contract.META_EXTERNAL_DATA])
        mib = sum((path.parent / name).stat().st_size for name in data) / 2**20
        lines.append(f"wrote {path}, the set's manifest; the graphs share {sorted(data)} ({mib:.1f} MiB)")
    return lines


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
    from model_export.tensorrt import BatchProfile, export_trt_set, require_tensorrt, sidecar_path
    from model_export.tensorrt import export_trt as run

    require_tensorrt()  # before anything slow: exit code 2 with one line where TensorRT or the GPU is missing
    options = {
        "profile": BatchProfile(min_batch, opt_batch, max_batch),
        "workspace_gib": workspace_gib,
        "timing_cache": timing_cache,
        "verify": verify,
        "tolerance": tolerance,
    }
    if Path(source).suffix == ".json":  # a model set: one engine per tile size, --out names their manifest
        results = export_trt_set(source, out, **options)
    else:
        results = [run(source, out, tile=tile, **options)]
    lines = []
    for plan, result in results:
        lines.append(f"wrote {plan} ({plan.stat().st_size / 2**20:.1f} MiB) and {sidecar_path(plan)}")
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
    from model_export.triton import export_triton, export_triton_set

    options = {"max_batch": max_batch, "max_queue_delay_us": max_queue_delay_us, "instances": instances}
    if Path(source).suffix == ".json":  # a model set: one Triton model per tile size
        models = export_triton_set(source, repo, name=name, kind=kind, **options)
    else:
        models = [export_triton(source, repo, name=name, kind=kind, **options)]
    return [
        f"wrote Triton model {model_dir} (config.pbtxt, 1/{next((model_dir / '1').iterdir()).name})"
        for model_dir in models
    ]
