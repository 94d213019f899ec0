import io
import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.dataset import (
    TrainingPairPool,
    crop_hr,
    from_model_range,
    scan_images,
    to_model_range,
    to_tensor,
)
from training.data.degradations import (
    KERNEL_KINDS,
    DegradationConfig,
    RealESRGANDegradation,
    add_noise,
    anisotropic_kernel,
    jpeg,
    make_lr,
    make_lr_with_modes,
    random_blur_kernel,
    random_final_kernel,
    sinc_kernel,
)
from training.data.loader import CropDataset, DataConfig, step_batches
from training.data.valset import load_val_set, make_val_set

skdata = pytest.importorskip("skimage.data")


def photo(name="astronaut", size=256) -> np.ndarray:
    """A real photo (shipped inside scikit-image), top-left size x size, uint8 HWC."""
    return getattr(skdata, name)()[:size, :size, :3]


def as_batch(*arrays) -> torch.Tensor:
    return torch.stack([to_tensor(Image.fromarray(a)) for a in arrays])


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(1.0 / mse)


# --- kernels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,beta", [("gaussian", 1.0), ("generalized", 0.6), ("generalized", 3.0), ("plateau", 1.5)]
)
def test_kernel_shapes_sum_to_one_and_are_point_symmetric(shape, beta):
    k = anisotropic_kernel(13, 2.5, 0.7, 0.6, beta, shape)
    assert k.shape == (13, 13)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # conv == correlation
    assert k.argmax() == 13 * 6 + 6  # peak at the centre


def test_isotropic_gaussian_is_separable_and_rotation_moves_the_long_axis():
    g = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.3**2)
    np.testing.assert_allclose(anisotropic_kernel(11, 1.3, 1.3, 0.0), np.outer(g, g) / np.outer(g, g).sum())
    k0 = anisotropic_kernel(11, 3.0, 0.5, 0.0)  # long along x (columns)
    np.testing.assert_allclose(anisotropic_kernel(11, 3.0, 0.5, math.pi / 2), k0.T, atol=1e-12)
    assert k0[5].sum() > k0[:, 5].sum()


def test_sinc_kernel_is_a_low_pass_with_ringing():
    k = sinc_kernel(21, math.pi / 3)
    assert k.sum() == pytest.approx(1.0)
    assert k.min() < 0  # negative lobes: the ringing it is there to model
    spectrum = np.abs(np.fft.fft2(k, s=(64, 64)))
    assert spectrum[0, 4] > 0.9 and spectrum[0, 28] < 0.1  # passes low, stops high frequencies


def test_random_kernels_have_padded_size_and_unit_sum():
    cfg = DegradationConfig()
    rng = np.random.default_rng(0)
    for _ in range(200):
        k1, k2, k3 = (
            random_blur_kernel(rng, cfg.stage1),
            random_blur_kernel(rng, cfg.stage2),
            random_final_kernel(rng, cfg),
        )
        assert k1.shape == (21, 21) and k2.shape == (15, 15) and k3.shape == (15, 15)
        for k in (k1, k2, k3):
            assert k.sum() == pytest.approx(1.0)
    assert len(KERNEL_KINDS) == len(cfg.stage1.kernel_probs) and sum(
        cfg.stage1.kernel_probs
    ) == pytest.approx(1)


def test_config_from_dict_overrides_single_fields():
    cfg = DegradationConfig.from_dict({"second_order_prob": 0.0, "stage2": {"jpeg_range": [60, 70]}})
    assert cfg.second_order_prob == 0.0 and cfg.stage2.jpeg_range == (60, 70)
    assert cfg.stage2.blur_sigma == (0.2, 1.5) and cfg.stage1 == DegradationConfig().stage1
    with pytest.raises(ValueError, match="unknown"):
        DegradationConfig.from_dict({"jpeg_rnage": [1, 2]})


# --- JPEG and noise --------------------------------------------------------------------------------------


