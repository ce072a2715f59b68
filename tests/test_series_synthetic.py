"""The damage-series phantom and the simulated microscope feed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from multimodal_seg.errors import ParameterError
from multimodal_seg.series.frames import SeriesAxis, read_frames
from multimodal_seg.synthetic.feed import run_feed, save_stack
from multimodal_seg.synthetic.phantoms import haadf_phantom
from multimodal_seg.synthetic.series import AMORPHOUS, damage_series


@pytest.fixture(scope="module")
def series():
    return damage_series((256, 256), 4, seed=1, frame_interval=2.0)


def test_the_front_only_advances_and_the_damaged_area_grows(series):
    fractions = series.damaged_fraction
    assert np.all(np.diff(fractions) > 0.02), fractions
    assert fractions[0] == pytest.approx(np.mean(series.truth(0) == AMORPHOUS))
    for i in range(1, series.n_frames):
        before, after = series.truth(i - 1) == AMORPHOUS, series.truth(i) == AMORPHOUS
        assert not (before & ~after).any()  # damage never heals
    assert set(np.unique(series.truth(0))) == {0, 1, 2, 3}


def test_material_away_from_the_front_is_the_same_specimen_in_every_frame(series):
    for i in range(1, series.n_frames):
        changed = series.truth(i - 1) != series.truth(i)
        # Columns within 0.22 nm of a change may swap, and the blur reaches 4 column sigmas:
        # 20 px covers both; beyond it the noiseless frames must be identical.
        far = ~ndimage.binary_dilation(changed, iterations=20)
        assert far.mean() > 0.5
        np.testing.assert_array_equal(series.expected(i - 1)[far], series.expected(i)[far])


def test_frames_are_reproducible_with_fresh_noise_per_frame(series):
    again = damage_series((256, 256), 4, seed=1, frame_interval=2.0)
    np.testing.assert_array_equal(series.frame(2), again.frame(2))
    far = ~ndimage.binary_dilation(series.truth(0) != series.truth(1), iterations=20)
    noise = series.frame(1)[far] - series.frame(0)[far]
    expected = series.frame(0, noise=False)[far]
    # Independent Poisson noise in both frames: the difference has variance ~2x the counts.
    assert np.var(noise) == pytest.approx(2 * expected.mean(), rel=0.15)
    assert series.frame(0).mean() == pytest.approx(200.0, rel=0.01)  # the phantom's dose, first frame


def test_the_beam_does_not_change_with_the_damage(series):
    # Counts are scaled once: amorphous material is darker, so the mean falls as it grows.
    means = [series.frame(i, noise=False).mean() for i in range(series.n_frames)]
    assert np.all(np.diff(means) < 0)


def test_impossible_growth_and_unknown_physics_are_refused():
    with pytest.raises(ParameterError, match="grow within the image") as info:
        damage_series((128, 128), 3, start=0.5, end=0.2)
    assert "fix:" in str(info.value)
    with pytest.raises(ParameterError, match="n_frames"):
        damage_series((128, 128), 0)
    with pytest.raises(ParameterError, match="unknown specimen parameters"):
        damage_series((128, 128), 3, lattice=0.4)
    with pytest.raises(ParameterError, match="frame"):
        damage_series((128, 128), 3).frame(3)


def test_the_specimen_physics_are_the_phantoms():
    # The first frame of a series that does not grow has the phantom's brightness and contrast.
    series = damage_series((256, 256), 1, seed=0, start=0.26, end=0.26)
    phantom = haadf_phantom((256, 256), seed=0)
    amorphous = series.truth(0) == AMORPHOUS
    crystal = phantom.truth < 3
    ratio_series = series.frame(0)[amorphous].mean() / series.frame(0)[~amorphous].mean()
    ratio_phantom = phantom.image[~crystal].mean() / phantom.image[crystal].mean()
    assert ratio_series == pytest.approx(ratio_phantom, rel=0.1)


@pytest.mark.parametrize("fmt", [".tif", ".hspy"])
def test_the_feed_writes_calibrated_frames_with_their_time(tmp_path, series, fmt):
    written = []
    files = run_feed(series, tmp_path / "feed", interval=0.0, fmt=fmt, truth=tmp_path / "truth",
                     on_written=lambda i, path, when: written.append(i))
    assert written == [0, 1, 2, 3] and [f.name for f in files] == [f"frame_{i:05d}{fmt}" for i in range(4)]
    assert not list((tmp_path / "feed").glob(".*"))  # no temporary left behind
    frames = read_frames(tmp_path / "feed")
    np.testing.assert_array_equal(frames[2].pixels(), series.frame(2))
    assert frames[0].image.axes[1].scale == pytest.approx(series.pixel_size)
    assert frames[0].image.axes[1].units == "nm"
    axis = SeriesAxis.of(frames[0])
    assert axis.name == "time" and axis.units == "s"
    assert [axis.value(f, i) for i, f in enumerate(frames)] == pytest.approx(list(series.times))
    np.testing.assert_array_equal(np.load(tmp_path / "truth" / "frame_00003.npy"), series.truth(3))


def test_a_direct_writer_leaves_complete_files(tmp_path, series):
    files = run_feed(series, tmp_path, interval=0.0, frames=[1], writer="direct", chunks=5, pause=0.01)
    np.testing.assert_array_equal(read_frames(files)[0].pixels(), series.frame(1))


def test_a_stack_keeps_its_time_axis(tmp_path, series):
    path = save_stack(series, tmp_path / "stack.hspy")
    frames = read_frames(path)
    assert len(frames) == 4 and frames[3].label.endswith("stack.hspy[3]")
    axis = SeriesAxis.of(frames[0])
    assert (axis.name, axis.units, axis.source) == ("time", "s", "stack")
    assert [axis.value(f, i) for i, f in enumerate(frames)] == pytest.approx([0.0, 2.0, 4.0, 6.0])
    np.testing.assert_array_equal(frames[1].pixels(), series.frame(1))


def test_a_stack_axis_without_a_name_gets_a_column_of_its_own(tmp_path, series):
    """A calibrated stack axis with no name is called ``frame``; its values then go in
    ``axis_frame``, beside the frame number, instead of a second ``frame`` column (and a
    ``poi.json`` key that overwrote the frame number)."""
    import csv
    import json

    import hyperspy.api as hs

    from multimodal_seg.series.batch import segment_series

    stack = hs.signals.Signal2D(np.stack([series.frame(i)[:128, :128] for i in range(2)]))
    nav = stack.axes_manager.navigation_axes[0]
    nav.units, nav.scale, nav.offset = "s", 2.5, 10.0  # calibrated, never named
    stack.save(tmp_path / "unnamed.hspy")
    segment_series(tmp_path / "unnamed.hspy", out=tmp_path / "out", progress=False, consensus=3)
    with open(tmp_path / "out" / "fractions.csv") as handle:
        header = next(csv.reader(handle))
        rows = list(csv.DictReader(handle, fieldnames=header))
    assert len(header) == len(set(header)) and "axis_frame" in header
    assert {(r["frame"], r["axis_frame"]) for r in rows} == {("0", "10"), ("1", "12.5")}
    frames = json.loads((tmp_path / "out" / "poi.json").read_text())["frames"]
    assert [(f["frame"], f["axis_frame"]) for f in frames] == [(0, 10.0), (1, 12.5)]
