"""Known X-ray lines and EELS edges found in synthetic spectra, from exSpy's element database."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from multimodal_seg.modalities.base import Axis
from multimodal_seg.result import lines_to_csv
from multimodal_seg.analysis.spectral_lines import (edge_onsets, feature_intensities, known_features, line_table, marked,
                                                    poisson_scale, strongest)


def _label_index(features, element_line):
    return next(i for i, f in enumerate(features) if element_line in f.label.split("/"))


def test_eds_lines_found_where_the_peaks_are():
    axis = Axis("energy", 1024, 0.01, 0.0, "keV")
    energy = np.arange(1024) * 0.01
    background = 50 * np.exp(-energy / 4)
    peak = lambda e0, height: height * np.exp(-0.5 * ((energy - e0) / 0.055) ** 2)  # noqa: E731
    iron = background + peak(6.404, 400) + peak(7.058, 60)     # Fe K-alpha, K-beta
    copper = background + peak(8.048, 300)                      # Cu K-alpha
    features, intensities = feature_intensities(np.stack([iron, copper]), axis)
    fe, cu = _label_index(features, "Fe_Ka"), _label_index(features, "Cu_Ka")
    assert intensities[0, fe] > 10 * abs(intensities[1, fe])
    assert intensities[1, cu] > 10 * abs(intensities[0, cu])
    chosen = [features[i].label for i in strongest([f.energy for f in features], intensities, top=3)]
    assert any("Fe_Ka" in label for label in chosen) and any("Cu_Ka" in label for label in chosen)


def test_the_noise_peak_at_zero_energy_is_not_read_as_a_line():
    """Bruker and other EDS axes start below 0 keV; the detector's noise peak at 0 keV is the
    strongest thing in a spectrum, and exSpy lists H and He "Ka" there (ionisation energies,
    not X-ray lines).  No line is read off it; carbon's (0.277 keV) still is."""
    axis = Axis("energy", 1024, 0.01, -0.5, "keV")
    energy = -0.5 + np.arange(1024) * 0.01
    peak = lambda e0, height: height * np.exp(-0.5 * ((energy - e0) / 0.03) ** 2)  # noqa: E731
    spectra = np.stack([20 + peak(0.0, 5000) + peak(0.277, 200), 20 + peak(0.0, 5000) + peak(6.404, 300)])
    features, intensities = feature_intensities(spectra, axis)
    labels = [label for f in features for label in f.label.split("/")]
    assert not {"H_Ka", "He_Ka", "Be_Ka", "B_Ka"} & set(labels) and "C_Ka" in labels
    chosen = [features[i].label for i in strongest([f.energy for f in features], intensities, top=2)]
    assert any("C_Ka" in label for label in chosen) and any("Fe_Ka" in label for label in chosen)


def test_eels_edges_found_above_a_power_law():
    axis = Axis("energy", 600, 1.0, 250.0, "eV")
    energy = 250.0 + np.arange(600)
    background = 1e9 * energy ** -3.0
    edge = np.where(energy >= 532, 0.3 * background[282] * (energy / 532) ** -2.5, 0.0)  # O K
    mode, features = known_features(axis)
    assert mode == "eels"
    _, intensities = feature_intensities(np.stack([background + edge, background]), axis)
    o = _label_index(features, "O_K")
    in_window = edge[(energy >= 532) & (energy <= 562)].sum()  # the 30 eV integration window
    assert abs(intensities[0, o] - in_window) < 0.05 * in_window
    assert abs(intensities[1, o]) < 0.01 * in_window


def _eels_table(spectra, axis):
    return line_table(spectra, axis)


