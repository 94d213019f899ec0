"""Fused module and ONNX export on the tiny preset (random weights with an LR corrector, tile 32, CPU):
contract, metadata, TensorRT-friendliness checks, and ONNX Runtime vs PyTorch parity on real photo tiles
(fp32 and fp16)."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from skimage import data as skimage_data

import rsd
from model_export import ExportError
from model_export.fused import build_fused, load_fused_module
from model_export.metadata import REQUIRED_KEYS, read_metadata
from model_export.onnx_export import CORRECTOR_SCOPE, QUANTIZER_SCOPE, check_graph, export_onnx, save, to_fp16
from model_export.parity import compare, make_noise, photo_tiles
from model_export.synthetic import write_random_model_dir
from rsd import contract
from service.backends import BackendError, load_backend
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.settings import Settings
from service.tiling import plan_tiles, upscale_tiled
from tests.onnx_fixture import build_fixture_model
from training.checkpoint import copy_model_dir, load_model_dir
from training.models import CorrectorConfig

TILE = 32  # the tiny preset's size multiple: the fastest export
BATCH = 2  # torch batch everywhere: the trace runs at 2 too, so oneDNN sets up one set of shapes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a shared 2-core machine every multi-threaded torch op waits ~30 ms for its second thread;
    one thread makes this module several times faster (ONNX Runtime keeps its own thread pool)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A random student with an LR corrector, as the embedded default has."""
    path = tmp_path_factory.mktemp("export") / "tiny-run" / "model"
    return write_random_model_dir(path, "tiny-x4", seed=1, corrector=CorrectorConfig())


@pytest.fixture(scope="module")
def fused(student_dir):
    return build_fused(load_model_dir(student_dir))


@pytest.fixture(scope="module")
def fp32_path(student_dir, tmp_path_factory):
    return export_onnx(student_dir, tmp_path_factory.mktemp("onnx") / "tiny.onnx", tile=TILE)


@pytest.fixture(scope="module")
def graph_set(student_dir):
    """Graphs of tile 32 and 64 in the folder that holds the model directory: they read its safetensors."""
    return export_onnx(
        student_dir, student_dir.parents[1] / "tiny-set.json", tile=TILE, extra_tiles=[2 * TILE]
    )


@pytest.fixture(scope="module")
def fp16_model(fp32_path, tmp_path_factory):
    """The fp16 variant converted from the fp32 export (what export_onnx(precision="fp16") does, minus a
    second trace), saved through the same checks."""
    model = to_fp16(onnx.load(str(fp32_path)))
    metadata = {**read_metadata(fp32_path), contract.META_PRECISION: "fp16"}
    path = save(model, tmp_path_factory.mktemp("onnx16") / "tiny-fp16.onnx", metadata, TILE)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def lq_tiles():
    return photo_tiles(TILE, per_photo=2)  # (6, 3, 32, 32) from astronaut, coffee, chelsea


