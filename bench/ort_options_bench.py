"""ONNX Runtime session options on one graph (issue #20, item 4): seconds per batch for each variant.

    .venv/bin/python bench/ort_options_bench.py models/default/rsd-tiny-x4-t256.onnx --repeats 5 \
        --json docs/bench/ort_options.json

Each variant is a fresh session of the same graph with one change from the service's settings
(service/backends/onnxruntime.py: 2 intra-op threads, no spinning, ORT_ENABLE_ALL, sequential, no memory
pattern); the timed runs take turns (one run of every variant per round) so that a change in machine load
hits all of them alike, after two untimed runs each (a shape's first two runs are slower with the memory
pattern on; bench/first_run_bench.py times those). Inputs are a seeded random LR batch and noise: the
arithmetic does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import onnxruntime as ort

from service.backends.onnxruntime import session_options

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.graph_bench import random_feed, time_interleaved

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# name -> (intra-op threads, spinning, optimisation level, memory pattern)
VARIANTS = {
    "service (2 threads, no spinning, all)": (2, False, "all", False),
    "spinning": (2, True, "all", False),
    "1 thread": (1, False, "all", False),
    "extended optimisations": (2, False, "extended", False),
    "basic optimisations": (2, False, "basic", False),
    "memory pattern (ORT's default)": (2, False, "all", True),
}


def session(path: Path, threads: int, spinning: bool, level: str, mem_pattern: bool) -> ort.InferenceSession:
    options = session_options(threads, spinning, LEVELS[level], mem_pattern)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("graph", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sessions = {name: session(args.graph, *spec) for name, spec in VARIANTS.items()}
    first = next(iter(sessions.values()))
    tile = first.get_inputs()[0].shape[-1]
    times = time_interleaved(sessions, random_feed(args.batch, tile), args.repeats)
    base = statistics.median(times[next(iter(times))])
    results = {}
    print(f"{args.graph.name}, batch {args.batch} of {tile}x{tile}, median of {args.repeats}:")
    for name, runs in times.items():
        median = statistics.median(runs)
        results[name] = {"runs": [round(t, 4) for t in runs], "median": round(median, 4)}
        print(f"  {name:40s} {median:7.3f} s  ({base / median:.2f}x the service's speed)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"graph": str(args.graph), "batch": args.batch, "tile": tile, "ort": ort.__version__}
        args.json.write_text(json.dumps({**record, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