def test_torch_jpeg_is_lossy_with_quality_and_agrees_with_pil():
    img = photo(size=128)
    x = as_batch(img)
    out = {q: jpeg(x, q)[0].permute(1, 2, 0).numpy() for q in (10, 50, 95)}
    assert psnr(out[95], img / 255) > 36
    assert psnr(out[10], img / 255) < 29
    assert psnr(out[10], img / 255) < psnr(out[50], img / 255) < psnr(out[95], img / 255)
    for q in (10, 50, 95):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)  # libjpeg, 4:2:0
        pil = np.asarray(Image.open(buf)) / 255
        assert psnr(out[q], pil) > 40, q  # same codec up to integer-DCT and rounding details
    # Per-sample qualities, sizes that are not multiples of 16.
    both = jpeg(as_batch(img, img)[..., :101, :77], torch.tensor([10, 95]))
    assert both.shape == (2, 3, 101, 77)
    assert (both[0] - both[1]).abs().mean() > 0.005


def test_noise_strength_and_gray_noise():
    x = torch.full((2, 3, 96, 96), 0.5)
    g = torch.Generator().manual_seed(0)
    yes, no = torch.tensor([True, True]), torch.tensor([False, False])
    out = add_noise(x, yes, torch.tensor([5 / 255, 20 / 255]), torch.ones(2), torch.tensor([False, True]), g)
    std = (out - x).std(dim=(1, 2, 3))
    np.testing.assert_allclose(std.numpy() * 255, [5, 20], rtol=0.05)
    assert not torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[1, 0], out[1, 1])  # colour vs gray
    shot = add_noise(x, no, torch.zeros(2), torch.tensor([1.0, 2.0]), no, g) - x
    # Poisson at 8-bit counts: std = sqrt(0.5 * 255) / 255 per unit scale.
    np.testing.assert_allclose(
        shot.std(dim=(1, 2, 3)).numpy(), np.array([1, 2]) * math.sqrt(127.5) / 255, rtol=0.05
    )


# --- pipelines -------------------------------------------------------------------------------------------


