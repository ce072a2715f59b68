"""Intensities of known X-ray lines (EDS) and ionisation edges (EELS) in community spectra.

Line and edge energies come from exSpy's element database (HyperSpy's EELS/EDS package),
not from a table of our own.  Intensities are net counts per scan position:

* EDS line at ``E0``: counts within ``w`` channels of ``E0`` minus the mean level of two
  ``w``-channel side windows (``w`` covers 70 eV, about a detector's resolution, and at
  least one channel).
* EELS edge at onset ``E0``: counts in ``[E0, E0 + 30 eV]`` above a power law ``A E^-r``
  fitted to ``[E0 - 40 eV, E0 - 5 eV]``.

Lines closer than the detector resolution are not told apart: every candidate within
the window is listed with the same counts, so read the table with the specimen in mind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..modalities.base import Axis

#: X-ray lines and edges considered (the strongest families).
XRAY_LINES = ("Ka", "La", "Ma")
EELS_EDGES = ("K", "L3", "M5")
EDS_HALF_WIDTH_KEV = 0.07
EELS_PRE, EELS_GAP, EELS_POST = 40.0, 5.0, 30.0


@dataclass(frozen=True)
class SpectralFeature:
    """A line or edge: ``label`` like ``"Fe_Ka"`` or ``"O_K"``, energy in the axis units."""

    label: str
    energy: float


def _unit_factor(units: str) -> float | None:
    """Axis units per eV (``keV`` -> 1e-3), ``None`` when not an energy."""
    return {"ev": 1.0, "kev": 1e-3}.get(units.strip().lower())


def known_features(axis: Axis) -> tuple[str, list[SpectralFeature]]:
    """Lines (EDS, axis in keV) or edges (EELS, axis in eV) inside the energy range.

    Returns
    -------
    ``("eds" | "eels" | "none", features)``.
    """
    with warnings.catch_warnings():
        # exSpy 0.3 imports HyperSpy 2.5's lazy signals from their deprecated paths (HyperSpy's
        # VisibleDeprecationWarning, a UserWarning): about the two packages' versions, nothing a
        # user of this run can act on, and it cluttered every run's warnings
        warnings.filterwarnings("ignore", message="Importing `Lazy")
        from exspy.material import elements

    factor = _unit_factor(axis.units)
    if factor is None:
        return "none", []
    low, high = axis.offset, axis.offset + axis.scale * (axis.size - 1)
    mode = "eds" if axis.units.strip().lower() == "kev" else "eels"
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
              else EELS_PRE * factor)
    post = margin if mode == "eds" else EELS_POST * factor
    if mode == "eds":
        # an EDS detector's noise (zero-energy) peak sits at 0 keV: lines near it are read off its
        # tail, as are exSpy's "Ka" of H and He (their ionisation energies, 1.4 and 2.5 eV: no
        # X-ray line), so 0 keV is an edge of the usable range like the axis' own
        low = max(low, 0.0)
    return mode, sorted((f for f in found if low + margin <= f.energy <= high - post),
                        key=lambda f: f.energy)


def _eds_intensity(spectra: np.ndarray, energy: np.ndarray, e0: float, half: int) -> np.ndarray:
    """Net counts in ``half`` channels either side of ``e0`` above a linear background
    taken from ``half``-channel windows just outside."""
    centre = int(np.argmin(np.abs(energy - e0)))
    n = spectra.shape[1]
    inside = slice(max(centre - half, 0), min(centre + half + 1, n))
    left = slice(max(centre - 2 * half - 1, 0), max(centre - half, 0))
    right = slice(min(centre + half + 1, n), min(centre + 2 * half + 2, n))
    sides = [spectra[:, side].mean(axis=1) for side in (left, right) if side.stop > side.start]
    background = np.mean(sides, axis=0) if sides else np.zeros(len(spectra))
    return spectra[:, inside].sum(axis=1) - background * (inside.stop - inside.start)


def _eels_intensity(spectra: np.ndarray, energy: np.ndarray, e0: float, factor: float) -> np.ndarray:
    pre = (energy >= e0 - EELS_PRE * factor) & (energy <= e0 - EELS_GAP * factor)
    post = (energy >= e0) & (energy <= e0 + EELS_POST * factor)
    out = np.zeros(len(spectra))
    for i, spectrum in enumerate(spectra):
        counts = np.clip(spectrum[pre], 1e-9, None)
        slope, intercept = np.polyfit(np.log(energy[pre]), np.log(counts), 1)
        background = np.exp(intercept) * energy[post] ** slope
        out[i] = (spectrum[post] - background).sum()
    return out


def _merge_aliases(features: list[SpectralFeature], energy: np.ndarray) -> list[SpectralFeature]:
    """One feature per channel: lines that fall in the same channel cannot be told apart,
    so they are listed together (``"S_Ka/Mo_La/Pb_Ma"``)."""
    groups: dict[int, list[SpectralFeature]] = {}
    for feature in features:
        groups.setdefault(int(np.argmin(np.abs(energy - feature.energy))), []).append(feature)
    return [SpectralFeature("/".join(f.label for f in group), float(np.mean([f.energy for f in group])))
            for _, group in sorted(groups.items())]


def feature_intensities(mean_spectra: np.ndarray, axis: Axis) -> tuple[list[SpectralFeature], np.ndarray]:
    """Net intensity of every known line or edge in each community's mean spectrum.

    Parameters
    ----------
    mean_spectra
        ``(n_communities, channels)`` mean counts per scan position.
    axis
        The calibrated energy axis (``keV``: EDS lines; ``eV``: EELS edges).

    Returns
    -------
    The features and ``(n_communities, n_features)`` net counts per position.
    """
    mode, features = known_features(axis)
    energy = axis.offset + axis.scale * np.arange(axis.size)
    features = _merge_aliases(features, energy)
    spectra = np.asarray(mean_spectra, dtype=np.float64)
    factor = _unit_factor(axis.units) or 1.0
    half = max(1, int(np.ceil(EDS_HALF_WIDTH_KEV * 1e3 * factor / abs(axis.scale))))
    columns = [(_eds_intensity(spectra, energy, f.energy, half) if mode == "eds"
                else _eels_intensity(spectra, energy, f.energy, factor)) for f in features]
    return features, np.column_stack(columns) if columns else np.zeros((len(spectra), 0))


def strongest(energies: list[float], intensities: np.ndarray, *, top: int = 12,
              floor: float = 0.05, apart: float = 0.0) -> list[int]:
    """Indices (in order of energy) of up to ``top`` features whose largest intensity over
    communities is at least ``floor`` times the strongest one's: absent elements drop out.
    A feature within ``apart`` (energy units) of a stronger one kept is left out: it is
    read from the same peak (``apart``: :func:`resolution`)."""
    if len(energies) == 0:
        return []
    peak = np.asarray(intensities).max(axis=0)
    keep = np.flatnonzero(peak >= floor * peak.max()) if peak.max() > 0 else np.array([], int)
    chosen: list[int] = []
    for index in keep[np.argsort(peak[keep], kind="stable")[::-1]]:
        if len(chosen) == top:
            break
        if all(abs(energies[index] - energies[other]) > apart for other in chosen):
            chosen.append(int(index))
    return sorted(chosen, key=lambda i: energies[i])


def marked(table: dict, *, top: int) -> list[int]:
    """The features of a run's line table (``{"features", "energies", "units", "intensities"}``)
    that figures and the report name: :func:`strongest`, one per peak."""
    return strongest(table["energies"], np.asarray(table["intensities"]), top=top,
                     apart=resolution(str(table.get("units", ""))))


def resolution(units: str) -> float:
    """How far apart (in ``units``) two features must be to be read from different signal:
    an EDS line's window half-width (``EDS_HALF_WIDTH_KEV``), an EELS edge's window
    (``EELS_POST``); 0 for other units."""
    factor = _unit_factor(units)
    if factor is None:
        return 0.0
    return EDS_HALF_WIDTH_KEV * 1e3 * factor if units.strip().lower() == "kev" else EELS_POST * factor
