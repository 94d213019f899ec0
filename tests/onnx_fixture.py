"""A real, small ONNX model with the fused graph's contract (rsd/contract.py), built with onnx.helper.

sr = clip(cubic_x4(lq) + 0.15 * laplacian(cubic_x4(lq)) + 1e-3 * (noise_prior + noise_student)↑4, 0, 1)

The Laplacian runs on a reflect-padded input and its kernel sums to zero, so a constant image stays
constant: any seam the service shows comes from tiling, not from this model. `width`/`depth` add a
conv stack whose only job is to cost compute like a real network (for bench/serve_bench.py).
Test-only: the real student comes from model_export.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rsd import contract

NOISE_SCALE = 1e-3
SHARPEN = 0.15


def build_fixture_model(
    path: Path, *, tile: int = 16, width: int = 0, depth: int = 0, metadata: dict[str, str] | None = None
) -> Path:
    """Write the model to `path` and return it; batch axis dynamic, tile fixed."""
    s = contract.SCALE
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([1, 1, s, s], np.float32), "scales"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(
            np.tile(np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32), (3, 1, 1, 1)), "laplace"
        ),  # (3, 1, 3, 3) depthwise
        numpy_helper.from_array(np.array(SHARPEN, np.float32), "sharpen"),
        numpy_helper.from_array(np.array(NOISE_SCALE, np.float32), "noise_scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Resize", ["lq", "", "scales"], ["up"], mode="cubic", cubic_coeff_a=-0.75),
        helper.make_node("Pad", ["up", "pads"], ["up_pad"], mode="reflect"),
        helper.make_node("Conv", ["up_pad", "laplace"], ["lap"], group=3),
        helper.make_node("Mul", ["lap", "sharpen"], ["detail"]),
        helper.make_node("Add", ["up", "detail"], ["sharp"]),
        helper.make_node("Add", ["noise_prior", "noise_student"], ["noise"]),  # (B,1,t,t) broadcasts to 3
        helper.make_node("Resize", ["noise", "", "scales"], ["noise_up"], mode="nearest"),
        helper.make_node("Mul", ["noise_up", "noise_scale"], ["noise_term"]),
        helper.make_node("Add", ["sharp", "noise_term"], ["mixed"]),
    ]
    last = "mixed"
    if width and depth:
        channels = [3] + [width] * depth + [3]
        x = "up"
        for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
            w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
            x = f"c{i}"
            if i < depth:
                nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
                x = f"r{i}"
        inits.append(numpy_helper.from_array(np.array(1e-4, np.float32), "heavy_scale"))
        nodes += [
            helper.make_node("Mul", [x, "heavy_scale"], ["heavy"]),
            helper.make_node("Add", ["mixed", "heavy"], ["mixed_heavy"]),
        ]
        last = "mixed_heavy"
    nodes.append(helper.make_node("Clip", [last, "lo", "hi"], [contract.OUTPUT_SR]))

    def io(name: str, channels: int, size: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, size, size])

    graph = helper.make_graph(
        nodes,
        "rsd_fixture",
        [
            io(contract.INPUT_LQ, 3, tile),
            io(contract.INPUT_NOISE_PRIOR, 3, tile),
            io(contract.INPUT_NOISE_STUDENT, 1, tile),
        ],
        [io(contract.OUTPUT_SR, 3, s * tile)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {
        contract.META_NAME: "fixture-x4",
        contract.META_VERSION: "0.0-test",
        contract.META_SCALE: str(s),
        contract.META_TILE: str(tile),
        contract.META_PRECISION: "fp32",
        contract.META_SCHEDULE: json.dumps({"kappa": 2.0, "steps": 1}),
        contract.META_CONFIG_HASH: "fixture",
        contract.META_TRAINING: json.dumps(
            {"source": "tests/onnx_fixture.py", "width": width, "depth": depth}
        ),
        **(metadata or {}),
    }
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
