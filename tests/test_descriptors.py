"""Descriptors: the crystallinity index on lattices, noise and amorphous images, and
the per-community table, on synthetic images and on the HAADF phantom."""

from __future__ import annotations

import csv
import io
import math

import dask.array as da
import numpy as np
import pytest

from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.analysis.descriptors import (
    CHIP_STATS,
    CRYSTALLINITY_WINDOW,
    CommunityRow,
    chip_statistics,
    community_crystallinity,
    community_table,
    crystallinity,
    table_to_csv,
    unpainted_communities,
)
from multimodal_seg.synthetic.phantoms import haadf_phantom

GRAIN_0, GRAIN_ROT, PHASE_B, AMORPHOUS = 0, 1, 2, 3


from .synthetic import amorphous_image, lattice_image  # noqa: E402


@pytest.fixture(scope="module")
def phantom():
    return haadf_phantom((512, 512), seed=0)


def _truth_chip_labels(truth: np.ndarray, grid: ChipGrid, *, pure: bool) -> np.ndarray:
    """Each chip's truth region (majority), or -1 when ``pure`` and the chip straddles regions."""
    out = []
    for r0, c0 in grid.origins:
        counts = np.bincount(truth[r0 : r0 + grid.size, c0 : c0 + grid.size].ravel(), minlength=4)
        out.append(-1 if pure and counts.max() < grid.size**2 else counts.argmax())
    return np.array(out)


# --- crystallinity of single windows -----------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 17.0, 30.0, 45.0, 73.0])
@pytest.mark.parametrize("spacing", [6.0, 10.0])
def test_noisy_lattice_scores_near_one(angle, spacing):
    rng = np.random.default_rng(int(angle * 10 + spacing))
    img = lattice_image(CRYSTALLINITY_WINDOW, spacing, angle, rng)
    assert crystallinity(img[None])[0] > 0.9


def test_lattice_at_a_low_dose_is_still_crystalline():
    rng = np.random.default_rng(1)
    imgs = np.stack([lattice_image(64, 8.0, a, rng, dose=5.0) for a in (0.0, 20.0, 35.0)])
    assert (crystallinity(imgs) > 0.8).all()


def test_poisson_noise_scores_near_zero():
    rng = np.random.default_rng(2)
    noise = rng.poisson(50.0, (6, 64, 64)).astype(np.float32)
    assert (crystallinity(noise) < 0.05).all()


@pytest.mark.parametrize("min_sep", [0.0, 5.0])
def test_random_atoms_score_near_zero(min_sep):
    rng = np.random.default_rng(3)
    imgs = np.stack([amorphous_image(64, 6.0, rng, min_sep=min_sep) for _ in range(4)])
    assert (crystallinity(imgs) < 0.1).all()


def test_crystallinity_ignores_scale_offset_and_slow_background():
    rng = np.random.default_rng(4)
    img = lattice_image(64, 8.0, 25.0, rng).astype(np.float64)
    yy, xx = np.mgrid[:64, :64]
    ramp = 30.0 * (yy + xx) / 128.0  # thickness-like gradient: below MIN_RADIUS
    base = crystallinity(img[None])[0]
    assert crystallinity((1000.0 * img + 5.0)[None])[0] == pytest.approx(base, abs=1e-3)
    assert crystallinity((img + ramp)[None])[0] > 0.9


def test_crystallinity_output_contract():
    rng = np.random.default_rng(5)
    batch = np.stack([lattice_image(64, 8.0, 10.0, rng), rng.poisson(20.0, (64, 64)).astype(np.float32),
                      np.full((64, 64), 3.0, np.float32)])
    out = crystallinity(batch)
    assert out.shape == (3,) and out.dtype == np.float32
    assert ((out >= 0) & (out <= 1)).all()
    assert out[2] == 0.0  # a flat window has no power at all
    np.testing.assert_array_equal(out, crystallinity(batch))
    # Each window is scored on its own: the batch does not change a window's index.
    np.testing.assert_allclose(out[:1], crystallinity(batch[:1]), rtol=1e-6)