@torch.no_grad()
def fused_and_pipeline(fused, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(fused module output, SRPipeline.upscale output, the noises) with the noise upscale draws itself."""
    expected = fused.pipeline.upscale(lq, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    noises = (torch.randn(BATCH, 3, TILE, TILE, generator=g), torch.randn(BATCH, 1, TILE, TILE, generator=g))
    return fused(lq, *noises), expected, noises


def test_fused_module_is_the_pipeline_upscale(fused):
    """Same maths as SRPipeline.upscale (validation's path) when fed the noise upscale draws itself."""
    lq = torch.rand(BATCH, 3, TILE, TILE, generator=torch.Generator().manual_seed(0))
    sr, expected, _ = fused_and_pipeline(fused, lq)
    assert sr.shape == (BATCH, 3, 4 * TILE, 4 * TILE)
    assert torch.equal(sr, expected)
    assert sr.min() >= 0 and sr.max() <= 1


def test_load_fused_module_metadata(student_dir):
    module, metadata = load_fused_module(student_dir, dtype=torch.float16)
    assert set(REQUIRED_KEYS) <= set(metadata)
    assert metadata[contract.META_NAME] == "tiny-run"  # `<run>/model` is named after the run
    assert metadata[contract.META_TILE] == str(contract.DEFAULT_TILE)
    assert metadata[contract.META_PRECISION] == "fp16"
    assert metadata[contract.META_VERSION] == rsd.__version__
    assert (
        metadata[contract.META_CONFIG_HASH]
        == hashlib.sha256((student_dir / "config.json").read_bytes()).hexdigest()
    )
    assert json.loads(metadata[contract.META_SCHEDULE])["steps"] == 15
    assert json.loads(metadata[contract.META_TRAINING])["stage"] == "student"
    assert module.pipeline.autoencoder.quantize.embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="multiple of 32"):
        load_fused_module(student_dir, tile=48)


def test_half_inputs_run_under_autocast_close_to_fp32(fused):
    lq = torch.rand(1, 3, TILE, TILE, generator=torch.Generator().manual_seed(3))
    noise_prior, noise_student = (torch.from_numpy(a) for a in make_noise(1, TILE, seed=3))
    with torch.no_grad():
        full = fused(lq, noise_prior, noise_student)
        half = fused(lq.bfloat16(), noise_prior.bfloat16(), noise_student.bfloat16())
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().mean() < 0.05


def test_exported_graph_contract_and_metadata(fp32_path, student_dir):
    model = onnx.load(str(fp32_path))
    assert check_graph(model, TILE) == []
    assert next(o.version for o in model.opset_import if o.domain == "") >= 17
    metadata = read_metadata(fp32_path)
    assert metadata[contract.META_TILE] == str(TILE) and metadata[contract.META_PRECISION] == "fp32"
    assert metadata[contract.META_SCALE] == "4"
    assert (
        metadata[contract.META_CONFIG_HASH]
        == hashlib.sha256((student_dir / "config.json").read_bytes()).hexdigest()
    )

    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == metadata  # what the service reads
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes == {
        contract.INPUT_LQ: ["batch", 3, TILE, TILE],
        contract.INPUT_NOISE_PRIOR: ["batch", 3, TILE, TILE],
        contract.INPUT_NOISE_STUDENT: ["batch", 1, TILE, TILE],
    }
    for batch in (1, 3):  # dynamic batch, traced at 2
        noise_prior, noise_student = make_noise(batch, TILE, seed=batch)
        feed = {
            contract.INPUT_LQ: np.full((batch, 3, TILE, TILE), 0.5, np.float32),
            contract.INPUT_NOISE_PRIOR: noise_prior,
            contract.INPUT_NOISE_STUDENT: noise_student,
        }
        (sr,) = session.run([contract.OUTPUT_SR], feed)
        assert sr.shape == (batch, 3, 4 * TILE, 4 * TILE)
        assert sr.min() >= 0 and sr.max() <= 1
    (other,) = session.run([contract.OUTPUT_SR], {**feed, contract.INPUT_NOISE_STUDENT: -noise_student})
    assert np.abs(other - sr).max() > 1e-3  # the student noise reaches the output


def test_fp32_parity_with_pytorch_on_photo_tiles(fused, fp32_path, lq_tiles):
    """Issue acceptance: max |sr difference| <= 1e-3 and >= 99.9% equal quantisation indices.

    The 1e-3 bound is checked with the quantisation held equal (torch decodes the graph's indices): a
    latent on a Voronoi boundary may flip between two correct fp32 implementations and then moves nearby
    pixels by a code spacing (see model_export/parity.py); the raw max is bounded when nothing flipped.
    """
    report = compare(fused, onnx.load(str(fp32_path)), lq_tiles, seed=0, batch=BATCH)
    print("fp32 parity:", report.summary())
    assert report.index_agreement >= 0.999
    assert report.quantizer_agreement >= 0.999
    assert report.sr_max_abs_same_indices <= 1e-3
    assert report.sr_max_abs <= 1e-3 or report.index_agreement < 1
    # Latents are ~2 in magnitude; random weights leave near-constant GroupNorm groups on flat photo areas
    # that amplify fp32 rounding in both frameworks (~1e-3 seen at tile 64), so this bound is looser.
    assert report.latent_max_abs <= 5e-3
    assert report.sr_mean_abs <= 1e-3


def test_weights_that_fp16_holds_exactly_are_stored_in_fp16(student_dir, fp32_path, lq_tiles, tmp_path):
    """The default model's UNet is stored in fp16 (copy_model_dir): its graph stores those weights in fp16
    plus a Cast, half the bytes, and computes what the module loaded from that directory computes."""
    assert not [
        n for n in onnx.load(str(fp32_path)).graph.node if n.name.endswith("__to_fp32")
    ]  # random fp32
    half_dir = copy_model_dir(student_dir, tmp_path / "half", unet_dtype=torch.float16)
    path = export_onnx(half_dir, tmp_path / "half.onnx", tile=TILE)
    model = onnx.load(str(path))
    assert [n for n in model.graph.node if n.op_type == "Cast" and n.name.endswith("__to_fp32")]
    assert path.stat().st_size < 0.6 * fp32_path.stat().st_size
    assert check_graph(model, TILE) == []
    report = compare(build_fused(load_model_dir(half_dir)), model, lq_tiles, seed=0, batch=BATCH)
    assert report.index_agreement >= 0.999
    assert report.sr_max_abs_same_indices <= 1e-3


def test_fp16_variant_keeps_fp32_io_and_codebook_search(fp16_model, fused, lq_tiles):
    assert check_graph(fp16_model, TILE) == []
    conv_weights = {
        init.data_type
        for node in fp16_model.graph.node
        if node.op_type == "Conv"
        for init in fp16_model.graph.initializer
        if init.name == node.input[1]
    }
    assert conv_weights == {TensorProto.FLOAT16}
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in onnx.shape_inference.infer_shapes(fp16_model).graph.value_info
    }
    quantizer_matmul = next(
        n for n in fp16_model.graph.node if n.op_type == "MatMul" and n.name.startswith(QUANTIZER_SCOPE)
    )
    assert types[quantizer_matmul.input[0]] == TensorProto.FLOAT  # distances in fp32
    producer = {out: node for node in fp16_model.graph.node for out in node.output}

    def rounded_to_fp16(name: str) -> bool:
        """Whether the tensor went through a Cast to fp16 on its way (through casts, splits, concats)."""
        node = producer.get(name)
        while node is not None and node.op_type in ("Cast", "Split", "Concat"):
            if node.op_type == "Cast" and helper.get_node_attr_value(node, "to") == TensorProto.FLOAT16:
                return True
            node = producer.get(node.input[0])
        return False

    searches = [
        n for n in fp16_model.graph.node if n.op_type == "MatMul" and n.name.startswith(QUANTIZER_SCOPE)
    ]
    assert searches and not any(rounded_to_fp16(name) for n in searches for name in n.input)

    report = compare(
        fused, fp16_model, lq_tiles[::2], seed=0, batch=BATCH
    )  # fp16 on CPU is emulated: 3 tiles
    print("fp16 parity:", report.summary())
    # The codebook search is exact on the latent it reads (model_export.parity), which the converter had
    # rounded to fp16 before _drop_quantizer_round_trips; the fp16 UNet itself moves latents by ~1e-2,
    # which flips some indices of this dense random codebook (numbers in the report).
    assert report.quantizer_agreement == 1.0
    assert report.index_agreement >= 0.95
    assert report.sr_mean_abs <= 1e-2


