"""Time series: frames, shared ids (batch), live joins, points of interest, the watcher and its faults."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from pathlib import Path

import igraph as ig
import leidenalg
import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.cli import app
from multimodal_seg.errors import InputError, OutputError, ParameterError
from multimodal_seg.graphs import knn
from multimodal_seg.graphs.communities import partition_graph
from multimodal_seg.modalities.base import Axis
from multimodal_seg.plot import community_colors
from multimodal_seg.series import LiveSeries, read_frames, segment_series, watch
from multimodal_seg.series.frames import frame_files
from multimodal_seg.series.identities import confidence, join, match_ids, reoptimise
from multimodal_seg.series.model import disordered_area
from multimodal_seg.series.poi import interest, points_of_interest
from multimodal_seg.synthetic.feed import run_feed, save_frame
from multimodal_seg.synthetic.phantoms import haadf_phantom
from multimodal_seg.synthetic.series import AMORPHOUS, damage_series


def unchanged_chips(grid: ChipGrid, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Chips whose truth is the same in both frames: ``(chip rows, chip cols)`` bool."""
    changed = before != after
    return np.array([[not changed[r : r + grid.size, c : c + grid.size].any() for c in grid.col_starts]
                     for r in grid.row_starts])


def kept_ids(reports, truth, grid) -> list[float]:
    """Per pair of consecutive frames: the share of unchanged chips that kept their id."""
    return [float((reports[i].chip_labels == reports[i - 1].chip_labels)[unchanged_chips(grid, truth[i - 1],
                                                                                          truth[i])].mean())
            for i in range(1, len(reports))]


def front_hits(reports, truth, grid) -> list[bool]:
    """Per frame after the first: whether the first point of interest lies within a chip of the truth's change."""
    hits = []
    for i in range(1, len(reports)):
        distance = ndimage.distance_transform_edt(truth[i] == truth[i - 1])
        first = reports[i].points[0]
        hits.append(bool(distance[int(first.row), int(first.col)] <= grid.size))
    return hits


@pytest.fixture(scope="module")
def damage512():
    series = damage_series((512, 512), 4, seed=0)
    return series, np.stack([series.frame(i) for i in range(4)]), [series.truth(i) for i in range(4)]


@pytest.fixture(scope="module")
def batch(damage512, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    return segment_series(damage512[1], out=out, progress=False), out


@pytest.fixture(scope="module")
def small():
    series = damage_series((256, 256), 5, seed=2, frame_interval=0.5)
    return series, [series.frame(i) for i in range(series.n_frames)]


# --------------------------------------------------------------------------- frames


def test_a_folder_is_read_in_natural_order_without_unfinished_files(tmp_path, small):
    series, frames = small
    for i in (10, 2, 1):
        save_frame(tmp_path / f"frame_{i}.tif", frames[i % 5], pixel_size=0.04)
    (tmp_path / ".frame_3.tif").write_bytes(b"hidden")
    (tmp_path / "frame_4.tif.part").write_bytes(b"still writing")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in frame_files(tmp_path)] == ["frame_1.tif", "frame_2.tif", "frame_10.tif"]
    read = read_frames(tmp_path)
    np.testing.assert_array_equal(read[2].pixels(), frames[0])