def test_the_edges_named_are_the_specimens_not_those_in_their_tails():
    """Spectra of C, Ti and O (the phantoms' EELS, 250-761 eV): C K, 34 eV from the start of
    the axis, is a candidate (a shortened background window), and the edges named are C K,
    Ti L3 and O K.  Edges whose background fit lies on the decaying near-edge structure of a
    stronger one (K L3 10 eV and Pd M5 51 eV after C K, Cr L3 43 eV after O K) are not named
    there, since no spectrum rises at them.  In Poisson counts an edge is named only where its
    net intensity stands above its noise: the three at about 330 counts per channel (O K's edge
    named by its own onset, not by Sb M5 4 eV below), and at about 17 the strongest with no absent element
    (by intensity alone, 5-8 names, most of them absent elements)."""
    from multimodal_seg.synthetic.families import eels_spectra

    axis = Axis("energy", 512, 1.0, 250.0, "eV")
    spectra = eels_spectra(np.array([[1.0, 0.5, 0.8], [0.2, 1.0, 0.3], [0.5, 0.0, 1.0]]),
                           energy=(250.0, 1.0, 512)) * 1e3
    table = _eels_table(spectra, axis)
    named = {name for _, name in marked(table, top=8)}
    assert named == {"C_K", "Ti_L3", "O_K"}
    # the onsets found are the three edges' (Ti's L3 rises most some eV past its onset)
    assert [round(e) for e in table["onsets"] if e < 300] == [284] and any(456 <= e <= 466 for e in table["onsets"])
    rng = np.random.default_rng(1)
    for _ in range(2):  # Poisson counts, about 330 per channel: the three, and none of those
        noisy = _eels_table(rng.poisson(spectra).astype(float), axis)
        named = {name for _, name in marked(noisy, top=8)}
        # O K's edge, not Sb M5's 4 eV below it, which the stronger window named in the first draw:
        # the spectra rise at O K's onset
        assert named == {"C_K", "Ti_L3", "O_K"}
    for _ in range(3):  # about 17 per channel: what stands above the noise, and nothing absent
        noisy = _eels_table(rng.poisson(spectra * 0.05).astype(float), axis)
        named = {name for _, name in marked(noisy, top=8)}
        assert "C_K" in named and named <= {"C_K", "Ti_L3", "O_K", "Sb_M5"}


def test_no_onset_in_a_power_law_and_every_edge_step_found():
    axis = Axis("energy", 512, 1.0, 250.0, "eV")
    energy = 250.0 + np.arange(512)
    background = 1e9 * energy ** -3.0
    assert edge_onsets(np.tile(background, (3, 1)), axis) == []  # a smooth fall: no rise
    assert edge_onsets(np.zeros((2, 512)), axis) == []
    edges = background + np.where(energy >= 400, 0.3 * background[150] * (energy / 400) ** -3.0, 0.0)
    edges += np.where(energy >= 600, 0.2 * edges[350] * (energy / 600) ** -3.0, 0.0)
    onsets = edge_onsets(np.stack([background, edges]), axis)
    assert [round(e) for e in onsets] == [400, 600]
    # the same in Poisson counts (about 1000 and 300 per channel at the edges): both found,
    # within a few eV, and nothing else
    found = np.array(edge_onsets(np.random.default_rng(0).poisson(edges * 50).astype(float)[None], axis))
    assert all(np.abs(found - e).min() <= 5 for e in (400, 600))
    assert np.all(np.minimum(np.abs(found - 400), np.abs(found - 600)) <= 5)


def test_standard_errors_are_those_of_poisson_counts():
    """The noise scale read from a spectrum's roughness is 1 for counts and 1/N for the mean
    of N positions' counts; an EELS edge's standard error matches the spread of its net
    intensity over Poisson draws, and an EDS line's too."""
    rng = np.random.default_rng(4)
    axis = Axis("energy", 600, 1.0, 250.0, "eV")
    energy = 250.0 + np.arange(600)
    expected = 4e9 * energy ** -3.0 + np.where(energy >= 532, 40.0 * (energy / 532) ** -2.5, 0.0)
    assert abs(poisson_scale(rng.poisson(expected).astype(float)) - 1.0) < 0.15
    assert abs(poisson_scale(rng.poisson(expected, (16, 600)).mean(axis=0)) - 1 / 16) < 0.015
    assert poisson_scale(expected) < 1e-6 and poisson_scale(np.zeros(600)) == np.inf
    draws = rng.poisson(expected, (300, 600)).astype(float)
    features, net, errors = feature_intensities(draws, axis, errors=True)
    o = _label_index(features, "O_K")
    assert abs(np.median(errors[:, o]) / net[:, o].std() - 1.0) < 0.15
    eds_axis = Axis("energy", 512, 0.01, 0.0, "keV")
    eds = 30 + 200 * np.exp(-0.5 * ((np.arange(512) * 0.01 - 3.69) / 0.05) ** 2)  # Ca K-alpha
    features, net, errors = feature_intensities(rng.poisson(eds, (300, 512)).astype(float), eds_axis, errors=True)
    ca = _label_index(features, "Ca_Ka")
    assert abs(np.median(errors[:, ca]) / net[:, ca].std() - 1.0) < 0.15


