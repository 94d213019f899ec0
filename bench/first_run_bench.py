"""The first runs of a fresh process: seconds of each of a session's first runs, and peak memory.

    .venv/bin/python bench/first_run_bench.py models/default/rsd-tiny-x4-t256.onnx --runs 4 --repeats 3 \
        --json docs/bench/first_run.json

`rsd upscale` of one photo is one or two runs of a graph in a new process, so its time is the first run's,
not the steady state that bench/graph_bench.py measures. Each variant runs in its own process, which makes
a session as the service does (2 threads, the shared CPU arena) with one change, and times `--runs` runs of
one seeded random batch; variants take turns for `--repeats` rounds. Reported per variant: the median of
each run index, the peak resident memory and the minor page faults (first touches of fresh memory).

* service: the service's options (service/backends/onnxruntime.py, memory pattern off).
* memory pattern: ORT's default, `enable_mem_pattern` on.
* huge pages: the service's options with glibc's `glibc.malloc.hugetlb=1` tunable, which asks the kernel
  for transparent huge pages on malloc's large blocks (fewer page faults; needs THP in `madvise` mode).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name -> (memory pattern on, extra environment)
VARIANTS = {
    "service": (False, {}),
    "memory pattern": (True, {}),
    "huge pages": (False, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
}


def child(graph: Path, runs: int, batch: int, threads: int, mem_pattern: bool) -> dict:
    """In a fresh process: one session, `runs` timed runs, peak memory and page faults."""
    import onnxruntime as ort

    from bench.graph_bench import random_feed
    from service.backends.onnxruntime import _share_cpu_arena, session_options

    options = session_options(threads, mem_pattern=mem_pattern)
    _share_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    feed = random_feed(batch, session.get_inputs()[0].shape[-1])
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - started)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"runs": seconds, "peak_mib": usage.ru_maxrss / 1024, "page_faults": usage.ru_minflt}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("graph", type=Path)
    parser.add_argument("--runs", type=int, default=4, help="runs per process")
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(REPO))
        mem_pattern = VARIANTS[args.child][0]
        print(json.dumps(child(args.graph, args.runs, args.batch, args.threads, mem_pattern)))
        return

    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, (_, env) in VARIANTS.items():
            command = [sys.executable, __file__, str(args.graph), "--runs", str(args.runs), "--batch",
                       str(args.batch), "--threads", str(args.threads), "--child", name]  # fmt: skip
            done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, check=True)
            samples[name].append(json.loads(done.stdout.splitlines()[-1]))
    results = {}
    print(f"{args.graph.name}, batch {args.batch}, medians of {args.repeats} processes:")
    for name, runs in samples.items():
        per_run = [round(statistics.median(r["runs"][i] for r in runs), 3) for i in range(args.runs)]
        peak = round(statistics.median(r["peak_mib"] for r in runs))
        faults = round(statistics.median(r["page_faults"] for r in runs))
        results[name] = {"seconds_by_run": per_run, "peak_mib": peak, "page_faults": faults, "samples": runs}
        seconds = " ".join(f"{t:.2f}" for t in per_run)
        print(f"  {name:16s} runs {seconds} s   peak {peak} MiB   faults {faults}")
    if args.json:
        import onnxruntime as ort

        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"graph": str(args.graph), "batch": args.batch, "threads": args.threads}
        record["ort"] = ort.__version__
        args.json.write_text(json.dumps({**record, "variants": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
