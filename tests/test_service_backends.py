"""Backends and settings: contract checks with one-line errors, metadata, the optional torch path."""

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import helper

from rsd import contract
from service.backends import BackendError, load_backend
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.settings import Settings
from tests.onnx_fixture import build_fixture_model


def test_onnxruntime_reads_the_contract_metadata(tmp_path):
    backend = OnnxRuntimeBackend(build_fixture_model(tmp_path / "m.onnx", tile=8), threads=1)
    info = backend.info
    assert (info.name, info.version, info.scale, info.tile_size, info.precision) == (
        "fixture-x4",
        "0.0-test",
        4,
        8,
        "fp32",
    )
    assert info.max_batch is None and info.schedule == {"kappa": 2.0, "steps": 1}
    lq = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    sr = backend.run(lq, np.zeros_like(lq), np.zeros_like(lq[:, :1]))
    assert sr.shape == (3, 3, 32, 32) and sr.dtype == np.float32 and 0 <= sr.min() <= sr.max() <= 1


def test_model_without_metadata_falls_back_to_its_shape_and_file_name(tmp_path):
    path = build_fixture_model(tmp_path / "plain.onnx", tile=8)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    info = OnnxRuntimeBackend(path).info
    assert (info.name, info.version, info.tile_size, info.scale) == ("plain", "unknown", 8, 4)


def test_metadata_tile_that_disagrees_with_the_graph_is_refused(tmp_path):
    path = build_fixture_model(tmp_path / "m.onnx", tile=8, metadata={contract.META_TILE: "64"})
    with pytest.raises(BackendError, match="tile 64"):
        OnnxRuntimeBackend(path)


def test_graph_without_the_contract_inputs_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(BackendError, match="graph contract"):
        OnnxRuntimeBackend(path)


def test_corrupt_or_missing_model_gives_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    for path, pattern in ((corrupt, "cannot load"), (tmp_path / "absent.onnx", "model not found")):
        with pytest.raises(BackendError, match=pattern) as error:
            load_backend(Settings(model_path=path))
        assert "\n" not in str(error.value)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def write_set(folder, graphs, tile_size):
    """graphs: {tile size: file name}."""
    return contract.write_set(folder / "set.json", tile_size, {s: folder / g for s, g in graphs.items()})


def test_a_model_set_runs_each_batch_on_the_graph_of_its_tile_size(tmp_path):
    for tile in (8, 16):
        build_fixture_model(tmp_path / f"m-t{tile}.onnx", tile=tile)
    backend = load_backend(
        Settings(model_path=write_set(tmp_path, {16: "m-t16.onnx", 8: "m-t8.onnx"}, 8), threads=1)
    )
    info = backend.info
    assert (info.name, info.tile_size, info.tile_sizes) == ("fixture-x4", 8, (8, 16))
    assert info.batch_limits(8) == {8: 8, 16: 2}  # a batch holds the pixels of eight tiles of 8
    lq = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    noise = (np.zeros_like(lq), np.zeros_like(lq[:, :1]))
    alone = OnnxRuntimeBackend(tmp_path / "m-t16.onnx", threads=1)
    np.testing.assert_array_equal(backend.run(lq, *noise), alone.run(lq, *noise))
    backend.close()


def test_a_lazy_model_set_loads_a_graph_on_its_first_batch(tmp_path):
    """What `rsd upscale` does: a photo laid out in tiles of 16 never loads the graph of 8's neighbour."""
    for tile in (8, 16, 32):
        build_fixture_model(tmp_path / f"m-t{tile}.onnx", tile=tile)
    manifest = write_set(tmp_path, {8: "m-t8.onnx", 16: "m-t16.onnx", 32: "m-t32.onnx"}, 8)
    backend = load_backend(Settings(model_path=manifest, threads=1), lazy=True)
    assert backend.info.tile_sizes == (8, 16, 32) and set(backend.members) == {8}
    lq = np.zeros((1, 3, 16, 16), np.float32)
    assert backend.run(lq, lq, lq[:, :1]).shape == (1, 3, 64, 64)
    assert set(backend.members) == {8, 16}
    assert set(load_backend(Settings(model_path=manifest, threads=1)).members) == {8, 16, 32}


def test_a_lazy_model_set_can_load_the_graph_its_first_photo_needs_first(tmp_path):
    """`rsd upscale` of a photo that is one tile of 32 loads one graph, not also the set's tile_size graph."""
    for tile in (8, 32):
        build_fixture_model(tmp_path / f"m-t{tile}.onnx", tile=tile)
    manifest = write_set(tmp_path, {8: "m-t8.onnx", 32: "m-t32.onnx"}, 8)
    backend = load_backend(Settings(model_path=manifest, threads=1), lazy=True, first_tile=32)
    assert set(backend.members) == {32}
    assert (backend.info.tile_size, backend.info.tile_sizes) == (8, (8, 32))  # the set's unit, not 32
    with pytest.raises(BackendError, match="first graph 16 is none of its graphs"):
        load_backend(Settings(model_path=manifest, threads=1), lazy=True, first_tile=16)


