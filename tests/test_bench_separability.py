"""The ``separability`` part of ``mmseg bench``: the project's one-population test put to the truth."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_seg.bench import report, runner
from multimodal_seg.bench.datasets import LabelledImage
from multimodal_seg.bench.separability import (ALPHA, PURE, SCALES, largest_classes, populations_test,
                                               separability, told_intensity, window_means)
from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.graphs.decide import MIN_TEST_CHIPS
from multimodal_seg.synthetic.phantoms import haadf_phantom

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def haadf():
    return haadf_phantom((192, 192), seed=0)


def test_window_means_are_each_chips_mean_and_share_of_a_mask():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(37, 45))
    grid = ChipGrid(shape=values.shape, size=8, stride=3)
    np.testing.assert_allclose(window_means(values, grid), [values[r:r + 8, c:c + 8].mean() for r, c in grid.origins])
    mask = values > 0.5
    np.testing.assert_allclose(window_means(mask, grid), [mask[r:r + 8, c:c + 8].mean() for r, c in grid.origins])


def test_grey_level_told_the_classes_finds_two_phases_of_different_brightness_only():
    rng = np.random.default_rng(4)
    truth = np.zeros((96, 96), int)
    truth[:, 48:] = 1
    bright = rng.normal(100.0, 5.0, truth.shape) + 30.0 * truth  # the right half 6 noise sd brighter
    found = told_intensity(bright, truth, 2, 8)
    assert found["chip"] == 8 and found["ceiling_ari"] > 0.9  # only chips astride the boundary miss
    assert found["intensity_kmeans_ari"] > 0.9
    flat = told_intensity(rng.normal(100.0, 5.0, truth.shape), truth, 2, 8)  # no contrast between the halves
    assert flat["intensity_kmeans_ari"] < 0.2


def test_largest_classes_ignore_unlabelled_pixels():
    truth = np.array([[2, 2, 2, 0], [1, 1, -1, -1]])
    assert largest_classes(truth) == [2, 1]
    assert largest_classes(np.zeros((3, 3), int)) == [0]


def test_two_clouds_are_two_populations_and_one_cloud_cut_in_two_is_one():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(150, 5))
    b[:, 0] += 6.0  # six standard deviations apart along one axis
    features = np.vstack([a, b])
    in_a = np.r_[np.ones(200), np.zeros(150)]
    apart = populations_test(features, [in_a, 1 - in_a])
    assert apart["pure"] == [200, 150] and apart["p"] < ALPHA and apart["two_populations"] is True

    one = rng.normal(size=(350, 5))
    half = (rng.random(350) < 0.5).astype(float)  # a labelling the features know nothing of
    same = populations_test(one, [half, 1 - half])
    assert same["p"] >= ALPHA and same["two_populations"] is False


def test_too_few_pure_items_are_not_tested():
    features = np.random.default_rng(2).normal(size=(40, 3))
    share = np.full(40, 0.5)  # no item is PURE in either class
    share[: MIN_TEST_CHIPS - 1] = 1.0
    result = populations_test(features, [share, 1 - share])
    assert result["pure"][0] == MIN_TEST_CHIPS - 1 and result["p"] is None and result["two_populations"] is None
    assert PURE > 0.5


def test_the_phantoms_regions_are_populations_and_a_meaningless_truth_is_not(haadf):
    real = separability(haadf.image, haadf.truth, 4)
    assert [c["chip"] for c in real["chips"]] == [16, 32] and [c["auto"] for c in real["chips"]] == [False, True]
    auto = real["chips"][1]
    assert auto["two_populations"] is True and auto["ceiling_ari"] > 0.8
    assert real["chips"][0]["ceiling_ari"] > auto["ceiling_ari"]  # finer chips follow the truth closer
    assert real["segments"]["segments"] > 1
    assert [x["chip"] for x in real["scales"]] == list(SCALES)
    ceilings = [x["ceiling_ari"] for x in real["scales"]]
    assert ceilings == sorted(ceilings, reverse=True)  # the ceiling falls as chips grow

    # The same image under a truth that follows no contrast in it (left against right half of a
    # region-free noise image): the classes are one population on the chips.
    noise = np.random.default_rng(3).poisson(50.0, size=(192, 192)).astype(np.float32)
    halves = np.zeros((192, 192), int)
    halves[:, 96:] = 1
    blank = separability(noise, halves, 2)
    assert all(c["two_populations"] is False for c in blank["chips"])


def test_the_part_reports_every_image_and_counts_per_set(haadf, tmp_path):
    items = [LabelledImage("phantom", "haadf-192", haadf.image.astype(np.float32), haadf.truth.astype(np.int64), 4)]
    rows = runner.run_separability(items)
    assert rows[0]["group"] == "phantom" and "error" not in rows[0]
    text = "\n".join(report.separability_section(rows))
    assert "## Are the classes two populations?" in text and "32*" in text
    counts = report.separability_counts(rows)["phantom"]
    assert counts["images"] == 1 and counts["auto"] == "1/1" and sorted(counts["scales"]) == list(SCALES)
    assert "told-k intensity k-means" in text
    failed = report.separability_section(rows + [{"group": "ebc", "image": "broken", "error": "InputError: x"}])
    (row,) = [line for line in failed if "broken" in line]
    assert "error: InputError: x" in row and row.count("|") == 9  # a full row of 8 cells
    assert report.separability_counts(rows + [{"group": "ebc", "image": "broken", "error": "x"}]).keys() == {"phantom"}
    assert report.separability_figure({"separability": rows}, tmp_path) == "separability.png"
    assert (tmp_path / "separability.png").stat().st_size > 0
