"""The HyperSpy extension on the multimodal phantom: signals in, a community_map signal out."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest
from matplotlib.colors import to_hex

import multimodal_seg as mms
import multimodal_seg.hyperspy as mh
from multimodal_seg import plot
from multimodal_seg.errors import InputError, OutputError, ParameterError
from multimodal_seg.hyperspy.convert import to_modalities
from multimodal_seg.synthetic.multimodal import multimodal_phantom

ROOT = Path(__file__).resolve().parents[1]
SCAN = (24, 24)
OPTIONS = {"consensus": 5, "seed": 3, "progress": False}


def _axes(modality, n_navigation):
    return [{"name": a.name, "size": a.size, "scale": a.scale, "offset": a.offset, "units": a.units,
             "navigate": i < n_navigation} for i, a in enumerate(modality.axes)]


@pytest.fixture(scope="module")
def phantom():
    return multimodal_phantom(SCAN, seed=0, pattern_size=32, n_channels=400)


@pytest.fixture(scope="module")
def files(phantom, tmp_path_factory):
    """The phantom's three modalities saved by HyperSpy as .hspy files (EELS as exSpy's class)."""
    folder = tmp_path_factory.mktemp("signals")
    mods = phantom.modalities()
    haadf = hs.signals.Signal2D(np.asarray(mods["haadf"].data), axes=_axes(mods["haadf"], 0))
    eels = hs.signals.Signal1D(np.asarray(mods["eels"].data), axes=_axes(mods["eels"], 2))
    eels.set_signal_type("EELS")
    diffraction = hs.signals.Signal2D(np.asarray(mods["diffraction"].data), axes=_axes(mods["diffraction"], 2))
    paths = {}
    for name, signal in (("haadf", haadf), ("eels", eels), ("diffraction", diffraction)):
        signal.metadata.General.title = f"phantom {name}"
        paths[name] = folder / f"{name}.hspy"
        signal.save(paths[name])
    return paths


def _load(files, lazy=True):
    return {name: hs.load(path, lazy=lazy) for name, path in files.items()}


@pytest.fixture(scope="module")
def run(files):
    """One multimodal run from signals (the image in memory, the scans lazy) and the same run
    from the files; with what the signals were before."""
    signals = _load(files)
    signals["haadf"] = hs.load(files["haadf"])
    before = {"arrays": {n: s.data for n, s in signals.items()}, "haadf": signals["haadf"].data.copy(),
              "metadata": {n: s.metadata.as_dictionary() for n, s in signals.items()},
              "axes": {n: [a.get_axis_dictionary() for a in s.axes_manager.navigation_axes + s.axes_manager.signal_axes]
                       for n, s in signals.items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmap = mh.segment(signals, **OPTIONS)
        seg = mms.segment({name: str(path) for name, path in files.items()}, **OPTIONS)
    return signals, cmap, seg, before


# --------------------------------------------------------------------------- conversion


def test_signals_become_modalities_with_their_own_calibration(phantom, files):
    signals = _load(files, lazy=False)
    expected = phantom.modalities()
    kinds = {"haadf": "image", "eels": "spectrum", "diffraction": "diffraction"}
    for name, signal in signals.items():
        modality = mh.to_modality(signal, name=name)
        assert modality.kind == kinds[name]
        assert [(a.size, a.scale, a.offset, a.units) for a in modality.axes] == \
               [(a.size, a.scale, a.offset, a.units) for a in expected[name].axes]
        assert modality.data.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(modality.data), np.asarray(expected[name].data))
    eels = mh.to_modality(signals["eels"])  # alone: named after exSpy's signal type
    assert eels.name == "eels" and eels.metadata["signal_class"] == "EELSSpectrum"
    assert eels.metadata["file"] == str(files["eels"])
    assert mh.to_modality(signals["haadf"]).name == "image"  # as segment(path) names one image
    # And back: to_signal gives lazy signals with the same axes, EELS named as such.
    for name, modality in expected.items():
        signal = mh.to_signal(modality)
        assert isinstance(signal.data, da.Array)
        again = mh.to_modality(signal, name=name)
        assert again.axes == modality.axes and again.kind == modality.kind
    assert type(mh.to_signal(expected["eels"])).__name__ == "LazyEELSSpectrum"


def test_same_labels_as_the_file_based_segment(run):
    _, cmap, seg, _ = run
    np.testing.assert_array_equal(cmap.data, seg.pixel_labels)
    y, x = cmap.map_axes()
    assert [(a.size, a.scale, a.offset, a.units) for a in (y, x)] == \
           [(a.size, a.scale, a.offset, a.units) for a in seg.axes]
    assert cmap.data.dtype == np.int32 and isinstance(cmap, mh.CommunityMap)


def test_one_image_signal_gives_the_labels_of_its_file(files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmap = mh.segment(hs.load(files["haadf"]), **OPTIONS)
        seg = mms.segment(files["haadf"], **OPTIONS)
    np.testing.assert_array_equal(cmap.data, seg.pixel_labels)
    assert cmap.axes_manager[0].scale == pytest.approx(0.04) and cmap.axes_manager[0].units == "nm"


def test_lazy_signals_stay_lazy_and_no_signal_is_modified(run):
    signals, cmap, _, before = run
    for name in ("eels", "diffraction"):  # the same dask graphs, not computed, not replaced
        assert signals[name].data is before["arrays"][name] and isinstance(signals[name].data, da.Array)
    assert signals["haadf"].data is before["arrays"]["haadf"]
    np.testing.assert_array_equal(signals["haadf"].data, before["haadf"])
    for name, signal in signals.items():
        assert signal.metadata.as_dictionary() == before["metadata"][name]
        axes = signal.axes_manager.navigation_axes + signal.axes_manager.signal_axes
        assert [a.get_axis_dictionary() for a in axes] == before["axes"][name]
    means = cmap.get_community_signals(signals["eels"])
    assert isinstance(means.data, da.Array) and type(means).__name__ == "LazyEELSSpectrum"
    assert cmap.get_community_masks().data.dtype == bool


def test_the_map_records_the_run(run, files):
    _, cmap, seg, _ = run
    record = cmap.metadata.Segmentation
    provenance = record.provenance.as_dictionary()
    assert provenance["seed"] == OPTIONS["seed"] == seg.provenance["seed"]
    assert provenance["config"]["communities"]["consensus"] == OPTIONS["consensus"]
    assert provenance["versions"]["hyperspy"] == seg.provenance["versions"]["hyperspy"]
    assert set(provenance["encoders"]) == {"haadf", "eels", "diffraction"}
    assert provenance["warnings"] == seg.provenance["warnings"]
    inputs = record.inputs.as_dictionary()
    assert inputs["eels"]["signal_class"] == "LazyEELSSpectrum" and inputs["eels"]["lazy"]
    assert inputs["haadf"]["title"] == "phantom haadf" and inputs["haadf"]["file"] == str(files["haadf"])
    assert cmap.metadata.Signal.signal_type == "community_map"


# --------------------------------------------------------------------------- the map's methods


def test_labels_read_at_the_scan_positions_through_the_calibration(run):
    signals, cmap, seg, _ = run
    # The map lies on the fine HAADF pixels; read at the EELS scan it is the joint partition there.
    np.testing.assert_array_equal(cmap.labels_on(signals["eels"]), seg.scan_labels["joint"])
    # A cropped signal keeps its offsets, so it reads the same labels where it lies.
    crop = signals["eels"].inav[5:15, 2:10]
    np.testing.assert_array_equal(cmap.labels_on(crop), seg.scan_labels["joint"][2:10, 5:15])
    # Positions off the map read -1.
    shifted = crop.deepcopy()
    shifted.axes_manager[0].offset += 100.0
    assert (cmap.labels_on(shifted) == -1).all()


@pytest.mark.parametrize("kind", ["mean", "sum"])
def test_community_signals_are_means_or_sums_over_positions(run, files, kind):
    signals, cmap, seg, _ = run
    eels = signals["eels"]
    cube = np.asarray(eels.data, dtype=np.float64)
    labels = seg.scan_labels["joint"]
    out = cmap.get_community_signals(eels, kind=kind)
    out.compute()
    assert out.axes_manager.navigation_axes[0].name == "community"
    assert out.axes_manager.signal_axes[0].scale == eels.axes_manager.signal_axes[0].scale
    assert out.data.shape == (cmap.n_communities, cube.shape[-1])
    for c in range(cmap.n_communities):
        members = cube[labels == c]
        expected = members.mean(axis=0) if kind == "mean" else members.sum(axis=0)
        np.testing.assert_allclose(out.data[c], expected, rtol=1e-10)
    # An image: one value per community, over its pixels.
    haadf = hs.load(files["haadf"])
    values = cmap.get_community_signals(haadf, kind=kind).data
    for c in range(cmap.n_communities):
        pixels = haadf.data[cmap.data == c].astype(np.float64)
        assert values[c] == pytest.approx(pixels.mean() if kind == "mean" else pixels.sum())
    with pytest.raises(ParameterError, match="kind='mean' or kind='sum'"):
        cmap.get_community_signals(eels, kind="median")


def test_a_community_outside_the_signal_gets_nan(run):
    signals, cmap, seg, _ = run
    corner = signals["eels"].inav[:3, :3]
    present = set(np.unique(seg.scan_labels["joint"][:3, :3]).tolist())
    means = cmap.get_community_signals(corner)
    means.compute()
    for c in range(cmap.n_communities):
        assert np.isnan(means.data[c]).all() == (c not in present)


def test_masks_and_table(run):
    _, cmap, seg, _ = run
    masks = cmap.get_community_masks()
    assert masks.axes_manager.navigation_shape == (cmap.n_communities,)
    assert (masks.data.sum(axis=0) == 1).all()
    for c in range(cmap.n_communities):
        np.testing.assert_array_equal(masks.data[c], cmap.data == c)
    table = cmap.community_table()
    assert [row["community"] for row in table] == list(range(seg.n_communities))
    assert sum(row["area_fraction"] for row in table) == pytest.approx(1.0)
    scale = cmap.axes_manager[0].scale
    for row, run_row in zip(table, seg.communities):
        assert row["area"] == pytest.approx(row["n_pixels"] * scale**2) and row["area_units"] == "nm^2"
        assert row["area_fraction"] == pytest.approx(run_row.area_fraction)
        assert row["n_chips"] == run_row.n_chips and row["crystallinity"] == pytest.approx(run_row.crystallinity)


def test_plots_use_the_community_colours(run):
    signals, cmap, _, _ = run
    import matplotlib.pyplot as plt

    expected = [to_hex(c) for c in plot.community_colors(cmap.n_communities)]
    cmap.plot()
    ax = cmap._plot.signal_plot.ax
    shown = ax.images[0].get_cmap()
    assert [to_hex(shown(i)) for i in range(cmap.n_communities)] == expected
    assert [to_hex(h.get_facecolor()) for h in ax.get_legend().legend_handles] == expected
    # the legend is drawn inside HyperSpy's figure (outside its axes it was cut off)
    ax.figure.canvas.draw()
    shown_box = ax.get_legend().get_window_extent(ax.figure.canvas.get_renderer())
    assert ax.figure.bbox.contains(shown_box.x0, shown_box.y0) and ax.figure.bbox.contains(shown_box.x1, shown_box.y1)
    plt.close("all")
    haadf = signals["haadf"]
    cmap.plot(haadf, alpha=0.5)
    ax = haadf._plot.signal_plot.ax
    base, painted = ax.images[0], ax.images[-1]
    # Drawn above HyperSpy's image, in its blitting too (HyperSpy redraws its animated artists).
    assert painted.get_zorder() > base.get_zorder() and painted.get_animated() == base.get_animated()
    overlay = painted.get_array()
    assert overlay.shape[:2] == haadf.data.shape
    for c in range(cmap.n_communities):
        pixel = overlay[cmap.data == c][0]
        assert to_hex(pixel[:3]) == expected[c] and pixel[3] == pytest.approx(0.5)
    plt.close("all")
    ax = cmap.plot_community_signals(signals["eels"])  # mean spectra, one line per community
    assert [to_hex(line.get_color()) for line in ax.get_lines()] == expected
    plt.close("all")


# --------------------------------------------------------------------------- files


def _extension_check(script: str, tmp_path: Path) -> dict:
    """Run ``script`` in a fresh interpreter where HyperSpy finds this checkout's entry point.

    The entry point is read from installed metadata, so a temporary dist-info declares the
    one pyproject.toml declares (no install into the environment), and the checkout comes
    first on the path.
    """
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    site = tmp_path / "site"
    info = site / "mmseg_extension_check-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmseg-extension-check\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[hyperspy.extensions]\n" + "".join(f"{k} = {v}\n" for k, v in declared["hyperspy.extensions"].items()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registered_with_hyperspy_and_hspy_round_trip(run, tmp_path):
    _, cmap, _, _ = run
    path = tmp_path / "result.hspy"
    cmap.save(path)
    result = _extension_check(f"""
