"""Where the GPU time of the fused one-step upscaler goes, and what two layout changes would buy.

    python bench/gpu_profile.py --preset resshift-x4 --batch 32 --json docs/bench/gpu/profile.json

For one model (random weights of a preset, or `--model DIR`) in fp16 at one batch size:
1. a torch.profiler table of the eager forward: CUDA time per operator, grouped into convolutions, matrix
   products, attention softmax, normalisation, elementwise and copies;
2. tiles/s of the forward replayed as one CUDA graph (as the torch backend serves it) for variants:
   `baseline`, `channels_last` (NHWC weights and activations, cuDNN's native tensor-core layout),
   `sdpa` (the Swin window attention through F.scaled_dot_product_attention with the relative position
   bias and shift mask as an additive mask), both together, and `compile` (torch.compile, Inductor's fused
   kernels, default mode); each variant's output is compared with the baseline's on the same inputs.
The JSON is rewritten after every step, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_export.fused import load_fused_module
from model_export.synthetic import write_random_model_dir
from training.models.unet import WindowAttention

VARIANTS = ("baseline", "channels_last", "sdpa", "channels_last+sdpa", "compile")
CATEGORIES = [  # first match wins; matched against the lower-cased operator name
    ("convolution", ("conv", "cudnn")),
    ("matrix product", ("mm", "matmul", "linear", "gemm")),
    ("attention softmax", ("softmax",)),
    ("normalisation", ("norm",)),
    ("copy / layout", ("copy", "contiguous", "cat", "clone", "to_copy", "pad", "roll", "permute", "index")),
]


def sdpa_forward(self, x: torch.Tensor, mask: torch.Tensor | None, windows_per_row: int) -> torch.Tensor:
    """WindowAttention.forward computed by F.scaled_dot_product_attention (same inputs, same result)."""
    bw, n, c = x.shape
    qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, hd)
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
    bias = bias.view(n, n, -1).permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
    if mask is None:
        attn_mask = bias[None].expand(bw, -1, -1, -1)
    else:
        rows = mask.shape[0]
        full = bias + mask.to(q.dtype)[:, None, None]  # (rows, 1, heads, N, N) after broadcasting below
        full = full.expand(bw // (rows * windows_per_row), rows, windows_per_row, self.num_heads, n, n)
        attn_mask = full.reshape(bw, self.num_heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
    return self.proj(out.transpose(1, 2).reshape(bw, n, c))


def make_inputs(batch: int, tile: int, dtype: torch.dtype, channels_last: bool) -> list[torch.Tensor]:
    g = torch.Generator("cuda").manual_seed(0)
    lq = torch.rand((batch, 3, tile, tile), generator=g, device="cuda")
    noises = [torch.randn((batch, c, tile, tile), generator=g, device="cuda") for c in (3, 1)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [a.to(dtype).contiguous(memory_format=fmt) for a in (lq, *noises)]


@torch.no_grad()  # not inference_mode: Dynamo's guards on the schedule tables fail under it
def graph_tiles_per_s(module, inputs: list[torch.Tensor], replays: int) -> tuple[float, torch.Tensor]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = module(*inputs)
    graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(replays):
        graph.replay()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = out.float().clone()
    del graph
    return replays * inputs[0].shape[0] / seconds, result


@torch.inference_mode()
def profile_table(module, inputs: list[torch.Tensor], iterations: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        module(*inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            module(*inputs)
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        cuda_us = getattr(event, "self_device_time_total", None)
        if cuda_us is None:
            cuda_us = event.self_cuda_time_total
        if cuda_us > 0 and event.key.startswith("aten::"):
            rows.append((event.key, cuda_us / iterations / 1000, event.count // iterations))
    rows.sort(key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    groups: dict[str, float] = defaultdict(float)
    for name, ms, _ in rows:
        lower = name.lower()
        category = next((c for c, keys in CATEGORIES if any(k in lower for k in keys)), "elementwise / other")
        groups[category] += ms
    return {
        "forward_ms_cuda": round(total, 2),
        "by_category_percent": {
            k: round(100 * v / total, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
        "top_operators": [
            {"op": name, "ms": round(ms, 3), "percent": round(100 * ms / total, 1), "calls": calls}
            for name, ms, calls in rows[:20]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="resshift-x4", help="random-weight preset (ignored with --model)")
    parser.add_argument("--model", type=Path, help="model directory instead of a preset")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-profile", action="store_true", help="skip the operator table")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU host")
    torch.backends.cudnn.benchmark = True
    dtype = torch.float16
    report: dict = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "tile": args.tile,
        "batch": args.batch,
        "precision": "fp16",
        "variants": {},
    }

    def save() -> None:
        print(json.dumps(report, indent=1), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or write_random_model_dir(Path(tmp) / args.preset, args.preset)
        report["model"] = str(args.model) if args.model else f"{args.preset} (random weights)"
        module, _ = load_fused_module(model_dir, device="cuda", dtype=dtype, tile=args.tile)
        if not args.no_profile:
            report["profile"] = profile_table(module, make_inputs(args.batch, args.tile, dtype, False))
            save()
        original_forward = WindowAttention.forward
        reference = None
        for name in args.variants:
            nhwc = "channels_last" in name
            WindowAttention.forward = sdpa_forward if "sdpa" in name else original_forward
            module.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
            runner, start = module, time.perf_counter()
            if name == "compile":
                runner = torch.compile(module, dynamic=False)
                with torch.no_grad():
                    runner(*make_inputs(args.batch, args.tile, dtype, False))
            speed, out = graph_tiles_per_s(
                runner, make_inputs(args.batch, args.tile, dtype, nhwc), args.replays
            )
            row = {"tiles_per_s": round(speed, 1), "setup_s": round(time.perf_counter() - start, 1)}
            if reference is None:
                reference = out
            else:
                row["max_abs_diff_vs_baseline"] = round(float((out - reference).abs().max()), 5)
            report["variants"][name] = row
            save()
        WindowAttention.forward = original_forward


if __name__ == "__main__":
    main()