def test_realesrgan_pipeline_shapes_range_and_reproducibility():
    hr = as_batch(photo("astronaut", 128), photo("coffee", 128), photo("chelsea", 128))
    deg = RealESRGANDegradation()
    runs = [deg(hr, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    for lr in runs:
        assert lr.shape == (3, 3, 32, 32) and lr.dtype == torch.float32
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit levels
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().mean() > 0.01
    # Degraded, not destroyed: the LR keeps the image's content.
    clean = make_lr(hr, "clean")
    for s in range(2, 6):
        lr = deg(hr, torch.Generator().manual_seed(s))
        assert (lr.mean(dim=(2, 3)) - clean.mean(dim=(2, 3))).abs().max() < 0.1
        assert np.corrcoef(lr.flatten(), clean.flatten())[0, 1] > 0.6


def test_make_lr_clean_and_model_range():
    hr = as_batch(photo(size=64))
    lr = make_lr(hr, "clean")
    assert lr.shape == (1, 3, 16, 16) and torch.equal(lr, torch.round(lr * 255) / 255)
    assert (lr.mean() - hr.mean()).abs() < 0.01
    for mode in ("mild", "realesrgan", {"clean": 1.0}):
        with pytest.raises(ValueError, match="Generator"):
            make_lr(hr, mode)
    for bad in ("nearest", "bicubic", {"blurry": 1.0}, {"clean": -1.0, "mild": 2.0}, {"clean": 0.0}, {}):
        with pytest.raises(ValueError, match="LR m"):
            make_lr(hr, bad, generator=torch.Generator())
    m = to_model_range(hr)
    assert m.min() >= -1 and m.max() <= 1 and torch.allclose(from_model_range(m), hr)


def _mild_with(hr, seed, **ranges):
    degradation = RealESRGANDegradation(DegradationConfig.from_dict({"mild": ranges}))
    return make_lr(hr, "mild", degradation, torch.Generator().manual_seed(seed))


def test_mild_mode_is_seeded_light_and_spans_its_documented_ranges():
    hr = as_batch(photo("astronaut", 128), photo("coffee", 128), photo("chelsea", 128))
    clean = make_lr(hr, "clean")
    runs = [make_lr(hr, "mild", generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert runs[0].shape == (3, 3, 32, 32) and torch.equal(runs[0], torch.round(runs[0] * 255) / 255)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    # Light: much closer to the clean LR than the Real-ESRGAN pipeline usually is.
    for s in range(4):
        mild = make_lr(hr, "mild", generator=torch.Generator().manual_seed(s))
        assert 30 < psnr(mild, clean) < 60
    assert DegradationConfig().mild.blur_sigma == (0.2, 1.2)
    assert DegradationConfig().mild.noise_sigma == (0.0, 5.0) and DegradationConfig().mild.jpeg_range == (
        75,
        95,
    )
    # Each step acts within its range: collapse the others and compare against the step done by hand.
    none = {"blur_sigma": [1e-3, 1e-3], "noise_sigma": [0.0, 0.0], "jpeg_range": [100, 100]}
    plain = _mild_with(hr, 0, **none)
    assert torch.equal(plain, jpeg(clean, 100))  # no blur, no noise: the clean LR through JPEG
    blur = [psnr(_mild_with(hr, 0, **{**none, "blur_sigma": [s, s]}), plain) for s in (0.2, 0.6, 1.2)]
    assert blur[0] > 45 and blur[0] > blur[1] > blur[2]
    noisy = _mild_with(hr, 0, **{**none, "noise_sigma": [5.0, 5.0]})
    assert 3.5 / 255 < float((noisy - plain).std()) < 6 / 255
    assert torch.equal(_mild_with(hr, 0, **{**none, "jpeg_range": [75, 75]}), jpeg(clean, 75))


def test_lr_mixture_draws_modes_per_sample_reproducibly():
    hr = as_batch(*[photo(name, 64) for name in ("astronaut", "coffee", "chelsea", "rocket")] * 4)
    deg = RealESRGANDegradation()
    mixed = [make_lr(hr, {"clean": 0.5, "mild": 0.5}, deg, torch.Generator().manual_seed(s)) for s in (0, 0)]
    assert mixed[0].shape == (16, 3, 16, 16) and torch.equal(mixed[0], mixed[1])
    clean = make_lr(hr, "clean")
    same = [torch.equal(a, b) for a, b in zip(mixed[0], clean, strict=True)]
    assert 0 < sum(same) < 16  # some samples drew clean, the others mild
    again, modes = make_lr_with_modes(hr, {"clean": 0.5, "mild": 0.5}, deg, torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed[0]) and [m == "clean" for m in modes] == same
    assert make_lr_with_modes(hr, "mild", deg, torch.Generator())[1] == ("mild",) * 16
    assert torch.equal(make_lr(hr, {"clean": 1.0, "realesrgan": 0.0}, deg, torch.Generator()), clean)
    every = make_lr(hr, {"clean": 1, "mild": 1, "realesrgan": 1}, deg, torch.Generator().manual_seed(3))
    assert every.shape == clean.shape and torch.equal(every, torch.round(every * 255) / 255)


def test_training_pair_pool_keeps_pairs_together():
    pool = TrainingPairPool(capacity=4)
    g = torch.Generator().manual_seed(0)
    seen = []
    for i in range(6):
        ids = torch.tensor([2 * i, 2 * i + 1], dtype=torch.float32)
        hr, lr = pool(ids.view(2, 1, 1, 1).expand(2, 3, 4, 4), -ids.view(2, 1, 1, 1).expand(2, 3, 1, 1), g)
        assert torch.equal(hr[:, :, :1, :1], -lr)  # each HR still with its own LR
        out = hr[:, 0, 0, 0].tolist()
        if i < 2:
            assert out == ids.tolist()  # filling: pass through
        else:
            assert max(out) < 2 * i  # older pairs from the pool, not this batch
            seen += out
    assert len(set(seen)) == len(seen) == 8  # a pair leaves the pool at most once
    with pytest.raises(ValueError, match="multiple"):
        pool(torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 1, 1), g)


# --- dataset and validation set --------------------------------------------------------------------------


@pytest.fixture()
def photo_dir(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(photo("astronaut", 160)).save(root / "sub" / "astronaut.png")
    Image.fromarray(photo("coffee", 140)).save(root / "coffee.JPG", quality=95)
    Image.fromarray(photo("chelsea", 120)).save(root / "chelsea.webp", quality=95)
    Image.fromarray(photo("rocket", 48)).save(root / "small.png")  # below the crop size
    (root / "notes.txt").write_text("not an image")
    return root


def test_dataset_scans_recursively_and_skips_corrupt_files(photo_dir):
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = io.BytesIO()
    Image.fromarray(photo("coffee", 128)).save(good, format="PNG")
    (photo_dir / "truncated.png").write_bytes(good.getvalue()[:2000])
    rel = [p.relative_to(photo_dir).as_posix() for p in scan_images(photo_dir)]
    assert rel == [
        "broken.jpg",
        "chelsea.webp",
        "coffee.JPG",
        "small.png",
        "sub/astronaut.png",
        "truncated.png",
    ]
    ds = CropDataset(scan_images(photo_dir))  # what the trainers read through
    with pytest.warns(UserWarning, match="unreadable image") as rec:
        items = [ds[(i, 64, i)] for i in range(len(ds))]
    messages = sorted(str(r.message) for r in rec)  # "skipping unreadable image <path>: ..."
    assert len(messages) == 2 and "broken.jpg" in messages[0] and "truncated.png" in messages[1]
    for x in items:
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are skipped silently after the first warning
        ds[(0, 64, 0)]


def test_crops_are_random_reproducible_and_rescale_shows_the_whole_square():
    im = Image.fromarray(photo("astronaut", 256))
    a = crop_hr(im, 64, np.random.default_rng(1), rescale=False)
    b = crop_hr(im, 64, np.random.default_rng(1), rescale=False)
    c = crop_hr(im, 64, np.random.default_rng(2), rescale=False)
    assert a.size == (64, 64) and np.array_equal(a, b) and not np.array_equal(a, c)
    whole = np.asarray(crop_hr(im, 64, None, rescale=True), np.float64)
    np.testing.assert_allclose(
        whole, np.asarray(im.reduce(4), np.float64), atol=1
    )  # area resize of all of it


def test_val_set_is_deterministic_and_verified(photo_dir, tmp_path):
    (photo_dir / "broken.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        m1 = make_val_set(photo_dir, tmp_path / "v1", mode="realesrgan", seed=3, crop_size=64)
    with pytest.warns(UserWarning, match="unreadable"):
        make_val_set(photo_dir, tmp_path / "v2", mode="realesrgan", seed=3, crop_size=64)
    (photo_dir / "broken.png").unlink()
    files = sorted(p.relative_to(tmp_path / "v1") for p in (tmp_path / "v1").rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 4
    for f in files:
        assert (tmp_path / "v1" / f).read_bytes() == (tmp_path / "v2" / f).read_bytes(), f
    assert [p["name"] for p in m1["pairs"]] == ["chelsea", "coffee", "small", "sub__astronaut"]
    assert json.loads((tmp_path / "v1" / "manifest.json").read_text()) == m1

    pairs = load_val_set(tmp_path / "v1")
    assert [p.name for p in pairs] == ["chelsea", "coffee", "small", "sub__astronaut"]
    assert all(p.hr.shape == (3, 64, 64) and p.lr.shape == (3, 16, 16) for p in pairs)

    # Another seed changes the LR, never the HR; dropping a photo leaves the other pairs as they were.
    make_val_set(photo_dir, tmp_path / "v3", mode="realesrgan", seed=4, crop_size=64, max_images=2)
    v3 = load_val_set(tmp_path / "v3")
    assert [p.name for p in v3] == ["chelsea", "coffee"]
    assert torch.equal(v3[0].hr, pairs[0].hr) and not torch.equal(v3[0].lr, pairs[0].lr)
    (photo_dir / "chelsea.webp").unlink()
    make_val_set(photo_dir, tmp_path / "v4", mode="realesrgan", seed=3, crop_size=64)
    assert (tmp_path / "v4/lr/coffee.png").read_bytes() == (tmp_path / "v1/lr/coffee.png").read_bytes()

    with pytest.raises(FileExistsError):
        make_val_set(photo_dir, tmp_path / "v1", mode="clean", seed=0, crop_size=64)
    Image.new("RGB", (16, 16)).save(tmp_path / "v1" / "lr" / "coffee.png")
    with pytest.raises(ValueError, match="sha256"):
        load_val_set(tmp_path / "v1")
    bic = make_val_set(photo_dir, tmp_path / "v1", mode="clean", seed=0, crop_size=64, overwrite=True)
    assert bic["degradation"] is None and len(load_val_set(tmp_path / "v1")) == 3


def test_multiscale_crops_shrink_a_larger_view_of_the_photo(tmp_path):
    """A crop at scale 0.5 covers twice the photo's width: a horizontal ramp comes out twice as steep."""
    ramp = np.tile((np.arange(512) // 2).astype(np.uint8)[None, :, None], (300, 1, 3))  # +0.5 per pixel
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    files = [tmp_path / "ramp.png"]

    def slope(scales: list[float], seed: int) -> float:
        crop = CropDataset(files, scales=scales)[(0, 64, seed)][0] * 255  # (64, 64), flips allowed
        return float(crop[:, 8:-8].diff(dim=1).abs().mean())

    assert slope([1.0], 0) == pytest.approx(0.5, abs=0.02)
    assert slope([0.5], 0) == pytest.approx(1.0, abs=0.05)
    mixed = CropDataset(files, scales=[1.0, 0.5])
    assert torch.equal(mixed[(0, 64, 3)], mixed[(0, 64, 3)])  # the scale comes from the key's seed
    assert {round(slope([1.0, 0.5], seed) * 2) for seed in range(16)} == {1, 2}
    with pytest.raises(ValueError, match="scales"):
        DataConfig(scales=[0.0]).validate()


def test_augment_rotates_and_permutes_colours_of_the_same_crop(tmp_path):
    """Each augmented crop is the plain crop (same key) turned by k*90 degrees and its channels reordered;
    over a few seeds every rotation and every channel order occurs."""
    Image.fromarray(photo("astronaut", 256)).save(tmp_path / "a.png")
    files = [tmp_path / "a.png"]
    plain = CropDataset(files)
    augmented = CropDataset(files, augment=["rot90", "rgb_permute"])
    seen = set()
    for seed in range(48):
        x, y = plain[(0, 64, seed)], augmented[(0, 64, seed)]
        match = [
            (k, order)
            for k in range(4)
            for order in itertools.permutations(range(3))
            if torch.equal(torch.rot90(x, k, dims=(1, 2))[list(order)], y)
        ]
        assert match, f"seed {seed}: not a rotation and channel order of the plain crop"
        seen.add(match[0])
    assert {k for k, _ in seen} == {0, 1, 2, 3}
    assert {order for _, order in seen} == set(itertools.permutations(range(3)))
    with pytest.raises(ValueError, match="augment"):
        DataConfig(augment=["hue"]).validate()


def test_batches_draw_from_every_training_folder(tmp_path):
    """data.extra_train_dirs adds photos: a black folder and a white one both show up in the batches."""
    for name, value in (("demo", 0), ("more", 255)):
        (tmp_path / name).mkdir()
        Image.new("RGB", (96, 96), (value,) * 3).save(tmp_path / name / f"{name}.png")
    kw = dict(batch_size=8, crop_sizes=[32], seed=0, start=0, end=4)
    means = torch.cat(list(step_batches([tmp_path / "demo", tmp_path / "more"], **kw))).mean(dim=(1, 2, 3))
    assert set(means.tolist()) == {0.0, 1.0}
    assert set(torch.cat(list(step_batches([tmp_path / "demo"], **kw))).unique().tolist()) == {0.0}
