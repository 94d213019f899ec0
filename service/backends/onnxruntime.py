"""ONNX Runtime backend: the default, CPU everywhere, CUDA when onnxruntime-gpu finds a GPU."""

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rsd import contract
from service.backends.base import BackendError, ModelInfo, check_external_data
from service.backends.ort_cache import create_session

_INPUTS = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def session_options(
    threads: int = 0,
    spinning: bool = False,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    mem_pattern: bool = False,
) -> ort.SessionOptions:
    """The service's session settings (bench/ort_options_bench.py varies them one at a time): `threads`
    intra-op threads (0 = one per core), one batch at a time, no spinning (spinning threads would steal the
    cores that decode/encode need between batches), every graph optimisation, and no memory pattern: ORT's
    pattern planner (its default) allocates a second, pre-planned block on a shape's second run, which
    makes that run slower and the peak memory 40% higher, for no gain in later runs
    (bench/first_run_bench.py)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = level
    options.enable_mem_pattern = mem_pattern
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OnnxRuntimeBackend:
    def __init__(self, path: Path, threads: int = 0, cache_dir: Path | None = None):
        """`cache_dir` keeps the optimised graph for the next start (service/backends/ort_cache.py)."""
        options = session_options(threads)
        # The graphs of a model set run one batch at a time: one CPU arena for all of them keeps one peak of
        # activation memory instead of one per graph.
        _share_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = create_session(path, options, providers, cache_dir)
        except Exception as e:  # ORT raises its own exception types, one per failure kind
            raise BackendError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None

        inputs = {i.name: i for i in self.session.get_inputs()}
        missing = [name for name in _INPUTS if name not in inputs]
        outputs = [o.name for o in self.session.get_outputs()]
        if missing or contract.OUTPUT_SR not in outputs:
            raise BackendError(
                f"{path} does not follow the graph contract (missing inputs {missing} or output sr)"
            )
        lq = inputs[contract.INPUT_LQ]
        if lq.type not in _DTYPES:
            raise BackendError(f"{path}: input lq has type {lq.type}, expected float or float16")
        self._dtype = _DTYPES[lq.type]
        batch, _, height, width = lq.shape
        tile = height if isinstance(height, int) and height == width else None
        self.info = ModelInfo.from_metadata(
            self.session.get_modelmeta().custom_metadata_map,
            backend=f"onnxruntime ({self.session.get_providers()[0]})",
            default_name=path.stem,
            tile_from_shape=tile,
            precision="fp16" if self._dtype == np.float16 else "fp32",
            max_batch=batch if isinstance(batch, int) else None,
        )
        check_external_data(path, self.session.get_modelmeta().custom_metadata_map)

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        feed = dict(zip(_INPUTS, (lq, noise_prior, noise_student), strict=True))
        if self._dtype != np.float32:
            feed = {k: v.astype(self._dtype) for k, v in feed.items()}
        (sr,) = self.session.run([contract.OUTPUT_SR], feed)
        return sr.astype(np.float32, copy=False)

    def close(self) -> None:
        del self.session


@functools.cache
def _share_cpu_arena() -> None:
    """Register the process's shared CPU arena, once (sessions opt in with session.use_env_allocators)."""
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, None)
