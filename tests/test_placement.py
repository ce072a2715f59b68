"""Boundary positions placed by their own signals (multimodal_seg.chips.placement).

Checked on maps whose truth is known: three regions on a 64 x 64 scan, each position's
signal a Gaussian draw around its region's mean, and painted maps that put the boundaries
one position off, as chips straddling a boundary do; then on a phantom family draw through
``segment()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import multimodal_seg as mms
from multimodal_seg.chips.placement import boundary_band, place_boundary_positions
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.synthetic.families import draw


def _regions() -> np.ndarray:
    truth = np.zeros((64, 64), np.int32)
    truth[:, 32:] = 1
    truth[40:, :20] = 2
    return truth


def _signal(truth: np.ndarray, separation: float, dims: int = 4, seed: int = 0) -> np.ndarray:
    """Unit-variance noise, with each region's mean ``separation`` apart along one axis each."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=truth.shape + (dims,))
    for region in range(int(truth.max()) + 1):
        features[..., region % dims] += separation * (truth == region)
    return features


def _shifted(truth: np.ndarray) -> np.ndarray:
    """The truth with every boundary painted one position to the right and down."""
    painted = truth.copy()
    painted[:, 1:] = truth[:, :-1]
    painted[1:, :] = painted[:-1, :].copy()
    return painted


def test_clean_signal_puts_shifted_boundaries_back():
    truth = _regions()
    painted = _shifted(truth)
    placed = place_boundary_positions(painted, {"eels": _signal(truth, 4.0)}, radius=1)
    wrong_before, wrong_after = int((painted != truth).sum()), int((placed.labels != truth).sum())
    assert wrong_before > 80
    assert wrong_after <= 0.05 * wrong_before
    # the map's error rate near boundaries is estimated from the data: about the true one
    band = boundary_band(painted, 1)
    assert placed.map_error == pytest.approx((painted != truth)[band].mean(), abs=0.05)
    assert placed.moved == int((placed.labels != painted).sum())


def test_right_map_stays():
    truth = _regions()
    placed = place_boundary_positions(truth, {"eels": _signal(truth, 4.0)}, radius=1)
    assert placed.moved <= 2
    assert placed.map_error < 0.02


def test_signal_without_regions_leaves_the_map():
    """Noise alone carries no evidence: the map decides."""
    truth = _regions()
    painted = _shifted(truth)
    placed = place_boundary_positions(painted, {"eels": _signal(truth, 0.0, dims=16)}, radius=1)
    assert placed.moved <= 0.03 * placed.band


def test_weak_signal_moves_fewer_positions_and_helps():
    """A map right at most boundary positions: a weak signal moves only its clearest ones."""
    truth = _regions()
    shifted = _shifted(truth)
    painted = np.where(np.random.default_rng(5).random(truth.shape) < 0.3, shifted, truth)
    strong = place_boundary_positions(painted, {"eels": _signal(truth, 4.0)}, radius=1)
    weak = place_boundary_positions(painted, {"eels": _signal(truth, 1.0)}, radius=1)
    assert 0 < weak.moved < strong.moved
    assert (weak.labels != truth).sum() < (painted != truth).sum()


def test_two_modalities_add_their_evidence():
    """Two independent weak measurements of each position place it better than either."""
    truth = _regions()
    painted = _shifted(truth)
    a, b = _signal(truth, 1.2, seed=1), _signal(truth, 1.2, seed=2)
    wrong = {key: int((place_boundary_positions(painted, feats, radius=1).labels != truth).sum())
             for key, feats in {"a": {"a": a}, "b": {"b": b}, "both": {"a": a, "b": b}}.items()}
    assert wrong["both"] < min(wrong["a"], wrong["b"])


def test_positions_move_at_most_radius_and_only_to_near_communities():
    truth = _regions()
    painted = _shifted(truth)
    for radius in (1, 2):
        placed = place_boundary_positions(painted, {"eels": _signal(truth, 4.0)}, radius=radius)
        changed = placed.labels != painted
        assert not (changed & ~boundary_band(painted, radius)).any()
        padded = np.pad(painted, radius, constant_values=-1)
        for r, c in np.argwhere(changed):
            window = padded[r : r + 2 * radius + 1, c : c + 2 * radius + 1]
            assert placed.labels[r, c] in window


