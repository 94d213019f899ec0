"""Whole processes: `rsd upscale` against a Real-ESRGAN x4 generator in ONNX Runtime (issue #20).

    .venv/bin/python bench/process_bench.py --repeats 5 --json docs/bench/process.json

Each run is a fresh process timed from outside, start to exit: Python starts, imports, creates the ONNX
Runtime session, reads the PNG, upscales, writes the PNG. That is what a user waits for, and at these
sizes start-up and session creation weigh as much as the model.

* rsd: the real console script on each --model (default: the embedded model), twice a round:
  right after its ORT session cache is cleared (`cold cache`: the first start on a machine) and with the
  cache filled (`cached`: every later start). Each model and input size has its own cache folder,
  so that clearing one leaves the others filled.
* peer: bench/rrdbnet_peer.py, RRDBNet 64/23/32 (bench/rrdbnet_bench.py, random weights) with tile_pad 10
  at each of --peer-tiles (a tile as large as the input runs it whole); its best tile size counts.

Both use --threads threads on the same cores (--cpus) and start the same way (the venv's Python, the
same environment). Runs are interleaved: every round runs every variant of a size once, in an order
rotated by one each round. One untimed run of each program first warms the OS page cache (Python,
libraries, the models): every timed run finds it warm. Inputs are centre crops of one real photo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.rrdbnet_bench import export_rrdbnet  # noqa: E402
from service.defaults import MODEL_PATH as DEFAULT_MODEL_PATH  # noqa: E402

PHOTO_DIRS = (REPO / "data" / "holdout" / "photos", REPO / "data" / "demo" / "val")
FALLBACK_PHOTO = REPO / "docs" / "demo.png"  # committed, so the bench runs on a bare clone


@dataclass
class Variant:
    program: str  # rsd or peer
    label: str
    command: list[str]
    output: Path
    model: str = ""  # rsd: the model's key in the results
    cache_dir: Path | None = None  # rsd: its ORT session cache
    clear_cache: bool = False
    runs: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {"runs": [round(t, 3) for t in self.runs], "median": round(statistics.median(self.runs), 3)}


def first_photo() -> Path:
    for folder in PHOTO_DIRS:
        photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if photos:
            return photos[0]
    return FALLBACK_PHOTO


def write_crop(photo: Path, size: int, dst: Path) -> None:
    """The photo's centre size x size pixels (scaled up first if it is smaller)."""
    image = Image.open(photo).convert("RGB")
    if min(image.size) < size:
        factor = size / min(image.size)
        image = image.resize(
            (round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC
        )
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image.crop((left, top, left + size, top + size)).save(dst)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def run_once(variant: Variant, env: dict[str, str], cpus: set[int], size: int) -> float:
    """Seconds from start to exit; checks the process wrote a 4x image."""
    if variant.cache_dir is not None:
        if variant.clear_cache:
            shutil.rmtree(variant.cache_dir, ignore_errors=True)
        env = env | {"RSD_CACHE_DIR": str(variant.cache_dir)}
    variant.output.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        variant.command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant.program} {variant.label} failed:\n{done.stderr[-2000:]}")
    if Image.open(variant.output).size != (4 * size, 4 * size):
        raise SystemExit(f"{variant.program} {variant.label} wrote {Image.open(variant.output).size}")
    return seconds


def variants_for(
    size: int, src: Path, work: Path, rrdbnet: Path, peer_tiles: list[int], threads: int, models: list[Path]
) -> list[Variant]:
    found = []
    for model in models:
        rsd = [str(Path(sys.executable).with_name("rsd")), "upscale", str(src), "--out", str(work / "rsd"),
               "--model", str(model)]  # fmt: skip
        rsd_out = work / "rsd" / f"{src.stem}.png"
        prefix = f"{model.name}, " if len(models) > 1 else ""
        cache = work / "rsd-cache" / f"{model.name}-{size}"
        found += [
            Variant("rsd", f"{prefix}cold cache", rsd, rsd_out, model.name, cache, clear_cache=True),
            Variant("rsd", f"{prefix}cached", rsd, rsd_out, model.name, cache),
        ]
    for tile in sorted({t if t < size else 0 for t in peer_tiles}, key=lambda t: t or size):
        out = work / f"peer-{size}-{tile}.png"
        command = [sys.executable, str(REPO / "bench" / "rrdbnet_peer.py"), str(rrdbnet), str(src), str(out),
                   "--tile", str(tile), "--tile-pad", "10", "--threads", str(threads)]  # fmt: skip
        found.append(Variant("peer", f"tile {tile}" if tile else "whole image", command, out))
    return found