def test_frames_of_another_size_or_calibration_are_refused_by_name(tmp_path, small):
    _, frames = small
    save_frame(tmp_path / "a.tif", frames[0], pixel_size=0.04)
    save_frame(tmp_path / "b.tif", frames[1][:200, :200], pixel_size=0.04)
    save_frame(tmp_path / "c.tif", frames[1], pixel_size=0.05)
    with pytest.raises(InputError, match="200x200 px but the series' frames are 256x256") as info:
        segment_series([tmp_path / "a.tif", tmp_path / "b.tif"], out=tmp_path / "out", progress=False)
    assert "b.tif" in str(info.value) and "fix:" in str(info.value)
    with pytest.raises(InputError, match="pixel size along y is 0.05 nm but the series' is 0.04 nm"):
        read_frames([tmp_path / "a.tif", tmp_path / "c.tif"])
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_unreadable_and_empty_inputs_name_the_file(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(InputError, match="cannot be read|found no data") as info:
        read_frames(bad)
    assert "broken.tif" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        read_frames(tmp_path / "empty")


# --------------------------------------------------------------------------- ids


def planted(seed: int, n: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([c + rng.normal(0, 1, (n, centres.shape[1])) for c in centres])


def test_new_chips_join_existing_communities_and_found_new_ones():
    centres = np.random.default_rng(0).normal(0, 5, (4, 8))
    old = planted(1, 60, centres)
    old_labels = partition_graph(knn.knn_graph(old, k=10)).labels
    new = np.vstack([planted(2, 20, centres[[0, 2]]), planted(3, 25, np.full((1, 8), 20.0))])
    graph = knn.knn_graph(np.vstack([old, new]), k=10)
    free = np.r_[np.zeros(len(old), bool), np.ones(len(new), bool)]
    labels = join(graph, np.r_[old_labels, np.full(len(new), -1)], free, next_id=7)
    np.testing.assert_array_equal(labels[: len(old)], old_labels)  # earlier memberships fixed
    like_0 = old_labels[:60]
    assert (labels[len(old) : len(old) + 20] == like_0[0]).all()
    assert (labels[len(old) + 20 : len(old) + 40] == old_labels[120]).all()
    assert (labels[len(old) + 40 :] == 7).all()  # a new community takes the next id, never an old one


def test_collapsing_fixed_communities_keeps_the_objective():
    rng = np.random.default_rng(0)
    graph = knn.knn_graph(rng.normal(size=(200, 5)), k=8)
    labels = rng.integers(0, 4, 200)
    collapse = sp.csr_matrix((np.ones(200), (labels, np.arange(200))), shape=(4, 200))
    aggregated = (collapse @ graph @ collapse.T).tocsr()
    aggregated.setdiag(aggregated.diagonal() / 2)

    def quality(matrix, membership):
        upper = sp.triu(matrix, k=0).tocoo()
        g = ig.Graph(n=matrix.shape[0], edges=np.column_stack([upper.row, upper.col]))
        g.es["weight"] = upper.data
        return leidenalg.RBConfigurationVertexPartition(g, initial_membership=list(membership),
                                                       weights="weight").quality()

    assert quality(aggregated, range(4)) == pytest.approx(quality(graph, labels.tolist()))


def test_ids_survive_reoptimisation_by_overlap():
    np.testing.assert_array_equal(match_ids(np.array([0, 0, 0, 1, 1, 2]), np.array([5, 5, 7, 7, 7, 9]), next_id=3),
                                  [0, 0, 1, 1, 1, 2])
    # A split: the larger part keeps the id, the smaller one gets the next free id.
    np.testing.assert_array_equal(match_ids(np.array([4, 4, 4, 4, 4]), np.array([0, 0, 0, 1, 1]), next_id=9),
                                  [4, 4, 4, 9, 9])
    centres = np.random.default_rng(1).normal(0, 6, (3, 6))
    graph = knn.knn_graph(planted(0, 50, centres), k=10)
    labels = np.repeat([11, 3, 8], 50)
    np.testing.assert_array_equal(reoptimise(graph, labels, next_id=12), labels)
    share = confidence(graph, labels, np.arange(150))
    assert share.min() > 0.9
    assert confidence(graph, np.arange(150) % 3, np.arange(150)).mean() < 0.5


# --------------------------------------------------------------------------- points of interest


def test_points_of_interest_rank_the_moved_boundary_first_in_calibrated_coordinates():
    grid = ChipGrid((320, 320), 32, 16)
    before = np.zeros(grid.grid_shape, int)
    before[14:, :] = 1
    after = before.copy()
    after[11:14, 4:] = 1  # the front advanced three chip rows on the right
    sure = np.ones(grid.grid_shape)
    sure[3, 3] = 0.2  # one chip the community step was unsure of
    axes = [Axis("y", 320, 0.5, 10.0, "nm"), Axis("x", 320, 0.5, 0.0, "nm")]
    channels = interest(after, before, sure, new_ids=set(), rare_max=5)
    points = points_of_interest(channels, after, grid, axes, frame=3, max_points=5)
    first = points[0]
    assert (first.rank, first.kind, first.n_chips, first.frame) == (1, "moved boundary", 3 * 15, 3)
    assert 11 * 16 + 16 <= first.row <= 13 * 16 + 16 and first.col >= 4 * 16 + 16
    assert first.y == pytest.approx(10.0 + 0.5 * first.row) and first.units == "nm"
    assert points[1].kind == "uncertain" and points[1].score == pytest.approx(0.8)
    assert [p.rank for p in points] == [1, 2]
    assert points_of_interest(interest(before, None, np.ones(grid.grid_shape), new_ids=set(), rare_max=5),
                              before, grid, axes, frame=0) == []


# --------------------------------------------------------------------------- batch


def test_one_partition_tracks_the_damage_with_ids_that_last(batch, damage512):
    result, _ = batch
    series, _, truth = damage512
    # Unchanged material keeps its id from frame to frame (goal >= 0.95).
    assert min(kept_ids(result.reports, truth, result.grid)) >= 0.95
    # The damaged area, found from the data alone (crystallinity), follows the truth.
    error = np.abs(result.disordered_fraction() - series.damaged_fraction)
    assert error.mean() < 0.03, (result.disordered_fraction(), series.damaged_fraction)
    # The amorphous material is one community in every frame: the one the truth's damage falls in.
    amorphous = {int(np.bincount(r.pixel_labels[t == AMORPHOUS]).argmax()) for r, t in zip(result.reports, truth)}
    assert len(amorphous) == 1
    assert all(front_hits(result.reports, truth, result.grid))


def test_series_files(batch, damage512):
    result, out = batch
    with open(out / "fractions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["frame", "community", "area_fraction"]
    assert {"crystallinity", "mean_intensity", "disordered_share", "source"} <= set(rows[0])
    for frame in range(4):
        assert sum(float(r["area_fraction"]) for r in rows if r["frame"] == str(frame)) == pytest.approx(1.0)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"frame_{i:05d}.png" for i in range(4)]
    overlay = np.asarray(Image.open(out / "overlays" / "frame_00002.png"))
    assert overlay.shape[0] == 512 and overlay.shape[1] > 512
    # Fixed colours: community c is community_colors' colour c, blended over the grey frame.
    labels = result.reports[2].pixel_labels
    low, high = result.intensity
    grey = np.clip((damage512[1][2] - low) / (high - low), 0, 1) * 255
    colours = community_colors(result.n_communities)[:, :3] * 255
    expected = 0.6 * grey[..., None] + 0.4 * colours[labels]
    close = (np.abs(overlay[:, :512].astype(float) - expected) <= 1.0).all(axis=2)
    assert close.mean() > 0.97  # all but the points of interest drawn on top
    points = json.loads((out / "poi.json").read_text())
    assert points["frames"][1]["points"][0]["kind"] == "moved boundary"
    with open(out / "poi.csv") as handle:
        assert next(csv.reader(handle))[:5] == ["frame", "rank", "y", "x", "units"]
    saved = np.load(out / "labels.npz")
    np.testing.assert_array_equal(saved["chip_labels"], result.chip_labels)
    assert saved["pixel_labels"].shape == (4, 512, 512)
    summary = json.loads((out / "series.json").read_text())
    assert summary["n_frames"] == 4 and len(summary["frames"]) == 4
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["versions"]["numpy"] and provenance["mode"] == "batch"
    # the decision on the number of communities is recorded, with seams judged frame by frame
    decision = provenance["partition"]["decision"]
    assert decision["method"] == "dip-test" and decision["n_after"] == provenance["partition"]["n_communities"]
    assert 1 <= provenance["partition"]["runs"] <= provenance["config"]["communities"]["consensus"]
    assert (out / "descriptors.png").stat().st_size > 10_000


def test_a_folder_of_files_gives_the_same_labels_as_the_arrays(tmp_path, small):
    series, frames = small
    run_feed(series, tmp_path / "feed", interval=0.0, fmt=".hspy")  # TIFF keeps whole seconds only
    from_files = segment_series(tmp_path / "feed", progress=False, consensus=5)
    from_arrays = segment_series(np.stack(frames), progress=False, consensus=5)
    np.testing.assert_array_equal(from_files.chip_labels, from_arrays.chip_labels)
    assert from_files.axis.name == "time"
    assert [r.value for r in from_files.reports] == pytest.approx(list(series.times))
    assert from_arrays.axis.name == "frame"


def test_options_a_series_cannot_honour_are_refused(small):
    frames = np.stack(small[1][:2])
    with pytest.raises(ParameterError, match="fusion"):
        segment_series(frames, fusion="concat", progress=False)
    with pytest.raises(ParameterError, match="live series only"):
        segment_series(frames, window=3, progress=False)
    with pytest.raises(ParameterError, match=r"Leiden .*; method='louvain' cannot be honoured") as caught:
        LiveSeries(Path("unused-never-created"), method="louvain")
    assert "merge" not in str(caught.value).split("fix:")[0]  # the default merge is not what is refused
    with pytest.raises(ParameterError, match="merge=0.5 cannot be honoured"):
        LiveSeries(Path("unused-never-created"), merge=0.5)
    assert not Path("unused-never-created").exists()


# --------------------------------------------------------------------------- live


def test_live_ids_last_and_a_new_phase_gets_a_new_id_and_colour(tmp_path):
    series = damage_series((256, 256), 5, seed=4)
    # From frame 3 on a new phase (another lattice spacing) fills the top-left quarter.
    precipitate = haadf_phantom((256, 256), seed=9, lattice_a=0.55, lattice_b=0.5).image[:128, :128]
    frames = [series.frame(i) for i in range(5)]
    for frame in frames[3:]:
        frame[:128, :128] = precipitate
    live = LiveSeries(tmp_path / "live")
    for frame in frames:
        assert len(live.add(frame)) == 1
    grid = live._embedder.grid
    known = set(np.unique(live.reports[2].chip_labels))
    inside = np.zeros(grid.grid_shape, bool)
    inside[: (128 - grid.size) // grid.stride + 1, : (128 - grid.size) // grid.stride + 1] = True
    ids = np.unique(live.reports[3].chip_labels[inside], return_counts=True)
    new_id = int(ids[0][ids[1].argmax()])
    assert new_id in live.reports[3].new_communities and new_id > max(known)  # ids are never reused
    assert np.mean(live.reports[4].chip_labels[inside] == new_id) > 0.9  # and it keeps its id
    colours = community_colors(new_id + 1)
    assert min(np.abs(colours[new_id] - colours[c]).sum() for c in known) > 0.1
    # Outside the new phase, material that did not change keeps its id (goal >= 0.95).
    truth = [series.truth(i) for i in range(5)]
    touched = (grid.row_starts[:, None] < 128) & (grid.col_starts[None, :] < 128)
    for i in range(1, 5):
        unchanged = unchanged_chips(grid, truth[i - 1], truth[i]) & ~touched
        assert np.mean(live.reports[i].chip_labels[unchanged] == live.reports[i - 1].chip_labels[unchanged]) >= 0.95
    assert live.reports[3].points[0].kind in ("new community", "moved boundary")


def test_a_restart_resumes_without_reprocessing_and_gives_the_same_answer(tmp_path, small):
    _, frames = small
    whole = LiveSeries(tmp_path / "whole", window=3, reoptimise_every=2)
    whole.feed(frames)
    parted = LiveSeries(tmp_path / "parted", window=3, reoptimise_every=2)
    parted.feed(frames[:3])
    overlay_time = (tmp_path / "parted" / "overlays" / "frame_00001.png").stat().st_mtime_ns
    resumed = LiveSeries(tmp_path / "parted", window=3, reoptimise_every=2)
    assert resumed.n_frames == 3
    resumed.feed(frames[3:])
    for a, b in zip(whole.reports, resumed.reports):
        np.testing.assert_array_equal(a.chip_labels, b.chip_labels)
        assert [p.to_dict() for p in a.points] == [p.to_dict() for p in b.points]
    assert (tmp_path / "whole" / "fractions.csv").read_text() == (tmp_path / "parted" / "fractions.csv").read_text()
    assert (tmp_path / "parted" / "overlays" / "frame_00001.png").stat().st_mtime_ns == overlay_time
    with pytest.raises(ParameterError, match="other options") as info:
        LiveSeries(tmp_path / "parted", window=4, reoptimise_every=2)
    assert "window" in str(info.value)


def test_bad_frames_are_skipped_with_a_logged_error_and_the_stream_goes_on(tmp_path, small, caplog):
    _, frames = small
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + bytes(5000))
    live = LiveSeries(tmp_path / "live")
    with caplog.at_level(logging.ERROR, logger="multimodal_seg.series"):
        live.feed([frames[0], broken, frames[1][:128, :128], frames[1]])
    assert live.n_frames == 2
    assert [s["label"] for s in live.skipped] == [str(broken), "<array 1>"]
    assert "128x128 px but the series' frames are 256x256" in live.skipped[1]["reason"]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert len(json.loads((tmp_path / "live" / "skipped.json").read_text())) == 2


# --------------------------------------------------------------------------- watcher


def test_the_watcher_waits_for_half_written_files(tmp_path, small):
    series, _ = small
    folder = tmp_path / "feed"
    folder.mkdir()
    feeder = threading.Thread(target=run_feed, args=(series, folder), kwargs=dict(
        interval=0.15, fmt=".hspy", writer="direct", chunks=6, pause=0.03))
    feeder.start()
    live = watch(folder, tmp_path / "out", poll=0.05, idle_timeout=1.5)
    feeder.join()
    assert live.n_frames == series.n_frames and live.skipped == []
    assert [r.value for r in live.reports] == pytest.approx(list(series.times))
    for report, i in zip(live.reports, range(series.n_frames)):
        assert report.label.endswith(f"frame_{i:05d}.hspy")
    assert Image.open(tmp_path / "out" / "live.png").size[1] == 256
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]  # no temporaries left


def test_the_watcher_skips_corrupt_and_mismatched_frames_and_resumes_after_a_restart(tmp_path, small, caplog):
    _, frames = small
    folder = tmp_path / "feed"
    folder.mkdir()
    for i in (0, 1):
        save_frame(folder / f"frame_{i}.tif", frames[i], pixel_size=0.04)
    (folder / "frame_2.tif").write_bytes(b"II*\x00" + bytes(3000))  # corrupt, and stays so
    save_frame(folder / "frame_3.tif", frames[3][:192], pixel_size=0.04)  # another size
    with caplog.at_level(logging.ERROR, logger="multimodal_seg.series"):
        first = watch(folder, tmp_path / "out", poll=0.05, grace=0.3, idle_timeout=1.0)
    assert first.n_frames == 2
    assert sorted(Path(s["label"]).name for s in first.skipped) == ["frame_2.tif", "frame_3.tif"]
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 2
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "overlays").iterdir()}
    save_frame(folder / "frame_4.tif", frames[4], pixel_size=0.04)
    again = watch(folder, tmp_path / "out", poll=0.05, grace=0.3, idle_timeout=1.0)
    assert again.n_frames == 3  # two resumed, one new: nothing processed twice, nothing retried
    assert again.reports[2].label.endswith("frame_4.tif") and len(again.skipped) == 2
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "overlays").iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == 3


