"""Per-tile time and tiles/s of the fused upscaler: PyTorch eager vs the exported graph, same tiles, same run.

    nice .venv/bin/python bench/export_bench.py                    # tiny preset, CPU, 1 and 2 threads
    nice .venv/bin/python bench/export_bench.py --parity           # + ORT vs torch parity, fp32 and fp16
    nice .venv/bin/python bench/export_bench.py --full-cpu         # + full-size export, checker, ORT batch 1
    .venv/bin/python bench/export_bench.py --json bench-export.json

1. CPU (always): a random-weight model of `--preset` (default tiny-x4), exported at `--tile`; PyTorch
   eager fp32 and ONNX Runtime fp32 (through the service's OnnxRuntimeBackend, i.e. its session
   options) at each batch size and thread count, measurements interleaved so that a busy neighbour
   slows all alike. The acceptance figure is ONNX Runtime's best tiles/s over PyTorch's best tiles/s
   (best over batch sizes and thread counts of each).
2. GPU (when CUDA is available): the full-size architecture (resshift-x4, random weights: speed does
   not depend on them) with PyTorch CUDA fp32 and fp16 (autocast), ONNX Runtime CUDA fp32/fp16 when
   onnxruntime-gpu is installed, and a TensorRT fp16 engine when TensorRT is installed.
Weights are random; a trained model has the same cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_export.fused import build_fused
from model_export.onnx_export import check_graph, export_onnx
from model_export.parity import compare, make_noise, photo_tiles
from model_export.synthetic import write_random_model_dir
from rsd import contract
from training.checkpoint import load_model_dir


def inputs(batch: int, tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lq = np.random.default_rng(seed).random((batch, 3, tile, tile), dtype=np.float32)
    return (lq, *make_noise(batch, tile, seed))


def interleaved(runners: dict[str, Callable[[], object]], batch: int, repeats: int) -> dict[str, dict]:
    """Warm every runner up, then time them in turns; median seconds per call -> per-tile figures."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, samples in times.items():
        seconds = statistics.median(samples)
        out[name] = {"batch": batch, "ms_per_tile": 1e3 * seconds / batch, "tiles_per_s": batch / seconds}
    return out


def row_line(device: str, name: str, row: dict) -> str:
    return (
        f"  {device}  {name:24s} batch {row['batch']:3d}: {row['ms_per_tile']:8.2f} ms/tile, "
        f"{row['tiles_per_s']:.2f} tiles/s"
    )


def best(rows: list[dict], backend: str) -> dict:
    """The fastest row of a backend over every batch size and thread count."""
    return max((r for r in rows if r["backend"] == backend), key=lambda r: r["tiles_per_s"])


def torch_runner(module, arrays, device: str, dtype: torch.dtype, threads: int = 0) -> Callable[[], object]:
    tensors = [torch.from_numpy(a).to(device, dtype) for a in arrays]

    def run():
        if threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            out = module(*tensors)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def cpu_section(args, work: Path) -> dict:
    """Each backend at each thread count in `--threads`: on a shared machine one thread can beat two, where
    every parallel op waits for its second thread, so the comparison takes the best of each."""
    model_dir = args.model_dir or write_random_model_dir(work / "cpu-model", args.preset)
    module = build_fused(load_model_dir(model_dir))
    start = time.perf_counter()
    onnx_path = export_onnx(model_dir, work / "cpu.onnx", tile=args.tile, simplify_graph=args.simplify)
    export_s = time.perf_counter() - start

    from service.backends.onnxruntime import OnnxRuntimeBackend

    sessions = {threads: OnnxRuntimeBackend(onnx_path, threads=threads) for threads in args.threads}
    rows = []
    for batch in args.batches:
        arrays = inputs(batch, args.tile)
        runners = {}
        for threads, session in sessions.items():
            runners[f"pytorch-eager-fp32/{threads}t"] = torch_runner(
                module, arrays, "cpu", torch.float32, threads
            )
            runners[f"onnxruntime-fp32/{threads}t"] = lambda s=session, a=arrays: s.run(*a)
        for name, row in interleaved(runners, batch, args.repeats).items():
            backend, threads = name.split("/")
            rows.append({"backend": backend, "threads": int(threads.removesuffix("t")), **row})
            print(row_line("cpu", name, row))
    torch_best, ort_best = best(rows, "pytorch-eager-fp32"), best(rows, "onnxruntime-fp32")
    speedup = ort_best["tiles_per_s"] / torch_best["tiles_per_s"]
    for name, row in (("pytorch", torch_best), ("onnxruntime", ort_best)):
        print(
            f"  best {name}: batch {row['batch']}, {row['threads']} threads, {row['tiles_per_s']:.2f} tiles/s"
        )
    print(f"  onnxruntime / pytorch = {speedup:.2f}x")
    return {
        "preset": args.preset if args.model_dir is None else str(args.model_dir),
        "tile": args.tile,
        "threads": args.threads,
        "simplified": args.simplify,
        "export_s": export_s,
        "rows": rows,
        "best": {"pytorch-eager-fp32": torch_best, "onnxruntime-fp32": ort_best},
        "onnxruntime_over_pytorch": speedup,
    }


