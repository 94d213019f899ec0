"""Checkpoint I/O: official ResShift `.pth` files and our model directories.

Official files are read with `torch.load(weights_only=True)`, so no arbitrary object is ever unpickled.
Our format is a directory holding `config.json` (everything needed to rebuild each network) and one
safetensors file per network:

    model_dir/
      config.json          {"format": "rsd-model", "diffusion": {...}, "meta": {...},
                            "components": {"unet": {"kwargs": ..., "weights": ...}, ...}}
      unet.safetensors
      autoencoder.safetensors
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.diffusion import ResShiftSchedule, ScheduleConfig
from training.models import build_autoencoder, build_corrector, build_unet
from training.models.light_autoencoder import ARCHITECTURE as LIGHT
from training.models.light_autoencoder import LIGHT_ENCODER_VQ

FORMAT = "rsd-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
_PREFIXES = ("module.", "_orig_mod.")
_WRAPPER_KEYS = ("state_dict", "model", "params_ema", "ema", "params")


class CheckpointMismatchError(ValueError):
    """A weights file does not fit the network its config describes."""


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a loaded checkpoint and strip DDP / torch.compile prefixes."""
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping):
            raise CheckpointMismatchError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
        nested = [k for k in _WRAPPER_KEYS if k in obj] or [
            k for k, v in obj.items() if isinstance(v, Mapping)
        ]
        if not nested:
            raise CheckpointMismatchError(
                f"no state_dict found in checkpoint (top-level keys: {sorted(obj)[:10]})"
            )
        obj = obj[nested[0]]
    state = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official `.pth` (bare, nested under a key, with or without `module.` prefixes)."""
    return unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_state_dict_checked(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Strict load that names every missing, unexpected and mis-shaped key before touching the module."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        parts = [f"{source} does not match {type(module).__name__}:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label} keys: {shown}")
        raise CheckpointMismatchError("; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_pruned_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], prunable: Callable[[str], bool], source: str
) -> None:
    """Load a larger network's `state` into a pruning of it: the keys `module` lacks may only be ones
    `prunable` accepts (the dropped blocks); every other key loads as load_state_dict_checked loads it."""
    kept = module.state_dict().keys()
    stray = sorted(k for k in state if k not in kept and not prunable(k))
    if stray:
        name = type(module).__name__
        raise CheckpointMismatchError(f"{source} is not a pruning of {name}: extra keys {stray[:8]}")
    load_state_dict_checked(module, {k: v for k, v in state.items() if k in kept}, source)


@dataclass
class ModelBundle:
    """A rebuilt model directory: the networks present plus the diffusion schedule."""

    unet: nn.Module | None
    autoencoder: nn.Module | None
    schedule: ResShiftSchedule
    config: dict = field(default_factory=dict)
    corrector: nn.Module | None = None  # the output's LR corrector (training/models/corrector.py)

    @property
    def noise_channels(self) -> int:
        return int(self.config["components"]["unet"]["kwargs"].get("noise_channels", 0))


def save_model_dir(
    path: str | Path,
    *,
    unet: nn.Module | None,
    unet_kwargs: dict | None,
    autoencoder: nn.Module | None,
    autoencoder_kwargs: dict | None,
    schedule: ScheduleConfig,
    meta: dict | None = None,
    corrector: nn.Module | None = None,
) -> Path:
    """Write networks as safetensors plus a config.json that fully describes how to rebuild them. The LR
    corrector (training/models/corrector.py) stores its own kwargs."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    components = {}
    for name, module, kwargs in (
        ("unet", unet, unet_kwargs),
        ("autoencoder", autoencoder, autoencoder_kwargs),
        ("corrector", corrector, corrector.kwargs() if corrector is not None else None),
    ):
        if module is None:
            continue
        weights = f"{name}.safetensors"
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(path / weights))
        components[name] = {"kwargs": kwargs, "weights": weights}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "components": components,
        "diffusion": schedule.to_dict(),
        "meta": meta or {},
    }
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def copy_model_dir(
    src: str | Path,
    dst: str | Path,
    *,
    unet_dtype: torch.dtype | None = None,
    autoencoder_from: str | Path | None = None,
    lr_encoder_from: str | Path | None = None,
    corrector_from: str | Path | None = None,
) -> Path:
    """Copy a model directory; with `unet_dtype=torch.float16` the UNet's float tensors are stored in half
    precision, which halves the file. Loading casts them back to fp32, so the copy is a model whose UNet
    weights are rounded to fp16 and which computes in fp32 (the embedded default model ships this way).
    `autoencoder_from` takes the autoencoder from another model directory instead (one that keeps the
    same latent space: `rsd train autoencoder` with `reference`). `lr_encoder_from` (a light autoencoder's
    model directory, `rsd train light`) puts its LR encoder in front of that VQ autoencoder
    (training/models/light_autoencoder.py, LightEncoderVQ). `corrector_from` (`rsd train corrector`) adds
    its LR corrector, which every user of the copy (`rsd eval`, the exported graphs, the service) then
    applies to the output."""
    src, dst = Path(src), Path(dst)
    config = read_config(src)
    sources = {name: src for name in config["components"]}
    if autoencoder_from is not None:
        sources["autoencoder"] = Path(autoencoder_from)
        config["components"]["autoencoder"] = read_config(autoencoder_from)["components"]["autoencoder"]
    if corrector_from is not None:
        sources["corrector"] = Path(corrector_from)
        config["components"]["corrector"] = read_config(corrector_from)["components"]["corrector"]
    states = {
        name: load_file(str(sources[name] / spec["weights"])) for name, spec in config["components"].items()
    }
    if "unet" in states and unet_dtype is not None:
        states["unet"] = {
            k: v.to(unet_dtype) if v.is_floating_point() else v for k, v in states["unet"].items()
        }
    if lr_encoder_from is not None:
        vq = config["components"]["autoencoder"]
        light = read_config(lr_encoder_from)["components"]["autoencoder"]
        if light["kwargs"].get("architecture") != LIGHT or vq["kwargs"].get("architecture") is not None:
            raise ValueError("lr_encoder_from takes a light autoencoder's LR encoder to a VQ autoencoder")
        light_state = load_file(str(Path(lr_encoder_from) / light["weights"]))
        encoder = {
            f"lr_encoder.{k[len('encoder.') :]}": v
            for k, v in light_state.items()
            if k.startswith("encoder.")
        }
        states["autoencoder"] = encoder | {f"vq.{k}": v for k, v in states["autoencoder"].items()}
        light_kwargs = {k: v for k, v in light["kwargs"].items() if k != "architecture"}
        vq["kwargs"] = {"architecture": LIGHT_ENCODER_VQ, "light": light_kwargs, "vq": vq["kwargs"]}
    dst.mkdir(parents=True, exist_ok=True)
    for name, spec in config["components"].items():
        save_file(states[name], str(dst / spec["weights"]))
    (dst / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dst


def read_config(path: str | Path) -> dict:
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} is not a model directory (no {CONFIG_FILE})")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointMismatchError(
            f"{config_path} is not an {FORMAT} config (format={config.get('format')!r})"
        )
    return config


def load_model_dir(path: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
    """Rebuild every network of a model directory and load its weights strictly."""
    path = Path(path)
    config = read_config(path)
    builders = {"unet": build_unet, "autoencoder": build_autoencoder, "corrector": build_corrector}
    modules: dict[str, nn.Module | None] = dict.fromkeys(builders)
    for name, spec in config["components"].items():
        module = builders[name](spec["kwargs"])
        load_state_dict_checked(
            module, load_file(str(path / spec["weights"])), source=str(path / spec["weights"])
        )
        modules[name] = module.to(device).eval()
    schedule = ResShiftSchedule(ScheduleConfig(**config["diffusion"]))
    return ModelBundle(modules["unet"], modules["autoencoder"], schedule, config, modules["corrector"])
