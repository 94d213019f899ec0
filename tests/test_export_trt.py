"""TensorRT export: everything around the builder runs here (profile, sidecar, comparison, clean failure);
the engine build itself runs only where TensorRT and a CUDA GPU exist."""

import json

import numpy as np
import pytest

from model_export import ExportError
from model_export.cli import export_trt
from model_export.metadata import read_metadata
from model_export.tensorrt import BatchProfile, compare_outputs, missing_requirements, sidecar, sidecar_path
from rsd import contract
from service.backends.base import ModelInfo
from tests.onnx_fixture import build_fixture_model


def test_profile_shapes_cover_every_input():
    shapes = BatchProfile(min=1, opt=4, max=8).shapes(64)
    assert shapes == {
        contract.INPUT_LQ: ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)),
        contract.INPUT_NOISE_PRIOR: ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)),
        contract.INPUT_NOISE_STUDENT: ((1, 1, 64, 64), (4, 1, 64, 64), (8, 1, 64, 64)),
    }


@pytest.mark.parametrize(("low", "opt", "high"), [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_profile_rejects_unordered_batches(low, opt, high):
    with pytest.raises(ExportError, match="min <= opt <= max") as err:
        BatchProfile(low, opt, high)
    assert err.value.exit_code == 2


def test_missing_tensorrt_or_gpu_fails_at_once_with_exit_code_2(tmp_path):
    if not missing_requirements():
        pytest.skip("TensorRT and a CUDA GPU are present; the engine build test covers this host")
    with pytest.raises(ExportError) as err:
        export_trt(tmp_path / "no-such-model", tmp_path / "model.plan")  # stops before looking at the source
    message = str(err.value)
    assert err.value.exit_code == 2
    assert "\n" not in message and "cannot build a TensorRT engine here" in message
    assert "TensorRT is not installed" in message or "no CUDA GPU" in message
    assert not (tmp_path / "model.plan").exists()


def test_sidecar_carries_onnx_metadata_and_build_facts(tmp_path):
    onnx_path = build_fixture_model(tmp_path / "model.onnx", tile=16)
    facts = sidecar(
        read_metadata(onnx_path),
        onnx_path=onnx_path,
        tensorrt_version="10.9.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        profile=BatchProfile(1, 8, 16),
    )
    path = sidecar_path(tmp_path / "model.plan")
    assert path == tmp_path / "model.json"
    path.write_text(json.dumps(facts))
    loaded = json.loads(path.read_text())
    assert loaded["tensorrt.profile"] == {"min": 1, "opt": 8, "max": 16}
    assert loaded["tensorrt.tile_size"] == 16
    assert loaded["tensorrt.compute_capability"] == "9.0"
    assert loaded[contract.META_TILE] == "16" and loaded[contract.META_NAME] == "fixture-x4"
    # The service's TensorRT backend reads it like ONNX metadata.
    info = ModelInfo.from_metadata(
        loaded, backend="tensorrt", default_name="x", tile_from_shape=16, precision="fp16", max_batch=16
    )
    assert (info.name, info.tile_size, info.scale, info.schedule) == (
        "fixture-x4",
        16,
        4,
        {"kappa": 2.0, "steps": 1},
    )


def test_compare_outputs_reports_max_mean_and_share_over_tolerance():
    reference = np.zeros((2, 3, 8, 8), np.float32)
    candidate = reference.copy()
    candidate[0, 0, 0, :4] = 0.02
    result = compare_outputs(reference, candidate, tolerance=1e-2)
    assert result["max_abs"] == pytest.approx(0.02)
    assert result["over_tolerance"] == pytest.approx(4 / reference.size)
    assert not result["ok"]
    assert compare_outputs(reference, candidate, tolerance=0.05)["ok"]


def test_engine_builds_with_fp16_and_batch_profile_where_tensorrt_exists(tmp_path):
    """The real build: fp16 export of a tiny random model, strongly typed engine, verified against ORT."""
    if missing_requirements():
        pytest.skip("needs TensorRT and a CUDA GPU: " + "; ".join(missing_requirements()))
    from model_export.synthetic import write_random_model_dir

    model_dir = write_random_model_dir(tmp_path / "model", "tiny-x4")
    lines = export_trt(
        model_dir, tmp_path / "model.plan", tile=32, min_batch=1, opt_batch=2, max_batch=4, verify=True
    )
    facts = json.loads((tmp_path / "model.json").read_text())
    assert facts["tensorrt.profile"] == {"min": 1, "opt": 2, "max": 4}
    assert facts[contract.META_PRECISION] == "fp16"
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert any(line.startswith("verify:") for line in lines)