def markdown(results: dict) -> str:
    columns = ("input", "rsd", "cold cache", "cached", "speedup, cached (cold)", "RRDBNet, best tile",
               "RRDBNet by tile")  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for size, r in results.items():
        peer, best = r["peer"], r["peer_best"]
        by_tile = ", ".join(f"{label}: {v['median']:.2f}" for label, v in peer.items())
        for model, m in r["models"].items():
            rows.append(
                f"| {size}x{size} | {model} | {m['cold cache']['median']:.2f} s "
                f"| {m['cached']['median']:.2f} s "
                f"| {m['speedup_cached']:.2f}x ({m['speedup_cold']:.2f}x) "
                f"| {peer[best]['median']:.2f} s ({best}) | {by_tile} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="input sides in pixels")
    parser.add_argument("--peer-tiles", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cpus", type=int, nargs="+", help="cores for both; default: all this process may use"
    )
    parser.add_argument(
        "--photo", type=Path, help="default: data/holdout/photos, data/demo/val, docs/demo.png"
    )
    parser.add_argument(
        "--model", type=Path, action="append", help=f"rsd's model (repeatable); default {DEFAULT_MODEL_PATH}"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.model or [DEFAULT_MODEL_PATH]
    if len({m.name for m in models}) < len(models):
        parser.error("the results are keyed by model file name: give the models distinct names")
    cpus = set(args.cpus or os.sched_getaffinity(0))
    photo = args.photo or first_photo()
    load_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory(prefix="process-bench-") as tmp:
        work = Path(tmp)
        env = os.environ | {"RSD_THREADS": str(args.threads)}
        rrdbnet = work / "rrdbnet.onnx"
        params = export_rrdbnet(rrdbnet, min(args.sizes), dynamic=True)
        by_size = {}
        for size in args.sizes:
            src = work / f"photo-{size}.png"
            write_crop(photo, size, src)
            by_size[size] = variants_for(size, src, work, rrdbnet, args.peer_tiles, args.threads, models)
        first = by_size[min(args.sizes)]
        # every rsd model (which fills the cache) and the peer, untimed
        for warm_up in [v for v in first if v.program == "rsd" and not v.clear_cache] + [first[-1]]:
            run_once(warm_up, env, cpus, min(args.sizes))
        for round_ in range(args.repeats):
            for size, variants in by_size.items():
                shift = round_ % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    variant.runs.append(run_once(variant, env, cpus, size))
                    print(f"{size} {variant.program} {variant.label}: {variant.runs[-1]:.2f} s", flush=True)

    results = {}
    for size, variants in by_size.items():
        peer = {v.label: v.summary() for v in variants if v.program == "peer"}
        best = min(peer, key=lambda label: peer[label]["median"])
        by_model = {}
        for model in models:
            mine = [v for v in variants if v.model == model.name]
            cold, cached = (next(v.summary() for v in mine if v.clear_cache == c) for c in (True, False))
            by_model[model.name] = {
                "cold cache": cold,
                "cached": cached,
                "speedup_cached": round(peer[best]["median"] / cached["median"], 2),
                "speedup_cold": round(peer[best]["median"] / cold["median"], 2),
            }
        results[size] = {"models": by_model, "peer": peer, "peer_best": best}
    report = {
        "what": "whole-process seconds, PNG in -> 4x PNG out, median of the runs; speedup = peer best / rsd",
        "photo": str(photo.relative_to(REPO) if photo.is_relative_to(REPO) else photo),
        "threads": args.threads,
        "cpus": sorted(cpus),
        "repeats": args.repeats,
        "page_cache": "warm (one untimed run of each program first)",
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average": {
            "before": load_before,
            "after": [round(x, 2) for x in os.getloadavg()],
        },  # 1/5/15 min
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "peer_model": {
            "name": "RRDBNet 64/23/32 (Real-ESRGAN x4 generator), random weights",
            "parameters": params,
        },
        "rsd_models": [str(m) for m in models],
        "sizes": results,
    }
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
