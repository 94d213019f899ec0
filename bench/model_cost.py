"""Parameters, MACs and CPU time of each component of a one-step upscale at 64x64 LR.

    .venv/bin/python bench/model_cost.py                       # both presets, table + JSON
    .venv/bin/python bench/model_cost.py --presets tiny-x4 --repeats 5 --json docs/model_cost.json

MACs come from torch's FlopCounterMode (matmuls and convolutions; FLOPs / 2), like the fvcore numbers
in the reference's resshift_cost_cpu.json. Weights are random: cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.models import LightAutoencoder, build_autoencoder, build_unet
from training.presets import load_preset


def measure(fn, repeats: int) -> tuple[float, float]:
    """(GMAC, median seconds) of fn()."""
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return counter.get_total_flops() / 2e9, statistics.median(times)


def preset_cost(name: str, lr_size: int, repeats: int) -> dict:
    preset = load_preset(name)
    unet = build_unet(preset["unet"]).eval()
    ae = build_autoencoder(preset["autoencoder"]).eval()
    lq = torch.rand(1, 3, lr_size, lr_size) * 2 - 1
    up = F.interpolate(lq, scale_factor=4, mode="bicubic")
    z = ae.encode(up).detach()
    t = torch.full((1,), preset_steps(preset) - 1, dtype=torch.int64)
    light = LightAutoencoder().eval()  # the light serving autoencoder (training/models/light_autoencoder.py)
    components = {
        "encoder": (ae.encoder, lambda: ae.encode(up)),
        "unet_step": (unet, lambda: unet(z, t, lq=lq)),
        "decoder": (ae.decoder, lambda: ae.decode(z)),
        "light_encoder": (light.encoder, lambda: light.encode_lr(lq)),
        "light_decoder": (light.decoder, lambda: light.decode(z)),
    }
    rows = {}
    for key, (module, fn) in components.items():
        gmac, seconds = measure(fn, repeats)
        rows[key] = {"params": sum(p.numel() for p in module.parameters()), "gmac": gmac, "cpu_s": seconds}
    rows["one_step_total"] = total(rows, ("encoder", "unet_step", "decoder"), unet, ae)
    rows["one_step_light_total"] = total(rows, ("light_encoder", "unet_step", "light_decoder"), unet, light)
    return rows


def total(rows: dict, keys: tuple[str, ...], *modules: torch.nn.Module) -> dict:
    """The components' MACs and seconds summed; the parameters of the whole modules (codebook included)."""
    return {
        "params": sum(p.numel() for m in modules for p in m.parameters()),
        "gmac": sum(rows[k]["gmac"] for k in keys),
        "cpu_s": sum(rows[k]["cpu_s"] for k in keys),
    }


def preset_steps(preset: dict) -> int:
    return int(preset["diffusion"]["steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny-x4", "resshift-x4"])
    parser.add_argument("--lr-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        "lr_size": args.lr_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "presets": {name: preset_cost(name, args.lr_size, args.repeats) for name in args.presets},
    }
    print(f"{'preset':<12} {'component':<15} {'params':>12} {'GMAC':>9} {'CPU s':>8}")
    for name, rows in results["presets"].items():
        for key, row in rows.items():
            print(f"{name:<12} {key:<15} {row['params']:>12,} {row['gmac']:>9.2f} {row['cpu_s']:>8.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