def test_communities_a_modality_does_not_tell_apart_are_left_to_the_map():
    """Regions 0 and 2 differ in the signal, but the modality's own partition joins them:
    it has no say between them, only between them and region 1."""
    truth = _regions()
    painted = _shifted(truth)
    features = _signal(truth, 4.0)
    placed = place_boundary_positions(painted, {"eels": features}, groups={"eels": np.array([0, 1, 0])},
                                      radius=1)
    between_0_and_2 = np.isin(truth, [0, 2]) & np.isin(painted, [0, 2])
    np.testing.assert_array_equal(placed.labels[between_0_and_2], painted[between_0_and_2])
    # across region 1's boundaries it still acts
    near_1 = (truth == 1) != (painted == 1)
    assert (placed.labels[near_1] == truth[near_1]).mean() > 0.9


def test_community_without_interior_is_not_modelled():
    truth = _regions()
    painted = _shifted(truth)
    painted[10, 10] = 3  # one position: nothing to model it on
    placed = place_boundary_positions(painted, {"eels": _signal(truth, 4.0)}, radius=1)
    assert placed.labels[10, 10] == 3
    assert (placed.labels == 3).sum() == 1


def test_features_must_be_on_the_map():
    with pytest.raises(ValueError, match="expected"):
        place_boundary_positions(_regions(), {"eels": np.zeros((10, 10, 2))})


@pytest.fixture(scope="module")
def redundant():
    """A tuning draw of the `redundant` family: HAADF and EELS see the same regions, and the
    EELS measures every scan position."""
    return draw("redundant", 1)


def test_segment_places_scan_positions_by_their_spectra(redundant):
    placed = mms.segment(redundant.modalities, progress=False)
    painted = mms.segment(redundant.modalities, place_positions=False, progress=False)
    # 0.952 painted, 0.994 placed when this was written
    assert adjusted_rand(placed.scan_labels["joint"], redundant.truth) >= adjusted_rand(
        painted.scan_labels["joint"], redundant.truth) + 0.02
    assert adjusted_rand(placed.scan_labels["joint"], redundant.truth) >= 0.98
    record = placed.provenance["placed"]
    assert set(record) == {"joint", "eels", "haadf"}
    # the joint map by the EELS alone: measured at each position, it places a boundary more
    # sharply than the image's lattice read over a period
    assert record["joint"]["modalities"] == ["eels"] and record["joint"]["moved"] > 0
    # the HAADF's own map by its lattice
    assert record["haadf"]["modalities"] == ["haadf"] and record["haadf"]["moved"] > 0
    # how far a boundary may move: the refined grid's stride (1 position) where an image's
    # evidence went into the refined map (the joint, the HAADF's own); the chips' stride (2)
    # where the EELS made the map alone and places it alone, position by position
    assert record["joint"]["radius"] == record["haadf"]["radius"] == 1 and record["eels"]["radius"] == 2
    moved = placed.scan_labels["eels"] != painted.scan_labels["eels"]
    assert not (moved & ~boundary_band(painted.scan_labels["eels"], 2)).any()
    # a spectrum image alone, on the chips of the multimodal run (alone it gets one-position chips)
    alone = mms.segment({"eels": redundant.modalities["eels"]}, chip_size=4, stride=2, progress=False)
    assert alone.provenance["refined"] is not None and alone.provenance["placed"]["eels"]["radius"] == 2
    assert adjusted_rand(placed.scan_labels["haadf"], redundant.truth) > adjusted_rand(
        painted.scan_labels["haadf"], redundant.truth)
    assert painted.provenance["placed"] is None
    assert painted.provenance["config"]["chips"]["place_positions"] is False
    # the chips' communities do not change: only where their boundaries are painted
    np.testing.assert_array_equal(placed.chip_labels, painted.chip_labels)


@pytest.mark.parametrize("family,seed", [("layouts", 3), ("orientation", 1)])
def test_an_image_with_a_lattice_places_its_pixels_by_the_lattice(family, seed):
    """Islands of two phases, grains of one phase at other orientations: each pixel near a
    boundary weighs the local amplitudes of the image's lattice reflections over one period."""
    specimen = draw(family, seed)
    placed = mms.segment(specimen.modalities, progress=False)
    painted = mms.segment(specimen.modalities, place_positions=False, progress=False)
    # layouts 3: 0.907 -> 0.959, orientation 1: 0.973 -> 0.985 when this was written
    before, after = (adjusted_rand(s.scan_labels["haadf"], specimen.truth) for s in (painted, placed))
    assert after >= before + 0.01 and after >= 0.95, (before, after)
    record = placed.provenance["placed"]["haadf"]
    assert record["modalities"] == ["haadf"] and record["step"] == 1 and 0 < record["map_error"] < 0.5
    np.testing.assert_array_equal(placed.chip_labels, painted.chip_labels)


