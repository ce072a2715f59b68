"""Boundary refinement (multimodal_seg.chips.refine and the refine option of segment())."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

import multimodal_seg as mms
from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.errors import ParameterError
from multimodal_seg.graphs.knn import FeatureReducer, reduce_features
from multimodal_seg.graphs.labels import community_groups
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.chips.refine import (boundary_chips, fine_grid, keep_communities,
                                         neighbour_votes, pooled_votes, refine_factor, refined_chip_labels,
                                         window_labels, window_voters)
from multimodal_seg.pipeline.study import Study


def _seg(phantom, **kw):
    kw.setdefault("progress", False)
    return mms.segment(phantom.image, pixel_size=phantom.pixel_size, units=phantom.units, **kw)


def test_boundary_chips_are_the_chips_whose_window_holds_two_labels():
    painted = np.zeros((60, 50), dtype=np.int32)
    painted[:, 23:] = 1
    painted[41:, :17] = 2
    grid = ChipGrid(painted.shape, 8, 3)
    expected = [len(np.unique(painted[r : r + 8, c : c + 8])) > 1 for r, c in grid.origins]
    np.testing.assert_array_equal(boundary_chips(painted, grid), expected)
    assert 0 < sum(expected) < grid.n_chips


@pytest.mark.parametrize("blocky", [True, False])
def test_window_labels_are_the_labels_under_each_window(blocky):
    # a map painted from chips (blocks), and one with pixel-level noise (every row a cut)
    rng = np.random.default_rng(3)
    painted = np.kron(rng.integers(-1, 4, size=(9, 7)), np.ones((7, 9), dtype=np.int64))[:61, :58]
    if not blocky:
        flip = rng.random(painted.shape) < 0.05
        painted[flip] = rng.integers(-1, 4, size=flip.sum())
    grid = ChipGrid(painted.shape, 10, 3)  # the last row and column end on the edge, off the stride
    values, present = window_labels(painted, grid)
    np.testing.assert_array_equal(values, np.unique(painted))
    for i, (r, c) in enumerate(grid.origins):
        np.testing.assert_array_equal(values[present[i]], np.unique(painted[r : r + 10, c : c + 10]))


def test_fine_grid_keeps_the_chip_size_and_divides_the_stride():
    grid = ChipGrid((100, 80), 16, 8)
    assert fine_grid(grid, 4) == ChipGrid((100, 80), 16, 2)
    assert fine_grid(grid, 16).stride == 1  # never below one pixel
    assert fine_grid(grid, 1) is None
    with pytest.raises(ParameterError, match="refine"):
        fine_grid(grid, 0)
    with pytest.warns(UserWarning, match="no effect"):
        assert fine_grid(ChipGrid((100, 80), 16, 1), 4) is None


def test_auto_refines_to_half_a_stride_where_the_stride_and_the_encoder_allow():
    assert refine_factor(ChipGrid((100, 80), 16, 8), "auto", lightweight=True) == 2
    assert refine_factor(ChipGrid((100, 80), 4, 2), "auto", lightweight=True) == 2
    assert refine_factor(ChipGrid((100, 80), 16, 8), "auto", lightweight=False) == 1
    assert refine_factor(ChipGrid((100, 80), 16, 8), 4, lightweight=False) == 4
    # chips already start every pixel: auto means off, without the warning an explicit factor gets
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_px = ChipGrid((40, 40), 1, 1)
        assert refine_factor(one_px, "auto", lightweight=True) == 1
        assert fine_grid(one_px, refine_factor(one_px, "auto", lightweight=True)) is None


def test_votes_follow_the_nearest_chips_and_unlabelled_chips_do_not_vote():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    labels = np.repeat([0, 1, 2], 20)
    features = centres[labels] + rng.normal(0, 0.3, (60, 3))
    labels_with_gap = labels.copy()
    labels_with_gap[40:] = -1  # cluster 2 unlabelled: it cannot win a vote
    new = centres[[0, 1, 2]] + rng.normal(0, 0.3, (3, 3))
    votes = neighbour_votes(features, labels_with_gap, new, k=10)
    assert votes.shape == (3, 2)
    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    assert votes[0].argmax() == 0 and votes[1].argmax() == 1
    assert neighbour_votes(features, labels, new, k=10).argmax(axis=1).tolist() == [0, 1, 2]
    assert neighbour_votes(features, labels, new[:0], k=10).shape == (0, 3)


def test_voters_are_the_chips_whose_window_holds_one_community():
    # two halves, and a layer 4 px thick (thinner than the 8 px chips) across the left half
    painted = np.zeros((40, 40), dtype=np.int32)
    painted[:, 20:] = 1
    painted[18:22, :20] = 2
    grid = ChipGrid(painted.shape, 8, 4)
    labels = painted[grid.origins[:, 0] + 4, grid.origins[:, 1] + 4]
    voters = window_voters(labels, painted, grid, k=3)
    mixed = boundary_chips(painted, grid)
    alone = ~mixed
    np.testing.assert_array_equal(voters[alone], labels[alone])
    # mixed windows of the halves do not vote; the layer has no window of its own, so all its chips vote
    assert np.all(voters[mixed & (labels != 2)] == -1)
    assert (labels == 2).any() and not (alone & (labels == 2)).any()
    np.testing.assert_array_equal(voters[labels == 2], 2)
    # a community with fewer windows of its own than a vote's neighbours could never win a vote
    left = (alone & (labels == 0)).sum()
    voters = window_voters(labels, painted, grid, k=left + 1)
    np.testing.assert_array_equal(voters[labels == 0], 0)
    assert np.all(voters[mixed & (labels == 1)] == -1)


def test_a_modality_votes_only_among_the_communities_it_tells_apart():
    # a joint partition of four quadrants; the modality's own partition sees left and right only
    joint = np.array([0, 0, 1, 1, 2, 2, 3, 3, -1])
    own = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1])
    groups = community_groups(joint, own, 5)  # community 4 has no chips: a group of its own
    assert groups[0] == groups[2] != groups[1] == groups[3]
    assert groups[4] not in groups[:4]
    votes = np.array([[0.5, 0.1, 0.3, 0.1, 0.0], [0.05, 0.6, 0.05, 0.2, 0.1]])
    pooled = pooled_votes(votes, groups)
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)
    np.testing.assert_allclose(pooled[:, 0], pooled[:, 2])  # left top and bottom: no preference
    np.testing.assert_allclose(pooled[0, [0, 1, 4]], [0.4, 0.1, 0.0])  # left over right is kept
    np.testing.assert_allclose(pooled_votes(votes, np.arange(5)), votes)  # its own partition: unchanged


@pytest.mark.parametrize("family, seed", [("gradient", 2), ("complementary", 9)])
def test_refined_boundaries_stay_where_the_regions_meet(family, seed):
    # Tuning draws where the old votes moved boundaries: a ring around a core under a thickness
    # ramp (0.905 with mixed windows voting), and a specimen whose HAADF sees order and EELS
    # composition (0.901 with the EELS voting across a boundary it cannot see).
    from multimodal_seg.bench.methods import run_project
    from multimodal_seg.synthetic.families import draw

    specimen = draw(family, seed)
    seg, _ = run_project(specimen.modalities, seed=0)
    main = "joint" if "joint" in seg.scan_labels else "haadf"
    assert adjusted_rand(seg.scan_labels[main], specimen.truth) >= 0.94


def test_refined_labels_stay_among_the_labels_under_each_chip():
    painted = np.zeros((32, 32), dtype=np.int32)
    painted[:, 16:] = 1
    grid = ChipGrid(painted.shape, 8, 2)
    boundary = boundary_chips(painted, grid)
    # Votes that favour a community present nowhere (2), then 1: boundary chips take 1.
    votes = np.tile([0.1, 0.3, 0.6], (boundary.sum(), 1))
    refined = refined_chip_labels(painted, grid, boundary, votes).ravel()
    assert set(refined[boundary]) == {1}
    np.testing.assert_array_equal(refined[~boundary], painted[grid.origins[~boundary, 0], grid.origins[~boundary, 1]])


def test_a_region_thinner_than_a_chip_keeps_the_positions_its_chips_paint():
    # A 3 px particle in a 40 px map of 5 px chips every 2 px: the 2 x 2 chips centred on it are
    # its community and paint it.  On the fine grid (every pixel) each window over the particle
    # also holds the matrix; with every fine chip given the matrix, as a tied vote gives it,
    # the fine grid paints the particle nowhere.
    coarse, fine = ChipGrid((40, 40), 5, 2), ChipGrid((40, 40), 5, 1)
    chips = np.zeros(coarse.grid_shape, dtype=np.int32)
    chips[9:11, 9:11] = 1  # chips starting at 18-20 px
    painted = coarse.chip_labels_to_pixels(chips)
    assert (painted == 1).sum() > 0
    refined = fine.chip_labels_to_pixels(np.zeros(fine.grid_shape, dtype=np.int32))
    assert not (refined == 1).any()
    kept = keep_communities(refined, painted)
    np.testing.assert_array_equal(kept == 1, painted == 1)
    np.testing.assert_array_equal(kept[painted != 1], refined[painted != 1])
    # nothing lost: the fine grid's map as it is, boundaries and all
    moved = refined.copy()
    moved[:, :3] = 1
    assert keep_communities(moved, painted) is moved


def test_feature_reducer_projects_new_chips_into_the_graph_space():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)) * np.arange(1, 13)
    reducer = FeatureReducer(n_pcs=5, seed=0)
    fitted = reducer.fit_transform(x)
    np.testing.assert_array_equal(fitted, reduce_features(x, n_pcs=5, seed=0))
    np.testing.assert_allclose(reducer.transform(x), fitted, atol=1e-4)
    with pytest.raises(RuntimeError, match="before fit"):
        FeatureReducer().transform(x)


def test_refinement_sharpens_the_phantom_and_changes_only_boundaries(small_phantom):
    # refinement alone: placing pixels by the lattice afterwards puts coarse and refined
    # boundaries in nearly the same places (test_placement.py)
    coarse = _seg(small_phantom, refine=1, place_positions=False)
    default = _seg(small_phantom, place_positions=False)  # refine="auto": half the stride
    fine = _seg(small_phantom, refine=4, place_positions=False)
    # Same partition of the chips: refinement moves boundaries, never communities.
    np.testing.assert_array_equal(fine.chip_labels, coarse.chip_labels)
    np.testing.assert_array_equal(default.chip_labels, coarse.chip_labels)
    assert fine.n_communities == coarse.n_communities
    ari_coarse = adjusted_rand(coarse.pixel_labels, small_phantom.truth)
    ari_default = adjusted_rand(default.pixel_labels, small_phantom.truth)
    ari_fine = adjusted_rand(fine.pixel_labels, small_phantom.truth)
    assert ari_default > ari_coarse + 0.03  # measured 0.862 -> 0.919 (auto) -> 0.930 (4)
    assert ari_fine > ari_coarse + 0.03
    assert default.provenance["refined"]["fine_grid"]["stride"] == coarse.grid.stride // 2
    # Pixels that changed lie within one chip of a coarse boundary (a boundary chip can
    # only pass on labels found under its window).
    changed = fine.pixel_labels != coarse.pixel_labels
    assert changed.any()
    painted = coarse.pixel_labels
    edges = np.zeros(painted.shape, dtype=bool)
    edges[:-1] |= painted[:-1] != painted[1:]
    edges[:, :-1] |= painted[:, :-1] != painted[:, 1:]
    distance = ndimage.distance_transform_edt(~edges)
    assert distance[changed].max() <= coarse.grid.size
    refined = fine.provenance["refined"]
    assert refined["fine_grid"]["stride"] == coarse.grid.stride // 4
    assert 0 < refined["boundary_chips"]["image"] < ChipGrid(coarse.grid.shape, coarse.grid.size,
                                                    coarse.grid.stride // 4).n_chips
    assert coarse.provenance["refined"] is None


def test_refinement_is_resumable_and_reproducible(small_phantom, tmp_path, monkeypatch):
    first = _seg(small_phantom, refine=2, out=tmp_path / "run")
    study = Study.open(tmp_path / "run" / "study.zarr")
    assert study.read_array("refined/image").shape == fine_grid(first.grid, 2).grid_shape
    from multimodal_seg import stages

    def fail(*args, **kwargs):
        raise AssertionError("refined chips were embedded again")

    monkeypatch.setattr(stages, "encode_chips", fail)
    again = _seg(small_phantom, refine=2, out=tmp_path / "run")
    np.testing.assert_array_equal(again.pixel_labels, first.pixel_labels)


def test_refine_must_be_a_positive_whole_number(small_phantom):
    with pytest.raises(ParameterError, match="refine"):
        _seg(small_phantom, refine=0)
    with pytest.raises(ParameterError, match="refine"):
        _seg(small_phantom, refine=1.5)


def test_refinement_of_a_partition_without_boundaries_embeds_nothing():
    # Shot noise on a flat field: one population, so one community and no boundary chip.
    image = np.random.default_rng(3).poisson(200.0, (192, 192)).astype(np.float32)
    seg = mms.segment(image, refine=2, progress=False)
    assert seg.n_communities == 1
    assert seg.provenance["refined"]["boundary_chips"] == {"image": 0}
    assert (seg.pixel_labels == 0).all()


def test_auto_refinement_is_off_with_a_neural_network_encoder(small_phantom):
    # ResNet50 would embed the boundary chips again at about the cost of the run
    cnn = _seg(small_phantom, encoder="resnet50", weights="random", chip_size=128, stride=64)
    assert cnn.provenance["refined"] is None
    assert cnn.provenance["config"]["chips"]["refine"] == 1
    asked = _seg(small_phantom, encoder="resnet50", weights="random", chip_size=128, stride=64, refine=2)
    assert asked.provenance["refined"]["fine_grid"]["stride"] == 32
    # the weight-free encoder is lightweight: refined by default
    assert _seg(small_phantom).provenance["refined"] is not None


def test_a_study_that_did_not_record_lightweight_asks_its_encoder(small_phantom):
    study = Study.open(None)
    image = (small_phantom.image, {"pixel_size": small_phantom.pixel_size, "units": small_phantom.units})
    from multimodal_seg import stages

    stages.add_modalities(study, {"image": image})
    stages.lay_chips(study)
    stages.embed(study, encoder="fourier", progress=False)
    stages.build_graphs(study)
    stages.find_communities(study)
    del study.group["embeddings/image"].attrs["lightweight"]  # as written before it was recorded
    stages.refine(study, progress=False)
    assert study.stage_params["refine"]["factor"] == 2  # fourier, rebuilt from the study, is lightweight