@pytest.mark.parametrize(
    ("graphs", "tile_size", "message"),
    [
        ({8: "m-t8.onnx", 16: "other-t16.onnx"}, 8, "differ in \\['name'\\]"),
        ({8: "m-t8.onnx", 16: "m-t16.onnx"}, 32, "none of its graphs"),
        ({8: "m-t8.onnx", 16: "m-t8.onnx"}, 8, "a graph of tile 8 as tile 16"),
        ({8: "missing.onnx"}, 8, "model not found"),
    ],
)
def test_a_set_that_is_not_one_model_in_distinct_sizes_is_refused(tmp_path, graphs, tile_size, message):
    for tile in (8, 16):
        build_fixture_model(tmp_path / f"m-t{tile}.onnx", tile=tile)
    build_fixture_model(tmp_path / "other-t16.onnx", tile=16, metadata={contract.META_NAME: "other"})
    with pytest.raises(BackendError, match=message):
        load_backend(Settings(model_path=write_set(tmp_path, graphs, tile_size), threads=1))


def test_a_manifest_that_is_not_a_model_set_gives_one_line(tmp_path):
    (tmp_path / "set.json").write_text('{"graphs": ["m.onnx"]}')
    with pytest.raises(BackendError, match="not an rsd-graph-set manifest"):
        load_backend(Settings(model_path=tmp_path / "set.json"))


def test_torch_backend_runs_a_fused_module_with_the_graph_contract():
    import torch
    import torch.nn.functional as F

    from service.backends.torch import TorchBackend

    class Bicubic(torch.nn.Module):
        """Stands in for the fused student: same inputs and output contract."""

        def forward(self, lq, noise_prior, noise_student):  # (B,3,t,t), (B,3,t,t), (B,1,t,t)
            noise = F.interpolate(noise_prior + noise_student, scale_factor=4, mode="nearest")
            return F.interpolate(lq, scale_factor=4, mode="bicubic") + 1e-3 * noise  # (B,3,4t,4t)

    metadata = {contract.META_TILE: "8", contract.META_NAME: "bicubic", contract.META_VERSION: "1"}
    backend = TorchBackend(Bicubic(), metadata, device=torch.device("cpu"), dtype=torch.float32, max_batch=4)
    assert (backend.info.name, backend.info.tile_size, backend.info.precision) == ("bicubic", 8, "fp32")
    lq = np.full((3, 3, 8, 8), 0.25, np.float32)
    sr = backend.run(lq, np.zeros_like(lq), np.zeros_like(lq[:, :1]))
    assert sr.shape == (3, 3, 32, 32) and sr.dtype == np.float32
    np.testing.assert_allclose(sr, 0.25, atol=1e-5)


def test_settings_read_the_rsd_environment(monkeypatch):
    monkeypatch.setenv("RSD_MAX_BATCH_TILES", "16")
    monkeypatch.setenv("RSD_API_KEYS", " key-one, key-two ,")
    monkeypatch.setenv("RSD_BACKEND", "torch")
    settings = Settings()
    assert settings.max_batch_tiles == 16 and settings.backend == "torch"
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one", "key-two"]
    assert "key-one" not in repr(settings)  # keys never show in logs
    assert str(settings.model_path) == "models/default/rsd-tiny-x4.json"


def test_settings_refuse_a_queue_smaller_than_a_batch():
    with pytest.raises(ValueError, match="max_queue_tiles"):
        Settings(max_batch_tiles=16, max_queue_tiles=8)


def test_offline_upscale_matches_the_service_path(tmp_path):
    """`rsd upscale` goes through the same decode, tiler and encode: alpha and size survive."""
    import io

    from PIL import Image

    from service.offline import upscale_file
    from tests.service_support import noise_image

    backend = OnnxRuntimeBackend(build_fixture_model(tmp_path / "m.onnx", tile=16), threads=1)
    src = tmp_path / "in.png"
    noise_image(30, 20, "RGBA").save(src)
    dst = tmp_path / "out.webp"
    upscale_file(src, dst, backend, overlap=4, seed=3)
    out = Image.open(io.BytesIO(dst.read_bytes()))
    assert out.format == "WEBP" and out.mode == "RGBA" and out.size == (120, 80)
    with pytest.raises(ValueError, match="output format"):
        upscale_file(src, tmp_path / "out.gif", backend)


def test_json_logs_carry_the_request_id():
    import json
    import logging

    from service import logs

    record = logging.LogRecord("service", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"status": 200}
    token = logs.request_id.set("req-7")
    try:
        logs._RequestId().filter(record)
    finally:
        logs.request_id.reset(token)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == "req-7" and line["message"] == "request" and line["status"] == 200
