"""Write the model card (JSON and Markdown) of the embedded default model from what the pipeline recorded.

    python scripts/model_card.py models/default

Reads `eval.json` (`rsd eval` in every LR mode), the stage configs as each run recorded them
(`run.out_dir`/config.json) and the steps and CPU time each stage recorded in its model directory;
nothing in the card is typed by hand.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# stage -> (config, command); each stage's run directory is its config's `run.out_dir`.
STAGES = {
    "autoencoder": ("configs/tiny-x4/autoencoder.yaml", "rsd train autoencoder"),
    "teacher": ("configs/tiny-x4/teacher.yaml", "rsd train teacher"),
    "teacher-mix": ("configs/tiny-x4/teacher-mix.yaml", "rsd train teacher"),
    "distill": ("configs/tiny-x4/distill.yaml", "rsd train distill"),
    "autoencoder-slim": ("configs/tiny-x4/autoencoder-slim.yaml", "rsd train autoencoder"),
    "decoder": ("configs/tiny-x4/decoder.yaml", "rsd train decoder"),
    "decoder-pruned": ("configs/tiny-x4/decoder-pruned.yaml", "rsd train decoder"),
    "light": ("configs/tiny-x4/light.yaml", "rsd train light"),
    "prune": ("configs/tiny-x4/prune.yaml", "rsd train prune"),
    "corrector": ("configs/tiny-x4/corrector.yaml", "rsd train corrector"),
}


def stage_record(config_file: str, command: str) -> dict:
    """Steps and CPU time as the stage's exported model directory recorded them (checkpoints not needed)."""
    run_dir = REPO / yaml.safe_load((REPO / config_file).read_text())["run"]["out_dir"]
    meta = json.loads((run_dir / "model" / "config.json").read_text())["meta"]
    return {
        "command": f"{command} --config {config_file}",
        "run_dir": str(run_dir.relative_to(REPO)),
        "steps": int(meta["step"]),
        "cpu_hours": round(float(meta["cpu_seconds"]) / 3600, 3),
        "config": json.loads((run_dir / "config.json").read_text()),
    }


EVALUATIONS = {  # file in the model directory -> what it scored
    "eval.json": "the 8 validation photos (data/demo/val), every LR mode",
}


def evaluation_lines(name: str, what: str, record: dict) -> list[str]:
    """A Markdown table per mode: every row's metrics, its PSNR-Y gain over bicubic with the 95% bootstrap
    interval, and its LPIPS as a multiple of bicubic's."""
    lines = []
    for mode, results in record["modes"].items():
        lines += [
            "",
            f"`{name}`: {what}; `{mode}` LR, seed {record['seed']}, {results[0]['images']} photos, "
            f"{record['threads']} threads:",
            "",
            "| model | NFE | PSNR-Y | gain [95% CI] | SSIM-Y | LPIPS-alex (x bicubic) | DISTS | s / image |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            lo, hi = r["psnr_y_gain_ci95"]
            lines.append(
                f"| {r['model']} | {r['nfe']} | {r['psnr_y']:.2f} "
                f"| {r['psnr_y_gain']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['ssim_y']:.4f} "
                f"| {r['lpips_alex']:.4f} ({r['lpips_ratio']:.2f}) | {r['dists']:.4f} "
                f"| {r['seconds_per_image']:.3f} |"
            )
    return lines


def main(out_dir: Path) -> None:
    evaluations = {n: json.loads((out_dir / n).read_text()) for n in EVALUATIONS if (out_dir / n).is_file()}
    stages = {name: stage_record(cfg, cmd) for name, (cfg, cmd) in STAGES.items()}
    card = {
        "name": "rsd-tiny-x4",
        "task": "x4 real-world super-resolution, one step (RSD student of a ResShift teacher)",
        "data": "data/demo: photographs from Debian wallpaper packages (scripts/demo_data.py; licences in "
        "data/demo/COPYRIGHT), split by photo; teacher and distillation also train on data/more (339 photos "
        "from Ubuntu wallpaper packages, `scripts/demo_data.py --more-out data/more`; licences in "
        "data/more/COPYRIGHT); validation = data/demo/val in the clean, mild and realesrgan modes (seed 0)",
        "machine": {"cpu_threads": 2, "platform": platform.platform(), "torch": torch.__version__},
        "storage": "student/unet.safetensors and the graphs' UNet weights in fp16 (rounded from the trained "
        "fp32 student, with one Swin block fewer in each level-0 Swin layer, fitted by the prune stage "
        "to the distilled student's latents; computed in fp32); the autoencoder (autoencoder-slim: no "
        "mid attention, the "
        "autoencoder stage's latent space; its decoder fitted by the decoder stage to the student's latents, "
        "which it decodes without the codebook lookup, then fitted again with one block fewer at full and at "
        "half resolution by the decoder-pruned stage) in fp32, behind the light stage's LR encoder (its "
        "decoder is not used); the corrector stage's LR corrector (student/corrector.safetensors) in fp32, "
        "applied to every output",
        "graph": "graphs (rsd-tiny-x4.json) take 64, 96, 128, 192 and 256 px LR tiles, run their "
        "convolutions but the corrector's and the bicubic resamplers' in int8 (calibrated on tiles of "
        "data/demo/train; the int8 weights in rsd-tiny-x4.weights), read the student's safetensors for "
        "the rest, and each image is laid out in them",
        "stages": stages,
        "total_cpu_hours": round(sum(s["cpu_hours"] for s in stages.values()), 3),
        "evaluations": evaluations,
        "files": sorted(p.name for p in out_dir.iterdir()),
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")

    lines = [
        "# rsd-tiny-x4 (embedded default model)",
        "",
        f"{card['task']}. Produced by `make default-model` on {card['machine']['cpu_threads']} CPU threads;",
        f"total training CPU time {card['total_cpu_hours']} h. Data: {card['data']}.",
        f"Weights: {card['storage']}. The {card['graph']}.",
        "",
        "| stage | command | steps | CPU hours |",
        "|---|---|---|---|",
    ]
    for name, stage in stages.items():
        lines.append(f"| {name} | `{stage['command']}` | {stage['steps']} | {stage['cpu_hours']} |")
    lines += [
        "",
        f"Evaluation (`rsd eval`; `student {Path(stages['distill']['run_dir']).name}/model` is the student "
        "on the autoencoder stage's autoencoder):",
    ]
    for name, record in evaluations.items():
        lines += evaluation_lines(name, EVALUATIONS[name], record)
    (out_dir / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
