"""Triton model repository writer, from a contract-following ONNX file and from an engine + sidecar."""

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_export import ExportError
from model_export.metadata import read_metadata
from model_export.onnx_export import write_set
from model_export.tensorrt import BatchProfile, sidecar, sidecar_path
from model_export.triton import export_triton, export_triton_set
from rsd import contract
from tests.onnx_fixture import build_fixture_model


def balanced(text: str) -> bool:
    depth = []
    pairs = {"}": "{", "]": "["}
    for ch in re.sub(r'"(?:\\.|[^"\\])*"', "", text):  # ignore string literals
        if ch in "{[":
            depth.append(ch)
        elif ch in pairs and (not depth or depth.pop() != pairs[ch]):
            return False
    return not depth


def test_onnx_repository_layout_and_config(tmp_path):
    onnx_path = build_fixture_model(tmp_path / "sr.onnx", tile=16)
    model_dir = export_triton(onnx_path, tmp_path / "repo", name="sr_x4", max_batch=8, max_queue_delay_us=500)
    assert model_dir == tmp_path / "repo" / "sr_x4"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    config = (model_dir / "config.pbtxt").read_text()
    assert balanced(config)
    assert 'name: "sr_x4"' in config and 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 8" in config
    assert "max_queue_delay_microseconds: 500" in config
    assert "kind: KIND_GPU count: 1" in config
    for name, dims in (
        (contract.INPUT_LQ, "3, 16, 16"),
        (contract.INPUT_NOISE_PRIOR, "3, 16, 16"),
        (contract.INPUT_NOISE_STUDENT, "1, 16, 16"),
        (contract.OUTPUT_SR, "3, 64, 64"),
    ):
        assert f'{{ name: "{name}" data_type: TYPE_FP32 dims: [ {dims} ] }}' in config
    # metadata as parameters; the schedule JSON survives the text-format string escaping
    schedule = read_metadata(onnx_path)[contract.META_SCHEDULE]
    key, value = json.dumps(contract.META_SCHEDULE), json.dumps(schedule)
    assert f"parameters {{ key: {key} value: {{ string_value: {value} }} }}" in config


def test_a_model_set_becomes_one_self_contained_model_per_tile_size(tmp_path):
    graphs = {
        tile: onnx.load(str(build_fixture_model(tmp_path / f"f{tile}.onnx", tile=tile, width=16, depth=1)))
        for tile in (16, 32)
    }
    manifest = write_set(graphs, tmp_path / "set" / "m.json", unit=16, sources=[])  # weights in m.weights
    models = export_triton_set(manifest, tmp_path / "repo", name="sr", max_batch=4)
    assert [model.name for model in models] == ["sr_t16", "sr_t32"]
    rng = np.random.default_rng(0)
    for model_dir, tile in zip(models, (16, 32), strict=True):
        assert f"dims: [ 3, {tile}, {tile} ]" in (model_dir / "config.pbtxt").read_text()
        graph = model_dir / "1" / "model.onnx"
        stored = onnx.load(str(graph), load_external_data=False)
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
        lq = rng.random((1, 3, tile, tile), dtype=np.float32)
        names = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)
        feed = dict(zip(names, (lq, lq, lq[:, :1]), strict=True))
        ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, feed)


def test_plan_repository_uses_sidecar_and_respects_the_profile(tmp_path):
    onnx_path = build_fixture_model(tmp_path / "sr.onnx", tile=16)
    plan = tmp_path / "sr.plan"
    plan.write_bytes(b"serialized engine bytes")  # the writer copies it; only Triton deserializes it
    facts = sidecar(
        read_metadata(onnx_path),
        onnx_path=onnx_path,
        tensorrt_version="10.9.0",
        gpu_name="NVIDIA H100",
        compute_capability="9.0",
        profile=BatchProfile(1, 4, 8),
    )
    sidecar_path(plan).write_text(json.dumps(facts))
    model_dir = export_triton(plan, tmp_path / "repo", max_batch=8)
    config = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and (model_dir / "1" / "model.plan").is_file()
    assert 'string_value: "10.9.0"' in config

    with pytest.raises(ExportError, match="exceeds the engine profile") as err:
        export_triton(plan, tmp_path / "repo2", max_batch=16)
    assert err.value.exit_code == 2
    with pytest.raises(ExportError, match="GPU only"):
        export_triton(plan, tmp_path / "repo3", kind="cpu")
    sidecar_path(plan).unlink()
    with pytest.raises(ExportError, match="no sidecar"):
        export_triton(plan, tmp_path / "repo4")


def test_rejects_other_sources(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_triton(tmp_path / "missing.onnx", tmp_path / "repo")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ExportError, match="neither"):
        export_triton(tmp_path / "weights.safetensors", tmp_path / "repo")
