"""The fixed validation set: (HR, LR) pairs made once from a seed and written to disk as PNGs.

Every run and every model is then scored on the same pairs, whatever the degradation code does later.
Layout of out_dir:

    hr/NAME.png     crop_size x crop_size HR crop (centre crop, or rescaled whole square)
    lr/NAME.png     its LR, (crop_size/4)^2
    manifest.json   mode, seed, crop, degradation config, and per pair the source path and sha256 of
                    source, HR and LR files

Each image's degradation is seeded from (seed, NAME), so adding or removing a source photo leaves the other
pairs unchanged, and the same sources and seed give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from training.data.dataset import crop_hr, load_rgb, scan_images, to_tensor
from training.data.degradations import LR_MODES, DegradationConfig, RealESRGANDegradation, make_lr

MANIFEST = "manifest.json"


class ValPair(NamedTuple):
    name: str
    hr: torch.Tensor  # (3, H, W) in [0, 1]
    lr: torch.Tensor  # (3, H/4, W/4) in [0, 1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pair_name(rel: Path, taken: set[str]) -> str:
    """File-system-flat name: relative path without suffix, '/' -> '__'; the suffix is kept on a clash."""
    name = rel.with_suffix("").as_posix().replace("/", "__")
    if name in taken:
        name = f"{name}_{rel.suffix.lstrip('.').lower()}"
    return name


def _image_generator(seed: int, name: str) -> torch.Generator:
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _save_png(t: torch.Tensor, path: Path) -> None:
    arr = torch.round(t.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path, format="PNG")


def make_val_set(
    src_dir: str | Path,
    out_dir: str | Path,
    mode: str = "realesrgan",
    seed: int = 0,
    crop_size: int = 256,
    max_images: int | None = None,
    rescale: bool = False,
    degradation: DegradationConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the validation pairs for every readable image under src_dir (sorted, at most max_images) and
    return the manifest. Runs on the CPU, one image at a time. Unreadable files are skipped with a warning."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if mode not in LR_MODES:
        raise ValueError(f"unknown LR mode {mode!r}; expected one of {LR_MODES}")
    config = degradation or DegradationConfig()
    if crop_size % config.scale:
        raise ValueError(f"crop_size must be a multiple of {config.scale}, got {crop_size}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty (pass overwrite=True to replace it)")
        for sub in ("hr", "lr"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)
    (out_dir / "hr").mkdir(parents=True, exist_ok=True)
    (out_dir / "lr").mkdir(exist_ok=True)

    degrade = RealESRGANDegradation(config)
    items, taken = [], set()
    for path in scan_images(src_dir):
        if max_images is not None and len(items) >= max_images:
            break
        try:
            im = load_rgb(path)
        except Exception as e:  # decoders raise OSError, SyntaxError, ValueError, zlib.error, ...
            warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", stacklevel=2)
            continue
        rel = path.relative_to(src_dir)
        name = _pair_name(rel, taken)
        taken.add(name)
        hr = to_tensor(crop_hr(im, crop_size, rng=None, rescale=rescale)).unsqueeze(0)
        lr = make_lr(hr, mode, degrade, _image_generator(seed, name))
        hr_path, lr_path = out_dir / "hr" / f"{name}.png", out_dir / "lr" / f"{name}.png"
        _save_png(hr[0], hr_path)
        _save_png(lr[0], lr_path)
        items.append(
            {
                "name": name,
                "source": rel.as_posix(),
                "source_sha256": sha256(path),
                "hr": f"hr/{name}.png",
                "hr_sha256": sha256(hr_path),
                "lr": f"lr/{name}.png",
                "lr_sha256": sha256(lr_path),
            }
        )
    if not items:
        raise ValueError(f"no readable images under {src_dir}")
    manifest = {
        "mode": mode,
        "seed": seed,
        "crop_size": crop_size,
        "rescale": rescale,
        "scale": config.scale,
        "degradation": dataclasses.asdict(config) if mode != "clean" else None,
        "torch_version": torch.__version__,
        "pairs": items,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out_dir / MANIFEST).write_text(text)
    return json.loads(text)


def load_val_set(val_dir: str | Path, verify: bool = True) -> list[ValPair]:
    """The pairs of a folder written by make_val_set, in manifest order; with verify, every file's sha256
    must match the manifest (a changed validation set would silently change every score)."""
    val_dir = Path(val_dir)
    manifest = json.loads((val_dir / MANIFEST).read_text())
    pairs = []
    for item in manifest["pairs"]:
        paths = {k: val_dir / item[k] for k in ("hr", "lr")}
        if verify:
            for k, p in paths.items():
                if sha256(p) != item[f"{k}_sha256"]:
                    raise ValueError(f"{p} does not match the sha256 in {val_dir / MANIFEST}")
        pairs.append(
            ValPair(item["name"], to_tensor(load_rgb(paths["hr"])), to_tensor(load_rgb(paths["lr"])))
        )
    return pairs
