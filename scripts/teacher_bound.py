"""How high can any sampler of a teacher score in PSNR? Scores posterior-mean estimates on a fixed val set.

    python scripts/teacher_bound.py runs/tiny-x4/teacher-mix/model data/demo/val-realesrgan --draws 8

A T-step sample is a draw from the model's posterior, so its expected error is above that of the
posterior mean, which is the PSNR-optimal output of the model. This prints, next to bicubic: one
one-step x0 prediction (the posterior mean given one noise draw), the average of `--draws` of them
(latents averaged, and images averaged), and the average of 4 T-step samples. Seeds are fixed per image.
"""

from __future__ import annotations

import argparse

import torch

from training.checkpoint import load_model_dir
from training.data.dataset import from_model_range
from training.data.valset import load_val_set
from training.pipeline import SRPipeline
from training.validation import Scorer, bicubic_up


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("teacher", help="teacher model directory")
    parser.add_argument("val", help="validation set written by `rsd data make-val`")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_model_dir(args.teacher)
    pipe = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule).eval()
    draws = f"mean of {args.draws} one-step"
    rows = ["bicubic", "one step", f"{draws} latents", f"{draws} images", "mean of 4 T-step samples"]
    scores = {row: Scorer("cpu") for row in rows}

    def decode(z: torch.Tensor) -> torch.Tensor:
        return from_model_range(pipe.autoencoder.decode(z))[0]

    for index, pair in enumerate(load_val_set(args.val)):
        lq = pair.lr[None] * 2 - 1
        generator = torch.Generator().manual_seed(index)
        latents = [
            pipe.one_step_latent(lq, torch.randn((1, 3, *lq.shape[2:]), generator=generator))
            for _ in range(args.draws)
        ]
        images = [decode(z) for z in latents]
        samples = [
            pipe.upscale(pair.lr[None], torch.Generator().manual_seed(100 * index + j), steps="full")[0]
            for j in range(4)
        ]
        outputs = [bicubic_up(pair.lr), images[0], decode(torch.stack(latents).mean(0))]
        outputs += [torch.stack(images).mean(0), torch.stack(samples).mean(0)]
        for row, out in zip(rows, outputs, strict=True):
            scores[row].add(out, pair.hr)
    for row, scorer in scores.items():
        mean = scorer.mean()
        print(f"{row:34s} PSNR-Y {mean['psnr_y']:6.2f}  LPIPS-alex {mean['lpips_alex']:.4f}")


if __name__ == "__main__":
    main()