def test_aliases_in_one_channel_are_listed_together_and_csv_round_trips():
    axis = Axis("energy", 128, 0.32, 0.0, "keV")   # coarse channels: several lines per channel
    _, features = known_features(axis)
    features_merged, intensities = feature_intensities(np.ones((2, 128)), axis)
    assert len(features_merged) < len(features)
    assert any("/" in f.label for f in features_merged)
    table = {"eds": {"features": [f.label for f in features_merged], "units": "keV",
                     "energies": [f.energy for f in features_merged], "intensities": intensities.tolist()}}
    rows = lines_to_csv(table).strip().splitlines()
    assert rows[0].startswith("modality,community,feature")
    assert len(rows) == 1 + 2 * len(features_merged)


def test_no_features_for_non_energy_axes():
    assert known_features(Axis("q", 64, 0.1, 0.0, "1/nm")) == ("none", [])


def test_reading_the_line_tables_warns_nothing_about_package_versions():
    # exSpy 0.3 imports HyperSpy 2.5's lazy signals from deprecated paths; in a fresh process
    # (where exSpy is imported for the first time) no such warning reaches the run.
    code = ("from multimodal_seg.analysis.spectral_lines import known_features\n"
            "from multimodal_seg.modalities.base import Axis\n"
            "print(len(known_features(Axis('E', 2048, 0.01, 0.0, 'keV'))[1]))")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10  # the EDS lines of 0-20 keV were read


