"""Reconstruction of the validation photos by an autoencoder vs bicubic of their clean x4 LR, with and
without quantization (the ceiling every model built on the autoencoder shares).

    .venv/bin/python bench/autoencoder_ceiling.py data/demo/val-bicubic                 # tiny-x4 at step 0
    .venv/bin/python bench/autoencoder_ceiling.py data/demo/val-bicubic --model runs/tiny-x4/autoencoder/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoint import load_model_dir
from training.data.degradations import bicubic_degradation
from training.data.valset import load_val_set
from training.metrics import psnr_y
from training.models import build_autoencoder
from training.presets import load_preset
from training.validation import bicubic_up


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("val_dir", type=Path)
    parser.add_argument(
        "--model", type=Path, help="model directory with an autoencoder (default: tiny-x4 at init)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        ae = load_model_dir(args.model).autoencoder
    else:
        torch.manual_seed(0)
        ae = build_autoencoder(load_preset("tiny-x4")["autoencoder"]).eval()
    rows = {}
    for pair in load_val_set(args.val_dir):
        x = pair.hr[None] * 2 - 1
        z = ae.encode(x)
        quantized = (ae.decode(z)[0].clamp(-1, 1) + 1) / 2
        plain = (ae.decode(z, force_not_quantize=True)[0].clamp(-1, 1) + 1) / 2
        bicubic = bicubic_up(bicubic_degradation(pair.hr[None])[0])
        rows[pair.name] = {
            "bicubic": psnr_y(bicubic, pair.hr),
            "autoencoder": psnr_y(quantized, pair.hr),
            "autoencoder_not_quantized": psnr_y(plain, pair.hr),
        }
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
    print(f"{'photo':<28} {'bicubic':>8} {'AE':>8} {'AE no-q':>8}")
    for name, r in {**rows, "mean": mean}.items():
        values = (r["bicubic"], r["autoencoder"], r["autoencoder_not_quantized"])
        print(f"{name[:28]:<28} " + " ".join(f"{v:>8.2f}" for v in values))
    print(json.dumps({"mean_psnr_y": mean}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
