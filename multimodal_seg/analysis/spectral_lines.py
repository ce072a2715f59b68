"""Intensities of known X-ray lines (EDS) and ionisation edges (EELS) in community spectra.

Line and edge energies come from exSpy's element database (HyperSpy's EELS/EDS package),
not from a table of our own.  Intensities are net counts per scan position:

* EDS line at ``E0``: counts within ``w`` channels of ``E0`` minus the mean level of two
  ``w``-channel side windows (``w`` covers 70 eV, about a detector's resolution, and at
  least one channel).
* EELS edge at onset ``E0``: counts in ``[E0, E0 + 30 eV]`` above a power law ``A E^-r``
  fitted to ``[E0 - 40 eV, E0 - 5 eV]`` (to what of it the axis holds: at least 15 eV).

Lines closer than the detector resolution are not told apart: every candidate within
the window is listed with the same counts, so read the table with the specimen in mind.

Which of them figures and reports *name* (:func:`marked`): the strongest, one per peak.  For
EELS a net intensity above a power law is not evidence of an edge on its own: an edge whose
onset falls in the decaying tail of a stronger edge reads the tail's excess over a background
fitted on that edge's near-edge structure, so there an edge is named only where a community's
spectrum rises at it (:func:`edge_onsets`).  On the built-in phantom's C, Ti and O spectra
"Pd_M5" 51 eV after C K and "Cr_L3" 43 eV after O K were named, and C K itself, 34 eV from
the start of the axis, was no candidate; now C K, Ti L3 and O K are.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear
from scipy.stats import norm

from ..modalities.base import Axis

#: X-ray lines and edges considered (the strongest families).
XRAY_LINES = ("Ka", "La", "Ma")
EELS_EDGES = ("K", "L3", "M5")
EDS_HALF_WIDTH_KEV = 0.07
#: EDS detector resolution: full width at half maximum of Mn K alpha (5.895 keV), keV; other
#: energies follow Fiori and Newbury's ``FWHM(E)^2 = FWHM(Mn Ka)^2 + 2.5 eV (E - 5895 eV)``
#: (:func:`eds_line_width`).  A silicon drift detector's is 0.121-0.135 keV.
EDS_FWHM_MN_KA_KEV = 0.130
#: A peak up to this many times what a named element's family gives at it is read as that
#: family's: tabulated weights of minor lines are uncertain by tens of percent, and absorption
#: in the specimen and the detector's efficiency change them further (titanium's K beta reads
#: 0.11-0.13 of its K alpha).
LINE_WEIGHT_SLACK = 2.0
#: An element's X-ray family (K, L, M) is expected in a spectrum where the beam energy is at
#: least this many times the family's ionisation energy (the overvoltage): below about 2 a
#: family is weakly excited (Goldstein et al., *Scanning Electron Microscopy and X-Ray
#: Microanalysis*), so its absence says little.
OVERVOLTAGE = 2.0
#: A sum peak (two photons processed as one pulse) holds at most this share of the weaker of the
#: two peaks it sums: pile-up is the output rate times the pulse-pair resolution time, a few
#: per cent at most at the rates EDS maps are taken at (100 kcps and 0.5 us give 5 %).
PILEUP_SHARE = 0.05
#: A silicon detector's escape peak (a Si K alpha photon leaving the crystal) lies
#: ``SI_KA_KEV`` below a line above silicon's K edge and holds at most this share of it: about
#: 1-2 % just above the edge, falling with energy (Goldstein et al.).
ESCAPE_SHARE = 0.02
SI_KA_KEV = 1.740
SI_K_EDGE_KEV = 1.839
EELS_PRE, EELS_GAP, EELS_POST = 40.0, 5.0, 30.0
#: An EELS edge is a candidate where the axis holds at least this much of its pre-edge window (eV).
EELS_MIN_PRE = 15.0
#: :func:`edge_onsets`: the widths of the windows compared either side of each channel (eV, at
#: least 2 channels),
ONSET_WINDOWS = (5.0, 10.0, 20.0)
#: the chance that noise alone gives one rise anywhere along a spectrum (the level of the test at
#: each channel is this over the channels tested: Bonferroni),
ONSET_LEVEL = 0.01
#: Fewest counts two compared windows must hold between them for their difference to be read as
#: normal (Poisson's normal approximation).
ONSET_MIN_COUNTS = 200
#: and how far an onset may lie before an edge's tabulated onset energy, or twice as far after it,
#: to confirm it (eV, at least 2 channels): tabulated onsets are approximate, chemical shifts move
#: them by a few eV, and a delayed edge (transition metals' L2,3) rises most some eV past its onset.
ONSET_TOLERANCE = 5.0


@dataclass(frozen=True)
class SpectralFeature:
    """A line or edge: ``label`` like ``"Fe_Ka"`` or ``"O_K"``, energy in the axis units."""

    label: str
    energy: float


def _unit_factor(units: str) -> float | None:
    """Axis units per eV (``keV`` -> 1e-3), ``None`` when not an energy."""
    return {"ev": 1.0, "kev": 1e-3}.get(units.strip().lower())


def spectrum_kind(axis: Axis) -> str:
    """``"eds"`` for an axis in keV (X-ray lines), ``"eels"`` for one in eV (edges), else ``"none"``."""
    return {"kev": "eds", "ev": "eels"}.get(axis.units.strip().lower(), "none")


def _element_database():
    """exSpy's element database (``exspy.material.elements``)."""
    with warnings.catch_warnings():
        # exSpy 0.3 imports HyperSpy 2.5's lazy signals from their deprecated paths (HyperSpy's
        # VisibleDeprecationWarning, a UserWarning): about the two packages' versions, nothing a
        # user of this run can act on, and it cluttered every run's warnings
        warnings.filterwarnings("ignore", message="Importing `Lazy")
        from exspy.material import elements
    return elements


def known_elements() -> frozenset[str]:
    """The element symbols whose X-ray lines exSpy's database tabulates (``"Fe"``, ``"Nb"`` ...)."""
    elements = _element_database()
    return frozenset(symbol for symbol in elements.keys() if "Atomic_properties" in elements[symbol]
                     and "Xray_lines" in elements[symbol]["Atomic_properties"])


def xray_family(element: str, family: str) -> dict[str, tuple[float, float]]:
    """Energy (keV) and weight (intensity relative to the family's alpha line) of each X-ray line
    of ``element``'s ``family`` (``"K"``, ``"L"`` or ``"M"``) in exSpy's database, by line name
    (``{"Ka": (6.404, 1.0), "Kb": (7.058, 0.127)}`` for iron); empty where it lists none."""
    properties = _element_database()[element]["Atomic_properties"]
    lines = properties["Xray_lines"] if "Xray_lines" in properties else {}
    return {line: (float(lines[line]["energy (keV)"]), float(lines[line]["weight"]))
            for line in lines.keys() if line.startswith(family)}