def test_marked_line_names_do_not_print_over_each_other():
    """Strong lines a few tens of eV apart (Si Ka and W Ma, 1.740 and 1.775 keV) are named
    once per peak, and no two names overlap in the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from multimodal_seg.plot import community_signals

    axis = Axis("energy", 1024, 0.01, 0.0, "keV")
    energy = np.arange(1024) * 0.01
    peak = lambda e0, height: height * np.exp(-0.5 * ((energy - e0) / 0.03) ** 2)  # noqa: E731
    spectra = np.stack([20 + peak(1.740, 400) + peak(1.775, 300) + peak(1.487, 250),
                        20 + peak(6.404, 300) + peak(1.740, 100)])
    features, intensities = feature_intensities(spectra, axis)
    table = {"features": [f.label for f in features], "energies": [f.energy for f in features], "units": "keV",
             "intensities": intensities.tolist()}
    fig = community_signals({"eds": spectra}, {"eds": [axis]}, {"eds": table})
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    names = [t for t in ax.texts if t.get_rotation() == 90]
    # one name per peak (lines within a detector's resolution read the same counts): the
    # Al, Si/W and Fe peaks
    assert len(names) == 3 and "Fe_Ka" in [t.get_text() for t in names]
    assert np.all(np.diff(sorted(t.get_position()[0] for t in names)) > 0.07)
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in names]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (names[i].get_text(), names[j].get_text())


def test_names_closer_than_a_label_go_down_a_level():
    from multimodal_seg.plot import label_heights

    # 0.2 keV of a 10 keV axis is a label's width: closer names are staggered, farther ones not
    assert label_heights([1.0, 1.1, 1.15, 1.5, 6.4], span=10.0) == [1.0, 0.8, 0.6, 1.0, 1.0]


# X-ray lines (keV) and their weights relative to each family's alpha, from published tables
# (Bearden; Schreiber and Wims), written out here rather than read from exSpy's database
LINES = {("Ni", "K"): [(7.478, 1.0), (8.265, 0.13)], ("Ni", "L"): [(0.851, 1.0), (0.868, 0.17), (0.743, 0.14)],
         ("Nb", "K"): [(16.615, 1.0), (18.623, 0.15)], ("Nb", "L"): [(2.166, 1.0), (2.257, 0.33), (2.335, 0.06)],
         ("Hg", "M"): [(2.196, 1.0), (2.283, 0.64)], ("Ti", "K"): [(4.511, 1.0), (4.932, 0.13)],
         ("Fe", "K"): [(6.404, 1.0), (7.058, 0.13)], ("Fe", "L"): [(0.705, 1.0), (0.615, 0.31)],
         ("Al", "K"): [(1.487, 1.0), (1.557, 0.01)], ("Cu", "L"): [(0.930, 1.0), (0.950, 0.03), (0.811, 0.08)],
         ("Cu", "K"): [(8.048, 1.0), (8.905, 0.13)], ("O", "K"): [(0.525, 1.0)],
         ("Si", "K"): [(1.740, 1.0), (1.836, 0.03)], ("S", "K"): [(2.307, 1.0), (2.464, 0.06)],
         ("W", "M"): [(1.776, 1.0), (1.835, 0.59), (2.036, 0.09)],
         ("Mo", "L"): [(2.293, 1.0), (2.395, 0.33), (2.473, 0.06), (2.518, 0.05), (2.016, 0.04)],
         ("Ba", "L"): [(4.466, 1.0), (4.827, 0.43), (5.157, 0.19), (4.927, 0.14), (4.852, 0.09), (5.531, 0.07),
                       (3.954, 0.04)],
         # two Al K alpha photons processed as one pulse; an Fe K alpha photon that lost a Si K
         # alpha photon from the detector
         ("Al+Al", "sum"): [(2.974, 1.0)], ("Fe", "escape"): [(4.664, 1.0)]}


def _eds_spectra(areas, *, rng, beam, shift=0.0):
    """Poisson counts on a 0-20 keV axis of 10 eV channels: each community's families
    ``{(element, family): counts in the alpha line}`` as Gaussians of an SDD's width (125 eV at
    Mn Ka), over a falling continuum, every line ``shift`` keV from its energy (a detector's
    calibration); and the run's line table of them."""
    axis = Axis("energy", 2000, 0.01, 0.0, "keV")
    energy = np.arange(2000) * 0.01
    spectra = []
    for community in areas:
        expected = 40 * np.exp(-energy / 3) + 2
        for (element, family), area in community.items():
            for centre, weight in LINES[(element, family)]:
                sigma = np.sqrt(0.125**2 + 2.5e-3 * (centre - 5.895)) / 2.3548
                expected = expected + area * weight * 0.01 * np.exp(-0.5 * ((energy - centre - shift) / sigma) ** 2) / (
                    sigma * np.sqrt(2 * np.pi))
        spectra.append(rng.poisson(expected).astype(float))
    return line_table(np.stack(spectra), axis, beam_energy=beam)


def test_eds_lines_named_by_elements_the_whole_spectrum_bears_out():
    """A nickel and a niobium phase at 200 kV: each element is named by its own lines (Ni K and
    L alpha, Nb K and L alpha, read first in each name).  Lines of elements whose stronger,
    excited families are absent are not named, though they sit on the peaks: La M alpha and Ne
    beside Ni L alpha (La's L family at 4.7-6 keV is absent), Hg M alpha beside Nb L alpha (Hg's
    L at 10-14 keV); nor are the peaks that the named families' own weaker lines make (Ni and Nb
    K beta, Nb's L beta 91 eV above its L alpha, where S K alpha and Mo L alpha lie)."""
    rng = np.random.default_rng(0)
    phases = [{("Ni", "K"): 3e4, ("Ni", "L"): 1e4}, {("Nb", "K"): 1e4, ("Nb", "L"): 2e4}]
    for _ in range(3):
        table = _eds_spectra(phases, rng=rng, beam=200.0)
        names = [name for _, name in marked(table, top=8)]
        assert [name.split("/")[0] for name in names] == ["Ni_La", "Nb_La", "Ni_Ka", "Nb_Ka"], names
        assert not {alias.split("_")[0] for name in names for alias in name.split("/")} & {"La", "Hg", "Tl", "S", "Mo"}