def test_an_image_without_a_lattice_has_nothing_to_place_by():
    """Grey-level blobs (an SEM image of phases): no lattice, no scale to read a pixel at."""
    rng = np.random.default_rng(1)
    blobs = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 12) > 0
    seg = mms.segment(rng.poisson(80 + 60 * blobs).astype(np.float32), progress=False)
    assert seg.provenance["placed"] is None
    assert seg.provenance["config"]["chips"]["place_positions"] is True


def test_a_large_image_is_placed_on_every_step_th_pixel(small_phantom, tmp_path):
    from multimodal_seg.pipeline import stages

    image = np.tile(small_phantom.image, (3, 3))[:767, :769]  # above MAX_PLACED_EDGE, odd sizes
    seg = mms.segment(image, progress=False, out=tmp_path / "run")
    record = seg.provenance["placed"]["image"]
    assert record["step"] == -(-769 // stages.MAX_PLACED_EDGE) == 2
    # the study keeps the placed positions' labels only, which the painted map holds there
    placed = mms.Study.open(tmp_path / "run" / "study.zarr").read_array("placed/image")
    assert placed.shape == (383, 384)
    np.testing.assert_array_equal(seg.pixel_labels[1::2, 1::2], placed)
    painted = mms.segment(image, place_positions=False, progress=False)
    changed = seg.pixel_labels != painted.pixel_labels
    assert changed.shape == image.shape
    # what moved, moved in whole 2 x 2 blocks, and only near a painted boundary
    blocks = changed[:766, :768].reshape(383, 2, 384, 2)
    assert changed.any() and (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all()
    near = boundary_band(painted.pixel_labels, 2 * record["radius"])
    assert not (changed & ~near).any()


def test_placement_resumes_and_follows_the_option(redundant, tmp_path):
    out = tmp_path / "run"
    first = mms.segment(redundant.modalities, progress=False, out=out)
    study = mms.Study.open(out / "study.zarr")
    stamp = study.fingerprint_of("placed/joint")
    again = mms.segment(redundant.modalities, progress=False, out=out)
    assert mms.Study.open(out / "study.zarr").fingerprint_of("placed/joint") == stamp
    np.testing.assert_array_equal(again.scan_labels["joint"], first.scan_labels["joint"])
    # turned off on the same study: the painted maps, not the stored placed ones
    off = mms.segment(redundant.modalities, place_positions=False, progress=False, out=out)
    assert off.provenance["placed"] is None
    assert (off.scan_labels["joint"] != first.scan_labels["joint"]).any()
    # and the placed maps depend on what was painted: refined differently, placed again
    coarse = mms.segment(redundant.modalities, refine=1, progress=False, out=out)
    assert coarse.provenance["placed"]["joint"]["radius"] == 2  # the chips' stride, not the refined grid's
    assert first.provenance["placed"]["joint"]["radius"] == 1


def test_a_strip_too_thin_for_interior_positions_is_put_back():
    """A strip two positions wide has no position away from its boundaries: it is modelled by
    all its positions, so a strip painted one position off is put back."""
    truth = np.zeros((16, 16), np.int32)
    truth[:, 8:] = 1
    truth[:, 6:8] = 2
    painted = np.zeros((16, 16), np.int32)
    painted[:, 8:] = 1
    painted[:, 7:9] = 2  # one position to the right
    placed = place_boundary_positions(painted, {"eds": _signal(truth, 4.0)}, radius=1)
    assert (painted != truth).sum() == 32
    assert (placed.labels != truth).sum() <= 3 and placed.map_error is not None


def test_nothing_to_estimate_from_is_recorded_as_such():
    """A community of one position is not modelled, and nothing else is near the other
    community's positions: no position can move."""
    labels = np.zeros((16, 16), np.int32)
    labels[8, 8] = 1
    placed = place_boundary_positions(labels, {"eds": _signal(labels, 4.0)}, radius=1)
    assert placed.band == 9 and placed.moved == 0 and placed.map_error is None
    assert placed.record()["map_error"] is None


def test_a_4d_stem_scan_places_its_positions_by_their_patterns():
    """The `thickness` family: a 4D-STEM scan alone under a thickness wedge, its encoder pooling
    per-position features, which placement reads back from the study instead of encoding again."""
    specimen = draw("thickness", 5)
    placed = mms.segment(specimen.modalities, progress=False)
    painted = mms.segment(specimen.modalities, place_positions=False, progress=False)
    (name,) = placed.scan_labels
    assert placed.provenance["placed"][name]["modalities"] == [name]
    # 0.925 painted, 0.970 placed when this was written
    assert adjusted_rand(placed.scan_labels[name], specimen.truth) >= adjusted_rand(
        painted.scan_labels[name], specimen.truth) + 0.02
