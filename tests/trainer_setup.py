"""Small real photo data and tiny model overrides for the trainer tests (not a test module)."""

from pathlib import Path

import numpy as np
from PIL import Image

AE_MODEL = {"ddconfig": {"ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 1}, "n_embed": 256}
UNET_MODEL = {
    "image_size": 8, "model_channels": 32, "channel_mult": [1, 1], "num_res_blocks": [1, 1],
    "attention_resolutions": [8], "window_size": 4, "lq_size": 8,
}  # fmt: skip


def make_photo_folder(root: Path) -> Path:
    """A few real photographs from scikit-image, one unreadable file and a nested folder."""
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    (root / "nested").mkdir(exist_ok=True)
    for name, image in (
        ("astronaut", data.astronaut()),
        ("coffee", data.coffee()),
        ("chelsea", data.chelsea()),
    ):
        Image.fromarray(np.asarray(image)).save(root / "nested" / f"{name}.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def common_overrides(tmp: Path, out: str) -> list[str]:
    """Point a stage at the test's own photos only: a config's extra folders are not on a CI machine."""
    return [
        f"data.train_dir={tmp / 'photos'}",
        "data.extra_train_dirs=[]",
        f"data.val_dir={tmp / 'val'}",
        f"run.out_dir={tmp / out}",
        "run.progress=false",
        "run.log_every=1",
        "data.batch_size=2",
    ]
