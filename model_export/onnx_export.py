"""Model directory -> one ONNX graph per tile size: `lq`, `noise_prior`, `noise_student` in, `sr` out.

Traced with the TorchScript exporter (dynamo=False) at a fixed tile, so the Swin shifted-window masks
fold into constants; only the batch axis is dynamic. The graph is kept TensorRT-parsable (opset 17-20,
no float64, only operators TensorRT's ONNX parser implements), which `check_graph` enforces on every
export.

fp16 variant: onnxconverter-common's float16 pass with fp32 inputs/outputs, leaving in fp32 the
codebook search (`QUANTIZER_SCOPE`: ||e||^2 - 2 z.e cancels in fp16 and flips indices), the
normalisations (the UNet computes GroupNorm in fp32 on purpose) and the schedule/timestep casts.

int8 variant: the convolutions quantised, calibrated on training tiles (model_export/int8.py).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from model_export import ExportError
from model_export.fused import FusedUpscaler, build_fused, model_metadata
from model_export.metadata import set_metadata
from rsd import contract
from service.filecache import file_sha256
from training.checkpoint import load_model_dir
from training.data.dataset import scan_images

OPSET = 17
MAX_TENSORRT_OPSET = 20  # TensorRT 10's ONNX parser reads opsets 9..20
QUANTIZER_SCOPE = "/quantize/"  # ONNX node-name prefix of VectorQuantizer2 in the traced graph
CORRECTOR_SCOPE = "/corrector/"  # ... and of the LR corrector (training/models/corrector.py)
BATCH_AXIS = "batch"
TRACE_BATCH = 2  # not 1, so that no op specialises on a singleton batch

# Operators in the fused graphs of this project, all in the support matrix of TensorRT 10's ONNX parser
# (onnx-tensorrt docs/operators.md). A new operator fails `check_graph` until someone checks it there.
TENSORRT_OPS = frozenset(
    {
        "Add", "ArgMin", "AveragePool", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
        "Cos", "DepthToSpace", "Div", "Equal", "Erf", "Expand", "Gather", "Gemm", "GreaterOrEqual",
        "Identity", "InstanceNormalization", "MatMul", "Mul", "Not", "Pad", "Pow", "Range", "ReduceSum",
        "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Split", "Sqrt",
        "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
    }
)  # fmt: skip
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})  # int8's; TensorRT reads them as explicit int8
PRECISIONS = ("fp32", "fp16", "int8")
FP32_OPS = ("InstanceNormalization",)  # Resize and Range are on the converter's own fp32 list


def trace(module: FusedUpscaler, tile: int, opset: int = OPSET) -> onnx.ModelProto:
    """TorchScript-trace the fused module at (TRACE_BATCH, C, tile, tile) into an fp32 ONNX model."""
    channels = (3, 3, module.pipeline.noise_channels or 1)  # lq, noise_prior, noise_student
    args = tuple(torch.zeros(TRACE_BATCH, c, tile, tile) for c in channels)
    names = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Deliberately the TorchScript exporter (deprecated upstream, still shipped): tracing at a fixed tile
        # folds the Swin masks, and it is what the parity tests verify. Its notices are not news to users.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=list(names),
            output_names=[contract.OUTPUT_SR],
            dynamic_axes={name: {0: BATCH_AXIS} for name in (*names, contract.OUTPUT_SR)},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    _float64_to_float32(model)
    _declare_student_noise(model, tile)
    return model


def _float64_to_float32(model: onnx.ModelProto) -> None:
    """TensorRT has no float64. The only float64 values are the schedule table that `scale_input`
    gathers per batch row before casting to fp32; doing the gather in fp32 gives the same numbers."""

    def narrow(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == TensorProto.DOUBLE:
            tensor.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
            )

    for init in model.graph.initializer:
        narrow(init)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                narrow(attr.t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.DOUBLE:
                attr.i = TensorProto.FLOAT
    for info in model.graph.value_info:
        if info.type.tensor_type.elem_type == TensorProto.DOUBLE:
            info.type.tensor_type.elem_type = TensorProto.FLOAT


def _declare_student_noise(model: onnx.ModelProto, tile: int) -> None:
    """A teacher ignores `noise_student` and the tracer drops unused inputs; declare it anyway so that every
    graph takes the same three inputs (rsd/contract.py) and the service feeds them all by name."""
    if any(i.name == contract.INPUT_NOISE_STUDENT for i in model.graph.input):
        return
    model.graph.input.append(
        helper.make_tensor_value_info(
            contract.INPUT_NOISE_STUDENT, TensorProto.FLOAT, [BATCH_AXIS, 1, tile, tile]
        )
    )


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim: folds the shape arithmetic the tracer leaves (about 3x fewer nodes)."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph; export without --simplify")
    return simplified


def to_fp16(model: onnx.ModelProto, quantized: bool = True) -> onnx.ModelProto:
    """fp16 weights and activations, fp32 inputs/outputs, fp32 codebook search (see module docstring);
    `quantized=False` for a model that decodes its continuous latent (no codebook search to keep)."""
    from onnxconverter_common import float16

    keep = [
        node.name
        for node in model.graph.node
        if node.name.startswith(QUANTIZER_SCOPE)
        # Casts to fp32 (timestep index -> embedding argument, shape arithmetic): the converter would
        # retype their outputs without changing `to`.
        or (node.op_type == "Cast" and helper.get_node_attr_value(node, "to") == TensorProto.FLOAT)
    ]
    if quantized and not any(name.startswith(QUANTIZER_SCOPE) for name in keep):
        raise ExportError(
            f"no quantizer nodes ({QUANTIZER_SCOPE}*) found; cannot keep the codebook search fp32"
        )
    with warnings.catch_warnings():  # it warns for every weight below fp16's range that it rounds to 1e-7
        warnings.filterwarnings("ignore", message="the float32 number", module=r"onnxconverter_common")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            node_block_list=keep,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
        )
    _drop_quantizer_round_trips(converted)
    return converted


def _drop_quantizer_round_trips(model: onnx.ModelProto) -> None:
    """Reconnect fp32 -> fp16 -> fp32 Cast pairs on quantizer tensors to the fp32 tensor itself.

    The converter puts such a pair on a tensor that one kept (fp32) node hands to several kept nodes
    (the latent, the code table shared by the chunked search), rounding both to fp16: 8% of a 128 tile's
    codes flipped. Every quantizer node computes in fp32, so the pair is only a rounding."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}

    def cast_to(node, to: int) -> bool:
        return node.op_type == "Cast" and helper.get_node_attr_value(node, "to") == to

    drop, ups = [], []
    for down in graph.node:  # Cast(fp16 -> fp32) of a Cast(fp32 -> fp16) of a quantizer tensor
        up = producer.get(down.input[0]) if cast_to(down, TensorProto.FLOAT) else None
        if up is None or not cast_to(up, TensorProto.FLOAT16):
            continue
        source = producer.get(up.input[0])
        if source is None or not source.name.startswith(QUANTIZER_SCOPE):
            continue
        for node in graph.node:
            node.input[:] = [up.input[0] if name == down.output[0] else name for name in node.input]
        drop.append(down)
        ups.append(up)
    for node in drop:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in {id(n): n for n in ups}.values():
        if node.output[0] not in used:
            graph.node.remove(node)