def test_phantom_tiles_separate_lattices_from_amorphous(phantom):
    """Windows cut from single regions of the phantom (found from its truth map)."""
    size = CRYSTALLINITY_WINDOW
    grid = ChipGrid(phantom.image.shape, size, size // 2)
    labels = _truth_chip_labels(phantom.truth, grid, pure=True)
    for region in (GRAIN_0, GRAIN_ROT, PHASE_B, AMORPHOUS):
        origins = grid.origins[labels == region][:6]
        assert len(origins), f"no pure {size}-px window in region {region}"
        windows = np.stack([phantom.image[r : r + size, c : c + size] for r, c in origins])
        scores = crystallinity(windows)
        if region == AMORPHOUS:
            assert scores.max() < 0.1, scores
        else:
            assert scores.min() > 0.9, scores


# --- per-community crystallinity on the phantom ---------------------------------------


@pytest.mark.parametrize("size,stride,pure", [(64, 32, True), (32, 32, False), (32, 16, False)])
def test_community_crystallinity_on_the_phantom(phantom, size, stride, pure):
    grid = ChipGrid(phantom.image.shape, size, stride)
    labels = _truth_chip_labels(phantom.truth, grid, pure=pure)
    index = community_crystallinity(phantom.image, grid, labels, seed=0)
    assert index.shape == (4,) and index.dtype == np.float32
    crystalline = index[[GRAIN_0, GRAIN_ROT, PHASE_B]]
    # Pure windows: 0.99 vs 0.00; windows of 32-px chips reach into neighbours a little.
    assert crystalline.min() > (0.95 if pure else 0.8), index
    assert index[AMORPHOUS] < (0.05 if pure else 0.1), index


def test_community_crystallinity_is_seeded_and_reads_dask_images(phantom):
    grid = ChipGrid(phantom.image.shape, 32, 16)
    labels = _truth_chip_labels(phantom.truth, grid, pure=False)
    a = community_crystallinity(phantom.image, grid, labels, seed=1)
    b = community_crystallinity(da.from_array(phantom.image, chunks=(100, 130)), grid, labels, seed=1)
    np.testing.assert_array_equal(a, b)


def test_community_crystallinity_with_an_empty_community_and_unlabelled_chips(phantom):
    grid = ChipGrid(phantom.image.shape, 64, 64)
    truth = _truth_chip_labels(phantom.truth, grid, pure=True)
    labels = np.where(truth == AMORPHOUS, 2, np.where(truth == GRAIN_0, 0, -1))  # id 1 unused
    index = community_crystallinity(phantom.image, grid, labels)
    assert index.shape == (3,)
    assert np.isnan(index[1])
    assert index[0] > 0.9 and index[2] < 0.1


def test_windows_are_kept_inside_small_images():
    rng = np.random.default_rng(6)
    img = lattice_image(48, 6.0, 12.0, rng)  # smaller than the 64 px window
    grid = ChipGrid(img.shape, 16, 16)
    index = community_crystallinity(img, grid, np.zeros(grid.n_chips, dtype=int))
    assert index.shape == (1,) and index[0] > 0.8


def test_an_image_too_small_for_a_lattice_window_has_no_crystallinity():
    """A 10 x 50 px survey image (the Velox SI's) cannot hold a window in which a lattice ring
    stands out from the few rings there are: NaN, not a number read off noise."""
    rng = np.random.default_rng(7)
    img = lattice_image(50, 6.0, 12.0, rng)[:10]
    grid = ChipGrid(img.shape, 2, 2)
    index = community_crystallinity(img, grid, np.arange(grid.n_chips) % 2)
    assert index.shape == (2,) and np.isnan(index).all()


# --- chip statistics and the community table -------------------------------------------


def _table_inputs(phantom, size=32, stride=16):
    grid = ChipGrid(phantom.image.shape, size, stride)
    chips = np.concatenate([grid.extract_row(phantom.image[r : r + size]) for r in grid.row_starts])
    chip_labels = _truth_chip_labels(phantom.truth, grid, pure=False)
    pixel_labels = grid.chip_labels_to_pixels(chip_labels.reshape(grid.grid_shape))
    return grid, chips, chip_labels, pixel_labels


def test_chip_statistics(phantom):
    _, chips, _, _ = _table_inputs(phantom)
    stats = chip_statistics(chips)
    assert stats.shape == (len(chips), len(CHIP_STATS)) and stats.dtype == np.float32
    np.testing.assert_allclose(stats[:, 0], chips.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats[:, 1], chips.astype(np.float64).std(axis=(1, 2)), rtol=1e-4)


def test_community_table_counts_and_fractions(phantom):
    grid, chips, chip_labels, pixel_labels = _table_inputs(phantom)
    stats = chip_statistics(chips)
    index = community_crystallinity(phantom.image, grid, chip_labels)
    rows = community_table(chip_labels, pixel_labels, stats, index)
    assert [r.community for r in rows] == [0, 1, 2, 3]
    assert [r.n_chips for r in rows] == np.bincount(chip_labels).tolist()
    assert sum(r.n_chips for r in rows) == grid.n_chips
    assert sum(r.area_fraction for r in rows) == pytest.approx(1.0)
    for r in rows:
        assert r.area_fraction == pytest.approx((pixel_labels == r.community).mean())
        # Area from painted chips is close to the true region area (chips are small).
        assert r.area_fraction == pytest.approx((phantom.truth == r.community).mean(), abs=0.03)
        own = chips[chip_labels == r.community].astype(np.float64)
        assert r.mean_intensity == pytest.approx(own.mean(axis=(1, 2)).mean(), rel=1e-5)
        assert r.std_intensity == pytest.approx(own.std(), rel=1e-4)  # all its chips' values pooled
        assert r.crystallinity == pytest.approx(float(index[r.community]))
    # Only the amorphous layer lacks order.
    assert rows[AMORPHOUS].crystallinity < 0.1 < min(r.crystallinity for r in rows[:3])


def test_community_table_with_unlabelled_chips_and_pixels():
    grid = ChipGrid((64, 64), 16, 16)
    chip_labels = np.array([0, 0, 1, -1] * 4)
    pixel_labels = grid.chip_labels_to_pixels(chip_labels.reshape(grid.grid_shape))
    stats = np.column_stack([np.arange(16, dtype=np.float32), np.ones(16, np.float32)])
    rows = community_table(chip_labels, pixel_labels, stats, np.array([0.5, 0.25]))
    assert [r.n_chips for r in rows] == [8, 4]
    # Fractions are of the labelled pixels only: 2/3 and 1/3.
    assert rows[0].area_fraction == pytest.approx(2 / 3) and rows[1].area_fraction == pytest.approx(1 / 3)
    assert rows[0].mean_intensity == pytest.approx(np.mean([0, 1, 4, 5, 8, 9, 12, 13]))
    assert rows[1].mean_intensity == pytest.approx(np.mean([2, 6, 10, 14]))


def test_table_to_csv_parses_back(phantom):
    grid, chips, chip_labels, pixel_labels = _table_inputs(phantom, 64, 64)
    stats = chip_statistics(chips)
    index = community_crystallinity(phantom.image, grid, chip_labels)
    rows = community_table(chip_labels, pixel_labels, stats, index)
    rows.append(CommunityRow(4, 0, 0.0, float("nan"), float("nan"), float("nan")))  # an empty one
    text = table_to_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == list(CommunityRow.__dataclass_fields__)
    assert len(parsed) == len(rows)
    for row, back in zip(rows, parsed):
        assert int(back["community"]) == row.community and int(back["n_chips"]) == row.n_chips
        for name in ("area_fraction", "mean_intensity", "std_intensity", "crystallinity"):
            value = getattr(row, name)
            if math.isnan(value):
                assert math.isnan(float(back[name]))
            else:
                assert float(back[name]) == pytest.approx(value, rel=1e-5, abs=1e-12)
    assert text.endswith("\n") and text.count("\n") == len(rows) + 1


def test_a_community_of_one_lone_chip_is_painted_nowhere_and_is_named():
    # chips of 16 px every 8 px: each pixel is voted on by the 4 chips over it, so a lone chip
    # of its own community (a particle thinner than a chip) loses every pixel's vote
    grid = ChipGrid((64, 64), 16, 8)
    labels = np.zeros(grid.grid_shape, np.int32)
    labels[:, grid.grid_shape[1] // 2:] = 1
    labels[3, 1] = 2
    painted = grid.chip_labels_to_pixels(labels)
    assert set(np.unique(painted)) == {0, 1}
    assert unpainted_communities(labels, painted) == [2]
    # a block of 2 x 2 chips holds the pixels they all cover: painted, not named
    labels[3:5, 1:3] = 2
    painted = grid.chip_labels_to_pixels(labels)
    assert (painted == 2).any()
    assert unpainted_communities(labels, painted) == []
    # unlabelled chips and positions are neither
    labels[0, 0] = -1
    assert unpainted_communities(labels, np.where(painted == 0, -1, painted)) == [0]


def test_community_std_of_one_pixel_chips_is_the_spread_of_its_pixels():
    """Chips of one pixel each have std 0; the community's std is still that of its values."""
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.normal(10, 2, 200), rng.normal(50, 5, 200)]).astype(np.float32)
    chips = values.reshape(-1, 1, 1)
    labels = np.repeat([0, 1], 200)
    rows = community_table(labels, labels.reshape(20, 20), chip_statistics(chips), np.full(2, np.nan))
    assert rows[0].std_intensity == pytest.approx(values[:200].std(), rel=1e-4)
    assert rows[1].std_intensity == pytest.approx(values[200:].std(), rel=1e-4) and rows[1].std_intensity > 4
