"""Tiling waste and seconds per image of `rsd upscale` (service/offline.py) for one or more models.

    .venv/bin/python bench/tiling_bench.py --model models/default/rsd-tiny-x4-t128.onnx \
        --model models/default/rsd-tiny-x4.json --repeats 3

Prints, for each model, the computed LR pixels over the image's pixels (the layout service/tiling.py picks
for its tile sizes) on typical photo sizes, then the median seconds per image through
`upscale_file` for skimage's astronaut at 256x256 and 512x512 (PNG in, PNG out), the models taking turns
within each repeat so that a loaded machine slows them alike.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image
from skimage import data

from service.backends import load_backend
from service.offline import upscale_file
from service.settings import Settings
from service.tiling import plan_tiles

TYPICAL = ((128, 128), (200, 300), (256, 256), (512, 512), (480, 640), (1000, 1000))  # (height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="256,512", help="square input sizes to time")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    settings = Settings()
    backends = {str(m): load_backend(settings.model_copy(update={"model_path": m})) for m in args.model}
    results: dict[str, dict] = {}
    for name, backend in backends.items():
        sizes = backend.info.tile_sizes
        waste = {}
        for height, width in TYPICAL:
            plan = plan_tiles(height, width, sizes, settings.tile_overlap)
            ratio = round(plan.pixels / (height * width), 2)
            waste[f"{width}x{height}"] = {"ratio": ratio, "tiles": plan.count}
        results[name] = {"tile_sizes": list(sizes), "waste": waste, "seconds": {}}
        print(name, json.dumps(results[name]["waste"]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        photo = Image.fromarray(data.astronaut())
        inputs = {}
        for size in map(int, args.sizes.split(",")):
            inputs[size] = Path(tmp) / f"photo-{size}.png"
            photo.resize((size, size), Image.Resampling.LANCZOS).save(inputs[size])
        options = {"overlap": settings.tile_overlap, "max_batch": settings.max_batch_tiles}
        for backend in backends.values():  # warm-up: every graph's first call
            for src in inputs.values():
                upscale_file(src, Path(tmp) / "warm.png", backend, **options)
        times: dict[str, dict[int, list[float]]] = {name: {s: [] for s in inputs} for name in backends}
        for _ in range(args.repeats):
            for name, backend in backends.items():
                for size, src in inputs.items():
                    start = time.perf_counter()
                    upscale_file(src, Path(tmp) / "out.png", backend, **options)
                    times[name][size].append(time.perf_counter() - start)
    for name in backends:
        seconds = {f"{s}x{s}": sorted(round(t, 2) for t in v) for s, v in times[name].items()}
        results[name]["seconds"] = seconds
        medians = {f"{s}x{s}": round(statistics.median(v), 2) for s, v in times[name].items()}
        results[name]["median_s"] = medians
        print(name, "median s per image:", json.dumps(medians), "all:", json.dumps(results[name]["seconds"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