def test_teacher_graph_still_declares_student_noise(tmp_path):
    teacher = write_random_model_dir(tmp_path / "teacher", "tiny-x4", student=False)
    path = export_onnx(teacher, tmp_path / "teacher.onnx", tile=TILE, simplify_graph=True)
    assert check_graph(onnx.load(str(path)), TILE) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [
        contract.INPUT_LQ,
        contract.INPUT_NOISE_PRIOR,
        contract.INPUT_NOISE_STUDENT,
    ]
    noise_prior, noise_student = make_noise(1, TILE, seed=0)
    lq = np.full((1, 3, TILE, TILE), 0.25, np.float32)
    outs = [
        session.run(None, {"lq": lq, "noise_prior": noise_prior, "noise_student": s})[0]
        for s in (noise_student, 2 * noise_student)
    ]
    np.testing.assert_array_equal(outs[0], outs[1])  # a teacher ignores it


def test_export_rejects_bad_options_before_tracing(student_dir, tmp_path):
    for kwargs, message in (
        ({"tile": 48}, "multiple of 32"),
        ({"precision": "int4"}, "fp32, fp16, int8"),
        ({"precision": "int8"}, "calibration"),
        ({"calibration": tmp_path}, "calibration"),
        ({"precision": "int8", "calibration": tmp_path}, "no photos"),
        ({"opset": 16}, "opset"),
        ({"extra_tiles": [64]}, "json"),
    ):
        with pytest.raises(ExportError, match=message) as err:
            export_onnx(student_dir, tmp_path / "x.onnx", **kwargs)
        assert err.value.exit_code == 2
    assert not (tmp_path / "x.onnx").exists()