def test_eds_lines_of_families_the_beam_cannot_excite_are_not_asked_for():
    """Mercury's M lines alone: at 20 kV its L family (ionised near 12-15 keV, overvoltage below
    2) is not expected, and Hg M alpha is named; at 200 kV the same spectrum lacks the L family
    the beam would excite, and no Hg line is named."""
    table = _eds_spectra([{("Hg", "M"): 2e4}], rng=np.random.default_rng(1), beam=20.0)
    named = [name for _, name in marked(table, top=8)]
    assert any("Hg_Ma" in name.split("/") for name in named), named
    named = [name for _, name in marked({**table, "beam_energy": 200.0}, top=8)]
    assert not any(alias.startswith("Hg_") for name in named for alias in name.split("/")), named


def test_beam_energy_is_read_from_each_readers_metadata():
    from multimodal_seg.modalities.spectrum import beam_energy

    assert beam_energy({"metadata": {"Acquisition_instrument": {"SEM": {"beam_energy": 20.0}}}}) == 20.0
    assert beam_energy({"metadata": {}, "original_metadata": {"Optics": {"AccelerationVoltage": "200000"}}}) == 200.0
    phenom = {"acquisition": {"scan": {"highVoltage": {"value": -15, "unit": "kV"}}}}
    assert beam_energy({"metadata": {}, "original_metadata": phenom}) == 15.0
    assert beam_energy({"metadata": {"Acquisition_instrument": {"TEM": {"beam_energy": None}}}}) is None
    assert beam_energy({}) is None


def test_eds_peaks_of_a_named_elements_weaker_lines_are_read_as_that_element():
    """Titanium alone: its K beta (4.93 keV, a seventh of K alpha here, beside V K alpha at 4.95)
    is read as titanium's, not named as vanadium; iron's L family, whose L l line pulls the peak
    28 eV below L alpha onto F K alpha, is named as iron's where Fe K alpha is named too."""
    rng = np.random.default_rng(2)
    for _ in range(3):
        assert [name for _, name in marked(_eds_spectra([{("Ti", "K"): 3e4}], rng=rng, beam=20.0), top=8)] == ["Ti_Ka"]
        table = _eds_spectra([{("Fe", "K"): 3e4, ("Fe", "L"): 5e3}], rng=rng, beam=20.0)
        assert [name.split("/")[0] for _, name in marked(table, top=8)] == ["Fe_La", "Fe_Ka"]


def test_a_detectors_calibration_offset_does_not_name_the_flank_of_a_line():
    """Aluminium and copper with every line 10 eV low (a Phenom map's Al K alpha lies 8 eV low):
    the windows of Er M alpha, 81 eV below Al K alpha, and of Ne K alpha, 81 eV below Cu L alpha,
    sit on the flanks of those peaks and read a third of them, far more than the families
    give at their tabulated energies.  The families placed where their peaks lie account for
    it: only Al and Cu are named.  (At 30 kV, so that bromine's K lines are excited and their
    absence rules out Br L alpha, 7 eV from Al K alpha.)"""
    rng = np.random.default_rng(3)
    for _ in range(3):
        table = _eds_spectra([{("Al", "K"): 3e4}, {("Cu", "L"): 2e4, ("Cu", "K"): 2e4}], rng=rng, beam=30.0,
                             shift=-0.010)
        assert [name for _, name in marked(table, top=8)] == ["Cu_La", "Al_Ka", "Cu_Ka"]
        # read through windows alone (no spectra to fit) at their tabulated energies, the flanks are named
        uncorrected = {**{k: v for k, v in table.items() if k != "spectra"},
                       "centroids": np.full(np.shape(table["intensities"]), np.nan).tolist()}
        assert len(marked(uncorrected, top=8)) > 3


def test_eds_peaks_are_named_where_they_lie():
    """A titanium silicate (the chevkinite file's O K peak, centred on 0.52 keV, was named Ti L
    alpha, 73 eV below it, because Ti is named at its K alpha): the O K peak is named O K alpha.  And of the lines one channel holds, a K line, which needs no other family, is
    read first: silicon's K alpha before rubidium's L alpha, whose K family 20 kV cannot excite."""
    rng = np.random.default_rng(4)
    for _ in range(3):
        table = _eds_spectra([{("O", "K"): 3e4, ("Ti", "K"): 2e4, ("Si", "K"): 2e4}], rng=rng, beam=20.0)
        names = [name for _, name in marked(table, top=8)]
        assert [name.split("/")[0] for name in names] == ["O_Ka", "Si_Ka", "Ti_Ka"], names


