"""Seconds per batch of several graphs of one tile size, interleaved, in the service's session options.

    .venv/bin/python bench/graph_bench.py OLD-t128.onnx models/default/rsd-tiny-x4-t128.onnx --repeats 4

Each graph gets a session as service/backends/onnxruntime.py makes it (2 threads unless --threads); after
one untimed run each, the timed runs take turns, so a change in machine load hits every graph alike.
Inputs are a seeded random LR batch and noise: the arithmetic does not depend on the values. Speedups are
against the first graph.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rsd import contract
from service.backends.onnxruntime import session_options


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("graphs", type=Path, nargs="+")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    options = session_options(args.threads)
    sessions = {
        p: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in args.graphs
    }
    tiles = {s.get_inputs()[0].shape[-1] for s in sessions.values()}
    if len(tiles) != 1:
        raise SystemExit(f"the graphs take different tile sizes: {sorted(tiles)}")
    tile, b = tiles.pop(), args.batch
    rng = np.random.default_rng(0)
    feed = {
        contract.INPUT_LQ: rng.random((b, 3, tile, tile), dtype=np.float32),
        contract.INPUT_NOISE_PRIOR: rng.standard_normal((b, 3, tile, tile), dtype=np.float32),
        contract.INPUT_NOISE_STUDENT: rng.standard_normal((b, 1, tile, tile), dtype=np.float32),
    }
    times: dict[Path, list[float]] = {p: [] for p in sessions}
    for s in sessions.values():
        s.run(None, feed)
    for _ in range(args.repeats):
        for p, s in sessions.items():
            started = time.perf_counter()
            s.run(None, feed)
            times[p].append(time.perf_counter() - started)
    base = statistics.median(times[args.graphs[0]])
    print(f"batch {b} of {tile}x{tile}, median of {args.repeats}:")
    for p, runs in times.items():
        median = statistics.median(runs)
        print(f"  {p!s:50s} {median:7.3f} s  ({base / median:.2f}x)")


if __name__ == "__main__":
    main()