def test_check_graph_finds_what_tensorrt_or_the_service_would_reject(tmp_path):
    good = onnx.load(str(build_fixture_model(tmp_path / "f.onnx", tile=16)))
    assert check_graph(good, 16) == []
    assert any("tile" in p or "shape" in p for p in check_graph(good, 32))

    def variant(edit):
        model = onnx.ModelProto.FromString(good.SerializeToString())
        edit(model)
        return check_graph(model, 16)

    def add_double(model):
        model.graph.initializer.append(helper.make_tensor("d", TensorProto.DOUBLE, [1], [1.0]))
        model.graph.node.append(helper.make_node("Cast", ["d"], ["d32"], to=TensorProto.FLOAT))

    def add_unknown_op(model):
        model.graph.node.append(helper.make_node("Mod", ["lq", "lq"], ["m"], fmod=1))

    def static_batch(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4

    assert any("float64" in p for p in variant(add_double))
    assert any("Mod" in p for p in variant(add_unknown_op))
    assert any("lq has shape" in p for p in variant(static_batch))


@pytest.fixture(scope="module")
def unquantized_dir(student_dir, tmp_path_factory):
    """The random student decoding its latent without the codebook lookup, as the embedded default does."""
    model = tmp_path_factory.mktemp("unquantized") / "model"
    copy_model_dir(student_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["components"]["autoencoder"]["kwargs"]["decode_quantized"] = False
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_a_model_that_decodes_its_continuous_latent_exports_without_a_codebook_search(
    unquantized_dir, tmp_path
):
    """decode_quantized=False (rsd train decoder): the pipeline, the fused module and both graphs decode the
    latent as it is, with no codebook lookup (and all of them apply the LR corrector)."""
    fused_plain = build_fused(load_model_dir(unquantized_dir))
    ae = fused_plain.pipeline.autoencoder
    z = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ae.decode(z), ae.decode(z, force_not_quantize=True))
        assert not torch.equal(ae.decode(z), ae.decode(ae.quantize(z)[0], force_not_quantize=True))

    lq = torch.rand(BATCH, 3, TILE, TILE, generator=torch.Generator().manual_seed(0))
    expected, via_pipeline, (noise_prior, noise_student) = fused_and_pipeline(fused_plain, lq)
    assert torch.equal(expected, via_pipeline)
    for precision, tolerance in (("fp32", 1e-3), ("fp16", 5e-2)):
        path = export_onnx(unquantized_dir, tmp_path / f"{precision}.onnx", tile=TILE, precision=precision)
        model = onnx.load(str(path))
        assert check_graph(model, TILE) == []
        assert not [n for n in model.graph.node if n.name.startswith(QUANTIZER_SCOPE)]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {
            contract.INPUT_LQ: lq.numpy(),
            contract.INPUT_NOISE_PRIOR: noise_prior.numpy(),
            contract.INPUT_NOISE_STUDENT: noise_student.numpy(),
        }
        (sr,) = session.run([contract.OUTPUT_SR], feeds)
        assert np.abs(sr - expected.numpy()).max() <= tolerance
    report = compare(fused_plain, onnx.load(str(tmp_path / "fp32.onnx")), photo_tiles(TILE, 1), batch=BATCH)
    assert report.index_agreement is None and report.sr_max_abs <= 1e-3
    assert "no codebook search" in report.summary()


def test_int8_quantises_the_convolutions_and_serves_close_to_fp32(unquantized_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage_data, name)()).save(photos / f"{name}.png")
    fp32 = export_onnx(unquantized_dir, tmp_path / "fp32.onnx", tile=TILE)
    int8 = export_onnx(
        unquantized_dir, tmp_path / "int8.onnx", tile=TILE, precision="int8", calibration=photos
    )
    model = onnx.load(str(int8))
    assert check_graph(model, TILE) == []
    assert read_metadata(int8)[contract.META_PRECISION] == "int8"
    weights = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {output: node for node in model.graph.node for output in node.output}
    grouped = {n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    corrector_convs = {n.name for n in convs if n.name.startswith(CORRECTOR_SCOPE)}
    # the resamplers outside the corrector: the light encoder's bicubic bypass and the decoder's, two each
    assert len(corrector_convs) == 11 and len(grouped - corrector_convs) == 4
    int8_convs = [n for n in convs if n.name not in grouped | corrector_convs]
    conv_weights = [producers[conv.input[1]] for conv in int8_convs]
    assert conv_weights and all(n.op_type == "DequantizeLinear" for n in conv_weights)
    assert all(weights[n.input[0]].data_type == TensorProto.INT8 for n in conv_weights)
    fp32_convs = [n for n in convs if n.name in grouped | corrector_convs]  # the resamplers, the corrector
    assert all(n.input[1] in weights for n in fp32_convs)
    assert all(weights[n.input[1]].data_type == TensorProto.FLOAT for n in fp32_convs)

    backend = load_backend(Settings(model_path=int8, threads=1))
    assert backend.info.precision == "int8" and backend.info.tile_size == TILE
    lq = photo_tiles(TILE, 2)
    noise_prior, noise_student = make_noise(len(lq), TILE, seed=0)
    reference = load_backend(Settings(model_path=fp32, threads=1)).run(lq, noise_prior, noise_student)
    sr = backend.run(lq, noise_prior, noise_student)
    psnr = 10 * np.log10(1 / np.mean((sr - reference) ** 2))
    assert 25 < psnr < 80  # quantised, so not equal; close on real photo tiles even with random weights


def test_a_model_set_holds_one_copy_of_the_weights_and_computes_what_one_graph_does(
    graph_set, fp32_path, student_dir, lq_tiles
):
    manifest = json.loads(graph_set.read_text())
    assert manifest == {
        "format": contract.SET_FORMAT,
        "tile_size": TILE,
        "graphs": {str(TILE): "tiny-set-t32.onnx", str(2 * TILE): "tiny-set-t64.onnx"},
    }
    graphs = [graph_set.parent / name for name in manifest["graphs"].values()]
    assert all(g.stat().st_size < fp32_path.stat().st_size / 5 for g in graphs)  # the weights live elsewhere
    data = json.loads(read_metadata(graphs[0])[contract.META_EXTERNAL_DATA])
    assert set(data) >= {"tiny-run/model/unet.safetensors", "tiny-run/model/autoencoder.safetensors"}
    shared = graph_set.with_suffix(".weights")  # what the safetensors lack (transposed Linear weights)
    assert shared.stat().st_size < (student_dir / "unet.safetensors").stat().st_size / 4
    assert onnx.checker.check_model(str(graphs[1]), full_check=True) is None

    for _ in range(2):  # the second start loads the ORT cache's entries
        backend = load_backend(Settings(model_path=graph_set, threads=1))
        assert backend.info.tile_sizes == (TILE, 2 * TILE) and backend.info.tile_size == TILE
        noise = make_noise(len(lq_tiles), TILE, seed=0)
        alone = OnnxRuntimeBackend(fp32_path, threads=1).run(lq_tiles, *noise)
        np.testing.assert_array_equal(backend.run(lq_tiles, *noise), alone)


def test_a_graph_whose_weights_file_changed_is_refused(graph_set, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(graph_set.parent, copy)
    weights = copy / "tiny-run" / "model" / "unet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="export the graph again"):
        OnnxRuntimeBackend(copy / "tiny-set-t32.onnx", threads=1)


def test_tiles_of_a_real_photo_blend_without_seams_into_what_one_tile_gives(graph_set):
    """A 64x64 LR crop of the astronaut as nine overlapping 32 tiles against one 64 tile of the same
    model (random weights, whose outputs depend on far more context than a trained model's): they differ
    less than two noise seeds of the single tile do, and no more along the overlaps than elsewhere."""
    backend = load_backend(Settings(model_path=graph_set, threads=1))
    lr = Image.fromarray(skimage_data.astronaut()).resize((128, 128), Image.Resampling.BICUBIC)
    photo = np.asarray(lr, np.float32)[24:88, 40:104] / 255

    def run(size: int, seed: int = 3) -> np.ndarray:
        return upscale_tiled(photo, backend.run, sizes=(size,), overlap=8, seed=seed, batch_limits={size: 9})

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1 / np.mean((a - b) ** 2)))

    assert plan_tiles(64, 64, (TILE,), 8).count == 9 and plan_tiles(64, 64, (2 * TILE,), 8).count == 1
    single, tiled = run(2 * TILE), run(TILE)
    assert psnr(tiled, single) > psnr(run(2 * TILE, seed=4), single) + 2  # measured 17.4 against 13.9 dB
    error = np.abs(tiled - single).mean(axis=2)  # (256, 256)
    overlaps = np.zeros_like(error, bool)
    for start in (64, 160):  # the overlaps of the 32 tiles, in HR pixels
        overlaps[start : start + 32] = overlaps[:, start : start + 32] = True
    inner = np.zeros_like(overlaps)
    inner[32:-32, 32:-32] = True  # away from the border, where one tile pads and the other reflects
    assert error[overlaps & inner].mean() < 1.25 * error[~overlaps & inner].mean()  # measured 0.96


def test_value_names_are_shortened_even_for_nodes_out_of_order():
    """The fp16 converter appends its Casts after their consumers: every reference is still renamed."""
    from onnx import TensorProto, helper

    from model_export.onnx_export import shorten_value_names

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    consumer = helper.make_node("Relu", ["/long/module/path/cast_output_0"], ["y"], name="relu")
    producer = helper.make_node("Identity", ["x"], ["/long/module/path/cast_output_0"], name="cast")
    model = helper.make_model(helper.make_graph([consumer, producer], "g", [x], [y]))
    shorten_value_names(model)
    consumer, producer = model.graph.node
    assert consumer.input[0] == producer.output[0] == "v0"
    assert [n.name for n in model.graph.node] == ["relu", "cast"]  # node names are kept
