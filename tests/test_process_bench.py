"""bench/rrdbnet_peer.py: the peer's Real-ESRGAN-style tiling gives what one whole-image run gives;
bench/process_phases.py: one real upscale process, phase by phase."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from bench.process_phases import PHASES, measure
from bench.rrdbnet_peer import upscale_tiled
from tests.onnx_fixture import build_fixture_model


def local_x4_model(path) -> None:
    """A 3x3 blur (one pixel of context) then nearest x4, on any HxW: tiles with a halo of at least one
    pixel must reproduce the whole image exactly."""
    blur = np.full((3, 1, 3, 3), 1 / 9, np.float32)
    inits = [
        numpy_helper.from_array(blur, "blur"),
        numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "s"),
    ]
    nodes = [
        helper.make_node("Conv", ["lr", "blur"], ["b"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["b", "", "s"], ["sr"], mode="nearest"),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, None, None]) for n in ("lr", "sr")]
    graph = helper.make_graph(nodes, "local", io[:1], io[1:], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_tiles_with_a_halo_match_the_whole_image(tmp_path):
    local_x4_model(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    lr = np.random.default_rng(0).random((1, 3, 21, 13), dtype=np.float32)
    whole = upscale_tiled(session, lr, tile=0, pad=0)
    assert whole.shape == (1, 3, 84, 52)
    np.testing.assert_array_equal(upscale_tiled(session, lr, tile=8, pad=2), whole)
    assert not np.array_equal(upscale_tiled(session, lr, tile=8, pad=0), whole), "the halo matters"


def test_process_phases_times_every_phase_of_one_real_process(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the child's ORT session cache
    build_fixture_model(tmp_path / "m.onnx", tile=16)
    Image.new("RGB", (24, 20), (90, 120, 30)).save(tmp_path / "in.png")
    phases = measure(tmp_path / "m.onnx", tmp_path / "in.png")
    assert set(phases) == {*PHASES, "start + exit", "total"}
    assert all(phases[name] > 0 for name in PHASES)
    assert sum(phases[name] for name in (*PHASES, "start + exit")) == pytest.approx(phases["total"])
    assert any((tmp_path / "cache").rglob("*"))
