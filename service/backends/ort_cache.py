"""ONNX Runtime sessions whose optimised graph is cached on disk, so that later starts skip optimisation.

Optimising the default graph is most of what creating its session costs. The first start saves the graph
as ORT optimised it (`SessionOptions.optimized_model_filepath`); later starts load that file with
optimisations off, and compute the same numbers (tests/test_ort_cache.py). ORT documents that a graph
saved after layout optimisations (NCHWc blocks on the CPU) is tied to the hardware, providers and options
that made it, so the key holds those beside the model's sha256 and the ORT version. Only CPU-only
sessions are cached: a graph optimised for the CUDA provider has not been tried. A cache entry that does
not load is rebuilt with a warning; a cache that cannot be written only costs the optimisation again.
"""

import hashlib
import json
import logging
import platform
from pathlib import Path

import onnxruntime as ort

from service.filecache import memo_sha256, published

log = logging.getLogger(__name__)

_CPU_ONLY = ["CPUExecutionProvider"]
_CPUINFO_FIELDS = {"vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"}


def cpu_identity() -> str:
    """What decides the CPU kernels and layouts ORT picks: the first core's model and instruction sets."""
    try:
        first_core = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:  # not Linux
        return f"{platform.machine()} {platform.processor()}"
    lines = [line for line in first_core.splitlines() if line.split(":", 1)[0].strip() in _CPUINFO_FIELDS]
    return "\n".join([platform.machine(), *lines])


def cache_entry(model: Path, cache_dir: Path, options: ort.SessionOptions, providers: list[str]) -> Path:
    """Where the optimised graph of `model` for this ORT version, CPU, providers and level is kept."""
    facts = [
        memo_sha256(model, cache_dir / "sha256"),
        ort.__version__,
        cpu_identity(),
        providers,
        int(options.graph_optimization_level),
    ]
    key = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:24]
    return cache_dir / "ort" / f"{model.stem}-{key}.onnx"


def create_session(
    model: Path, options: ort.SessionOptions, providers: list[str], cache_dir: Path | None
) -> ort.InferenceSession:
    """`ort.InferenceSession(model, options, providers)`, through the cache in `cache_dir` (None: none)."""
    if cache_dir is None or providers != _CPU_ONLY:
        return ort.InferenceSession(str(model), options, providers=providers)
    try:
        entry = cache_entry(model, cache_dir, options, providers)
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("ORT session cache unusable (%s); optimising the graph afresh", e)
        return ort.InferenceSession(str(model), options, providers=providers)
    if entry.is_file():
        level = options.graph_optimization_level
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(entry), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types, one per failure kind
            log.warning("ORT session cache entry %s does not load (%s); rebuilding it", entry, _first_line(e))
        options.graph_optimization_level = level
    try:
        with published(entry) as partial:
            options.optimized_model_filepath = str(partial)
            # The weights go to a file of their own beside the entry: ORT would otherwise keep a graph's
            # external data as references relative to the model (a model set's shared weights), which do
            # not resolve from the cache. Named after the partial file, so no writer touches another's.
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", f"{partial.name}.data"
            )
            session = ort.InferenceSession(str(model), options, providers=providers)
        return session
    except Exception as e:  # a full disk, a graph too big to save, or a model that does not load at all
        save_error = e
    options.optimized_model_filepath = ""
    session = ort.InferenceSession(str(model), options, providers=providers)  # raises the model's own error
    log.warning("cannot write the ORT session cache entry %s (%s)", entry, _first_line(save_error))
    return session


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