def _static_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def check_graph(model: onnx.ModelProto, tile: int) -> list[str]:
    """Problems that would stop the service or TensorRT from using the graph; [] when there are none.

    Runs the full ONNX checker and strict shape inference, then checks the contract (names, fixed tile,
    dynamic batch, fp32 I/O), the opset range, float64 and the operator set.
    """
    problems = []
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return [f"onnx checker: {str(e).splitlines()[0]}"]

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSET <= opset <= MAX_TENSORRT_OPSET:
        problems.append(f"opset {opset} is outside {OPSET}..{MAX_TENSORRT_OPSET}")

    s = contract.SCALE
    expected = {
        contract.INPUT_LQ: [3, tile, tile],
        contract.INPUT_NOISE_PRIOR: [3, tile, tile],
        contract.INPUT_NOISE_STUDENT: [1, tile, tile],
        contract.OUTPUT_SR: [3, s * tile, s * tile],
    }
    found = {v.name: v for v in (*inferred.graph.input, *inferred.graph.output)}
    if set(found) != set(expected):
        problems.append(f"inputs/outputs are {sorted(found)}, expected {sorted(expected)}")
    for name, dims in expected.items():
        if name not in found:
            continue
        value = found[name]
        shape = _static_dims(value)
        if shape[1:] != dims or isinstance(shape[0], int):
            problems.append(f"{name} has shape {shape}, expected [{BATCH_AXIS}, {', '.join(map(str, dims))}]")
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            problems.append(f"{name} is not float32")

    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    doubles = [v.name for v in values if v.type.tensor_type.elem_type == TensorProto.DOUBLE]
    doubles += [i.name for i in model.graph.initializer if i.data_type == TensorProto.DOUBLE]
    if doubles:
        problems.append(f"float64 tensors (TensorRT has none): {doubles[:5]}")
    ops = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    unknown = sorted(ops - TENSORRT_OPS - QDQ_OPS) + sorted(
        {n.domain for n in model.graph.node} - {"", "ai.onnx"}
    )
    if unknown:
        problems.append(f"operators outside the TensorRT-checked set: {unknown}")
    return problems


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    *,
    tile: int = contract.DEFAULT_TILE,
    extra_tiles: Iterable[int] = (),
    precision: str = "fp32",
    simplify_graph: bool = False,
    opset: int = OPSET,
    name: str | None = None,
    calibration: str | Path | None = None,
) -> Path:
    """Write the fused graph of a model directory to `out` (fp32, fp16 or int8) with its metadata; returns
    `out`. int8 quantises the convolutions, calibrated on tiles of the photos under `calibration`
    (model_export/int8.py).

    With `extra_tiles`, `out` is a model set's manifest (.json, rsd/contract.py): a graph for `tile` and for
    each extra size is written beside it as `<out stem>-t<size>.onnx`, sharing one copy of the weights
    (`share_weights`), and `tile` is the set's unit tile."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", exit_code=2)
    if (precision == "int8") != (calibration is not None):
        raise ExportError("int8 and only int8 takes calibration photos (--calibration DIR)", exit_code=2)
    if calibration is not None and not (Path(calibration).is_dir() and scan_images(calibration)):
        raise ExportError(f"no photos to calibrate int8 on under {calibration}", exit_code=2)
    if not OPSET <= opset <= MAX_TENSORRT_OPSET:
        raise ExportError(f"opset must be in {OPSET}..{MAX_TENSORRT_OPSET}, got {opset}", exit_code=2)
    model_dir, out, extra_tiles = Path(model_dir), Path(out), tuple(extra_tiles)
    if (out.suffix == ".json") != bool(extra_tiles):
        raise ExportError("graphs for several tile sizes need a .json --out, one graph a .onnx", exit_code=2)
    bundle = load_model_dir(model_dir)
    module = build_fused(bundle)
    tiles = sorted({tile, *extra_tiles})
    bad = [t for t in tiles if t <= 0 or t % module.tile_multiple]
    if bad:
        raise ExportError(
            f"tile must be a positive multiple of {module.tile_multiple} for this model, got {bad[0]}",
            exit_code=2,
        )
    graphs = {}
    for size in tiles:
        with torch.no_grad():
            model = trace(module, size, opset)
        # fp16 before onnxsim: the converter round-trips the quantizer's inputs of a simplified graph
        # via fp16.
        if precision == "fp16":
            model = to_fp16(model, quantized=bundle.autoencoder.decode_quantized)
        if simplify_graph:
            model = simplify(model)
        if precision == "int8":
            from model_export.int8 import quantize  # onnxruntime's quantisation tools: only when asked

            model = quantize(model, Path(calibration), size)
        metadata = model_metadata(model_dir, bundle.config, tile=size, precision=precision, name=name)
        graphs[size] = finish(model, metadata, size)
    if not extra_tiles:
        return write(graphs[tile], out)
    return write_set(graphs, out, unit=tile, sources=_model_weights(model_dir, out.parent))


def finish(model: onnx.ModelProto, metadata: Mapping[str, str], tile: int) -> onnx.ModelProto:
    """Attach metadata and store exact fp16 weights; refuse a graph that fails `check_graph`."""
    set_metadata(model, metadata)
    model.doc_string = "rsd fused x4 upscaler: lq, noise_prior, noise_student -> sr (see rsd/contract.py)"
    store_exact_fp16(model)
    shorten_value_names(model)
    problems = check_graph(model, tile)
    if problems:
        raise ExportError("exported graph fails its checks: " + "; ".join(problems))
    return model


def shorten_value_names(model: onnx.ModelProto) -> None:
    """Rename the graph's intermediate values `v0`, `v1`, ...: the exporter names each after its module path
    and op, which made up more than a third of a graph file's bytes. Node names keep the module paths, which
    is what profiles show; inputs, outputs and weights keep their names. The intermediate shape annotations
    go too."""
    graph = model.graph
    keep = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    taken = keep | {name for node in graph.node for name in (*node.input, *node.output)}
    fresh = (f"v{i}" for i in itertools.count() if f"v{i}" not in taken)
    # all outputs first: converters append nodes out of topological order (the fp16 one its Casts)
    produced = [name for node in graph.node for name in node.output if name and name not in keep]
    names = {name: next(fresh) for name in dict.fromkeys(produced)}
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    del graph.value_info[:]  # intermediate shapes: ONNX Runtime and check_graph infer them again


def write(model: onnx.ModelProto, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def save(model: onnx.ModelProto, out: str | Path, metadata: Mapping[str, str], tile: int) -> Path:
    """`finish` the graph and write it to `out`, self-contained."""
    return write(finish(model, metadata, tile), Path(out))


def write_set(
    graphs: Mapping[int, onnx.ModelProto], out: Path, *, unit: int, sources: Sequence[Path]
) -> Path:
    """Finished graphs -> `<out stem>-t<size>.onnx` beside the manifest `out`, their weights shared."""
    out.parent.mkdir(parents=True, exist_ok=True)
    digests = share_weights(graphs.values(), out.parent, out.with_suffix(".weights").name, sources)
    files = {}
    for size, model in sorted(graphs.items()):
        model.metadata_props.add(key=contract.META_EXTERNAL_DATA, value=json.dumps(digests, sort_keys=True))
        files[size] = write(model, out.with_name(f"{out.stem}-t{size}.onnx"))
    return contract.write_set(out, unit, files)


def _model_weights(model_dir: Path, folder: Path) -> list[Path]:
    """The model directory's safetensors files when the graphs' folder holds the directory (the embedded
    default: models/default/student), so that the graphs read their weights from them; else none."""
    if not model_dir.resolve().is_relative_to(folder.resolve()):
        return []
    return sorted(model_dir.glob("*.safetensors"))


def share_weights(
    models: Iterable[onnx.ModelProto], folder: Path, name: str, sources: Sequence[Path] = ()
) -> dict[str, str]:
    """Move the large tensors of `models` (initializers and Constant values) to ONNX external data, one copy
    of each distinct tensor however many graphs hold it. A tensor found byte for byte in a `sources`
    safetensors file is read from there; the others are written to `folder/name`.

    Returns {file relative to `folder`: sha256} of the files the graphs read, for their metadata
    (contract.META_EXTERNAL_DATA): the service refuses a graph whose files changed since."""
    places = {}  # sha256 of a tensor's bytes -> (file relative to folder, offset, length)
    for source in sources:
        location = source.resolve().relative_to(folder.resolve()).as_posix()
        for digest, offset, length in _safetensors_tensors(source):
            places.setdefault(digest, (location, offset, length))
    blob, used = bytearray(), set()
    for model in models:
        for tensor in _large_tensors(model):
            digest = hashlib.sha256(tensor.raw_data).digest()
            if digest not in places:
                places[digest] = (name, len(blob), len(tensor.raw_data))
                blob += tensor.raw_data
            location, offset, length = places[digest]
            set_external_data(tensor, location, offset=offset, length=length)
            tensor.ClearField("raw_data")
            used.add(location)
    if blob:
        (folder / name).write_bytes(blob)
    return {location: file_sha256(folder / location) for location in sorted(used)}


def _large_tensors(model: onnx.ModelProto, min_bytes: int = 1024) -> Iterator[onnx.TensorProto]:
    constants = (
        attr.t
        for node in model.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    )
    for tensor in itertools.chain(model.graph.initializer, constants):
        if len(tensor.raw_data) >= min_bytes:
            yield tensor


def _safetensors_tensors(path: Path) -> Iterator[tuple[bytes, int, int]]:
    """(sha256, offset in the file, length) of each tensor of a safetensors file: an 8-byte little-endian
    header length, the JSON header (offsets relative to the data after it), the data."""
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    for key, entry in header.items():
        if key != "__metadata__":
            start, end = (8 + header_length + offset for offset in entry["data_offsets"])
            yield hashlib.sha256(data[start:end]).digest(), start, end - start


def store_exact_fp16(model: onnx.ModelProto, min_elements: int = 1024) -> int:
    """Store every fp32 weight whose values fp16 holds exactly as fp16 plus a Cast back to fp32; returns how
    many. Lossless: the graph computes the same numbers, and ONNX Runtime folds the Casts when it loads.
    Weights of a model directory saved with fp16 storage (`copy_model_dir`) all qualify: half the file."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    casts, moved = [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements or init.name in inputs:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}__fp16"))
        casts.append(
            helper.make_node("Cast", [f"{name}__fp16"], [name], name=f"{name}__to_fp32", to=TensorProto.FLOAT)
        )
        moved += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return moved