def test_a_k_alpha_that_a_stronger_k_family_accounts_for_does_not_bear_out_other_lines():
    """Titanium alone: the window of vanadium's K alpha, 20 eV from Ti K beta, stands above its
    noise, but Ti's K family accounts for it, so V counts as absent and its L alpha (0.511 keV,
    where oxygen's K alpha lies too) is not borne out.  (The Velox file's O K region was named
    V L alpha.)"""
    from multimodal_seg.analysis.spectral_lines import eds_names

    table = _eds_spectra([{("Ti", "K"): 3e4}], rng=np.random.default_rng(5), beam=200.0)
    v_ka = next(i for i, label in enumerate(table["features"]) if "V_Ka" in label.split("/"))
    v_la = next(i for i, label in enumerate(table["features"]) if "V_La" in label.split("/"))
    assert table["significant"][v_ka]  # read off Ti K beta
    assert "V_La" not in eds_names(table)[v_la]
    assert "V_La" in eds_names({k: v for k, v in table.items() if k != "errors"})[v_la]  # significance alone


def test_weak_lines_above_their_noise_are_named_and_sum_peaks_are_not():
    """An Al/Cu map with a sulphide (the Phenom map): S K alpha at 4 % of Al K alpha is named,
    which a floor at 5 % of the strongest line left out; the sum peak of Al K alpha (2.97 keV,
    1 % of Al K alpha where Al is strong, falling with the square of Al's rate), where argon's K
    alpha lies, is not named."""
    rng = np.random.default_rng(6)
    for _ in range(3):
        table = _eds_spectra([{("Al", "K"): 3e4, ("Al+Al", "sum"): 300},
                              {("Al", "K"): 3e3, ("S", "K"): 1.2e3, ("Al+Al", "sum"): 3},
                              {("Cu", "L"): 2e4, ("Cu", "K"): 2e4}], rng=rng, beam=15.0)
        names = [name.split("/")[0] for _, name in marked(table, top=8)]
        assert names == ["Cu_La", "Al_Ka", "S_Ka", "Cu_Ka"], names


def test_silicon_escape_peaks_are_not_named():
    """Iron-rich and iron-poor communities, 1 % of Fe K alpha in its silicon escape peak (4.66
    keV, 1.74 keV below it, where lanthanum's L alpha lies) in proportion to Fe: only Fe is
    named, where its escape peak stands far above its noise."""
    rng = np.random.default_rng(8)
    for _ in range(3):
        table = _eds_spectra([{("Fe", "K"): 1e5, ("Fe", "escape"): 1e3}, {("Fe", "K"): 2e4, ("Fe", "escape"): 200},
                              {("Ti", "K"): 3e4}], rng=rng, beam=20.0)
        escape = next(i for i, label in enumerate(table["features"]) if "La_La" in label.split("/"))
        assert np.max(np.asarray(table["intensities"])[:, escape] / np.asarray(table["errors"])[:, escape]) > 10
        assert [name.split("/")[0] for _, name in marked(table, top=8)] == ["Ti_Ka", "Fe_Ka"]


def test_the_specimens_known_elements_name_the_peaks_they_can():
    """Tungsten at 20 kV (its L family, ionised at 10.2 keV, not excited twice over): its M alpha
    and M beta lines make one peak centred near 1.80 keV.  Read through windows alone (a table
    without its spectra), the lines there name it strontium's L alpha (1.806 keV).  Told the
    specimen holds W (a file's element list, exSpy's add_elements, the reader's elements
    option), the peak is named W M alpha, whichever other elements are listed; and so it is
    where the spectrum's shape around the peak is fitted (the table's spectra), which also reads
    the 2.04 keV peak as W's M gamma, not Pt M alpha."""
    rng = np.random.default_rng(9)
    for _ in range(3):
        fitted = _eds_spectra([{("W", "M"): 3e4}], rng=rng, beam=20.0)
        table = {key: value for key, value in fitted.items() if key != "spectra"}
        named = dict((round(table["energies"][i], 2), name) for i, name in marked(table, top=8))
        assert not any(name.startswith("W_") for name in named.values()), named
        told = [(table["energies"][i], name) for i, name in marked({**table, "elements": ["O", "W", "Si"]}, top=8)]
        assert [name for energy, name in told if 1.7 < energy < 1.9] == ["W_Ma"], told
        # fitted, W M alpha alone: W's M gamma (2.04 keV), on Pt M alpha, is W's own
        assert [name for _, name in marked(fitted, top=8)] == ["W_Ma"]


