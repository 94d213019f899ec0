"""The resamplers of training/resample.py are torch's, borders included: the corrector, the autoencoders'
resampling bypasses and the bicubic baseline all use them."""

import pytest
import torch
import torch.nn.functional as F

from training.pipeline import SCALE
from training.resample import downscale, gaussian_blur, upscale, upscale_average


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_downscale_is_torchs_antialiased_bicubic_borders_included():
    hr = images(2, 3, 72, 40)
    expected = F.interpolate(hr, size=(18, 10), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(downscale(hr, SCALE), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 9, 14), (1, 1, 5, 7), (1, 2, 1, 3)])
def test_upscale_is_torchs_bicubic_borders_and_one_pixel_images_included(shape):
    lr = images(*shape)
    expected = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
    torch.testing.assert_close(upscale(lr, SCALE), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 9, 14), (1, 1, 1, 3)])
def test_upscale_average_is_the_block_mean_of_the_upscale(shape):
    lr = images(*shape)
    expected = F.avg_pool2d(F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False), SCALE)
    torch.testing.assert_close(upscale_average(lr, SCALE), expected, atol=1e-6, rtol=0)


def test_blur_keeps_flat_images_to_the_border_and_sigma_zero_is_the_identity():
    flat = torch.full((1, 3, 7, 11), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    noise = images(1, 3, 16, 16)
    assert torch.equal(gaussian_blur(noise, 0.0), noise)
    assert gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()
