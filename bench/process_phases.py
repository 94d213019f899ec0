"""Where one `rsd upscale` process spends its time: imports, session, decode, model, encode, exit.

    .venv/bin/python bench/process_phases.py --sizes 128 256 --repeats 3

Each repeat is a fresh interpreter (this file with `--child`) that does what `rsd upscale` does for one
photo (the same modules, the same calls: service/offline.py), timing each phase with perf_counter; the
whole process is also timed from outside, so `start + exit` is the interpreter's own start, teardown and
whatever the phases leave out. The ORT session cache is filled by an untimed run first, as for every start
after a machine's first. Inputs are centre crops of one real photo, as in bench/process_bench.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("imports", "session", "decode", "model", "encode")


def child(model: Path, image: Path) -> None:
    """One photo the way `rsd upscale` does it; prints the phases' seconds as JSON."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO))
    import rsd.cli  # noqa: F401  (the console script's own import)
    from service import defaults
    from service.backends import load_backend
    from service.imageio import compose, decode, encode, open_image
    from service.offline import OfflineSettings, first_graph_size, upscale_rgb

    t1 = time.perf_counter()
    settings = OfflineSettings(
        model, "onnxruntime", defaults.THREADS, defaults.cache_dir(), defaults.MAX_BATCH_TILES
    )
    first = first_graph_size(model, image, defaults.TILE_OVERLAP)
    backend = load_backend(settings, lazy=True, first_tile=first)
    t2 = time.perf_counter()
    decoded = decode(open_image(image.read_bytes(), 1 << 30))
    t3 = time.perf_counter()
    sr = upscale_rgb(
        decoded.rgb, backend, seed=0, overlap=defaults.TILE_OVERLAP, max_batch=defaults.MAX_BATCH_TILES
    )
    t4 = time.perf_counter()
    encode(compose(decoded, sr, 4.0, backend.info.scale), "png", None, decoded.icc_profile)
    t5 = time.perf_counter()
    print(json.dumps(dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True))))


def measure(model: Path, image: Path) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(model), str(image)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    total = time.perf_counter() - start
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    return {**phases, "start + exit": total - sum(phases.values()), "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help="default: the embedded model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from bench.process_bench import first_photo, write_crop
    from service.defaults import MODEL_PATH

    model = args.model or MODEL_PATH
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            image = Path(tmp) / f"in{size}.png"
            write_crop(first_photo(), size, image)
            measure(model, image)  # fills the session cache and the page cache
            runs = [measure(model, image) for _ in range(args.repeats)]
            results[size] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            cells = ", ".join(f"{k} {v:.3f}" for k, v in results[size].items())
            print(f"{size}x{size} (median of {args.repeats}, s): {cells}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "sizes": results}, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