def test_the_elements_a_file_lists_or_the_reader_is_given_are_recorded(tmp_path):
    from multimodal_seg.errors import ParameterError
    from multimodal_seg.modalities.spectrum import declared_elements, read_spectrum_image

    record = {"metadata": {"Sample": {"elements": ["Fe", "Cr", "Xx"], "xray_lines": ["Fe_Ka"]}}}
    assert declared_elements(record) == ["Cr", "Fe"]  # what the X-ray table does not know is left out
    assert declared_elements({"metadata": {"Sample": {"elements": []}}}) == [] == declared_elements({})
    cube = np.random.default_rng(0).poisson(2.0, size=(4, 4, 256)).astype(float)
    options = {"energy_scale": 0.04, "energy_units": "keV"}
    read = read_spectrum_image(cube, elements="Ba, Ti,O", **options)
    assert read.metadata["elements"] == ["Ba", "O", "Ti"] and read.metadata["elements_from"] == "option"
    assert "elements" not in read_spectrum_image(cube, **options).metadata
    for bad in ("fe", ["Fe", "Qq"], 7, []):
        with pytest.raises(ParameterError, match="elements|element symbol"):
            read_spectrum_image(cube, elements=bad, **options)


def test_the_spectrums_shape_names_a_peak_that_lines_of_several_elements_share():
    """Barium alone at 20 kV: its L alpha (4.47 keV) lies 45 eV from titanium's K alpha, and
    Ba's K family (37 keV) is beyond the beam, so the naming rules prefer Ti K alpha, a K line
    that needs no other family.  But Ba's L beta lines (4.83-5.16 keV, up to 43 % of L alpha)
    are in the spectrum, and Ti's K family fits the peak and its neighbours far worse than Ba's
    L family (:func:`_best_fitting`): the peak is named Ba L alpha.  Titanium alone stays Ti K
    alpha, and barium with titanium is named by one of them."""
    rng = np.random.default_rng(10)
    for _ in range(3):
        barium = _eds_spectra([{("Ba", "L"): 3e4}], rng=rng, beam=20.0)
        assert [name.split("/")[0] for _, name in marked(barium, top=8)] == ["Ba_La"]
        # the elements an analyst gives stand: told Ti (wrongly), the peak is Ti's
        assert [name.split("/")[0] for _, name in marked({**barium, "elements": ["Ti"]}, top=8)][0] == "Ti_Ka"
        unfitted = {key: value for key, value in barium.items() if key != "spectra"}
        assert [name.split("/")[0] for _, name in marked(unfitted, top=8)][0] == "Ti_Ka"
        titanium = _eds_spectra([{("Ti", "K"): 3e4}], rng=rng, beam=20.0)
        assert [name for _, name in marked(titanium, top=8)] == ["Ti_Ka"]


def test_molybdenum_alone_is_not_named_sulphur_and_phosphorus():
    """Molybdenum at 20 kV (its K family, ionised at 20 keV, not excited twice over), beside an
    iron phase.  Read through windows alone its L alpha peak is named S K alpha (14 eV away, a K
    line the rules prefer) and its L l line (2.02 keV, 4 % of L alpha) P K alpha.  Fitted, Mo's
    L family makes the main peak far better than S's K family (its L beta at 2.40 keV), and it
    already makes the 2.02 keV peak, which P's family adds nothing to (:func:`_fitted_by_stronger`):
    Mo L alpha and Fe K alpha are named, nothing else."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        table = _eds_spectra([{("Mo", "L"): 1e5}, {("Fe", "K"): 3e4}], rng=rng, beam=20.0)
        assert [name for _, name in marked(table, top=8)] == ["Mo_La", "Fe_Ka"]
        windows = {key: value for key, value in table.items() if key != "spectra"}
        assert {"P_Ka", "S_Ka"} <= {name.split("/")[0] for _, name in marked(windows, top=8)}
