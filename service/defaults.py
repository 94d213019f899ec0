"""The defaults that `rsd upscale` shares with the service's Settings. The CLI reads the same RSD_ variables
through its own options, without pydantic-settings (about 0.05 s of a whole upscale process)."""

import os
from pathlib import Path

MODEL_PATH = Path("models/default/rsd-tiny-x4.json")  # its graphs for five tile sizes
THREADS = 0  # every core
# 4: on 2 CPU cores a batch of four 128x128 tiles runs as fast per tile as eight and holds half the
# memory (1.1 against 2.2 GiB resident); GPUs want more (the gpu overlay sets 32).
MAX_BATCH_TILES = 4
TILE_OVERLAP = 8  # LR pixels


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/rsd, else ~/.cache/rsd (XDG base directory spec)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "rsd"