def test_the_watcher_refuses_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        watch(tmp_path / "nowhere", tmp_path / "out", poll=0.05, max_frames=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        LiveSeries(tmp_path / "file")


# --------------------------------------------------------------------------- command line


def test_series_and_watch_commands(tmp_path, small):
    series, _ = small
    run_feed(series, tmp_path / "feed", interval=0.0, frames=[0, 1, 2])
    runner = CliRunner()
    result = runner.invoke(app, ["series", str(tmp_path / "feed"), "--out", str(tmp_path / "s"), "-q",
                                 "--consensus", "5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "fractions.csv").exists() and (tmp_path / "s" / "overlays").is_dir()
    result = runner.invoke(app, ["watch", str(tmp_path / "feed"), "--out", str(tmp_path / "w"), "--poll", "0.05",
                                 "--idle-timeout", "0.5", "--consensus", "5"])
    assert result.exit_code == 0, result.output
    assert "frame 2" in result.output and "3 frames" in result.output
    result = runner.invoke(app, ["series", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_the_series_guides_examples_run(capsys):
    """docs/series.md: every Python example runs as written."""
    import re

    guide = (Path(__file__).parents[1] / "docs" / "series.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert len(blocks) == 3
    for i, code in enumerate(blocks):
        exec(compile(code, f"series.md (example {i + 1})", "exec"), {})
    printed = capsys.readouterr().out
    assert "moved boundary" in printed and "[0.0, 0.5, 1.0]" in printed


@pytest.mark.realdata
def test_live_frames_of_unchanged_material_found_no_communities(tmp_path):
    """Noisy copies of one real SEM frame (a superalloy, decided to be one community): every
    later frame keeps that community; modularity alone split each new frame into new ones
    (1 community, then 6 new)."""
    from multimodal_seg.series import LiveSeries

    from .conftest import shared_file

    image = np.asarray(Image.open(shared_file("labelled/nasa_pmm/Super/45kx_SE_15kV-etched_0_image.png"))
                       .convert("L"), dtype=float)
    rng = np.random.default_rng(1)
    with LiveSeries(tmp_path / "live") as live:
        for _ in range(3):
            report = live.add(np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.float32))[-1]
            assert report.new_communities == ([0] if report.index == 0 else []), report.new_communities
            assert set(np.unique(report.chip_labels)) == {0}
