"""Model presets: YAML files under training/presets/ naming the UNet and autoencoder constructor
kwargs (official keyword names) and the diffusion schedules. The single source of truth for shapes
and schedules used by training, export and the bench scripts."""

from __future__ import annotations

import copy
from importlib import resources

import yaml

from training.diffusion import ScheduleConfig


def available_presets() -> list[str]:
    files = resources.files("training.presets")
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str, schedule: str | None = None) -> dict:
    """Return {"name", "unet", "autoencoder", "diffusion", "schedule"} for a preset.

    `schedule` picks one of the preset's named schedules (e.g. "v1" or "v3" for resshift-x4);
    the preset's `default_schedule` otherwise.
    """
    path = resources.files("training.presets") / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(available_presets())}")
    data = yaml.safe_load(path.read_text())
    chosen = schedule or data["default_schedule"]
    if chosen not in data["schedules"]:
        raise ValueError(
            f"preset {name!r} has no schedule {chosen!r}; choose from {sorted(data['schedules'])}"
        )
    diffusion = ScheduleConfig(**data["schedules"][chosen])
    return {
        "name": name,
        "schedule": chosen,
        "unet": copy.deepcopy(data["unet"]),
        "autoencoder": copy.deepcopy(data["autoencoder"]),
        "diffusion": diffusion.to_dict(),
    }
