"""Static int8 quantisation of a fused graph's convolutions (`rsd export onnx --precision int8`), calibrated
on LR tiles cut from training photos.

ONNX Runtime's QDQ format: each Conv's weights are stored as int8 per output channel and its input as
uint8 with one scale, read off the calibration tiles (min/max); ONNX Runtime's CPU provider then runs the
Conv as an integer convolution (VNNI where the CPU has it). Everything else (attention, normalisation,
the diffusion arithmetic) stays fp32, and so do the bicubic resamplers (depthwise convolutions) and every
Conv of the LR corrector: they are a small part of a tile's arithmetic, and what they add to the pixels is
a few levels of 8 bits (docs/distillation.md, "The LR corrector"; `_stays_fp32`). The graph's inputs
and outputs are unchanged, so the service loads it like any other graph. The int8 weights are the graph's
own: a model set shares them across its tile sizes in `<set>.weights` (model_export/onnx_export.py,
`share_weights`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from model_export.onnx_export import CORRECTOR_SCOPE
from rsd import contract
from training.data.dataset import crop_hr, load_rgb, scan_images, to_tensor
from training.data.degradations import make_lr

CALIBRATION_MODE = {"clean": 0.2, "mild": 0.3, "realesrgan": 0.5}  # the inputs users send, as in training
# LR pixels to calibrate on: 32 tiles of 64x64, fewer of a larger tile. One tile per feed: the calibration
# session runs the graph unoptimised, and a batch of four 256 tiles ran out of 24 GiB.
CALIBRATION_PIXELS = 32 * 64 * 64


def calibration_feeds(
    photos: Path, tile: int, pixels: int = CALIBRATION_PIXELS, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """LR tiles of side `tile` (at least two, `pixels` in all) in the graph's input layout, one per feed:
    HR crops of 4*tile from the photos in turn, degraded by the LR mixture, with N(0,1) noise as the
    service draws it."""
    paths = scan_images(photos)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    for i in range(max(2, round(pixels / tile**2))):
        hr = to_tensor(crop_hr(load_rgb(paths[i % len(paths)]), contract.SCALE * tile, rng, rescale=False))
        lq = make_lr(hr[None], CALIBRATION_MODE, generator=generator).clamp(0, 1).numpy()  # (1,3,tile,tile)
        yield {
            contract.INPUT_LQ: lq.astype(np.float32),
            contract.INPUT_NOISE_PRIOR: rng.standard_normal((1, 3, tile, tile), dtype=np.float32),
            contract.INPUT_NOISE_STUDENT: rng.standard_normal((1, 1, tile, tile), dtype=np.float32),
        }


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]):
        self.feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize(
    model: onnx.ModelProto, photos: Path, tile: int, pixels: int = CALIBRATION_PIXELS, seed: int = 0
) -> onnx.ModelProto:
    """The int8 version of an fp32 fused graph of LR tile `tile` (metadata is the caller's to set)."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, out = (Path(tmp) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, str(fp32))
        # shape inference and constant folding (the exact-fp16 weights' Casts), so that every Conv weight
        # is an initializer the quantiser can see
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        kept_fp32 = [n.name for n in onnx.load(str(prepared)).graph.node if _stays_fp32(n)]
        quantize_static(
            str(prepared), str(out), _Reader(calibration_feeds(photos, tile, pixels, seed)),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept_fp32,
        )  # fmt: skip
        return onnx.load(str(out))


def _stays_fp32(node: onnx.NodeProto) -> bool:
    """The LR corrector's convolutions and every grouped one: the bicubic resamplers (training/resample.py)
    are depthwise convolutions with fixed taps whose outputs reach the pixels directly, such as the
    decoder's resampling bypass; quantised, they cost 0.02-0.08 dB PSNR-Y for a negligible share of the
    arithmetic."""
    if node.name.startswith(CORRECTOR_SCOPE):
        return True
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
