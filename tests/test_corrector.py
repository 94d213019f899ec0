"""The LR corrector (training/models/corrector.py): it starts as plain back-projection, and a model directory
that holds one corrects what every user of the directory computes."""

import pytest
import torch

from model_export.synthetic import write_random_model_dir
from training.checkpoint import copy_model_dir, load_model_dir
from training.models import CorrectorConfig, LRCorrector
from training.pipeline import SCALE, SRPipeline
from training.resample import downscale, upscale


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_back_projection_leaves_an_output_alone_that_downscales_to_the_lr():
    hr = images(1, 3, 64, 64)
    corrected = LRCorrector(CorrectorConfig(sigma_lr=0.5, width=0))(hr, downscale(hr, SCALE))
    torch.testing.assert_close(corrected, hr, atol=1e-5, rtol=0)


def test_back_projection_without_blur_brings_the_downscale_to_the_lr():
    lq, sr = images(1, 3, 16, 16, seed=1), images(1, 3, 64, 64, seed=2)
    corrected = LRCorrector(CorrectorConfig(sigma_lr=0.0, width=0))(sr, lq)
    before, after = ((downscale(x, SCALE) - lq).abs().mean() for x in (sr, corrected))
    assert after < 0.5 * before


@pytest.mark.parametrize("detail", [False, True])
def test_a_new_corrector_is_the_plain_back_projection_and_learns_from_there(detail):
    lq, sr = images(2, 3, 16, 16, seed=3), images(2, 3, 64, 64, seed=4)
    learned = LRCorrector(CorrectorConfig(width=8, blocks=1, detail=detail))
    plain = LRCorrector(CorrectorConfig(width=0))
    assert list(plain.parameters()) == []
    torch.testing.assert_close(learned(sr, lq), plain(sr, lq))
    (learned(sr, lq) - sr).pow(2).mean().backward()
    assert learned.net[-1].weight.grad.abs().sum() > 0


def test_a_detail_gain_of_minus_one_keeps_only_the_lr_band_of_the_output():
    """detail_gain = -1 everywhere drops sr - upscale(downscale(sr)): what is left is the back-projected
    upscale of the output's downscale, here of the LR itself (a blur-free back-projection onto lq)."""
    lq, sr = images(1, 3, 16, 16, seed=5), images(1, 3, 64, 64, seed=6)
    corrector = LRCorrector(CorrectorConfig(sigma_lr=0.0, width=8, blocks=1, detail=True))
    with torch.no_grad():
        corrector.net[-1].bias[6:] = -1.0
    torch.testing.assert_close(corrector(sr, lq), upscale(lq, SCALE).clamp(0, 1), atol=1e-5, rtol=0)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        CorrectorConfig(sigma_lr=-1)
    with pytest.raises(ValueError, match="width > 0"):
        CorrectorConfig(width=0, detail=True)


def test_a_model_directory_with_a_corrector_corrects_the_pipelines_output(tmp_path):
    plain_dir = write_random_model_dir(tmp_path / "plain", "tiny-x4", seed=1)
    config = CorrectorConfig(width=8, blocks=1)
    source = write_random_model_dir(tmp_path / "source", "tiny-x4", seed=2, corrector=config)
    corrected_dir = copy_model_dir(plain_dir, tmp_path / "corrected", corrector_from=source)
    plain, corrected = load_model_dir(plain_dir), load_model_dir(corrected_dir)
    assert plain.corrector is None and corrected.corrector.config == config
    assert load_model_dir(copy_model_dir(corrected_dir, tmp_path / "again")).corrector.config == config

    lq = images(1, 3, 64, 32)
    pipes = [SRPipeline(b.unet, b.autoencoder, b.schedule, b.corrector).eval() for b in (plain, corrected)]
    with torch.no_grad():
        raw, fixed = (p.upscale(lq, torch.Generator().manual_seed(0)) for p in pipes)
        torch.testing.assert_close(fixed, corrected.corrector(raw, lq))
    assert not torch.allclose(fixed, raw, atol=1e-2)
    padded = pipes[1].upscale(lq[:, :, :40, :30], torch.Generator().manual_seed(0))
    assert padded.shape == (1, 3, 160, 120)  # not a multiple of 32: padded, corrected, then cropped
