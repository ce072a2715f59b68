"""``normalise="edges"``: power-law background subtraction for EELS core-loss spectra.

Spectra are physically shaped: a power-law background ``A E^-r`` and ionisation
edges (a step of 1 eV width at the onset, then an ``E^-3`` decay).  Thickness
scales the background and the edges alike and flattens the background slope
(plural scattering lowers ``r``); dose scales everything.  The multimodal
phantom's EELS (power law with ``r = 3``, C K, Ti L2,3 and O K edges) is used
for the end-to-end runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

import multimodal_seg as mms
from multimodal_seg.encoders import get_encoder
from multimodal_seg.encoders.spectra import (
    NORMALISATIONS,
    channel_energies,
    edge_window_channels,
    normalise_spectra,
    subtract_power_law,
)
from multimodal_seg.encoders.spectrum import SpectrumPCAEncoder
from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.modalities.base import Axis
from multimodal_seg.synthetic.multimodal import multimodal_phantom

AXIS = Axis("energy", 512, 1.0, 200.0, "eV")  # 200-711 eV, 1 eV per channel
ENERGY = channel_energies(AXIS)
WINDOW = (210.0, 270.0)  # pre-edge window below the C K edge
# (onset eV, jump: edge height as a fraction of the background at the onset)
PHASES = {"A": [(285.0, 0.6), (532.0, 0.5)], "B": [(285.0, 0.3), (532.0, 0.8)]}


def edge_signal(onset: float, jump: float) -> np.ndarray:
    """One ionisation edge on ENERGY: a 1 eV wide step at ``onset``, then ``E^-3``."""
    step = 1.0 / (1.0 + np.exp(-(ENERGY - onset) / 1.0))
    return jump * 2e5 * (onset / 200.0) ** -3.0 * step * (np.maximum(ENERGY, onset) / onset) ** -3.0


def spectrum(phase: str, thickness: float = 1.0, dose: float = 1.0) -> np.ndarray:
    """Noise-free counts: background ``A E^-r`` with ``r = 3 - 0.6 (t - 1)``, plus the edges."""
    r = 3.0 - 0.6 * (thickness - 1.0)
    background = 2e5 * (ENERGY / 200.0) ** -r
    edges = sum(edge_signal(*e) for e in PHASES[phase])
    return dose * thickness * (background + edges)


def _edges(spectra: np.ndarray, window=WINDOW) -> np.ndarray:
    return normalise_spectra(np.asarray(spectra, np.float32), "edges", energy_axis=AXIS,
                             edge_window=window)


@pytest.fixture(scope="module")
def phantom():
    return multimodal_phantom((32, 32), seed=0)


# ---------------------------------------------------------------- the normalisation


def test_edges_is_a_listed_normalisation():
    assert "edges" in NORMALISATIONS
    assert SpectrumPCAEncoder(normalise="EDGES").normalise == "edges"


def test_power_law_plus_edge_is_recovered():
    onset = 400.0
    edge = edge_signal(onset, 0.8)
    raw = 2e5 * (ENERGY / 200.0) ** -3.4 + edge
    out = _edges(raw[None])[0]
    start, stop = edge_window_channels(AXIS, WINDOW)
    assert ENERGY[start] >= WINDOW[0] and ENERGY[stop - 1] <= WINDOW[1]
    # the background is gone: the window and everything below the onset are ~0
    assert np.abs(out[start : np.searchsorted(ENERGY, onset - 10)]).max() < 1e-4 * out.max()
    # the net signal above the window sums to 1 and is the edge itself
    assert out[stop:].sum() == pytest.approx(1.0, abs=1e-5)
    truth = edge / edge[stop:].sum()
    np.testing.assert_allclose(out[stop:], truth[stop:], atol=1e-3 * truth.max())
    # the onset stays where it was: half height is reached within 1 eV of it
    half = ENERGY[np.argmax(out > 0.5 * out.max())]
    assert abs(half - onset) <= 1.0
    assert np.all(out[:start] == 0)  # below the window the power law is no model


def test_noisy_edge_is_recovered_on_average():
    rng = np.random.default_rng(3)
    onset = 400.0
    edge = edge_signal(onset, 0.8)
    mean_counts = 0.05 * (2e5 * (ENERGY / 200.0) ** -3.0 + edge)  # ~10^4 counts/channel at 200 eV
    out = _edges(rng.poisson(mean_counts, (200, ENERGY.size)))
    _, stop = edge_window_channels(AXIS, WINDOW)
    truth = edge / edge[stop:].sum()
    np.testing.assert_allclose(out.mean(axis=0)[stop:], truth[stop:], atol=0.05 * truth.max())
    pre = np.searchsorted(ENERGY, onset - 10)
    assert abs(out.mean(axis=0)[stop:pre].mean()) < 0.02 * truth.max()


def test_thickness_and_dose_drop_out_but_edge_ratios_do_not():
    thin, thick = spectrum("A", thickness=0.7), spectrum("A", thickness=1.6, dose=3.0)
    other = spectrum("B", thickness=0.7)
    a_thin, a_thick, b = _edges(np.stack([thin, thick, other]))
    same = np.abs(a_thin - a_thick).max()
    different = np.abs(a_thin - b).max()
    assert same < 1e-4 * a_thin.max()
    assert different > 0.1 * a_thin.max()
    # total normalisation keeps the thickness-driven background: far larger change
    t_thin, t_thick = normalise_spectra(np.stack([thin, thick]).astype(np.float32), "total")
    assert np.abs(t_thin - t_thick).max() > 0.1 * t_thin.max()


def test_phantom_thickness_drops_out_within_a_region(phantom):
    clean = multimodal_phantom((32, 32), seed=0, noise=False)
    axis = clean.modalities()["eels"].axes[2]
    spectra = np.asarray(clean.eels).reshape(-1, axis.size)
    truth, thickness = clean.truth.ravel(), clean.thickness.ravel()
    rows, cols = clean.truth.shape
    cells = clean.truth_image.reshape(rows, clean.truth_image.shape[0] // rows, cols, -1)
    pure = (cells == clean.truth[:, None, :, None]).all(axis=(1, 3)).ravel()  # no mixtures
    out = normalise_spectra(spectra, "edges", energy_axis=axis)
    for regions in ((0, 1), (2,)):  # phase A (both grains: same chemistry), phase B
        idx = np.flatnonzero(np.isin(truth, regions) & pure)
        thin, thick = idx[np.argmin(thickness[idx])], idx[np.argmax(thickness[idx])]
        ratio = thickness[thick] / thickness[thin]
        assert ratio > 1.05
        np.testing.assert_allclose(spectra[thick] / spectra[thin], ratio, rtol=0.01)
        assert np.abs(out[thick] - out[thin]).max() < 1e-3 * out[thin].max()
    a, b = out[truth == 0].mean(axis=0), out[truth == 2].mean(axis=0)
    assert np.abs(a - b).max() > 0.2 * a.max()  # phase B: other Ti : O : C ratios


def test_encoder_separates_phases_despite_thickness_slope():
    rng = np.random.default_rng(0)
    chips, labels = [], []
    for k, phase in enumerate("AB"):
        for t in rng.uniform(0.6, 1.8, 40):
            chips.append(rng.poisson(0.02 * spectrum(phase, thickness=t)))
            labels.append(k)
    chips = np.asarray(chips, np.float32)[:, None, None, :]
    scores = {}
    for normalise in ("total", "edges"):
        enc = SpectrumPCAEncoder(normalise=normalise, n_components=4, log_counts=False,
                                 edge_window=WINDOW if normalise == "edges" else None)
        enc.set_signal_axes([AXIS])
        enc.fit(chips)
        emb = enc.encode(chips)
        assert emb.shape == (len(chips), 8) and np.isfinite(emb).all()
        scores[normalise] = silhouette_score(emb, labels)
    assert scores["edges"] > 0.7
    assert scores["edges"] > scores["total"] + 0.2


def test_zero_and_negative_counts_give_no_nan():
    rng = np.random.default_rng(1)
    sparse = rng.poisson(0.3 * spectrum("A") / spectrum("A").max(), ENERGY.size)
    assert (sparse[:40] == 0).any()
    dark = spectrum("A") - 0.99 * spectrum("A")[60]  # dark-subtracted: negative at high E
    spectra = np.stack([np.zeros(ENERGY.size), sparse, dark, spectrum("B")]).astype(np.float32)
    out = _edges(spectra)
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)  # no counts: zeros, as for the other normalisations
    auto = normalise_spectra(spectra, "edges", energy_axis=AXIS)
    assert np.isfinite(auto).all()
    net = subtract_power_law(spectra, ENERGY, edge_window_channels(AXIS, WINDOW))
    assert np.isfinite(net).all() and np.all(net[0] == 0)


def test_encoder_with_empty_spectra_is_finite():
    rng = np.random.default_rng(2)
    chips = rng.poisson(0.02 * np.stack([spectrum(p, t) for p in "AB" for t in (0.8, 1.2, 1.5)]))
    chips = chips.astype(np.float32).reshape(6, 1, 1, -1)
    chips = np.concatenate([chips, np.zeros_like(chips[:2])])
    enc = SpectrumPCAEncoder(normalise="edges", n_components=3)
    enc.set_signal_axes([AXIS])
    enc.fit(chips)
    emb = enc.encode(chips)
    assert np.isfinite(emb).all()
    np.testing.assert_array_equal(emb[6], emb[7])


def test_automatic_window_skips_artefacts_and_ends_below_the_phantom_edges(phantom):
    axis = phantom.modalities()["eels"].axes[2]  # 250-761 eV, C K at 284 eV
    start, stop = edge_window_channels(axis)
    energies = channel_energies(axis)
    assert start >= 2
    assert energies[stop - 1] < 284.0
    assert stop - start >= 20
    # finer dispersion: the same energies, more channels
    fine = Axis("energy", 2048, 0.25, 250.0, "eV")
    f_start, f_stop = edge_window_channels(fine)
    fine_energies = channel_energies(fine)
    assert fine_energies[f_stop - 1] < 284.0 and f_stop - f_start > 4 * (stop - start) - 8


# ---------------------------------------------------------------- the encoder


def test_fingerprint_records_the_calibration_for_edges_only():
    enc = SpectrumPCAEncoder(normalise="edges", edge_window=WINDOW)
    enc.set_signal_axes([AXIS])
    fp = enc.fingerprint()
    json.dumps(fp)
    assert fp["normalise"] == "edges" and fp["edge_window"] == list(WINDOW)
    assert fp["energy_axis"] == {"size": 512, "scale": 1.0, "offset": 200.0, "units": "eV"}
    assert fp["edge_fit_channels"] == list(edge_window_channels(AXIS, WINDOW))
    shifted = SpectrumPCAEncoder(normalise="edges", edge_window=WINDOW)
    shifted.set_signal_axes([Axis("energy", 512, 1.0, 201.0, "eV")])
    assert shifted.fingerprint() != fp
    auto = SpectrumPCAEncoder(normalise="edges")
    auto.set_signal_axes([AXIS])
    assert auto.fingerprint()["edge_window"] == "auto" and auto.fingerprint() != fp
    # other normalisations do not depend on the calibration: fingerprints unchanged
    total = SpectrumPCAEncoder()
    before = total.fingerprint()
    total.set_signal_axes([AXIS])
    assert total.fingerprint() == before and "energy_axis" not in before


def test_registry_builds_the_edges_encoder():
    enc = get_encoder("spectrum-pca", normalise="edges", edge_window=[210, 270])
    assert enc.normalise == "edges" and enc.edge_window == WINDOW


# ---------------------------------------------------------------- errors


def _assert_parameter_error(call, option: str, *needles: str) -> None:
    with pytest.raises(ParameterError) as info:
        call()
    message = str(info.value)
    assert info.value.where == option, message
    assert "fix:" in message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)


def _with_axis(axis: Axis, **options):
    def call():
        SpectrumPCAEncoder(normalise="edges", **options).set_signal_axes([axis])
    return call


@pytest.mark.parametrize(
    ("options", "axis", "where", "needles"),
    [
        ({"edge_window": (100, 150)}, AXIS, "edge_window", ["outside", "200 to 711"]),
        ({"edge_window": (690, 720)}, AXIS, "edge_window", ["outside"]),
        ({"edge_window": (300, 301.5)}, AXIS, "edge_window", ["2 channel", "at least 3"]),
        ({"edge_window": (660, 711)}, AXIS, "edge_window", ["no channel above"]),
        ({}, Axis("energy", 512, 1.0, -5.0, "eV"), "normalise", ["positive energies", "low-loss"]),
        ({"edge_window": (-3, 20)}, Axis("energy", 512, 1.0, -5.0, "eV"), "edge_window",
         ["positive energies"]),
        ({}, Axis("energy", 512, 1.0, 0.0, "px"), "normalise", ["calibrated"]),
        ({}, Axis("energy", 6, 1.0, 200.0, "eV"), "edge_window", ["too few"]),
    ],
    ids=["below-range", "above-range", "two-channels", "nothing-above", "low-loss-auto",
         "low-loss-window", "uncalibrated", "six-channels"],
)
def test_bad_windows_for_the_axis(options, axis, where, needles):
    _assert_parameter_error(_with_axis(axis, **options), where, *needles)


@pytest.mark.parametrize(
    ("window", "needle"),
    [((270, 210), "starts at or above"), ((250, 250), "starts at or above"),
     ((250,), "two energies"), ("250-280", "two energies"), ((250, np.inf), "not finite"),
     ((True, 300), "two energies")],
    ids=str,
)
def test_bad_window_values(window, needle):
    _assert_parameter_error(lambda: SpectrumPCAEncoder(normalise="edges", edge_window=window),
                            "edge_window", needle)


def test_window_without_edges_mode_is_refused():
    _assert_parameter_error(lambda: SpectrumPCAEncoder(edge_window=WINDOW), "edge_window",
                            "normalise='edges'")


def test_edges_without_energy_axis_is_a_clear_error():
    chips = np.ones((4, 1, 1, 512), np.float32)
    enc = SpectrumPCAEncoder(normalise="edges", n_components=2)
    _assert_parameter_error(lambda: enc.fit(chips), "normalise", "energy axis", "set_signal_axes")
    _assert_parameter_error(lambda: normalise_spectra(chips[:, 0, 0], "edges"), "normalise",
                            "energy axis")


def test_channel_count_must_match_the_axis():
    enc = SpectrumPCAEncoder(normalise="edges", n_components=2)
    enc.set_signal_axes([AXIS])
    with pytest.raises(InputError, match="energy axis has 512"):
        enc.fit(np.ones((4, 1, 1, 256), np.float32))
    with pytest.raises(InputError, match="one signal axis"):
        enc.set_signal_axes([AXIS, AXIS])


# ---------------------------------------------------------------- segment()


def test_segment_eels_with_edges_records_it(phantom, tmp_path):
    eels = phantom.modalities()["eels"]
    options = {"eels": {"normalise": "edges"}}
    seg = mms.segment({"eels": eels}, encoder_options=options, out=tmp_path / "run", progress=False)
    fp = seg.provenance["encoders"]["eels"]
    assert fp["normalise"] == "edges" and fp["edge_window"] == "auto"
    assert fp["energy_axis"]["offset"] == 250.0 and fp["energy_axis"]["units"] == "eV"
    saved = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert saved["encoders"]["eels"] == fp
    labels = seg.grid.chip_labels_to_pixels(seg.chip_labels)
    merged = np.where(phantom.truth == 1, 0, phantom.truth)  # EELS cannot see grain orientation
    assert adjusted_rand(labels.ravel(), merged.ravel()) > 0.4
    # resumable: same options reuse the embeddings; a new window recomputes them
    study = mms.Study.open(tmp_path / "run" / "study.zarr")
    before = study.fingerprint_of("embeddings/eels")
    mms.segment({"eels": eels}, encoder_options=options, out=tmp_path / "run", progress=False)
    assert mms.Study.open(tmp_path / "run" / "study.zarr").fingerprint_of("embeddings/eels") == before
    windowed = {"eels": {"normalise": "edges", "edge_window": (252, 280)}}
    seg2 = mms.segment({"eels": eels}, encoder_options=windowed, out=tmp_path / "run", progress=False)
    assert seg2.provenance["encoders"]["eels"]["edge_window"] == [252.0, 280.0]
    after = mms.Study.open(tmp_path / "run" / "study.zarr").fingerprint_of("embeddings/eels")
    assert after != before


def test_segment_haadf_and_eels_options_per_modality(phantom):
    mods = phantom.modalities()
    seg = mms.segment({"haadf": mods["haadf"], "eels": mods["eels"]}, encoder="fourier",
                      encoder_options={"n_radial": 8, "eels": {"normalise": "edges"}},
                      fusion="concat", progress=False)
    assert seg.provenance["encoders"]["eels"]["normalise"] == "edges"
    assert seg.provenance["encoders"]["haadf"]["n_radial"] == 8


def test_segment_refuses_options_it_would_ignore(phantom, tmp_path):
    eels = phantom.modalities()["eels"]
    out = tmp_path / "run"
    _assert_parameter_error(
        lambda: mms.segment({"eels": eels}, encoder_options={"normalise": "edges"}, out=out,
                            progress=False),
        "encoder_options", "image encoder", "'eels'")
    _assert_parameter_error(
        lambda: mms.segment({"eels": eels}, encoder_options={"eels": "edges"}, out=out,
                            progress=False),
        "encoder_options", "mapping")
    # a window outside the energy axis fails before anything is written
    _assert_parameter_error(
        lambda: mms.segment({"eels": eels}, out=out, progress=False,
                            encoder_options={"eels": {"normalise": "edges", "edge_window": (100, 200)}}),
        "edge_window", "outside", "250 to 761")
    assert not out.exists()
