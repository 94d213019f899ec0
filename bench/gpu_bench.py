"""GPU throughput and reduced-precision parity of the service's torch backend (CUDA graphs per batch bucket).

    python bench/gpu_bench.py --json docs/bench/gpu.json      # both presets, random weights
    python bench/gpu_bench.py --model models/default/student --json docs/bench/gpu_default.json

For each model and precision (fp32, fp16, bf16): tiles/s of `TorchBackend.run` at batch sizes 1, 4, 16, 64
(host arrays in and out, as the batcher calls it), peak GPU memory, and against fp32 on the same inputs:
max and mean |diff| of the x4 output, PSNR between the two outputs, and the share of VQ codebook indices
that stay the same. Random weights give the architecture's speed (speed does not depend on the weights);
parity means most on a trained model (`--model`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_export.fused import load_fused_module
from model_export.synthetic import write_random_model_dir
from service.backends.torch import TorchBackend

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def inputs(batch: int, tile: int, seed: int = 0) -> list[np.ndarray]:
    """lq in [0, 1] plus the two noises, as the tiler hands them to the backend."""
    rng = np.random.default_rng(seed)
    return [
        rng.random((batch, 3, tile, tile), dtype=np.float32),
        rng.standard_normal((batch, 3, tile, tile), dtype=np.float32),
        rng.standard_normal((batch, 1, tile, tile), dtype=np.float32),
    ]


def tiles_per_s(backend: TorchBackend, batch: int, seconds: float) -> float:
    arrays = inputs(batch, backend.info.tile_size)
    for _ in range(3):
        backend.run(*arrays)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run(*arrays)  # returns host arrays: synchronous
        runs += 1
    return runs * batch / (time.perf_counter() - start)


@torch.inference_mode()
def codebook_indices(module, arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    lq, prior, student = (torch.from_numpy(a).to("cuda", dtype) for a in arrays)
    return module.pipeline.autoencoder.codebook_indices(module.latent(lq, prior, student).float())


def measure_model(label: str, model_dir: Path, batches: list[int], seconds: float, tile: int) -> dict:
    report: dict = {"precisions": {}}
    parity_inputs = inputs(8, tile, seed=1)
    reference = reference_indices = None
    for name, dtype in DTYPES.items():
        module, metadata = load_fused_module(model_dir, device="cuda", dtype=dtype, tile=tile)
        torch.cuda.reset_peak_memory_stats()
        backend = TorchBackend(
            module, metadata, device=torch.device("cuda"), dtype=dtype, max_batch=max(batches), name=label
        )
        speed = {str(b): round(tiles_per_s(backend, b, seconds), 1) for b in batches}
        out = backend.run(*parity_inputs)
        indices = codebook_indices(module, parity_inputs, dtype)
        row = {
            "tiles_per_s": speed,
            "output_megapixels_per_s": round(max(speed.values()) * (4 * tile) ** 2 / 1e6, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
        }
        if reference is None:
            reference, reference_indices = out, indices
        else:
            diff = np.abs(out - reference)
            mse = float((diff**2).mean())
            row["vs_fp32"] = {
                "max_abs_diff": round(float(diff.max()), 5),
                "mean_abs_diff": round(float(diff.mean()), 6),
                "psnr_db": round(10 * math.log10(1 / mse), 2) if mse > 0 else None,
                "same_codebook_indices": round(float((indices == reference_indices).float().mean()), 5),
            }
        report["precisions"][name] = row
        backend.close()
        del backend, module
        torch.cuda.empty_cache()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, action="append", default=[], help="model directory (repeatable)"
    )
    parser.add_argument("--presets", nargs="*", default=None, help="random-weight presets (default: both)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per batch size")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU host")
    presets = args.presets if args.presets is not None else ([] if args.model else ["tiny-x4", "resshift-x4"])
    torch.backends.cudnn.benchmark = True
    report = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "tile": args.tile,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        models = {str(path): path for path in args.model}
        for preset in presets:
            models[f"{preset} (random weights)"] = write_random_model_dir(Path(tmp) / preset, preset)
        for label, path in models.items():
            report["models"][label] = measure_model(label, path, args.batches, args.seconds, args.tile)
            print(label, json.dumps(report["models"][label]), flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
