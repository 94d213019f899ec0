"""The default model against a Real-ESRGAN x4 generator on the same photo, both in ONNX Runtime on the CPU.

    .venv/bin/python bench/rrdbnet_bench.py --json docs/bench/rrdbnet.json

Real-ESRGAN's generator is ESRGAN's RRDBNet (64 features, 23 residual-in-residual dense blocks, growth 32,
16.7 M parameters), written here from the ESRGAN paper for timing only: random weights, since speed
does not depend on them. It is exported with a fixed 1x3xHxW input and run whole, as Real-ESRGAN runs
a small image. The RSD side is the product path: `service.offline.upscale_bytes` (PNG decode, tiles,
batches, blending, PNG encode) on the embedded ONNX graph(s). Each time is the median of `--repeats`
runs after one warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from service.defaults import MODEL_PATH as DEFAULT_MODEL_PATH  # noqa: E402
from service.offline import upscale_bytes  # noqa: E402


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing every earlier feature map; output scaled by 0.2 and added."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(features + i * growth, growth if i < 4 else features, 3, padding=1) for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(maps, dim=1))
            maps.append(self.act(out) if i < 4 else out)
        return x + 0.2 * maps[-1]


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(features, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """(B,3,h,w) -> (B,3,4h,4w): trunk at LR size, two nearest x2 upsamplings with convs."""

    def __init__(self, features: int = 64, blocks: int = 23, growth: int = 32):
        super().__init__()
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(features, features, 3, padding=1)
        self.up1 = nn.Conv2d(features, features, 3, padding=1)
        self.up2 = nn.Conv2d(features, features, 3, padding=1)
        self.hr_conv = nn.Conv2d(features, features, 3, padding=1)
        self.last = nn.Conv2d(features, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.trunk_conv(self.trunk(feat))
        feat = self.act(self.up1(nn.functional.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.act(self.up2(nn.functional.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.last(self.act(self.hr_conv(feat)))


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photo_png(path: Path | None, size: int) -> bytes:
    """A real photo, centre-cropped to a square and resized to size x size, as PNG bytes."""
    if path is None:
        photos = sorted((REPO / "data" / "demo" / "val").rglob("*.jpg")) + sorted(
            (REPO / "data" / "demo" / "val").rglob("*.png")
        )
        if not photos:
            raise SystemExit(
                "no photo given and data/demo/val is empty: run `make demo-data` or pass --photo"
            )
        path = photos[0]
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def export_rrdbnet(path: Path, size: int, *, dynamic: bool = False) -> int:
    """Write RRDBNet 64/23/32 (random weights, seed 0) as ONNX, input `lr` 1x3xSxS (any HxW with `dynamic`,
    for callers that tile); returns its parameter count."""
    torch.manual_seed(0)
    net = RRDBNet().eval()
    axes = {"lr": {2: "height", 3: "width"}, "sr": {2: "height4", 3: "width4"}} if dynamic else None
    torch.onnx.export(
        net, (torch.rand(1, 3, size, size),), str(path), input_names=["lr"], output_names=["sr"],
        opset_version=17, dynamo=False, dynamic_axes=axes,
    )  # fmt: skip
    return sum(p.numel() for p in net.parameters())


def rrdbnet_seconds(size: int, threads: int, repeats: int, png: bytes) -> tuple[float, int]:
    """(median seconds for decode -> RRDBNet in ONNX Runtime -> encode, parameters)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rrdbnet.onnx"
        params = export_rrdbnet(path, size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run() -> bytes:
        lr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255
        (sr,) = session.run(None, {"lr": lr.transpose(2, 0, 1)[None]})
        out = (np.clip(sr[0].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, "PNG")
        return buffer.getvalue()

    return median_seconds(run, repeats), params


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, action="append", default=None,
        help="RSD ONNX graph (repeatable); default: the embedded graph and its -t128 sibling if present",
    )  # fmt: skip
    parser.add_argument("--photo", type=Path, help="default: the first validation photo of data/demo/val")
    parser.add_argument("--size", type=int, default=128, help="LR side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.model or [
        p for p in (DEFAULT_MODEL_PATH, DEFAULT_MODEL_PATH.with_name(f"{DEFAULT_MODEL_PATH.stem}-t128.onnx"))
        if p.exists()
    ]  # fmt: skip
    if not models:
        raise SystemExit(f"no RSD graph at {DEFAULT_MODEL_PATH}: run `make default-model` or pass --model")
    png = photo_png(args.photo, args.size)

    rsd = {}
    for path in models:
        backend = OnnxRuntimeBackend(path, threads=args.threads)
        seconds = median_seconds(lambda b=backend: upscale_bytes(png, b, max_batch=8), args.repeats)
        rsd[str(path)] = {"tile": backend.info.tile_size, "seconds": round(seconds, 3)}
        print(f"RSD {path} (tile {backend.info.tile_size}): {seconds:.3f} s", flush=True)
    rrdb_s, params = rrdbnet_seconds(args.size, args.threads, args.repeats, png)
    print(f"RRDBNet 64/23/32 ({params / 1e6:.1f} M parameters): {rrdb_s:.3f} s", flush=True)
    for row in rsd.values():
        row["speedup_vs_rrdbnet"] = round(rrdb_s / row["seconds"], 2)
    report = {
        "image": f"{args.size}x{args.size} PNG -> {4 * args.size}x{4 * args.size} PNG",
        "threads": args.threads,
        "repeats": args.repeats,
        "onnxruntime": ort.__version__,
        "rrdbnet": {"parameters": params, "seconds": round(rrdb_s, 3)},
        "rsd": rsd,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
