"""The chemistry scores of spectrum-image partitions (bench/chemistry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_seg.bench.chemistry import across_seeds, correlation_ratio, line_maps, run_file
from multimodal_seg.modalities import Axis

from .conftest import shared_file


def test_correlation_ratio_is_the_share_of_variance_the_labels_explain():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 500)
    steps = labels * 10.0
    assert correlation_ratio(steps, labels) == pytest.approx(1.0)
    noisy = steps + rng.normal(scale=5.0, size=steps.size)  # between var 25, within var 25
    assert correlation_ratio(noisy, labels) == pytest.approx(0.5, abs=0.05)
    assert correlation_ratio(rng.normal(size=1000), labels) < 0.01  # labels unrelated to the map
    assert np.isnan(correlation_ratio(np.ones(10), np.zeros(10, int)))


def test_line_maps_find_the_lines_of_two_phases():
    # Two phases on a 20 x 20 scan: Fe K-alpha (6.40 keV) on the left, Cu K-alpha (8.05 keV)
    # on the right, over a flat background, Poisson counts.
    energy = Axis(size=1024, scale=0.01, offset=0.0, units="keV", name="Energy")
    e = np.arange(1024) * 0.01
    peak = lambda centre: 400 * np.exp(-0.5 * ((e - centre) / 0.05) ** 2)  # noqa: E731
    cube = np.empty((20, 20, 1024))
    cube[:, :10] = 2 + peak(6.40)
    cube[:, 10:] = 2 + peak(8.05)
    cube = np.random.default_rng(1).poisson(cube).astype(float)
    names, maps = line_maps(cube, energy, top=4)
    assert maps.shape == (20, 20, len(names))
    fe = next(i for i, n in enumerate(names) if "Fe_Ka" in n)
    cu = next(i for i, n in enumerate(names) if "Cu_Ka" in n)
    phases = np.repeat([[0] * 10 + [1] * 10], 20, axis=0)
    assert correlation_ratio(maps[..., fe], phases) > 0.95 and correlation_ratio(maps[..., cu], phases) > 0.95


def _two_phase_cube(axis: Axis, lines_left: dict[float, float], lines_right: dict[float, float]) -> np.ndarray:
    """20 x 20 Poisson counts over a flat background: ``lines_left`` ({keV: counts per position})
    on the left half, ``lines_right`` on the right, as Gaussians of an SDD's width (about 0.13
    keV at 6 keV) integrated over each channel."""
    from scipy.stats import norm

    edges = axis.offset + axis.scale * (np.arange(axis.size + 1) - 0.5)

    def spectrum(lines: dict[float, float]) -> np.ndarray:
        return 2 * axis.scale / 0.01 + sum(counts * np.diff(norm.cdf(edges, loc=centre, scale=0.055))
                                           for centre, counts in lines.items())

    cube = np.empty((20, 20, axis.size))
    cube[:, :10], cube[:, 10:] = spectrum(lines_left), spectrum(lines_right)
    return np.random.default_rng(1).poisson(cube).astype(float)


def test_line_maps_keep_each_element_once_and_name_it_as_the_figures_do():
    # Fe and Cu with their K beta lines (13 % of K alpha): the K beta peaks stand far above
    # their noise and 0.66-0.86 keV from K alpha, but they are the same elements' maps again;
    # Cu K beta lies on osmium's L alpha, which a name by channel alone would give it.
    energy = Axis(size=1024, scale=0.01, offset=0.0, units="keV", name="Energy")
    cube = _two_phase_cube(energy, {6.404: 4000, 7.058: 520}, {8.048: 4000, 8.905: 520})
    names, maps = line_maps(cube, energy, top=4, beam_energy=20.0)
    assert sorted(names) == ["Cu_Ka", "Fe_Ka"] and maps.shape == (20, 20, 2)


def test_line_maps_on_coarse_channels_keep_one_map_per_window():
    # Channels binned to 0.32 keV: one line's window spans three channels, so the tabulated
    # lines of P, S and Cl (2.01, 2.31, 2.62 keV) read the same counts; S and Fe are kept once.
    energy = Axis(size=40, scale=0.32, offset=0.0, units="keV", name="Energy")
    cube = _two_phase_cube(energy, {2.308: 3000}, {6.404: 3000})
    names, maps = line_maps(cube, energy, top=6, beam_energy=200.0)
    assert len(names) == 2 and any("S_Ka" in n for n in names) and any("Fe_Ka" in n for n in names)


@pytest.mark.realdata
def test_the_project_and_hyperspy_are_scored_on_a_real_al_cu_map():
    path = shared_file("multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid")
    result = run_file("Al/Cu", path, {"signal": "Map 6"}, top=4, seed=0)
    assert result["k"] >= 2 and result["k_hyperspy"] == result["k"]
    assert "Al_Ka" in result["lines"][0]  # the strongest line of the map
    al = result["lines"].index(result["lines"][0])
    # The Al/Cu boundary: both partitions explain most of the Al map.
    assert result["eta2"]["project"][al] > 0.9 and result["eta2"]["hyperspy"][al] > 0.9


@pytest.mark.realdata
def test_seeds_of_a_real_al_cu_map_are_scored_and_compared():
    """Two seeds of the Phenom map 6: the same communities (the encoder is fitted on all its
    chips and its consensus runs agree), and the summary holds both seeds' scores."""
    path = shared_file("multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid")
    runs = across_seeds("Al/Cu", path, {"signal": "Map 6"}, top=4, seeds=[0, 1])
    summary = runs[0]["seeds"]
    assert summary["seeds"] == [0, 1] and summary["k"] == [runs[0]["k"], runs[1]["k"]]
    assert summary["worst_ari"] == pytest.approx(1.0)
    assert summary["mean"]["project"] == pytest.approx((runs[0]["mean"]["project"] + runs[1]["mean"]["project"]) / 2)
    assert 0 <= summary["reached"] <= 2 and "labels" not in runs[0] and "seeds" not in runs[1]
