"""scripts/demo_data.py: what keeps the extra training photos apart from the validation photos."""

import re

import numpy as np
from PIL import Image
from skimage import data as skdata

from tests.script_support import load_script

demo_data = load_script("scripts/demo_data.py")


def test_a_resized_recompressed_copy_of_a_validation_photo_is_recognised(tmp_path):
    """The guard against training on a validation scene: another package's copy of the same photo, at another
    size and JPEG quality, correlates above 0.95 and other photos do not. (A re-cropped copy can fall below:
    the photos were also compared by eye.)"""
    val = Image.fromarray(skdata.astronaut())
    val.save(tmp_path / "val.png")
    val.resize((1000, 1000), Image.Resampling.LANCZOS).save(tmp_path / "copy.jpg", quality=80)
    for name in ("coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).save(tmp_path / f"{name}.png")
    reference = demo_data.thumbnail_signature(tmp_path / "val.png")
    assert float(demo_data.thumbnail_signature(tmp_path / "copy.jpg") @ reference) > 0.95
    for name in ("coffee", "chelsea", "rocket"):
        other = demo_data.thumbnail_signature(tmp_path / f"{name}.png")
        assert float(other @ reference) < 0.95, name
        assert np.isclose(np.linalg.norm(other), 1.0)


def test_ubuntu_packages_are_pinned_by_name_and_sha256():
    for package, (pool_path, sha256) in demo_data.UBUNTU_DEBS.items():
        assert re.fullmatch(
            rf"pool/(main|universe)/[a-z]/[a-z-]+/{package}_[0-9.]+(-0ubuntu1)?_all\.deb", pool_path
        )
        assert re.fullmatch(r"[0-9a-f]{64}", sha256)
