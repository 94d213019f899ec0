"""Static int8 quantisation of an exported graph's convolutions (issue #20, item 4), calibrated on LR tiles
cut from training photos.

ONNX Runtime's QDQ format: each Conv's weights are stored as int8 per output channel and its input as
uint8 with one scale, read off the calibration tiles (min/max); ONNX Runtime's CPU provider then runs the
Conv as an integer convolution (VNNI where the CPU has it). Everything else (attention, normalisation,
the diffusion arithmetic) stays fp32. The graph's inputs, outputs and metadata are unchanged, so the
service loads it like any other graph; its weights are inline (int8 weights are the graph's own, not the
student's safetensors).

    .venv/bin/python -m model_export.int8 models/default/rsd-tiny-x4-t128.onnx build/int8/t128.onnx

An experiment so far (issue #20, item 4): not yet an `rsd export` precision, nor used by the default model.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from rsd import contract
from training.data.dataset import crop_hr, load_rgb, scan_images, to_tensor
from training.data.degradations import make_lr

CALIBRATION_MODE = {"clean": 0.2, "mild": 0.3, "realesrgan": 0.5}  # the default model's training mixture


def calibration_batches(
    photos: Path, tile: int, count: int = 32, batch: int = 4, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """`count` LR tiles of side `tile` in the graph's input layout, `batch` per feed: HR crops of 4*tile from
    the photos in turn, degraded by the training mixture, with N(0,1) noise as the service draws it."""
    paths = scan_images(photos)
    if not paths:
        raise ValueError(f"no photos under {photos} to calibrate on")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch):
        hr = torch.stack(
            [to_tensor(crop_hr(load_rgb(paths[i % len(paths)]), 4 * tile, rng, rescale=False)) for i in
             range(start, min(start + batch, count))]
        )  # fmt: skip
        lq = make_lr(hr, CALIBRATION_MODE, generator=generator).clamp(0, 1).numpy()  # (b,3,tile,tile)
        yield {
            contract.INPUT_LQ: lq.astype(np.float32),
            contract.INPUT_NOISE_PRIOR: rng.standard_normal((len(lq), 3, tile, tile), dtype=np.float32),
            contract.INPUT_NOISE_STUDENT: rng.standard_normal((len(lq), 1, tile, tile), dtype=np.float32),
        }


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]):
        self.feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_graph(src: Path, out: Path, photos: Path, count: int = 32, seed: int = 0) -> Path:
    """Write the int8 version of graph `src` to `out`, its metadata kept with precision = int8."""
    model = onnx.load(str(src))  # external weights read in
    metadata = {p.key: p.value for p in model.metadata_props}
    tile = int(metadata[contract.META_TILE])
    with tempfile.TemporaryDirectory() as tmp:
        inline, prepared = Path(tmp) / "inline.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, str(inline))
        quant_pre_process(str(inline), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), _Reader(calibration_batches(photos, tile, count, seed=seed)),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    quantized = onnx.load(str(out))
    metadata[contract.META_PRECISION] = "int8"
    metadata.pop(contract.META_EXTERNAL_DATA, None)  # the int8 weights are inline
    del quantized.metadata_props[:]
    for key, value in metadata.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, str(out))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("data/demo/train"))
    parser.add_argument("--count", type=int, default=32)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(quantize_graph(args.src, args.out, args.photos, args.count))
