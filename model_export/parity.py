"""ONNX Runtime vs PyTorch eager on the same tiles and the same noise.

Besides `sr`, the compared graph exposes two internal tensors (`with_quantizer_outputs`): the latent z_0
as the codebook search reads it (the input of its MatMuls) and the codebook indices its ArgMins pick. That
separates the three things that can differ:

  * the continuous path up to z_0 (`latent_max_abs`);
  * the codebook search (`index_agreement` with torch's indices; `quantizer_agreement` with torch's
    search run on the graph's own z_0, which isolates the search from the latent);
  * the decoder (`sr_max_abs_same_indices`: the graph's sr against torch decoding the graph's indices).

A latent that sits on a Voronoi boundary may quantise either way in two correct implementations and
then moves nearby output pixels by about one code spacing, so `sr_max_abs` alone cannot tell a flipped
near-tie from a broken graph; the three numbers above can.

Latent differences grow with the tile: fp32 GroupNorm over a nearly constant group (a flat photo area
at HR resolution; random weights make more of them) is ill-conditioned, and PyTorch and ONNX Runtime
then round differently. On the astronaut's black background at tile 128 (512x512 HR maps) the
encoders of both differ from a float64 run, PyTorch's by 9e-3 there.

z_0 is taken where the search reads it, not at the UNet's output: in an fp16 graph the search's fp32
input was seen to differ from the UNet's fp16 output by up to 5e-4 (ONNX Runtime's CPU provider runs
fp16 Convs in fp32 and can skip the rounding on the way to the search), which made a search that is
exact on its own input look wrong on 0.24% of the positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from model_export.fused import FusedUpscaler
from model_export.onnx_export import QUANTIZER_SCOPE
from rsd import contract

LATENT = "debug_latent"
INDICES = "debug_indices"


@dataclass(frozen=True)
class ParityReport:
    """The last four are None for a model that decodes its continuous latent (no codebook search)."""

    tiles: int
    sr_max_abs: float
    sr_mean_abs: float
    latent_max_abs: float | None
    index_agreement: float | None
    quantizer_agreement: float | None
    sr_max_abs_same_indices: float | None

    def summary(self) -> str:
        if self.index_agreement is None:
            return (
                f"{self.tiles} tiles: sr max|d| {self.sr_max_abs:.2e} (mean {self.sr_mean_abs:.2e}); "
                "the graph decodes its continuous latent (no codebook search)"
            )
        return (
            f"{self.tiles} tiles: sr max|d| {self.sr_max_abs:.2e} (mean {self.sr_mean_abs:.2e}), "
            f"latent max|d| {self.latent_max_abs:.2e}, indices equal {100 * self.index_agreement:.3f}% "
            f"(codebook search on the graph's latent {100 * self.quantizer_agreement:.3f}%), "
            f"sr max|d| with equal indices {self.sr_max_abs_same_indices:.2e}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def with_quantizer_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the fused graph that also outputs z_0 as the codebook search reads it (B, t*t, 3)
    (`debug_latent`) and the indices of its ArgMin(s) (`debug_indices`)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    quantizer = [n for n in model.graph.node if n.name.startswith(QUANTIZER_SCOPE)]
    producer = {out: n for n in quantizer for out in n.output}
    argmins = [n for n in quantizer if n.op_type == "ArgMin"]
    matmuls = [n for n in quantizer if n.op_type == "MatMul"]  # [z, 1] @ table, one per chunk
    if not argmins or len(argmins) != len(matmuls):
        raise ValueError("graph has no quantizer MatMul/ArgMin search; was it exported by rsd?")
    with_ones = producer[matmuls[0].input[0]]  # the Concat [z, 1], or the Split of it into chunks
    if with_ones.op_type == "Split":
        with_ones = producer[with_ones.input[0]]
    latent = with_ones.input[0]  # z_0, always fp32
    chunk_outputs = {n.output[0] for n in argmins}
    joined = [n for n in quantizer if n.op_type == "Concat" and set(n.input) == chunk_outputs]
    indices = joined[0].output[0] if joined else argmins[0].output[0]
    model.graph.node.extend(
        [
            helper.make_node("Identity", [latent], [LATENT], name="debug/latent"),
            helper.make_node("Identity", [indices], [INDICES], name="debug/indices"),
        ]
    )
    model.graph.output.extend(
        [
            helper.make_tensor_value_info(LATENT, TensorProto.FLOAT, None),
            helper.make_tensor_value_info(INDICES, TensorProto.INT64, None),
        ]
    )
    return model


def make_noise(count: int, tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noise_prior (N,3,t,t), noise_student (N,1,t,t)) float32 N(0,1), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((count, 3, tile, tile), dtype=np.float32),
        rng.standard_normal((count, 1, tile, tile), dtype=np.float32),
    )


def compare(
    module: FusedUpscaler,
    model: onnx.ModelProto,
    lq: np.ndarray,
    *,
    seed: int = 0,
    batch: int = 4,
    threads: int = 0,
) -> ParityReport:
    """Run `model` (ONNX Runtime, CPU) and `module` (torch eager, fp32) on lq (N,3,t,t) in [0, 1]."""
    n, _, tile, _ = lq.shape
    noise_prior, noise_student = make_noise(n, tile, seed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    ae = module.pipeline.autoencoder
    quantized = ae.decode_quantized  # else the graph has no codebook search: sr is all there is to compare
    graph = with_quantizer_outputs(model) if quantized else model
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [contract.OUTPUT_SR, LATENT, INDICES] if quantized else [contract.OUTPUT_SR]
    diffs = {"sr": [], "latent": [], "same_indices": []}
    index_equal = quantizer_equal = 0
    for start in range(0, n, batch):
        part = slice(start, start + batch)
        feed = {
            contract.INPUT_LQ: lq[part],
            contract.INPUT_NOISE_PRIOR: noise_prior[part],
            contract.INPUT_NOISE_STUDENT: noise_student[part],
        }
        sr_o, *debug = session.run(outputs, feed)
        sr_o = torch.from_numpy(sr_o)
        lq_t = torch.from_numpy(lq[part])
        with torch.no_grad():
            z_t = module.latent(*(torch.from_numpy(a) for a in feed.values()))
            sr_t = module.correct(module.decode(z_t), lq_t)  # module(...) == correct(decode(latent(...)))
        diffs["sr"].append((sr_o - sr_t).abs().flatten())
        if not quantized:
            continue
        z_o, idx_o = debug
        b = sr_o.shape[0]
        idx_o = torch.from_numpy(idx_o.reshape(b, tile, tile))
        z_o = torch.from_numpy(z_o).reshape(b, tile, tile, -1).permute(0, 3, 1, 2)  # (B,3,t,t)
        with torch.no_grad():
            idx_t = ae.codebook_indices(z_t)
            z_q = ae.quantize.embedding(idx_o).permute(0, 3, 1, 2)  # (B,3,t,t) the codes the graph picked
            sr_same = module.correct((ae.decode(z_q, force_not_quantize=True).clamp(-1, 1) + 1) / 2, lq_t)
            index_equal += int((idx_o == idx_t).sum())
            quantizer_equal += int((idx_o == ae.codebook_indices(z_o)).sum())
        diffs["latent"].append((z_o - z_t).abs().flatten())
        diffs["same_indices"].append((sr_o - sr_same).abs().flatten())
    sr = torch.cat(diffs["sr"])
    positions = n * tile * tile
    return ParityReport(
        tiles=n,
        sr_max_abs=float(sr.max()),
        sr_mean_abs=float(sr.mean()),
        latent_max_abs=float(torch.cat(diffs["latent"]).max()) if quantized else None,
        index_agreement=index_equal / positions if quantized else None,
        quantizer_agreement=quantizer_equal / positions if quantized else None,
        sr_max_abs_same_indices=float(torch.cat(diffs["same_indices"]).max()) if quantized else None,
    )


def photo_tiles(tile: int, per_photo: int = 2) -> np.ndarray:
    """LR tiles (N,3,t,t) float32 in [0,1] from scikit-image's sample photos, bicubic-downscaled x4.

    Real photo statistics (smooth areas, edges, texture) rather than noise; scikit-image is a dev
    dependency, so this is for tests and benchmarks. A tile larger than every downscaled photo (above
    128) is cut from the photos at full size instead.
    """
    from PIL import Image
    from skimage import data

    photos = [Image.fromarray(photo) for photo in (data.astronaut(), data.coffee(), data.chelsea())]
    downscaled = [
        p.resize((p.width // contract.SCALE, p.height // contract.SCALE), Image.BICUBIC) for p in photos
    ]
    fits = [p for p in downscaled if min(p.size) >= tile] or [p for p in photos if min(p.size) >= tile]
    if not fits:
        raise ValueError(f"tile {tile} is larger than every sample photo")
    tiles = []
    for image in fits:
        lr = np.asarray(image, dtype=np.float32)  # (h, w, 3) in [0, 255]
        h, w, _ = lr.shape
        for i in range(per_photo):  # tiles spread along the diagonal
            y = (h - tile) * i // max(per_photo - 1, 1)
            x = (w - tile) * i // max(per_photo - 1, 1)
            tiles.append(lr[y : y + tile, x : x + tile].transpose(2, 0, 1) / 255.0)
    return np.stack(tiles).astype(np.float32)


def main() -> None:
    """`python -m model_export.parity MODEL_DIR GRAPH.onnx`: the report on photo tiles of the graph's size."""
    import argparse
    import json

    from model_export.fused import build_fused
    from model_export.metadata import read_metadata
    from training.checkpoint import load_model_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("graph")
    parser.add_argument("--per-photo", type=int, default=2, help="tiles per sample photo (3 photos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tile = int(read_metadata(args.graph)[contract.META_TILE])
    module = build_fused(load_model_dir(args.model_dir))
    report = compare(module, onnx.load(args.graph), photo_tiles(tile, args.per_photo), seed=args.seed)
    print(report.summary())
    print(json.dumps(report.as_dict()))


if __name__ == "__main__":
    main()
