"""`rsd export trt`: fused graph -> serialized TensorRT engine + JSON sidecar, with an optional check.

Everything except the builder calls (model_export/trt_build.py) is here and runs without a GPU: the
requirement check (which fails in one line with exit code 2), the batch profile, the sidecar and the
output comparison. The engine is built from the fp16 ONNX export, strongly typed, so the fp32 codebook
search of that graph survives into the engine.

Sidecar (`model.plan` -> `model.json`): the ONNX file's `rsd.*` metadata, which the service's TensorRT
backend reads because an engine has no metadata of its own, plus `tensorrt.*` build facts. A model set's
manifest (graphs for several tile sizes) gives one engine per size and a manifest of the engines
(`export_trt_set`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_export import ExportError
from model_export.metadata import read_metadata
from rsd import contract

GIB = 1 << 30


@dataclass(frozen=True)
class BatchProfile:
    """The engine's one optimization profile over the batch axis (tiles per call)."""

    min: int = 1
    opt: int = 8
    max: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}",
                exit_code=2,
            )

    def shapes(self, tile: int) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> ((min), (opt), (max)) shapes for TensorRT's IOptimizationProfile.set_shape."""
        channels = {contract.INPUT_LQ: 3, contract.INPUT_NOISE_PRIOR: 3, contract.INPUT_NOISE_STUDENT: 1}
        return {
            name: tuple((batch, c, tile, tile) for batch in (self.min, self.opt, self.max))
            for name, c in channels.items()
        }


def missing_requirements() -> list[str]:
    """What stops an engine build on this machine; checked before any slow work."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("TensorRT is not installed (pip install tensorrt on a CUDA host)")
    if importlib.util.find_spec("torch") is None:
        missing.append("PyTorch is not installed (install the train extra)")
    else:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA GPU is visible")
    return missing


def require_tensorrt() -> None:
    missing = missing_requirements()
    if missing:
        raise ExportError("cannot build a TensorRT engine here: " + "; ".join(missing), exit_code=2)


def sidecar_path(plan: Path) -> Path:
    """Where the service's TensorRT backend looks for the engine's metadata."""
    return plan.with_suffix(".json")


def sidecar(
    onnx_metadata: dict[str, str],
    *,
    onnx_path: Path,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    profile: BatchProfile,
) -> dict:
    """The ONNX `rsd.*` metadata (same string values) plus what the engine is tied to."""
    tile = int(onnx_metadata[contract.META_TILE])
    return {
        **onnx_metadata,
        "tensorrt.version": tensorrt_version,
        "tensorrt.gpu_name": gpu_name,
        "tensorrt.compute_capability": compute_capability,
        "tensorrt.profile": asdict(profile),
        "tensorrt.tile_size": tile,
        "tensorrt.onnx_file": onnx_path.name,
        "tensorrt.onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
    }


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> dict:
    """max/mean |difference| and the share of values beyond `tolerance`; ok when max <= tolerance."""
    diff = np.abs(reference.astype(np.float32) - candidate.astype(np.float32))
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "over_tolerance": float((diff > tolerance).mean()),
        "tolerance": tolerance,
        "ok": bool(diff.max() <= tolerance),
    }


def export_trt(
    source: str | Path,
    out: str | Path,
    *,
    tile: int = contract.DEFAULT_TILE,
    profile: BatchProfile | None = None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
    verify: bool = False,
    tolerance: float = 1e-2,
) -> tuple[Path, dict | None]:
    """Build `out` (.plan) and its sidecar from a model directory (exported to fp16 ONNX next to `out`
    first) or from an existing ONNX file. Returns (plan path, verification result or None)."""
    require_tensorrt()
    profile = profile or BatchProfile()
    source, out = Path(source), Path(out)
    if workspace_gib <= 0:
        raise ExportError(f"workspace must be positive, got {workspace_gib} GiB", exit_code=2)
    if source.is_dir():
        from model_export.onnx_export import export_onnx

        onnx_path = export_onnx(
            source, out.with_suffix(".onnx"), tile=tile, precision="fp16", simplify_graph=True
        )
    elif source.suffix == ".onnx" and source.is_file():
        onnx_path = source
    else:
        raise ExportError(f"{source} is neither a model directory nor an .onnx file", exit_code=2)

    import onnx

    from model_export import trt_build
    from model_export.onnx_export import check_graph

    metadata = read_metadata(onnx_path)
    tile = int(metadata[contract.META_TILE])
    problems = check_graph(onnx.load(str(onnx_path)), tile)
    if problems:
        raise ExportError(f"{onnx_path} is not a valid fused graph: {'; '.join(problems)}")
    cache = Path(timing_cache) if timing_cache else out.parent / "timing.cache"
    engine = trt_build.build_engine(
        onnx_path, shapes=profile.shapes(tile), workspace_bytes=int(workspace_gib * GIB), timing_cache=cache
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(engine)

    import torch

    major, minor = torch.cuda.get_device_capability(0)
    facts = sidecar(
        metadata,
        onnx_path=onnx_path,
        tensorrt_version=trt_build.version(),
        gpu_name=torch.cuda.get_device_name(0),
        compute_capability=f"{major}.{minor}",
        profile=profile,
    )
    sidecar_path(out).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    result = verify_engine(out, onnx_path, batch=profile.opt, tolerance=tolerance) if verify else None
    return out, result


def export_trt_set(
    manifest: str | Path, out: str | Path, **options: object
) -> list[tuple[Path, dict | None]]:
    """One engine per graph of a model set, `<out stem>-t<size>.plan` with its sidecar, and `out`, the
    manifest (.json) that lists them, which the service's TensorRT backend loads as a set."""
    require_tensorrt()
    manifest, out = Path(manifest), Path(out)
    try:
        tile_size, graphs = contract.read_set(manifest)
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"cannot read the model set {manifest}: {e}", exit_code=2) from None
    results = {tile: export_trt(graph, out.with_name(f"{out.stem}-t{tile}.plan"), **options)
               for tile, graph in graphs.items()}  # fmt: skip
    contract.write_set(out, tile_size, {tile: plan for tile, (plan, _) in results.items()})
    return list(results.values())


def verify_engine(plan: Path, onnx_path: Path, *, batch: int, tolerance: float, iterations: int = 20) -> dict:
    """Run the engine through the service's TensorRT backend and the ONNX through ONNX Runtime (CUDA when
    onnxruntime-gpu is installed) on the same seeded tiles; compare and time both."""
    import onnxruntime as ort

    from service.backends.tensorrt import TensorRTBackend

    engine = TensorRTBackend(plan)
    tile = engine.info.tile_size
    rng = np.random.default_rng(0)
    inputs = (
        rng.random((batch, 3, tile, tile), dtype=np.float32),
        rng.standard_normal((batch, 3, tile, tile), dtype=np.float32),
        rng.standard_normal((batch, 1, tile, tile), dtype=np.float32),
    )
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    session = ort.InferenceSession(str(onnx_path), providers=providers)
    names = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)
    feed = dict(zip(names, inputs, strict=True))

    def tiles_per_second(run, repeats: int) -> float:
        run()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        return repeats * batch / (time.perf_counter() - start)

    reference = session.run([contract.OUTPUT_SR], feed)[0]
    result = compare_outputs(reference, engine.run(*inputs), tolerance)
    result.update(
        batch=batch,
        onnxruntime_provider=session.get_providers()[0],
        tensorrt_tiles_per_s=tiles_per_second(lambda: engine.run(*inputs), iterations),
        onnxruntime_tiles_per_s=tiles_per_second(lambda: session.run([contract.OUTPUT_SR], feed), 2),
    )
    engine.close()
    return result