def parity_section(args, work: Path) -> dict:
    """ORT CPU vs torch eager on photo tiles, fp32 and fp16 (fp16 is emulated on CPU: numbers only)."""
    model_dir = args.model_dir or write_random_model_dir(work / "parity-model", args.preset)
    module = build_fused(load_model_dir(model_dir))
    lq = photo_tiles(args.tile, per_photo=2)
    out = {}
    for precision in ("fp32", "fp16"):
        path = export_onnx(model_dir, work / f"parity-{precision}.onnx", tile=args.tile, precision=precision)
        import onnx

        report = compare(module, onnx.load(str(path)), lq, seed=0, batch=2, threads=max(args.threads))
        print(f"  parity {precision}: {report.summary()}")
        out[precision] = report.as_dict()
    return out


def full_cpu_section(args, work: Path) -> dict:
    """Acceptance: the full-size architecture exports, passes the checker, runs in ORT on CPU at batch 1."""
    import onnx

    model_dir = write_random_model_dir(work / "full-model", "resshift-x4")
    start = time.perf_counter()
    path = export_onnx(model_dir, work / "full.onnx", tile=contract.DEFAULT_TILE)
    export_s = time.perf_counter() - start
    problems = check_graph(onnx.load(str(path)), contract.DEFAULT_TILE)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(args.threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = dict(
        zip(
            (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT),
            inputs(1, 64),
            strict=True,
        )
    )
    start = time.perf_counter()
    (sr,) = session.run([contract.OUTPUT_SR], feed)
    run_s = time.perf_counter() - start
    result = {
        "export_s": export_s,
        "onnx_mib": path.stat().st_size / 2**20,
        "checker_problems": problems,
        "batch1_run_s": run_s,
        "sr_shape": list(sr.shape),
        "sr_range": [float(sr.min()), float(sr.max())],
    }
    print(f"  full-size cpu: {json.dumps(result)}")
    return result


def gpu_section(args, work: Path) -> dict:
    """Full-size architecture on the GPU: PyTorch CUDA fp32/fp16, ORT CUDA, TensorRT fp16 where installed."""
    import importlib.util

    tile = contract.DEFAULT_TILE
    model_dir = write_random_model_dir(work / "gpu-model", "resshift-x4")
    module = build_fused(load_model_dir(model_dir, device="cuda"))
    rows = []

    def record(name: str, batch: int, run: Callable[[], object]) -> None:
        row = interleaved({name: run}, batch, args.repeats)[name]
        rows.append({"backend": name, **row})
        print(row_line("gpu", name, row))

    for batch in args.gpu_batches:
        arrays = inputs(batch, tile)
        record("pytorch-cuda-fp32", batch, torch_runner(module, arrays, "cuda", torch.float32))
        record("pytorch-cuda-fp16", batch, torch_runner(module, arrays, "cuda", torch.float16))
    onnx_paths = {
        precision: export_onnx(model_dir, work / f"gpu-{precision}.onnx", tile=tile, precision=precision)
        for precision in ("fp32", "fp16")
    }
    names = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        for precision, path in onnx_paths.items():
            session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
            for batch in args.gpu_batches:
                feed = dict(zip(names, inputs(batch, tile), strict=True))
                record(f"onnxruntime-cuda-{precision}", batch, lambda s=session, f=feed: s.run(None, f))
    if importlib.util.find_spec("tensorrt") is not None:
        from model_export.tensorrt import BatchProfile, export_trt
        from service.backends.tensorrt import TensorRTBackend

        top = max(args.gpu_batches)
        plan, _ = export_trt(onnx_paths["fp16"], work / "gpu.plan", profile=BatchProfile(1, top, top))
        engine = TensorRTBackend(plan)
        for batch in args.gpu_batches:
            arrays = inputs(batch, tile)
            record("tensorrt-fp16", batch, lambda a=arrays: engine.run(*a))
    return {"device": torch.cuda.get_device_name(0), "tile": tile, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny-x4")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="a trained model directory instead of random weights"
    )
    parser.add_argument("--tile", type=int, default=contract.DEFAULT_TILE)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to try")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--simplify", action="store_true", help="run onnxsim on the CPU graph")
    parser.add_argument("--parity", action="store_true")
    parser.add_argument("--full-cpu", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    report = {
        "command": " ".join(sys.argv),
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],  # neighbours on a shared machine slow both alike
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "threads": args.threads,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"CPU, threads {args.threads}, preset {args.preset}, tile {args.tile}:")
        report["cpu"] = cpu_section(args, work)
        if args.parity:
            report["parity"] = parity_section(args, work)
        if args.full_cpu:
            report["full_cpu"] = full_cpu_section(args, work)
        if torch.cuda.is_available():
            print("GPU, full-size architecture:")
            report["gpu"] = gpu_section(args, work)
    report["results"] = flat_results(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def flat_results(report: dict) -> list[dict]:
    """Every row as {"backend", "batch", "tiles_per_s"}, the backend labelled with its device and threads
    (the input of bench/plots.py --export)."""
    results = []
    for row in report["cpu"]["rows"]:
        label = f"{row['backend']}, CPU {row['threads']} threads, {report['cpu']['preset']}"
        results.append({"backend": label, "batch": row["batch"], "tiles_per_s": row["tiles_per_s"]})
    for row in report.get("gpu", {}).get("rows", []):
        label = f"{row['backend']}, {report['gpu']['device']}, resshift-x4"
        results.append({"backend": label, "batch": row["batch"], "tiles_per_s": row["tiles_per_s"]})
    return results


if __name__ == "__main__":
    main()
