"""The tiler: grids cover the image exactly, tiles go back where they came from, overlaps leave no seam."""

import numpy as np
import pytest

from service.tiling import blend_tiles, extract_tiles, plan_tiles, tile_noise, upscale_tiled


def nearest_x4(tiles: np.ndarray) -> np.ndarray:
    """A perfect 'model': (N, C, t, t) -> (N, C, 4t, 4t) pixel repeat, so any misplaced tile shows."""
    return tiles.repeat(4, axis=2).repeat(4, axis=3)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (1, 1, 16, 4),
        (1, 40, 16, 4),
        (16, 16, 16, 4),
        (17, 16, 16, 4),
        (37, 23, 16, 4),
        (64, 100, 32, 0),
        (50, 50, 8, 4),
    ],
)
def test_round_trip_puts_every_pixel_back(height, width, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    grid = plan_tiles(height, width, tile, overlap)
    out = blend_tiles(nearest_x4(extract_tiles(image, grid)), grid, scale=4)
    np.testing.assert_allclose(out, image.repeat(4, 0).repeat(4, 1), atol=1e-5)


def test_grid_steps_are_exact_and_padding_splits_the_slack():
    grid = plan_tiles(40, 17, 16, 4)
    assert grid.ys == (0, 12, 24) and grid.xs == (0, 12)  # every step is tile - overlap
    assert grid.padded_height - 40 == 0 and grid.pad_top == 0
    assert grid.padded_width == 28 and grid.pad_left == 5  # 11 px of slack: 5 before, 6 after
    assert grid.count == 6


def test_image_smaller_than_a_tile_is_one_reflect_padded_tile():
    image = np.arange(3 * 5 * 3, dtype=np.float32).reshape(3, 5, 3)
    grid = plan_tiles(3, 5, 8, 2)
    tiles = extract_tiles(image, grid)
    assert tiles.shape == (1, 3, 8, 8)
    row = tiles[0, 0, grid.pad_top, :]  # channel 0 of the first image row, reflected at both ends
    assert grid.pad_left == 1
    np.testing.assert_array_equal(row, image[0, [1, 0, 1, 2, 3, 4, 3, 2], 0])


def test_constant_image_stays_constant_through_overlapping_tiles():
    image = np.full((45, 70, 3), 0.37, np.float32)
    grid = plan_tiles(45, 70, 16, 6)
    tiles = nearest_x4(extract_tiles(image, grid))
    out = blend_tiles(tiles, grid, scale=4)
    assert np.abs(out - 0.37).max() < 1e-6


def test_overlaps_cross_fade_instead_of_cutting():
    """Two tiles that disagree (0 and 1) meet in a smooth monotone ramp across the overlap, no step."""
    grid = plan_tiles(8, 28, 16, 4)
    assert grid.xs == (0, 12)
    tiles = np.stack([np.zeros((1, 64, 64), np.float32), np.ones((1, 64, 64), np.float32)])
    row = blend_tiles(tiles, grid, scale=4)[0, :, 0]
    ramp = row[48:64]  # the 4 LR px overlap, x4
    assert row[:48].max() == 0 and row[64:].min() == 1
    assert np.all(np.diff(ramp) > 0) and np.diff(ramp).max() < 0.2


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(10, 10, 16, 9)


def test_noise_depends_only_on_seed_and_tile_index():
    prior, student = tile_noise(7, 3, 8)
    assert prior.shape == (3, 3, 8, 8) and student.shape == (3, 1, 8, 8)
    prior2, student2 = tile_noise(7, 5, 8)
    np.testing.assert_array_equal(prior, prior2[:3])  # more tiles do not change the first ones
    np.testing.assert_array_equal(student, student2[:3])
    assert not np.array_equal(prior, tile_noise(8, 3, 8)[0])
    assert abs(float(prior.std()) - 1) < 0.1


def test_upscale_tiled_gives_the_same_image_for_any_batch_size():
    rng = np.random.default_rng(1)
    image = rng.random((30, 41, 3), dtype=np.float32)
    batches = []

    def infer(lq, prior, student):
        assert prior.shape == lq.shape and student.shape == (lq.shape[0], 1, *lq.shape[2:])
        batches.append(lq.shape[0])
        return nearest_x4(lq)

    one = upscale_tiled(image, infer, tile=16, overlap=4, seed=1, max_batch=1)
    many = upscale_tiled(image, infer, tile=16, overlap=4, seed=1, max_batch=4)
    np.testing.assert_array_equal(one, many)
    assert max(batches) == 4 and one.shape == (120, 164, 3)
