"""The tiler: layouts cover the image at the least cost, tiles go back where they came from, overlaps leave
no seam."""

import itertools

import numpy as np
import pytest

from service.tiling import Tile, blend_tiles, plan_tiles, tile_inputs, upscale_tiled

SIZES = (16, 32, 64)


def nearest_x4(tiles: np.ndarray) -> np.ndarray:
    """A perfect 'model': (N, C, t, t) -> (N, C, 4t, 4t) pixel repeat, so any misplaced tile shows."""
    return tiles.repeat(4, axis=2).repeat(4, axis=3)


def round_trip(image: np.ndarray, plan) -> np.ndarray:
    inputs = tile_inputs(image, plan, seed=0)
    return blend_tiles({size: nearest_x4(batch.lq) for size, batch in inputs.items()}, plan, scale=4)


@pytest.mark.parametrize(
    ("height", "width", "sizes", "overlap"),
    [
        (1, 1, (16,), 4),
        (1, 40, (16,), 4),
        (16, 16, (16,), 4),
        (17, 16, (16,), 4),
        (37, 23, (16,), 4),
        (64, 100, (32,), 0),
        (50, 50, (8,), 4),
        (37, 23, SIZES, 4),
        (70, 45, SIZES, 6),
        (200, 130, SIZES, 8),
    ],
)
def test_round_trip_puts_every_pixel_back(height, width, sizes, overlap):
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    out = round_trip(image, plan_tiles(height, width, sizes, overlap))
    np.testing.assert_allclose(out, image.repeat(4, 0).repeat(4, 1), atol=1e-5)


def test_one_size_keeps_exact_steps_and_splits_the_slack_over_both_borders():
    plan = plan_tiles(40, 17, (16,), 4)
    assert {t.y for t in plan.tiles} == {0, 12, 24}  # every step is tile - overlap, no slack along y
    assert {t.x for t in plan.tiles} == {-5, 7}  # 11 px of slack: 5 before, 6 after
    assert plan.count == 6


def test_a_photo_of_a_tile_size_is_one_tile_and_others_mix_sizes_instead_of_padding():
    assert plan_tiles(64, 64, SIZES, 4).tiles == (Tile(0, 0, 64),)
    plan = plan_tiles(50, 75, SIZES, 4)  # one 64 tile and a column of two 32 tiles, not two 64 tiles
    assert plan.counts() == {64: 1, 32: 2}
    assert plan.pixels <= 0.75 * plan_tiles(50, 75, (64,), 4).pixels