def eds_half_window(scale: float) -> int:
    """Half-width, in channels of ``scale`` keV, of an EDS line's window (``EDS_HALF_WIDTH_KEV``,
    at least one channel)."""
    return max(1, int(np.ceil(EDS_HALF_WIDTH_KEV / abs(scale))))


def known_features(axis: Axis) -> tuple[str, list[SpectralFeature]]:
    """Lines (EDS, axis in keV) or edges (EELS, axis in eV) inside the energy range.

    Returns
    -------
    ``("eds" | "eels" | "none", features)``.
    """
    elements = _element_database()
    mode = spectrum_kind(axis)
    if mode == "none":
        return "none", []
    factor = _unit_factor(axis.units) or 1.0
    low, high = axis.offset, axis.offset + axis.scale * (axis.size - 1)
    found = []
    for element in elements.keys():
        properties = elements[element]["Atomic_properties"]
        if mode == "eds":
            lines = properties["Xray_lines"] if "Xray_lines" in properties else {}
            for line in XRAY_LINES:
                if line in lines:
                    energy = float(lines[line]["energy (keV)"]) * 1e3 * factor
                    found.append(SpectralFeature(f"{element}_{line}", energy))
        else:
            edges = properties["Binding_energies"] if "Binding_energies" in properties else {}
            for edge in EELS_EDGES:
                if edge in edges:
                    energy = float(edges[edge]["onset_energy (eV)"]) * factor
                    found.append(SpectralFeature(f"{element}_{edge}", energy))
    margin = (max(3 * EDS_HALF_WIDTH_KEV * 1e3 * factor, 3 * abs(axis.scale)) if mode == "eds"
              else EELS_GAP * factor + max(EELS_MIN_PRE * factor, 3 * abs(axis.scale)))  # a pre-edge fit
    post = margin if mode == "eds" else EELS_POST * factor
    if mode == "eds":
        # an EDS detector's noise (zero-energy) peak sits at 0 keV: lines near it are read off its
        # tail, as are exSpy's "Ka" of H and He (their ionisation energies, 1.4 and 2.5 eV: no
        # X-ray line), so 0 keV is an edge of the usable range like the axis' own
        low = max(low, 0.0)
    return mode, sorted((f for f in found if low + margin <= f.energy <= high - post),
                        key=lambda f: f.energy)


def poisson_scale(spectrum: np.ndarray) -> float:
    """``g`` such that a channel's variance is ``g`` times its level: 1 for counts, ``1 / N`` for
    the mean of ``N`` positions' counts; 0 for a noise-free spectrum, ``inf`` where fewer than
    ten channels hold counts.

    From the spectrum's own roughness: a channel minus the mean of its two neighbours has the
    variance ``1.5 g`` times the level, whatever smooth trend runs through them; its robust
    spread (the median absolute deviation, which edges and peaks hardly move) over that.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    level = 1.5 * spectrum[1:-1]
    counted = level > 0
    if counted.sum() < 10:
        return float("inf")
    step = (spectrum[1:-1] - (spectrum[:-2] + spectrum[2:]) / 2)[counted] / np.sqrt(level[counted])
    return float((1.4826 * np.median(np.abs(step - np.median(step)))) ** 2)


def _eds_windows(energy: np.ndarray, e0: float, half: int) -> tuple[slice, list[slice]]:
    """The line window (``half`` channels either side of the channel of ``e0``) and the side
    windows of ``half`` channels just outside it that the axis holds."""
    centre, n = int(np.argmin(np.abs(energy - e0))), len(energy)
    inside = slice(max(centre - half, 0), min(centre + half + 1, n))
    left = slice(max(centre - 2 * half - 1, 0), max(centre - half, 0))
    right = slice(min(centre + half + 1, n), min(centre + 2 * half + 2, n))
    return inside, [side for side in (left, right) if side.stop > side.start]


def _eds_background(spectra: np.ndarray, sides: list[slice]) -> np.ndarray:
    """The background level per channel under a line window: the mean of its side windows'."""
    return np.mean([spectra[:, side].mean(axis=1) for side in sides], axis=0)


