"""The peer of `rsd upscale` in bench/process_bench.py: a Real-ESRGAN x4 generator run by ONNX Runtime as a
whole process, as a user would script it (no torch): create the session, read the PNG, tile it, run,
write the PNG.

    python bench/rrdbnet_peer.py rrdbnet.onnx in.png out.png --tile 128 --tile-pad 10 --threads 2

Tiling follows Real-ESRGAN's `RealESRGANer.tile_process`: tile x tile blocks, each run with `tile_pad`
pixels of its neighbours around it (clipped at the image border), only the block itself kept.
"""

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

SCALE = 4


def upscale_tiled(session: ort.InferenceSession, lr: np.ndarray, tile: int, pad: int) -> np.ndarray:
    """(1,3,h,w) -> (1,3,4h,4w), block by block; `tile` 0 runs the whole image at once."""
    _, _, height, width = lr.shape
    tile = tile or max(height, width)
    sr = np.empty((1, 3, SCALE * height, SCALE * width), np.float32)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
            block = np.ascontiguousarray(lr[:, :, py0 : min(y1 + pad, height), px0 : min(x1 + pad, width)])
            (out,) = session.run(None, {"lr": block})
            dy, dx = SCALE * (y0 - py0), SCALE * (x0 - px0)
            sr[:, :, SCALE * y0 : SCALE * y1, SCALE * x0 : SCALE * x1] = out[
                :, :, dy : dy + SCALE * (y1 - y0), dx : dx + SCALE * (x1 - x0)
            ]
    return sr


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="RRDBNet ONNX graph with a dynamic HxW input `lr`")
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--tile", type=int, default=0, help="block side in LR pixels; 0: the whole image")
    parser.add_argument("--tile-pad", type=int, default=10, help="Real-ESRGAN's default")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    rgb = np.asarray(Image.open(args.src).convert("RGB"), dtype=np.float32) / 255
    sr = upscale_tiled(session, np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]), args.tile, args.tile_pad)
    out = (np.clip(sr[0].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(out).save(args.dst)


if __name__ == "__main__":
    main()
