"""Probe: fine-tune only the VQ decoder on a one-step student's own latents, then score on the fixed set.

    python scripts/decoder_probe.py --steps 150 --lpips 1.0 --no-quantize

The autoencoder learned to decode (quantised) latents of HR photos; a student's one-step latents of
degraded LR are a different distribution. This freezes the student and the encoder (so z_y and the
latent space stay as they are) and trains the decoder and post_quant_conv on (student latent -> HR)
pairs: 20 x MSE + L1 + `--lpips` x LPIPS-alex, AdamW, EMA 0.98, the training photos with rot90 and the
Real-ESRGAN degradation. With `--no-quantize` the decoder gets the continuous latent (no codebook lookup,
unlike the official sampler). Prints PSNR-Y / LPIPS-alex / DISTS of the student on the fixed pairs, seeded
as `rsd eval` seeds them. A measurement for docs/distillation.md, not yet a pipeline stage.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoint import load_model_dir
from training.data.degradations import RealESRGANDegradation, make_lr
from training.data.loader import step_batches
from training.data.valset import load_val_set
from training.evaluate import Row, evaluate, format_per_image, format_table
from training.metrics import LPIPS
from training.pipeline import SRPipeline
from training.validation import bicubic_up


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/default/student"))
    parser.add_argument("--val", type=Path, default=Path("data/demo/val-realesrgan"))
    parser.add_argument("--train", nargs="+", default=["data/demo/train", "data/more/train"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--lpips", type=float, default=1.0)
    parser.add_argument("--no-quantize", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    bundle = load_model_dir(args.model, "cpu")
    pipe = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule).eval()
    ae = bundle.autoencoder
    trained = list(ae.decoder.parameters()) + list(ae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.99), weight_decay=0)
    lpips = LPIPS("alex")
    degradation, generator = RealESRGANDegradation(), torch.Generator().manual_seed(0)
    batches = step_batches(
        args.train, batch_size=8, crop_sizes=[128], seed=1, start=0, end=args.steps, augment=["rot90"]
    )
    ema = [copy.deepcopy(m).requires_grad_(False) for m in (ae.decoder, ae.post_quant_conv)]
    for step in range(args.steps):
        hr01 = next(batches)
        hr = hr01 * 2 - 1  # (8,3,128,128)
        lq = make_lr(hr01, "realesrgan", degradation, generator) * 2 - 1  # (8,3,32,32)
        with torch.no_grad():
            b, _, h, w = lq.shape
            prior = torch.randn(b, 3, h, w, generator=generator)
            z0 = pipe.one_step_latent(lq, prior, torch.randn(b, 1, h, w, generator=generator))
            z = z0 if args.no_quantize else ae.quantize(z0)[0]
        sr = ae.decoder(ae.post_quant_conv(z)).clamp(-1, 1)
        mse, lp = (sr - hr).pow(2).mean(), lpips(sr, hr).mean()
        loss = 20 * mse + (sr - hr).abs().mean() + args.lpips * lp
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        with torch.no_grad():
            for average, module in zip(ema, (ae.decoder, ae.post_quant_conv), strict=True):
                for pa, p in zip(average.parameters(), module.parameters(), strict=True):
                    pa.lerp_(p, 1 - 0.98)
        if step % 20 == 0:
            print(f"step {step}: mse {mse.item():.5f} lpips {lp.item():.4f}", flush=True)
    ae.decoder.load_state_dict(ema[0].state_dict())
    ae.post_quant_conv.load_state_dict(ema[1].state_dict())
    if args.no_quantize:
        decode = ae.decode
        ae.decode = lambda z, **_: decode(z, force_not_quantize=True)

    def upscale(lr: torch.Tensor, index: int) -> torch.Tensor:
        return pipe.upscale(lr[None], torch.Generator().manual_seed(index), steps="one")[0]

    rows = [Row("bicubic", 0, lambda lr, _: bicubic_up(lr)), Row("student, adapted decoder", 1, upscale)]
    results = evaluate(rows, load_val_set(args.val), torch.device("cpu"))
    print(format_table(results))
    print(format_per_image(results))


if __name__ == "__main__":
    main()