def _eds_intensity(spectra: np.ndarray, energy: np.ndarray, e0: float, half: int,
                   scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Net counts in ``half`` channels either side of ``e0`` above the mean level of the
    ``half``-channel windows just outside (a linear background), and their standard errors
    (Poisson, ``scales``: each spectrum's :func:`poisson_scale`)."""
    inside, sides = _eds_windows(energy, e0, half)
    width = inside.stop - inside.start
    if not sides:
        return spectra[:, inside].sum(axis=1), np.sqrt(scales * spectra[:, inside].sum(axis=1))
    background = _eds_background(spectra, sides)
    # the background's variance: the mean of the side windows' means, times the window's width
    side_variance = sum(spectra[:, side].sum(axis=1) / (side.stop - side.start) ** 2 for side in sides) / len(sides) ** 2
    variance = scales * (spectra[:, inside].sum(axis=1) + width**2 * side_variance)
    return spectra[:, inside].sum(axis=1) - background * width, np.sqrt(variance)


def _eds_centroid(spectra: np.ndarray, energy: np.ndarray, e0: float, half: int) -> np.ndarray:
    """Mean energy of the net counts in the line window at ``e0`` (:func:`_eds_intensity`'s
    window and background), per spectrum; NaN where they are not positive."""
    inside, sides = _eds_windows(energy, e0, half)
    net = spectra[:, inside] - (_eds_background(spectra, sides) if sides else np.zeros(len(spectra)))[:, None]
    total = net.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (net * energy[inside]).sum(axis=1) / total, np.nan)


def _eels_intensity(spectra: np.ndarray, energy: np.ndarray, e0: float, factor: float,
                    scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Net counts in the ``EELS_POST`` after ``e0`` above a power law fitted to the window before
    it, and their standard errors: Poisson in the window, and the fit's own uncertainty carried
    to the background's sum (``scales``: each spectrum's :func:`poisson_scale`; the fit is
    weighted by the counts' Poisson errors where there is noise).  NaN where the background
    window holds fewer than 3 channels with counts."""
    pre = (energy >= e0 - EELS_PRE * factor) & (energy <= e0 - EELS_GAP * factor)
    post = (energy >= e0) & (energy <= e0 + EELS_POST * factor)
    net, error = np.full(len(spectra), np.nan), np.full(len(spectra), np.nan)
    for i, (spectrum, g) in enumerate(zip(spectra, scales)):
        # the power law fitted to the channels with counts (a log of zero counts is no level)
        counted = spectrum[pre] > 0
        if counted.sum() < 3:
            continue
        x, y = np.log(energy[pre][counted]), np.log(spectrum[pre][counted])
        if np.isfinite(g) and g > 0:  # log counts' variance: g / counts
            (slope, intercept), cov = np.polyfit(x, y, 1, w=np.sqrt(spectrum[pre][counted] / g), cov="unscaled")
        else:
            (slope, intercept), cov = np.polyfit(x, y, 1), np.zeros((2, 2))
        log_energy = np.log(energy[post])
        background = np.exp(intercept + slope * log_energy)
        net[i] = (spectrum[post] - background).sum()
        # d(sum of background) / d(slope, intercept)
        gradient = np.array([(background * log_energy).sum(), background.sum()])
        error[i] = np.sqrt(g * spectrum[post].sum() + gradient @ cov @ gradient) if np.isfinite(g) else np.inf
    return net, error


def _merge_aliases(features: list[SpectralFeature], energy: np.ndarray) -> list[SpectralFeature]:
    """One feature per channel: lines that fall in the same channel cannot be told apart,
    so they are listed together (``"S_Ka/Mo_La/Pb_Ma"``)."""
    groups: dict[int, list[SpectralFeature]] = {}
    for feature in features:
        groups.setdefault(int(np.argmin(np.abs(energy - feature.energy))), []).append(feature)
    return [SpectralFeature("/".join(f.label for f in group), float(np.mean([f.energy for f in group])))
            for _, group in sorted(groups.items())]


def _located_features(axis: Axis) -> tuple[str, np.ndarray, list[SpectralFeature]]:
    """The axis' kind, its channels' energies and its features, one per channel
    (:func:`known_features`, :func:`_merge_aliases`)."""
    mode, features = known_features(axis)
    energy = axis.offset + axis.scale * np.arange(axis.size)
    return mode, energy, _merge_aliases(features, energy)


def feature_intensities(mean_spectra: np.ndarray, axis: Axis, *, errors: bool = False) -> tuple:
    """Net intensity of every known line or edge in each community's mean spectrum.

    Parameters
    ----------
    mean_spectra
        ``(n_communities, channels)`` mean counts per scan position.
    axis
        The calibrated energy axis (``keV``: EDS lines; ``eV``: EELS edges).
    errors
        Also return each intensity's standard error (Poisson noise at each spectrum's own
        :func:`poisson_scale`, and for EELS the background fit's uncertainty).

    Returns
    -------
    The features and ``(n_communities, n_features)`` net counts per position (NaN where none
    can be measured), and with ``errors`` their standard errors, of the same shape.
    """
    mode, energy, features = _located_features(axis)
    spectra = np.asarray(mean_spectra, dtype=np.float64)
    factor = _unit_factor(axis.units) or 1.0
    half = eds_half_window(axis.scale / (1e3 * factor))
    # each spectrum's noise level: for the errors, and for EELS the weights of its background fit
    scales = (np.array([poisson_scale(spectrum) for spectrum in spectra]) if errors or mode == "eels"
              else np.ones(len(spectra)))
    columns = [(_eds_intensity(spectra, energy, f.energy, half, scales) if mode == "eds"
                else _eels_intensity(spectra, energy, f.energy, factor, scales)) for f in features]
    shape = (len(spectra), len(features))
    intensities = np.column_stack([c[0] for c in columns]) if columns else np.zeros(shape)
    if not errors:
        return features, intensities
    return features, intensities, np.column_stack([c[1] for c in columns]) if columns else np.zeros(shape)


def line_centroids(mean_spectra: np.ndarray, axis: Axis) -> np.ndarray:
    """Mean energy (axis units) of the net counts in each EDS line window of
    :func:`feature_intensities`, ``(n_communities, n_features)``; NaN where the net counts are
    not positive.  Where a peak really lies, against its tabulated energy: the detector's
    calibration, off by some eV (the Phenom maps' Al K alpha 8 eV low)."""
    mode, energy, features = _located_features(axis)
    spectra = np.asarray(mean_spectra, dtype=np.float64)
    if mode != "eds" or not features:
        return np.full((len(spectra), len(features)), np.nan)
    half = eds_half_window(axis.scale)
    return np.column_stack([_eds_centroid(spectra, energy, f.energy, half) for f in features])


def line_table(mean_spectra: np.ndarray, axis: Axis, *, beam_energy: float | None = None,
               beam_energy_from: str = "file", elements: Collection[str] | None = None,
               elements_from: str = "file") -> dict[str, Any]:
    """The line table of a run's spectrum modality (:attr:`multimodal_seg.result.Segmentation.lines`),
    from which :func:`marked` names lines and edges; empty where the axis holds no known one.

    Parameters
    ----------
    mean_spectra
        ``(n_communities, channels)`` mean counts per scan position.
    axis
        The calibrated energy axis.
    beam_energy, beam_energy_from
        EDS: the beam energy (keV) and where it came from (``"file"``, ``"option"``,
        ``"signal"``); without it the top of the axis is assumed (``"axis"``).
    elements, elements_from
        EDS: the elements the specimen is known to hold (symbols), and where that came from
        (``"file"``, ``"option"``, ``"signal"``): a peak that one of their lines can name is
        named by it alone (:func:`marked`).

    Returns
    -------
    ``features``, ``energies``, ``units``, ``intensities``, ``errors``, ``significant`` and
    ``scale``; EELS also ``onsets``; EDS also ``beam_energy``, ``beam_energy_from``,
    ``offset``, ``channels``, ``centroids`` and ``spectra`` (``mean_spectra``, from which
    :func:`marked` tells overlapping families apart) (JSON-able lists), and ``elements`` and
    ``elements_from`` where ``elements`` are given.
    """
    features, intensities, errors = feature_intensities(mean_spectra, axis, errors=True)
    if not features:
        return {}
    table: dict[str, Any] = {
        "features": [f.label for f in features], "energies": [f.energy for f in features], "units": axis.units,
        "intensities": intensities.tolist(), "errors": errors.tolist(),
        "significant": significant(intensities, errors), "scale": float(axis.scale)}
    if spectrum_kind(axis) == "eels":
        table["onsets"] = edge_onsets(mean_spectra, axis)
    else:  # which X-ray families the beam excites: without a word of it, at least the axis' top
        top = axis.offset + axis.scale * (axis.size - 1)
        table |= {"beam_energy": float(beam_energy if beam_energy is not None else top),
                  "beam_energy_from": beam_energy_from if beam_energy is not None else "axis",
                  "offset": float(axis.offset), "channels": axis.size,
                  "centroids": line_centroids(mean_spectra, axis).tolist(),
                  "spectra": np.asarray(mean_spectra, dtype=np.float64).tolist()}
        if elements:
            table |= {"elements": sorted(set(elements)), "elements_from": elements_from}
    return table


def significant(intensities: np.ndarray, errors: np.ndarray, *, level: float = 0.01) -> list[bool]:
    """For each feature (column), whether some community's net intensity is above zero beyond
    the normal tail of ``level`` shared among every intensity of the table (Bonferroni)."""
    intensities, errors = np.asarray(intensities, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if intensities.size == 0:
        return [False] * intensities.shape[-1]
    sigmas = float(norm.isf(level / intensities.size))
    with np.errstate(invalid="ignore"):
        above = np.nan_to_num(intensities, nan=-np.inf) > sigmas * np.nan_to_num(errors, nan=np.inf)
    return above.any(axis=0).tolist()


def strongest(energies: list[float], intensities: np.ndarray, *, top: int = 12,
              floor: float = 0.05, apart: float = 0.0, tail: float = 0.0,
              confirmed: Collection[int] = (),
              explains: Callable[[int, int], bool] | None = None) -> list[int]:
    """Indices (in order of energy) of up to ``top`` features whose largest intensity over
    communities is at least ``floor`` times the strongest one's: absent elements drop out.
    A feature within ``apart`` (energy units) of a stronger one kept is left out: it is
    read from the same peak (``apart``: :func:`resolution`).  So is one up to ``tail`` above a
    stronger one kept, unless its index is in ``confirmed``: it may be read off that one's
    tail (EELS: :func:`marked`); and one where ``explains(kept, index)`` for a stronger feature
    kept: its element's other lines account for it (EDS: :func:`marked`)."""
    if len(energies) == 0:
        return []
    # a feature without an intensity (NaN: no background could be fitted) is not named
    peak = np.nan_to_num(np.asarray(intensities, dtype=np.float64), nan=-np.inf).max(axis=0)
    keep = np.flatnonzero(peak >= floor * peak.max()) if peak.max() > 0 else np.array([], int)
    chosen: list[int] = []
    for index in keep[np.argsort(peak[keep], kind="stable")[::-1]]:
        if len(chosen) == top:
            break
        above = [energies[index] - energies[other] for other in chosen]
        explained = explains is not None and any(explains(other, int(index)) for other in chosen)
        if (all(abs(d) > apart for d in above) and not explained
                and (index in confirmed or not any(0 < d <= tail for d in above))):
            chosen.append(int(index))
    return sorted(chosen, key=lambda i: energies[i])


def edge_onsets(spectra: np.ndarray, axis: Axis) -> list[float]:
    """Energies (axis units) where some spectrum of ``spectra`` ``(n, channels)`` rises: edge onsets.

    A power-law background falls everywhere; an ionisation edge is where the counts step up.
    At each channel the counts of a window after it are compared with those of the window
    before it times the background's fall between them (a power law whose exponent is the
    running median of the windows' log-log slopes over eight windows), in units of the
    difference's Poisson noise, for windows of each of ``ONSET_WINDOWS`` (a sharp edge shows in
    the narrow ones, a delayed or faint one in the wide ones).  An onset is a local maximum of
    that step beyond the normal tail of ``ONSET_LEVEL`` shared among every channel, window and
    spectrum tested (Bonferroni: 4.7 standard deviations for 3 spectra of 512 channels),
    counted in robust standard deviations (the median absolute deviation along the spectrum,
    most of which holds no edge).  Mean spectra are counts over a number of positions: the
    factor that leaves is the same at every channel, and the spread takes it out; windows with
    fewer than ``ONSET_MIN_COUNTS`` counts between them are not tested.  A spectrum without
    spread in its steps (empty, or too sparse for windows to differ) gives none.

    An approximate test: on Poisson power laws without an edge (3 spectra of 512 channels, 100
    tables per dose) 0-8 % of the tables showed an onset from 2 to 6400 counts per channel,
    17 % below one count per channel, where the normal tail is not the counts'.  What it is used
    for tolerates that: an onset only lets an edge in a stronger one's tail be named
    (:func:`marked`).
    """
    spectra = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    factor = _unit_factor(axis.units) or 1.0
    n = spectra.shape[1]
    energy = axis.offset + axis.scale * np.arange(n)
    widths = sorted({max(2, int(round(w * factor / abs(axis.scale)))) for w in ONSET_WINDOWS})
    widths = [w for w in widths if n >= 2 * w + 3]
    if not widths:
        return []
    sigmas = float(norm.isf(ONSET_LEVEL / (len(spectra) * len(widths) * n)))
    found: set[int] = set()
    for spectrum in spectra:
        total = np.concatenate([[0.0], np.cumsum(spectrum)])
        for width in widths:
            at = np.arange(width, n - width + 1)  # window edges: before [i - w, i), after [i, i + w)
            after, before = total[at + width] - total[at], total[at] - total[at - width]
            # the background's own fall from one window to the next: a power law whose exponent is
            # the running median of the windows' log-log slopes (edges are a small part of them)
            # (span: the log-energy distance between the two windows' centres)
            span = np.log(energy[np.clip(at + width // 2, 0, n - 1)]) - np.log(
                energy[np.clip(at - width // 2 - 1, 0, n - 1)])
            with np.errstate(divide="ignore", invalid="ignore"):
                slopes = np.where((after > 0) & (before > 0), np.log(after / before) / span, np.nan)
            fall = np.exp(_running_nanmedian(slopes, 8 * width + 1) * span)
            expected = before * fall
            # the step over the background in units of its Poisson noise (counts, or means of counts:
            # one unknown factor, which the spread below takes out): var(after - fall before)
            level = after + expected * fall
            excess = np.divide(after - expected, np.sqrt(level, where=level > 0, out=np.ones_like(level)),
                               out=np.zeros_like(level), where=level > 0)
            spread = 1.4826 * np.median(np.abs(excess - np.median(excess)))
            if not spread > 0:
                continue
            # Poisson counts give steps of unit spread, means of N positions' counts 1 / sqrt(N):
            # the windows' counts are level / spread^2, and below ONSET_MIN_COUNTS the normal tail
            # the test reads is no longer theirs (sparse channels: a few counts make a "rise")
            counted = (after + before) / spread**2 >= ONSET_MIN_COUNTS
            peak = np.r_[False, (excess[1:-1] > excess[:-2]) & (excess[1:-1] >= excess[2:]), False]
            found.update(int(i) for i in at[peak & counted & (excess > sigmas * spread)])
    return [float(energy[i]) for i in sorted(found)]


def _running_nanmedian(values: np.ndarray, size: int) -> np.ndarray:
    """The median of the finite values within ``size // 2`` of each element (0 where none is),
    taken every ``size // 128`` elements and interpolated between (it changes slowly by design:
    every element's took 3 s for 20 spectra of 4096 channels)."""
    half, step = size // 2, max(1, size // 128)
    padded = np.pad(values, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)[::step]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: no slope there
        sampled = np.nan_to_num(np.nanmedian(windows, axis=1), nan=0.0)
    return np.interp(np.arange(len(values)), np.arange(0, len(values), step), sampled)


def confirmed(energies: list[float], onsets: list[float], units: str, scale: float) -> list[int]:
    """Indices of the features at ``energies`` with one of ``onsets`` (:func:`edge_onsets`) at
    most ``ONSET_TOLERANCE`` (at least two channels of ``scale``) below and twice that above."""
    tolerance = max(ONSET_TOLERANCE * (_unit_factor(units) or 1.0), 2 * abs(scale))
    found = np.asarray(onsets, dtype=np.float64)
    return [i for i, e in enumerate(energies)
            if np.any((found >= e - tolerance) & (found <= e + 2 * tolerance))]


def eds_names(table: dict) -> list[list[str]]:
    """For each feature of an EDS line table, the element lines of its label (``"Nb_La/Hg_Ma"``)
    that the rest of the table bears out.

    A line is borne out where each higher-energy family of its element (K for an L line, K and L
    for an M line) that the beam excites is present: the family's alpha line, where the table
    holds it, stands above its noise in some community (``"significant"``).  The beam excites a
    family where ``"beam_energy"`` is at least ``OVERVOLTAGE`` times its ionisation energy, taken
    as the family's highest line (slightly below the edge, so fewer families are asked for).
    This is how qualitative EDS analysis checks a low-energy line, where families of many
    elements crowd together (lanthanum's M alpha lies 18 eV from nickel's L alpha): from the
    high-energy end, where lines are few and far apart.  A K line needs nothing else: lower
    families can be absorbed or lost at the noise peak.  Without ``"significant"`` (tables
    written before it) every line is kept."""
    features = [str(label).split("/") for label in table["features"]]
    if "significant" not in table:
        return features
    return _borne_out(features, _higher_families(table))


def _borne_out(features: list[list[str]], states: dict[str, list[str]]) -> list[list[str]]:
    """:func:`eds_names` from the lines' :func:`_higher_families`."""
    return [[alias for alias in label if "absent" not in states[alias]] for label in features]


def _higher_families(table: dict) -> dict[str, list[str]]:
    """For each line of an EDS table with ``"significant"``, the state of each higher-energy
    family of its element (:func:`eds_names`): ``"present"``, ``"absent"``, or ``"unchecked"``
    where the table does not hold its alpha line or the beam does not excite it."""
    features = [str(label).split("/") for label in table["features"]]
    where = {alias: i for i, label in enumerate(features) for alias in label}
    significant_features = [bool(flag) for flag in table["significant"]]
    beam = float(table.get("beam_energy", np.inf))
    order = "KLM"
    # A family's alpha line counts as present where it stands above its noise and no stronger
    # K line's family accounts for it (vanadium's K alpha lies 20 eV from titanium's K beta):
    # K lines need no other family, so they are what the check can lean on (tables with
    # "errors": :func:`_family_explains`)
    if "errors" in table:
        intensities = np.asarray(table["intensities"], dtype=np.float64)
        peak = np.nan_to_num(intensities, nan=-np.inf).max(axis=0)
        k_lines = [[alias for alias in label if alias.endswith("_Ka")] for label in features]
        explains = _family_explains(table, k_lines)
        stronger_k = [i for i in np.argsort(peak)[::-1] if k_lines[i] and significant_features[i]]

    @functools.cache
    def present(i: int) -> bool:
        if not significant_features[i]:
            return False
        return "errors" not in table or not any(explains(int(k), i) for k in stronger_k if peak[k] > peak[i])

    def state(element: str, family: str) -> str:
        energies = [energy for energy, _ in xray_family(element, family).values()]
        alpha = f"{element}_{family}a"
        if alpha not in where or not energies or beam < OVERVOLTAGE * max(energies):
            return "unchecked"
        return "present" if present(where[alpha]) else "absent"

    return {alias: [state(alias.split("_", 1)[0], family) for family in order[: order.index(alias.split("_", 1)[1][0])]]
            for label in features for alias in label}


def eds_line_width(energy: float) -> float:
    """An EDS detector's full width at half maximum (keV) at ``energy`` (keV), from
    ``EDS_FWHM_MN_KA_KEV`` by Fiori and Newbury's relation (at least 10 eV)."""
    return float(np.sqrt(max(EDS_FWHM_MN_KA_KEV**2 + 2.5e-3 * (energy - 5.895), 1e-4)))


def _family_model(element: str, family: str, energy: np.ndarray, shift: float) -> np.ndarray:
    """``(1, channels)``: one unit of ``element``'s X-ray ``family`` on the axis ``energy`` (keV
    per channel): its lines as Gaussians of the detector's width (:func:`eds_line_width`) with
    exSpy's weights, alpha's area 1, every line moved by ``shift`` keV."""
    half_channel = abs(float(energy[1] - energy[0]) if len(energy) > 1 else 1.0) / 2
    model = np.zeros((1, len(energy)))
    for centre, weight in xray_family(element, family).values():
        sigma = eds_line_width(centre) / 2.3548
        # each channel's share of the line: integrated over the channel (binned axes have
        # channels of several line widths)
        model[0] += weight * (norm.cdf((energy + half_channel - centre - shift) / sigma)
                              - norm.cdf((energy - half_channel - centre - shift) / sigma))
    return model


def line_explains(table: dict, names: list[list[str]]) -> Callable[[int, int], bool]:
    """``explains(kept, index)``: whether what feature ``index`` of an EDS line table (with
    ``"errors"``) reads is the doing of the peak at feature ``kept`` rather than a line of its
    own: a weaker line of the family named there (``names[kept]``, :func:`_family_explains`), or
    a detector's artefact of it, a sum peak with another peak named or its escape peak
    (:func:`_artefact_explains`).  :func:`strongest` leaves such a feature out."""
    family, artefact = _family_explains(table, names), _artefact_explains(table, names)
    return lambda kept, index: family(kept, index) or artefact(kept, index)


def _artefact_explains(table: dict, names: list[list[str]]) -> Callable[[int, int], bool]:
    """``explains(kept, index)``: whether feature ``index`` is an artefact the detector makes of
    the peak at feature ``kept``, its net counts lying where the artefact falls (within half the
    detector's width, :func:`eds_line_width`):

    - a sum peak of ``kept`` and a peak named at a significant feature (``kept`` itself
      included), where their energies add up, holding at most ``PILEUP_SHARE`` of the weaker
      where it is strongest, and following the product of the two peaks' intensities from
      community to community (pile-up goes with the product of the rates): aluminium's 2.97 keV
      sum peak, named argon's K alpha before;
    - a silicon escape peak of ``kept`` (above silicon's K edge), ``SI_KA_KEV`` below it,
      holding at most ``ESCAPE_SHARE`` of it and following its intensity.

    "Following" is read as :func:`_family_explains` reads a family: the artefact's share where
    it is strongest, up to ``LINE_WEIGHT_SLACK`` times, accounts for it in every community
    within :func:`significant`'s margin."""
    intensities = np.asarray(table["intensities"], dtype=np.float64)
    errors = np.asarray(table["errors"], dtype=np.float64)
    scale = abs(float(table.get("scale", 0.0)))
    sigmas = float(norm.isf(0.01 / max(intensities.size, 1)))
    peaks = np.nan_to_num(intensities, nan=-np.inf)
    named = [j for j in _readable(intensities) if names[j] and table["significant"][j]]

    def centre(i: int) -> float:
        return _where_peak_lies(table, i)[1]

    def follows(index: int, rate: np.ndarray, bound: float) -> bool:
        """Whether ``index`` is at most ``bound`` where it is strongest and in proportion to
        ``rate`` (per community) everywhere."""
        strongest_at = int(np.argmax(peaks[:, index]))
        if rate[strongest_at] <= 0 or intensities[strongest_at, index] > bound:
            return False
        predicted = LINE_WEIGHT_SLACK * intensities[strongest_at, index] / rate[strongest_at] * rate
        return bool(np.all(np.nan_to_num(intensities[:, index] - predicted, nan=0.0)
                           <= sigmas * np.nan_to_num(errors[:, index], nan=np.inf)))

    def explains(kept: int, index: int) -> bool:
        target, strongest_at = centre(index), int(np.argmax(peaks[:, index]))
        near = max(eds_line_width(target) / 2, scale / 2)
        rate = np.maximum(np.nan_to_num(intensities[:, kept]), 0.0)
        if (centre(kept) > SI_K_EDGE_KEV and abs(centre(kept) - SI_KA_KEV - target) <= near
                and follows(index, rate, ESCAPE_SHARE * intensities[strongest_at, kept])):
            return True
        for partner in named:
            if abs(centre(kept) + centre(partner) - target) > near:
                continue
            weaker = min(intensities[strongest_at, kept], intensities[strongest_at, partner])
            if follows(index, rate * np.maximum(np.nan_to_num(intensities[:, partner]), 0.0), PILEUP_SHARE * weaker):
                return True
        return False

    return explains


def _family_explains(table: dict, names: list[list[str]]) -> Callable[[int, int], bool]:
    """``explains(kept, index)``: whether a family named at feature ``kept`` accounts for feature
    ``index``'s intensity in every community: at most ``LINE_WEIGHT_SLACK`` times what the family
    gives there (its model, :func:`_family_model`, read through the same windows and scaled to
    ``kept``'s intensity in each community), beyond
    the noise by no more than :func:`significant`'s margin.  The family is placed where its peak
    lies (``"centroids"``, :func:`line_centroids`, in the community where it is strongest): a
    window's edge on the flank of a strong line reads a share that moves by a tenth for 5 eV."""
    intensities = np.asarray(table["intensities"], dtype=np.float64)
    errors = np.asarray(table["errors"], dtype=np.float64)
    centroids = np.asarray(table.get("centroids", np.full(intensities.shape, np.nan)), dtype=np.float64)
    energy = table["offset"] + table["scale"] * np.arange(int(table["channels"]))
    half = eds_half_window(table["scale"])
    sigmas = float(norm.isf(0.01 / max(intensities.size, 1)))

    @functools.cache
    def placed(kept: int, alias: str) -> tuple[np.ndarray, float]:
        """The family of ``alias`` moved to where feature ``kept``'s peak lies, and what its own
        window reads of it."""
        element, line = alias.split("_", 1)
        modelled = _eds_centroid(_family_model(element, line[0], energy, 0.0), energy, table["energies"][kept], half)[0]
        shift = float(np.nan_to_num(centroids[int(np.nanargmax(intensities[:, kept])), kept] - modelled, nan=0.0))
        model = _family_model(element, line[0], energy, shift)
        return model, float(_eds_intensity(model, energy, table["energies"][kept], half, np.ones(1))[0][0])

    def explains(kept: int, index: int) -> bool:
        for alias in names[kept]:
            model, own = placed(kept, alias)
            if own <= 0:
                continue
            there = _eds_intensity(model, energy, table["energies"][index], half, np.ones(1))[0][0]
            predicted = LINE_WEIGHT_SLACK * np.maximum(intensities[:, kept] / own * there, 0.0)
            if np.all(np.nan_to_num(intensities[:, index] - predicted, nan=0.0)
                      <= sigmas * np.nan_to_num(errors[:, index], nan=np.inf)):
                return True
        return False

    return explains


def marked(table: dict, *, top: int) -> list[tuple[int, str]]:
    """The features of a run's line table (``{"features", "energies", "units", "intensities"}``;
    for EDS and EELS also ``"significant"`` and ``"scale"``; for EDS ``"beam_energy"``; for EELS
    ``"onsets"``) that figures and the report name, and the name of each: ``(index, name)`` of
    :func:`strongest`, one per peak, in order of energy.

    Of both kinds, only features whose net intensity stands above its noise in some community
    (:func:`significant`).

    EDS: a feature is named by those of its lines that :func:`eds_names` bears out, and not at
    all where none is; features within a line window of each other (at least
    ``EDS_HALF_WIDTH_KEV``, whole channels) read one peak; and a peak at a weaker line of the same
    family as an element named at a stronger peak (nickel's L beta beside its L alpha, niobium's
    L beta 91 eV above its L alpha, the flank of copper's L alpha 80 eV below it) is read as that
    family, not named again, where the family's lines account for its intensity (tables with
    ``"errors"``: :func:`_family_explains`), and so is a detector's sum or escape peak of
    stronger peaks (:func:`_artefact_explains`).  With ``"errors"`` a line is named however weak
    beside the strongest one, where it stands above its noise; without, from 5 % of it.
    A peak is named where it lies, and not at all where no line borne out lies there: by a line
    within half the detector's width (:func:`eds_line_width`) of its net counts' centre
    (``"centroids"``), one of an element named at another peak too where there is one (iron's L alpha rather than
    fluorine's K alpha 28 eV below it), else one whose higher-energy families could all be
    checked (Al K alpha rather than Br L alpha at 15 kV), else the nearest; and the lines a name
    lists come in the same order.  Where the table holds the specimen's ``"elements"``, a line
    of theirs comes before all of these, and a name lists only theirs where it holds one.  Where
    it holds the communities' mean ``"spectra"`` and the lines near a peak belong to several
    elements, another element replaces that choice where its family fits the spectrum around
    the peak clearly better (:func:`_best_fitting`); and a peak that the families named at
    stronger peaks already fit is not named (:func:`_fitted_by_stronger`).

    EELS: an edge whose background window reaches into the 30 eV after a stronger edge named (up
    to ``EELS_PRE + EELS_POST`` above it) is named only where a community's spectrum rises at it
    (:func:`edge_onsets`, :func:`confirmed`): its net intensity may be that edge's decaying
    near-edge structure over a background fitted on it.  Edges within ``EELS_POST`` of each other
    read one edge: it is named by the one whose tabulated onset lies nearest a rise the spectra
    show (:func:`edge_onsets`, within ``ONSET_TOLERANCE``), where there is one: O K rather than
    Sb M5 4 eV below it; else by the stronger window."""
    intensities = np.asarray(table["intensities"], dtype=np.float64)
    if "significant" in table:  # a line or an edge lost in the noise is not named
        intensities = np.where(np.asarray(table["significant"], dtype=bool)[None, :], intensities, np.nan)
    if str(table.get("units", "")).strip().lower() == "kev":
        return _eds_marked(table, intensities, top=top)
    return _eels_marked(table, intensities, top=top)


def _readable(intensities: np.ndarray) -> np.ndarray:
    """Indices of the features some community has an intensity for (not masked with NaN)."""
    return np.flatnonzero(np.isfinite(np.nan_to_num(intensities, nan=-np.inf).max(axis=0)))


def _where_peak_lies(table: dict, index: int) -> tuple[int, float]:
    """``(community, keV)``: the community where feature ``index`` of an EDS table is strongest,
    and where its net counts are centred there (``"centroids"``; the feature's tabulated energy
    where that is unknown)."""
    intensities = np.asarray(table["intensities"], dtype=np.float64)
    community = int(np.argmax(np.nan_to_num(intensities[:, index], nan=-np.inf)))
    centroids = table.get("centroids")
    centre = float(centroids[community][index]) if centroids is not None else np.nan
    return community, centre if np.isfinite(centre) else float(table["energies"][index])


def _eds_marked(table: dict, intensities: np.ndarray, *, top: int) -> list[tuple[int, str]]:
    """:func:`marked` for X-ray lines (``intensities``: the significant ones)."""
    energies, scale = table["energies"], float(table.get("scale", 0.0))
    states = _higher_families(table) if "significant" in table else {}
    names = (_borne_out([str(label).split("/") for label in table["features"]], states) if states
             else eds_names(table))
    intensities = np.where(np.array([bool(n) for n in names])[None, :], intensities, np.nan)
    apart = resolution("keV")
    if scale:  # a window of whole channels reaches further than the detector's resolution
        apart = max(apart, eds_half_window(scale) * abs(scale))
    # where each line's noise is known, a weak line that stands above it is named (sulphur in one
    # community of an Al/Cu map, 4 % of Al K alpha), not left out by the 5 % floor
    chosen = strongest(energies, intensities, top=top, apart=apart, floor=0.0 if "errors" in table else 0.05,
                       explains=line_explains(table, names) if "errors" in table else None)
    found = {i: name for i, name in _named_where_they_lie(table, chosen, names, states) if name}
    if "spectra" in table:
        found = _fitted_by_stronger(table, found)
    return sorted(found.items(), key=lambda pair: energies[pair[0]])


def peak_names(table: dict, peaks: Sequence[int]) -> list[str]:
    """The name of each of ``peaks`` (indices of features of an EDS line table with
    ``"significant"``) as :func:`marked` names a peak it keeps: by the lines borne out
    (:func:`eds_names`) within half the detector's width of where the peak's net counts lie,
    preferring elements named at the other ``peaks``; ``""`` where no line is borne out there.
    For peaks chosen by another rule than :func:`marked`'s (the chemistry benchmark's)."""
    states = _higher_families(table)
    names = _borne_out([str(label).split("/") for label in table["features"]], states)
    return [name for _, name in _named_where_they_lie(table, list(peaks), names, states)]


def _named_where_they_lie(table: dict, peaks: list[int], names: list[list[str]],
                          states: dict[str, list[str]]) -> list[tuple[int, str]]:
    """``(feature, name)`` for each of ``peaks``: the feature whose borne-out lines (``names``)
    name the peak, and the name (:func:`marked`, :func:`peak_names`)."""
    # Each peak is named by a line where the peak lies: of the lines borne out within half the
    # detector's width of its net counts' centre, one of an element named at another peak too,
    # else one whose higher families were all checked (a K line, or an L line whose K family is
    # there: aluminium's K alpha, not bromine's L alpha 6 eV below it, whose K family a 15 kV
    # beam cannot excite), else the nearest (oxygen's K alpha at a peak centred on 0.52 keV, not
    # titanium's L alpha 73 eV below it; iron's L alpha rather than fluorine's K alpha 28 eV
    # below it where Fe K alpha is named).  In one channel's name the lines come in the same
    # order: nickel's L alpha before neon's K alpha where Ni K alpha is named, silicon's K alpha
    # before rubidium's L alpha.
    # Where the specimen's elements are known (the file's, the reader's or the signal's
    # ``elements``), a peak one of their lines can name is named by those alone: the analyst's
    # knowledge tells apart what the detector cannot (tungsten's M alpha and silicon's K alpha,
    # 35 eV apart; barium's L alpha and titanium's K alpha).
    energies, scale = table["energies"], float(table.get("scale", 0.0))
    intensities = np.asarray(table["intensities"], dtype=np.float64)
    spectra = np.asarray(table["spectra"], dtype=np.float64) if "spectra" in table else None
    energy = table["offset"] + table["scale"] * np.arange(int(table["channels"])) if spectra is not None else None
    declared = set(table.get("elements", ()))
    if declared:
        names = [[alias for alias in label if alias.split("_", 1)[0] in declared] or label for label in names]
    lined = np.asarray(table.get("significant", np.ones(len(names))), dtype=bool) & np.array([bool(n) for n in names])
    element_sets = [{alias.split("_", 1)[0] for alias in label} for label in names]
    checked = [any("unchecked" not in states.get(alias, ["unchecked"]) for alias in label) for label in names]
    readable = [int(j) for j in _readable(intensities) if lined[j]]
    found = []
    for i in peaks:
        others = set().union(*(element_sets[j] for j in peaks if j != i))
        community, centre = _where_peak_lies(table, i)
        near = max(eds_line_width(centre) / 2, abs(scale) / 2)
        there = [j for j in readable if abs(energies[j] - centre) <= near]
        if not there:  # no line borne out where the net counts lie: a flank or the background's bend
            found.append((i, ""))
            continue
        i = min(there, key=lambda j: (not element_sets[j] & declared, not element_sets[j] & others, not checked[j],
                                      abs(energies[j] - centre)))
        order = sorted(names[i], key=lambda alias: (alias.split("_", 1)[0] not in others,
                                                    "unchecked" in states.get(alias, [])))
        if spectra is not None:  # the element the spectrum's shape around the peak bears out
            first = order[0].split("_", 1)[0]
            candidates = {first: order[0]}  # the preferred element first
            for alias in (alias for j in there for alias in names[j]):
                candidates.setdefault(alias.split("_", 1)[0], alias)
            if declared & set(candidates):  # what the analyst knows stands: the fit picks among those
                candidates = {element: alias for element, alias in candidates.items() if element in declared}
            community = _where_peak_lies(table, i)[0]
            beside = {(alias.split("_", 1)[0], alias.split("_", 1)[1][0]) for j in peaks for alias in names[j]
                      if alias.split("_", 1)[0] in others}
            best = _best_fitting(spectra[community], energy, candidates, beside, centre)
            if best is not None:
                i = min((j for j in there if best in element_sets[j]), key=lambda j: abs(energies[j] - centre))
                order = sorted(names[i], key=lambda alias: alias.split("_", 1)[0] != best)
        found.append((i, "/".join(order)))
    return found


def _best_fitting(spectrum: np.ndarray, energy: np.ndarray, candidates: dict[str, str],
                  beside: set[tuple[str, str]], centre: float) -> str | None:
    """Of the elements ``candidates`` (element -> its line near the peak at ``centre`` keV),
    the one whose family alone, with the named families ``beside`` and a quadratic background,
    fits ``spectrum`` (counts per channel of ``energy``) over the families' lines and 0.3 keV
    around them more than ``LINE_WEIGHT_SLACK`` times better (weighted residual per degree of
    freedom, non-negative amounts) than the first element of ``candidates`` does; ``None``
    where none does, or there is one candidate.  The first candidate is the one the naming
    rules prefer; another replaces it only where its lines fit clearly better: a titanium K
    alpha peak named so, in a spectrum whose L beta lines say barium."""
    if len(candidates) < 2:
        return None
    families = {element: (element, alias.split("_", 1)[1][0]) for element, alias in candidates.items()}
    lines = [e for family in families.values() for e, w in xray_family(*family).values() if w >= 0.05]
    low, high = min(lines) - 0.3, max(lines) + 0.3
    others = [family for family in sorted(beside) if family[0] not in families
              and any(low <= e <= high for e, w in xray_family(*family).values() if w >= 0.05)]
    costs = {element: _fit_cost(spectrum, energy, [family, *others], centre, low, high)
             for element, family in families.items()}
    first, best = next(iter(candidates)), min(costs, key=costs.get)
    return best if np.isfinite(costs[best]) and costs[first] > LINE_WEIGHT_SLACK * costs[best] else None


def _fit_cost(spectrum: np.ndarray, energy: np.ndarray, families: list[tuple[str, str]], centre: float,
              low: float, high: float) -> float:
    """The weighted residual per degree of freedom of ``spectrum`` (counts per channel of
    ``energy``, keV) between ``low`` and ``high`` keV, fitted by non-negative amounts of
    ``families`` (``(element, "K" | "L" | "M")``, :func:`_family_model`) and a quadratic
    background about ``centre``; ``inf`` where the range holds fewer than 8 channels.  Weights
    are Poisson's, floored at half the mean of the positive values (mean spectra per position
    hold fractions of counts)."""
    region = (energy >= low) & (energy <= high)
    if region.sum() < 8:
        return np.inf
    y, x = spectrum[region], energy[region] - centre
    positive = y[y > 0]
    weight = 1 / np.sqrt(np.maximum(y, 0.5 * positive.mean() if positive.size else 1.0))
    columns = [_family_model(*family, energy, 0.0)[0][region] for family in families]
    design = np.column_stack(columns + [np.ones_like(x), x, x**2])
    fit = lsq_linear(design * weight[:, None], y * weight,
                     bounds=([0.0] * len(columns) + [-np.inf] * 3, [np.inf] * design.shape[1]))
    return 2 * fit.cost / max(int(region.sum()) - design.shape[1], 1)


def _fitted_by_stronger(table: dict, found: dict[int, str]) -> dict[int, str]:
    """``found`` (feature -> name) without the peaks that the families named at stronger peaks
    already fit: strongest first, a peak whose element's family, added to theirs, fits the
    community's mean spectrum within three widths of the peak (:func:`_fit_cost`) no more than
    ``LINE_WEIGHT_SLACK`` times better is theirs (a weak line of theirs, or their flank), not a
    new element: molybdenum's L l line named phosphorus, the peaks a window reads on a strong
    line's flank."""
    spectra = np.asarray(table["spectra"], dtype=np.float64)
    energy = table["offset"] + table["scale"] * np.arange(int(table["channels"]))
    strength = np.nan_to_num(np.asarray(table["intensities"], dtype=np.float64), nan=-np.inf).max(axis=0)
    kept: dict[int, str] = {}
    for i in sorted(found, key=lambda i: -strength[i]):
        element, line = found[i].split("/")[0].split("_", 1)
        community, centre = _where_peak_lies(table, i)
        width = eds_line_width(centre)
        low, high = centre - 3 * width, centre + 3 * width
        stronger = sorted({(other, other_line[0]) for other, other_line in
                           (name.split("/")[0].split("_", 1) for name in kept.values())
                           if other != element and any(low <= e <= high for e, w in
                                                       xray_family(other, other_line[0]).values() if w >= 0.01)})
        if stronger:
            theirs = _fit_cost(spectra[community], energy, stronger, centre, low, high)
            with_it = _fit_cost(spectra[community], energy, [*stronger, (element, line[0])], centre, low, high)
            if np.isfinite(with_it) and theirs <= LINE_WEIGHT_SLACK * with_it:
                continue
        kept[i] = found[i]
    return kept


def _eels_marked(table: dict, intensities: np.ndarray, *, top: int) -> list[tuple[int, str]]:
    """:func:`marked` for EELS edges (``intensities``: the significant ones)."""
    energies, units, scale = table["energies"], str(table.get("units", "")), float(table.get("scale", 0.0))
    apart = resolution(units)
    if "onsets" not in table:  # a table written before onsets were recorded
        chosen = strongest(energies, intensities, top=top, apart=apart)
        return [(i, str(table["features"][i])) for i in chosen]
    factor = _unit_factor(units) or 1.0
    risen = confirmed(energies, table["onsets"], units, scale)
    chosen = strongest(energies, intensities, top=top, apart=apart, tail=(EELS_PRE + EELS_POST) * factor,
                       confirmed=set(risen))
    # Edges within a window of each other read one edge: it is named by the one whose onset lies
    # nearest a rise the spectra show, where one is near (O K at 532 eV rather than Sb M5 at
    # 528 eV, which the stronger window named in some noisy spectra).
    onsets = np.asarray(table["onsets"], dtype=np.float64)
    tolerance = max(ONSET_TOLERANCE * factor, 2 * abs(scale))
    readable = _readable(intensities)

    def off(j: int) -> float:
        return float(np.min(np.abs(onsets - energies[j]))) if onsets.size else np.inf

    chosen = [min([int(j) for j in readable if abs(energies[j] - energies[i]) <= apart and off(j) <= tolerance]
                  or [i], key=lambda j: (off(j), j != i)) for i in chosen]
    return [(i, str(table["features"][i])) for i in sorted(set(chosen), key=lambda i: energies[i])]


def resolution(units: str) -> float:
    """How far apart (in ``units``) two features must be to be read from different signal:
    an EDS line's window half-width (``EDS_HALF_WIDTH_KEV``), an EELS edge's window
    (``EELS_POST``); 0 for other units."""
    factor = _unit_factor(units)
    if factor is None:
        return 0.0
    return EDS_HALF_WIDTH_KEV * 1e3 * factor if units.strip().lower() == "kev" else EELS_POST * factor
