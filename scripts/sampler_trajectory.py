"""Where T-step sampling gains or loses PSNR: the decoded x_0 prediction after every reverse step.

    python scripts/sampler_trajectory.py runs/tiny-x4/teacher-mix/model data/demo/val-realesrgan
    python scripts/sampler_trajectory.py MODEL_DIR VAL_DIR --noise-scale 0   # the same chain without noise

Prints, per photo and on average, the PSNR-Y gain over bicubic of Dec(f(x_t, t)) for t = T-1 .. 0: the
first column is the one-step prediction, the last is the T-step result. Seeds are fixed per photo.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from training.checkpoint import load_model_dir
from training.data.valset import load_val_set
from training.metrics import psnr_y
from training.pipeline import SRPipeline
from training.validation import bicubic_up


@torch.no_grad()
def trajectory(
    pipe: SRPipeline, lr: torch.Tensor, hr: torch.Tensor, noise_scale: float, seed: int
) -> list[float]:
    """PSNR-Y of the decoded x_0 prediction after each reverse step, as the T-step sampler runs."""
    schedule, generator = pipe.schedule, torch.Generator().manual_seed(seed)
    lq = lr[None] * 2 - 1
    z_y = pipe.encode_lr(lq)
    x = schedule.prior_sample(z_y, torch.randn(z_y.shape, generator=generator))
    scores = []
    for t in range(schedule.num_timesteps - 1, -1, -1):
        noise = torch.randn(x.shape, generator=generator) * noise_scale if t else None
        x, x0 = schedule.p_sample(pipe.denoise, x, t, lq, noise)
        scores.append(psnr_y((pipe.autoencoder.decode(x0).clamp(-1, 1)[0] + 1) / 2, hr))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="teacher model directory")
    parser.add_argument("val_dir", help="validation folder written by `rsd data make-val`")
    parser.add_argument("--noise-scale", type=float, default=1.0, help="1 = the sampler; 0 = no step noise")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_model_dir(args.model)
    pipe = SRPipeline(bundle.unet.float(), bundle.autoencoder, bundle.schedule).eval()
    steps = bundle.schedule.num_timesteps
    print(f"{'photo':<14}" + "".join(f"{f't={t}':>7}" for t in range(steps - 1, -1, -1)))
    gains = []
    for index, pair in enumerate(load_val_set(args.val_dir)):
        bicubic = psnr_y(bicubic_up(pair.lr), pair.hr)
        gains.append(np.array(trajectory(pipe, pair.lr, pair.hr, args.noise_scale, index)) - bicubic)
        print(f"{pair.name[:13]:<14}" + "".join(f"{g:+7.2f}" for g in gains[-1]), flush=True)
    print(f"{'mean':<14}" + "".join(f"{g:+7.2f}" for g in np.mean(gains, axis=0)))


if __name__ == "__main__":
    main()
