"""GPU image entrypoint: build the TensorRT engine once per GPU and model, cache it, then exec the command.

With RSD_BACKEND=tensorrt and an ONNX RSD_MODEL_PATH, the engine for this GPU is looked up in
RSD_ENGINE_CACHE (a volume) and built there when missing, with the project's builder
(model_export/trt_build.py) and sidecar (model_export/tensorrt.py); the command (`rsd serve`) then runs
with RSD_MODEL_PATH pointing at the engine. An engine only runs on the GPU model and TensorRT version it
was built with, and only for its profile's batch range, so all of those are in the cache key, with the
ONNX file's sha256. Replicas sharing the volume build once: builds hold the cache's lock (they also share
TensorRT's timing cache there) and rename finished files into place. Any other backend, or a model path
that already names an engine, passes through unchanged.

    python docker/gpu_entrypoint.py rsd serve
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from model_export import ExportError
from model_export.metadata import read_metadata
from model_export.tensorrt import BatchProfile, sidecar, sidecar_path
from rsd import contract
from service.filecache import file_sha256, write_atomic
from service.settings import Settings

CACHE_ENV = "RSD_ENGINE_CACHE"  # read here, not by service.settings
DEFAULT_CACHE = Path("/var/cache/rsd/engines")
WORKSPACE_BYTES = 4 << 30


def log(message: str) -> None:
    print(f"gpu_entrypoint: {message}", file=sys.stderr, flush=True)


def engine_path(
    onnx_path: Path, cache_dir: Path, *, onnx_sha256: str, trt_version: str, gpu: str, max_batch: int
) -> Path:
    """Where the engine for this model, TensorRT version, GPU and batch range lives in the cache."""
    key = hashlib.sha256(json.dumps([onnx_sha256, trt_version, gpu, max_batch]).encode()).hexdigest()[:16]
    return cache_dir / f"{onnx_path.stem}-b{max_batch}-{key}.plan"


def gpu_identity() -> tuple[str, str]:
    """GPU 0's name and compute capability, e.g. ('NVIDIA H100 80GB HBM3', '9.0'); nvidia-smi is mounted
    into GPU containers by the NVIDIA container toolkit."""
    query = ["nvidia-smi", "--id=0", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    name, capability = subprocess.run(query, capture_output=True, text=True, check=True).stdout.rsplit(",", 1)
    return name.strip(), capability.strip()


def engine_sidecar(onnx_path: Path, *, trt_version: str, gpu: tuple[str, str], max_batch: int) -> dict:
    """What `rsd export trt` writes beside an engine: the graph's rsd.* metadata and the build facts."""
    profile = BatchProfile(min=1, opt=max_batch, max=max_batch)
    return sidecar(
        read_metadata(onnx_path),
        onnx_path=onnx_path,
        tensorrt_version=trt_version,
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        profile=profile,
    )


def cached_engine(onnx_path: Path, cache_dir: Path, max_batch: int) -> Path:
    try:
        from model_export import trt_build
    except ImportError:
        raise SystemExit("gpu_entrypoint: RSD_BACKEND=tensorrt needs the tensorrt package") from None
    trt_version, gpu = trt_build.version(), gpu_identity()
    engine = engine_path(
        onnx_path,
        cache_dir,
        onnx_sha256=file_sha256(onnx_path),
        trt_version=trt_version,
        gpu=" sm".join(gpu),
        max_batch=max_batch,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another replica may be building this engine right now
        if engine.is_file():
            log(f"using cached engine {engine}")
            return engine
        log(f"building a TensorRT {trt_version} engine for {gpu[0]} from {onnx_path} (batch 1..{max_batch})")
        started = time.monotonic()
        facts = engine_sidecar(onnx_path, trt_version=trt_version, gpu=gpu, max_batch=max_batch)
        tile = int(facts[contract.META_TILE])
        try:
            data = trt_build.build_engine(
                onnx_path,
                shapes=BatchProfile(min=1, opt=max_batch, max=max_batch).shapes(tile),
                workspace_bytes=WORKSPACE_BYTES,
                timing_cache=cache_dir / f"timing-{trt_version}-sm{gpu[1]}.cache",
            )
        except ExportError as e:
            raise SystemExit(f"gpu_entrypoint: {e}") from None
        # The sidecar goes first: an engine file in the cache always has its JSON beside it.
        write_atomic(sidecar_path(engine), json.dumps(facts, indent=2, sort_keys=True).encode())
        write_atomic(engine, data)
        log(f"built {engine} in {time.monotonic() - started:.0f} s")
    return engine


def main(command: list[str]) -> None:
    if not command:
        raise SystemExit("usage: gpu_entrypoint.py COMMAND [ARG...]")
    settings = Settings()
    env = dict(os.environ)
    if settings.backend == "tensorrt" and settings.model_path.suffix == ".onnx":
        cache_dir = Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE))
        env["RSD_MODEL_PATH"] = str(cached_engine(settings.model_path, cache_dir, settings.max_batch_tiles))
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
