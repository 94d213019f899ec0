"""Seconds per batch of several graphs of one tile size, interleaved, in the service's session options.

    .venv/bin/python bench/graph_bench.py OLD-t128.onnx models/default/rsd-tiny-x4-t128.onnx --repeats 4

Each graph gets a session as service/backends/onnxruntime.py makes it (2 threads unless --threads); after
two untimed runs each, the timed runs take turns, so a change in machine load hits every graph alike.
Inputs are a seeded random LR batch and noise: the arithmetic does not depend on the values. Speedups are
against the first graph.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_export.parity import make_noise
from rsd import contract
from service.backends.onnxruntime import session_options


def random_feed(batch: int, tile: int) -> dict[str, np.ndarray]:
    """A seeded random LR batch and its noise, in the graphs' input layout."""
    noise_prior, noise_student = make_noise(batch, tile, seed=0)
    lq = np.random.default_rng(0).random((batch, 3, tile, tile), dtype=np.float32)
    return {
        contract.INPUT_LQ: lq,
        contract.INPUT_NOISE_PRIOR: noise_prior,
        contract.INPUT_NOISE_STUDENT: noise_student,
    }


def time_interleaved(sessions: Mapping, feed: dict[str, np.ndarray], repeats: int) -> dict:
    """Seconds of each session's runs: two untimed runs each (a shape's first runs allocate its memory),
    then `repeats` rounds taking turns."""
    for s in sessions.values():
        s.run(None, feed)
        s.run(None, feed)
    times = {key: [] for key in sessions}
    for _ in range(repeats):
        for key, s in sessions.items():
            started = time.perf_counter()
            s.run(None, feed)
            times[key].append(time.perf_counter() - started)
    return times


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
    times = time_interleaved(sessions, random_feed(b, tile), args.repeats)
    base = statistics.median(times[args.graphs[0]])
    print(f"batch {b} of {tile}x{tile}, median of {args.repeats}:")
    for p, runs in times.items():
        median = statistics.median(runs)
        print(f"  {p!s:50s} {median:7.3f} s  ({base / median:.2f}x)")


if __name__ == "__main__":
    main()