import json, numpy as np
import multimodal_seg
import hyperspy.api as hs
from hyperspy.extensions import ALL_EXTENSIONS
entry = {{k: v for k, v in ALL_EXTENSIONS["signals"].items() if v.get("signal_type") == "community_map"}}
loaded = hs.load({str(path)!r}); lazy = hs.load({str(path)!r}, lazy=True)
plain = hs.signals.Signal2D(np.zeros((3, 3), dtype=np.int32)); plain.set_signal_type("community_map")
print(json.dumps({{"package": multimodal_seg.__file__, "entry": entry,
    "loaded": type(loaded).__name__, "lazy": type(lazy).__name__, "plain": type(plain).__name__,
    "labels": loaded.data.tolist(), "seed": int(loaded.metadata.Segmentation.provenance.seed),
    "scale": loaded.axes_manager[0].scale, "units": loaded.axes_manager[0].units,
    "table": loaded.community_table()[0]["n_chips"]}}))
""", tmp_path)
    assert result["package"] == str(ROOT / "multimodal_seg" / "__init__.py")
    assert {name: spec["lazy"] for name, spec in result["entry"].items()} == \
           {"CommunityMap": False, "LazyCommunityMap": True}
    assert result["loaded"] == "CommunityMap" and result["lazy"] == "LazyCommunityMap"
    assert result["plain"] == "CommunityMap"
    np.testing.assert_array_equal(result["labels"], cmap.data)
    assert result["seed"] == OPTIONS["seed"]
    assert (result["scale"], result["units"]) == (cmap.axes_manager[0].scale, "nm")
    assert result["table"] == cmap.community_table()[0]["n_chips"]


@pytest.mark.slow
def test_the_documented_workflow_runs_as_written(tmp_path):
    """docs/hyperspy.md's code, run in a fresh interpreter where the extension is registered."""
    import re

    doc = (ROOT / "docs" / "hyperspy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 2
    result = _extension_check("\n".join(blocks) + """
import json
print(json.dumps({"cmap": type(cmap).__name__, "back": type(back).__name__, "means": type(means).__name__,
                  "same": bool((back.data == cmap.data).all()), "masks": list(masks.data.shape),
                  "clusters": int(normalised.learning_results.number_of_clusters)}))
""", tmp_path)
    assert result["cmap"] == result["back"] == "CommunityMap" and result["same"]
    assert result["means"] == "LazyEELSSpectrum" and result["masks"] == [result["masks"][0], 256, 256]
    assert result["clusters"] == 3


def test_the_yaml_names_the_classes_it_registers():
    import yaml

    from multimodal_seg.hyperspy import signals

    spec = yaml.safe_load((ROOT / "multimodal_seg" / "hyperspy_extension.yaml").read_text())["signals"]
    for name, entry in spec.items():
        cls = getattr(importlib.import_module(entry["module"]), name)
        assert cls._signal_type == entry["signal_type"] == signals.SIGNAL_TYPE
        assert cls._signal_dimension == entry["signal_dimension"] and cls._lazy == entry["lazy"]


def test_zspy_says_why_it_fails(run, tmp_path):
    _, cmap, _, _ = run
    target = tmp_path / "result.zspy"
    try:
        cmap.save(target)
    except OutputError as err:
        assert "zarr 2" in str(err) and "result.hspy" in err.fix
        assert not target.exists()


@pytest.mark.xfail(strict=False, raises=OutputError,
                   reason="RosettaSciIO 0.15's .zspy writer needs zarr 2; multimodal_seg uses zarr 3")
def test_zspy_round_trip(run, tmp_path):
    _, cmap, _, _ = run
    cmap.save(tmp_path / "result.zspy")
    back = hs.load(tmp_path / "result.zspy")
    np.testing.assert_array_equal(back.data, cmap.data)
    assert back.metadata.Signal.signal_type == "community_map"


# --------------------------------------------------------------------------- bad input


def _error(call, *needles, error=InputError):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "fix:" in message
    for needle in needles:
        assert needle in message, (needle, message)
    return info.value


@pytest.mark.parametrize("make,needles", [
    (lambda: hs.signals.Signal1D(np.ones((5, 8))), ["a line scan of spectra", "s.data[None]"]),
    (lambda: hs.signals.Signal2D(np.ones((3, 8, 8))), ["a stack of images", "s.inav[i]"]),
    (lambda: hs.signals.Signal1D(np.ones(8)), ["a single spectrum"]),
    (lambda: hs.signals.BaseSignal(np.ones((8, 8))).T, ["no signal axis", "s.T"]),
    (lambda: hs.signals.Signal1D(np.ones((2, 4, 4, 8))), ["a series of scans", "s.inav"]),
])
def test_signals_of_no_modality_kind_are_refused(make, needles):
    signal = make()
    signal.metadata.General.title = "odd one"
    _error(lambda: mh.segment(signal), "odd one", *needles)


def test_a_signal_that_does_not_fit_its_name_is_refused(files):
    haadf = hs.load(files["haadf"])
    err = _error(lambda: mh.segment({"eels": haadf, "haadf": haadf}), "'eels'", "spectrum", "image")
    assert "'eels:image'" in err.fix
    # An explicit kind decides; an unknown name takes the signal's kind.
    assert mh.to_modality(haadf, name="overview").kind == "image"


def test_complex_and_non_uniform_signals_are_refused():
    wave = hs.signals.ComplexSignal2D(np.ones((8, 8), complex))
    wave.metadata.General.title = "exit wave"
    _error(lambda: mh.segment(wave), "exit wave", "complex", "s.amplitude")
    spectra = hs.signals.Signal1D(np.random.default_rng(0).random((4, 4, 5)),
                                  axes=[{"size": 4}, {"size": 4}, {"axis": np.array([1.0, 2, 4, 8, 16]),
                                                                   "name": "Energy"}])
    _error(lambda: mh.segment({"eels": spectra}), "'Energy' is non-uniform",
           "interpolate_on_axis('uniform', axis='Energy')")


def test_scans_without_calibration_to_place_them_are_refused(phantom):
    image = hs.signals.Signal2D(phantom.haadf)  # 192 x 192 px, no units
    cube = hs.signals.Signal1D(np.asarray(phantom.eels))  # 24 x 24 positions, no units
    image.metadata.General.title = "survey"
    err = _error(lambda: mh.segment({"haadf": image, "eels": cube}), "not calibrated", "'haadf'", "'eels'",
                 "(192, 192)", "(24, 24)")
    assert "axes_manager[0].scale" in err.fix
    # One calibrated, one not: still nothing to place the other by.
    for axis in image.axes_manager.signal_axes:
        axis.scale, axis.units = 0.04, "nm"
    _error(lambda: mh.segment({"haadf": image, "eels": cube}), "not calibrated", "'eels'")
    # Uncalibrated scans of one shape are the same positions: accepted.
    same = hs.signals.Signal2D(np.asarray(phantom.eels).sum(axis=-1))
    assert set(to_modalities({"adf": same, "eels": cube})) == {"adf:image", "eels:spectrum"}


def test_calibration_options_are_refused_for_signals(files):
    _error(lambda: mh.segment(hs.load(files["haadf"]), pixel_size=0.1), "pixel_size is an option for reading",
           "axes_manager", error=ParameterError)
    _error(lambda: mh.segment(hs.load(files["haadf"]), signal=1), "signal is an option for reading",
           "pass the signal you mean", error=ParameterError)
    _error(lambda: mh.segment([1, 2, 3]), "HyperSpy signal")