def test_the_layout_is_the_cheapest_of_its_kind():
    """Against brute force over every set of row sizes (up to four rows), both orientations."""

    def count(length, size, overlap):
        return 1 if length <= size else -(-(length - overlap) // (size - overlap))

    def brute(height, width, overlap, overhead):
        best = np.inf
        for length, across in ((height, width), (width, height)):
            for k in range(1, 5):
                for rows in itertools.combinations_with_replacement(SIZES, k):
                    if sum(rows) - overlap * (k - 1) >= length:
                        cost = sum(count(across, r, overlap) * (r * r + overhead) for r in rows)
                        best = min(best, cost)
        return best

    for height, width in [(20, 90), (45, 45), (61, 33), (100, 70), (7, 130)]:
        plan = plan_tiles(height, width, SIZES, 4, tile_overhead=100)
        assert plan.pixels + 100 * plan.count == brute(height, width, 4, 100), (height, width)


def test_a_long_run_is_planned_quickly_and_covers_the_image():
    plan = plan_tiles(3, 20000, SIZES, 4, tile_overhead=0)  # past the exact span: the cheapest size
    assert plan.pixels <= 1.01 * plan_tiles(3, 20000, (16,), 4).pixels  # far from the ends
    np.testing.assert_allclose(round_trip(np.ones((3, 20000, 3), np.float32), plan), 1, atol=1e-5)


def test_image_smaller_than_a_tile_is_one_reflect_padded_tile():
    image = np.arange(3 * 5 * 3, dtype=np.float32).reshape(3, 5, 3)
    plan = plan_tiles(3, 5, (8,), 2)
    (tile,) = plan.tiles
    lq = tile_inputs(image, plan, seed=0)[8].lq
    assert lq.shape == (1, 3, 8, 8) and tile.x == -1
    row = lq[0, 0, -tile.y, :]  # channel 0 of the first image row, reflected at both ends
    np.testing.assert_array_equal(row, image[0, [1, 0, 1, 2, 3, 4, 3, 2], 0])


def test_constant_image_stays_constant_through_overlapping_tiles():
    image = np.full((45, 70, 3), 0.37, np.float32)
    for sizes in ((16,), SIZES):
        assert np.abs(round_trip(image, plan_tiles(45, 70, sizes, 6)) - 0.37).max() < 1e-6


def test_overlaps_cross_fade_instead_of_cutting():
    """Two tiles that disagree (0 and 1) meet in a smooth monotone ramp across the overlap, no step."""
    plan = plan_tiles(16, 28, (16,), 4)
    assert [t.x for t in plan.tiles] == [0, 12]
    tiles = np.stack([np.zeros((1, 64, 64), np.float32), np.ones((1, 64, 64), np.float32)])
    row = blend_tiles({16: tiles}, plan, scale=4)[0, :, 0]
    ramp = row[48:64]  # the 4 LR px overlap, x4
    assert row[:48].max() == 0 and row[64:].min() == 1
    assert np.all(np.diff(ramp) > 0) and np.diff(ramp).max() < 0.2


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(10, 10, (16, 32), 9)


def test_noise_is_an_image_of_its_own_cut_like_the_photo_and_depends_only_on_the_seed():
    image = np.zeros((20, 28, 3), np.float32)
    plan = plan_tiles(20, 28, (16,), 4)
    first = tile_inputs(image, plan, seed=7)[16]
    np.testing.assert_array_equal(tile_inputs(image, plan, seed=7)[16].noise_prior, first.noise_prior)
    assert not np.array_equal(tile_inputs(image, plan, seed=8)[16].noise_prior, first.noise_prior)
    left, right = plan.tiles[0], plan.tiles[1]  # neighbours along x, overlapping by 4 columns
    overlap = left.x + 16 - right.x
    for field in (first.noise_prior, first.noise_student):
        np.testing.assert_array_equal(field[0, :, :, -overlap:], field[1, :, :, :overlap])
    assert first.noise_student.shape == (plan.count, 1, 16, 16)
    assert abs(float(first.noise_prior.std()) - 1) < 0.1
    # Another layout sees the same noise at the same pixel: one 32 tile over the whole image.
    (whole,) = plan_tiles(20, 28, (32,), 4).tiles
    single = tile_inputs(image, plan_tiles(20, 28, (32,), 4), seed=7)[32].noise_prior[0]
    y, x = left.y - whole.y, left.x - whole.x
    np.testing.assert_array_equal(single[:, y + 2 : y + 16, x + 2 : x + 16], first.noise_prior[0, :, 2:, 2:])


def test_upscale_tiled_gives_the_same_image_for_any_batch_size():
    rng = np.random.default_rng(1)
    image = rng.random((60, 41, 3), dtype=np.float32)
    batches = []

    def infer(lq, prior, student):
        assert prior.shape == lq.shape and student.shape == (lq.shape[0], 1, *lq.shape[2:])
        batches.append(lq.shape[0])
        return nearest_x4(lq)

    sizes = (16, 32)
    one = upscale_tiled(image, infer, sizes=sizes, overlap=4, seed=1, batch_limits=dict.fromkeys(sizes, 1))
    many = upscale_tiled(image, infer, sizes=sizes, overlap=4, seed=1, batch_limits=dict.fromkeys(sizes, 4))
    np.testing.assert_array_equal(one, many)
    assert max(batches) > 1 and one.shape == (240, 164, 3)
