"""The fused-graph contract shared by export (torch side) and the service (torch-free).

One exported graph upscales one fixed-size LR tile: `lq` in [0, 1] plus the noise the one-step
student consumes, so outputs are reproducible from a seed. Latents of the VQ-f4 autoencoder have
the LR tile's spatial size (HR / 4), which is why both noise inputs are tile-sized.
"""

import json
from collections.abc import Mapping
from pathlib import Path

SCALE = 4
LATENT_CHANNELS = 3

INPUT_LQ = "lq"  # (B, 3, tile, tile) float32 in [0, 1]
INPUT_NOISE_PRIOR = (
    "noise_prior"  # (B, 3, tile, tile) float32 N(0, 1): the prior sample x_T = z_y + kappa*sqrt(eta_T)*noise
)
INPUT_NOISE_STUDENT = (
    "noise_student"  # (B, 1, tile, tile) float32 N(0, 1): the RSD student's extra input channel
)
OUTPUT_SR = "sr"  # (B, 3, 4*tile, 4*tile) float32 in [0, 1]

# ONNX metadata_props keys (all values are strings; *_json values are JSON documents).
META_NAME = "rsd.name"
META_VERSION = "rsd.version"
META_SCALE = "rsd.scale"
META_TILE = "rsd.tile_size"
META_PRECISION = "rsd.precision"
META_SCHEDULE = "rsd.schedule_json"
META_CONFIG_HASH = "rsd.config_hash"
META_TRAINING = "rsd.training_json"
# {path relative to the graph: sha256} of the files that hold a graph's weights as ONNX external data (graphs
# of several tile sizes share one copy); absent for a self-contained graph.
META_EXTERNAL_DATA = "rsd.external_data_json"

DEFAULT_TILE = 64

# A model as graphs (or engines) for several tile sizes: a JSON manifest {"format": SET_FORMAT,
# "tile_size": t, "graphs": {"<size>": file name beside it}}; tile_size is one of the graphs' sizes and the
# unit the service counts work in. The sizes are in the manifest so that a reader can load only the graphs
# an image needs (`rsd upscale`).
SET_FORMAT = "rsd-graph-set"


def read_set(manifest: Path) -> tuple[int, dict[int, Path]]:
    """(tile_size, {tile size: graph path}) of a model set's manifest, sizes ascending; ValueError (or
    OSError) for anything else."""
    content = json.loads(manifest.read_text())
    if not isinstance(content, dict) or content.get("format") != SET_FORMAT:
        raise ValueError(f"{manifest} is not an {SET_FORMAT} manifest")
    graphs = content.get("graphs")
    if not isinstance(graphs, dict) or not graphs or not all(isinstance(g, str) for g in graphs.values()):
        raise ValueError(f'{manifest} lists no graphs as {{"<tile size>": "<file>"}}')
    by_size = {int(size): manifest.parent / name for size, name in graphs.items()}
    return int(content["tile_size"]), dict(sorted(by_size.items()))


def write_set(manifest: Path, tile_size: int, graphs: Mapping[int, Path]) -> Path:
    """Write the manifest of graphs (by tile size) that lie beside it."""
    names = {str(size): graphs[size].relative_to(manifest.parent).as_posix() for size in sorted(graphs)}
    content = {"format": SET_FORMAT, "tile_size": tile_size, "graphs": names}
    manifest.write_text(json.dumps(content, indent=2) + "\n")
    return manifest
