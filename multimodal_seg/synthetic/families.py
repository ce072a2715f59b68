"""Families of phantom specimens with random parameters: the yardstick for defaults.

A single phantom rewards whatever happens to suit it; a *family* draws the layout,
the materials, the gradients and the noise at random (from a seed), so a default can
be tuned on some draws and judged on others (held-out seeds).  Every draw is a
specimen with a ground-truth region map, seen as one HAADF image or as a HAADF
image plus an EELS spectrum image on a coarser scan of the same area.

Families
--------
``layouts``
    One image; 3-4 regions of different materials (phase A at two orientations,
    phase B, amorphous) laid out as 2 x 2 blocks, nested islands, layers, thin
    layers or small islands; a slow intensity (thickness) gradient of random
    strength and direction; random dose.
``orientation``
    One image; 3-4 grains of one phase that differ only by their in-plane
    orientation (at least 15 deg apart), plus a gradient.
``gradient``
    One image; 2-3 regions, each under a strong slow intensity gradient (up to
    60 % peak to peak), the case where regions must not be split along the ramp.
``magnification``
    One image, as ``layouts`` (grains of one phase among the layouts) but at a random
    magnification: the lattice period is drawn log-uniformly from
    ``MAGNIFIED_PERIODS`` px (the other image families all have a 10 px period), the
    case where a chip size fixed in pixels holds too few unit cells.
``complementary``
    Image + EELS; four regions in a 2 x 2 arrangement with wavy crossing
    boundaries: the image separates ordered (crystal) from disordered (amorphous)
    material, the EELS separates two compositions; the compositions' Z-contrast
    is far weaker than the texture contrast.  Only fusion finds all four.
``redundant``
    Image + EELS; 3-4 regions that both modalities tell apart.
``blind_eels``
    Image + EELS; the image sees 3-4 regions, the EELS is pure noise (one
    composition everywhere): the joint partition must not be worse than the image's.
``noisy``
    Image + EELS; both see the regions, but one of them (chosen at random) at a
    very low dose.
``thickness``
    4D-STEM alone: the specimen of :func:`multimodal_seg.synthetic.multimodal.multimodal_phantom`
    (two grains of one phase at 0 and 35 deg, a second phase, an amorphous front; new
    shapes each draw) on a 48 x 48 scan, under a thickness wedge of random strength
    (0-60 % peak to peak) and undulations (0-8 % rms), with a random detector size
    (32, 48 or 64 px) and dose (5e3-5e4 electrons per pattern): what a thin specimen
    scatters grows with its thickness, and regions must not be cut along it.

The EELS model: a power-law background ``A E^-3`` (A scales with density) plus
C K, Ti L2,3 and O K edges (saw-tooth or delayed onsets with ``E^-3`` tails)
scaled by composition, blurred by a 1 eV resolution, times the local thickness,
with Poisson noise.  Image regions are rendered by
:func:`multimodal_seg.synthetic.phantoms.render_haadf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import dask.array as da
import numpy as np
from scipy import ndimage

from ..errors import ParameterError
from ..modalities.base import Axis, ModalityData
from .multimodal import multimodal_phantom
from .phantoms import Amorphous, Crystal, render_haadf

#: Image pixel size (nm) and size of image-only draws (px).
PIXEL_SIZE = 0.04
IMAGE_SIZE = 512
#: Multimodal draws: scan positions per side and image pixels per scan position.
SCAN = 48
IMAGE_PER_SCAN = 8
#: EELS energy axis: first channel (eV), dispersion (eV/channel), channels.
ENERGY = (250.0, 1.0, 400)
#: Edge onsets (eV) and the step height of one unit of each element at its onset,
#: relative to the background there.
_EDGES = {"C": (284.0, 1.0, 0.0), "Ti": (456.0, 0.5, 8.0), "O": (532.0, 0.5, 0.0)}
_LATTICE_A, _LATTICE_B = 0.40, 0.34

#: ``magnification`` family: range of the lattice period (px of the phase A lattice).
MAGNIFIED_PERIODS = (6.0, 30.0)

# New families go at the end: a family's index seeds its draws.
FAMILIES = ("layouts", "orientation", "gradient", "complementary", "redundant", "blind_eels", "noisy",
            "magnification", "thickness")
IMAGE_FAMILIES = ("layouts", "orientation", "gradient", "magnification")


@dataclass
class Draw:
    """One specimen drawn from a family.

    Attributes
    ----------
    family, seed
        Where it came from; the same family and seed give the same arrays.
    modalities
        ``{"haadf": ModalityData}`` or ``{"haadf": ..., "eels": ...}``, calibrated (nm, eV).
    truth
        Region map on the grid the partitions are painted on: the image's pixels for
        image-only families, the scan for multimodal ones.
    params
        The random parameters drawn (layout, materials, gradient, doses ...).
    """

    family: str
    seed: int
    modalities: dict[str, ModalityData]
    truth: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- layouts


def _wavy(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """A smooth random curve of ``n`` samples in [-amplitude, amplitude] (a few waves)."""
    x = np.linspace(0, 1, n)
    waves = sum(rng.normal() / (k + 1) * np.sin(2 * np.pi * (k + 1) * x + rng.uniform(0, 2 * np.pi))
                for k in range(3))
    return amplitude * waves / max(np.abs(waves).max(), 1e-9)


def _blob(rng: np.random.Generator, rows: int, cols: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """A star-shaped blob with a wavy edge: mask ``(rows, cols)``; ``centre``, ``radius`` in pixels."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    edge = radius * (1 + sum(0.15 / (k + 1) * rng.normal() * np.cos((k + 2) * angle + rng.uniform(0, 6.3))
                             for k in range(3)))
    return np.hypot(yy - centre[0], xx - centre[1]) < edge


def layout(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A region map ``(rows, cols)`` int16 with ids ``0 .. k-1`` (every id present).

    ``kind``: ``"2x2"``, ``"nested"``, ``"layers"``, ``"thin_layers"``, ``"islands"`` or
    ``"grains"`` (a Voronoi of 3-4 grains).
    """
    yy, xx = np.mgrid[0:rows, 0:cols]
    if kind == "2x2":
        v = cols * (0.5 + _wavy(rng, rows, 0.12))[:, None]
        h = rows * (0.5 + _wavy(rng, cols, 0.12))[None, :]
        truth = 2 * (yy > h) + (xx > v)
    elif kind == "nested":
        truth = np.zeros((rows, cols), int)
        outer = _blob(rng, rows, cols, (rows * rng.uniform(0.4, 0.6), cols * rng.uniform(0.4, 0.6)),
                      min(rows, cols) * rng.uniform(0.28, 0.36))
        truth[outer] = 1
        inner = _blob(rng, rows, cols, (rows * rng.uniform(0.45, 0.55), cols * rng.uniform(0.45, 0.55)),
                      min(rows, cols) * rng.uniform(0.12, 0.16)) & outer
        truth[inner] = 2
    elif kind in ("layers", "thin_layers"):
        n = int(rng.integers(3, 5))
        if kind == "layers":
            widths = rng.uniform(0.7, 1.3, n)
        else:  # one layer of 2-3 chip widths, the others share the rest
            widths = rng.uniform(0.8, 1.2, n)
            thin = int(rng.integers(1, n - 1)) if n > 2 else 1
            widths[thin] = 0
            widths *= (1 - 0.11) / widths.sum()
            widths[thin] = 0.11
        bounds = np.cumsum(widths / widths.sum())[:-1]
        truth = np.zeros((rows, cols), int)
        for b in bounds:
            interface = rows * (b + _wavy(rng, cols, 0.02 if kind == "thin_layers" else 0.04))
            truth += yy > interface[None, :]
    elif kind == "islands":
        truth = np.zeros((rows, cols), int)
        for _ in range(int(rng.integers(3, 6))):
            truth[_blob(rng, rows, cols, (rows * rng.uniform(0.15, 0.85), cols * rng.uniform(0.15, 0.85)),
                        min(rows, cols) * rng.uniform(0.06, 0.09))] = 1
        band = yy > rows * (0.8 + _wavy(rng, cols, 0.03))[None, :]
        truth[band] = 2  # a third region along one edge
    elif kind == "grains":
        n = int(rng.integers(3, 5))
        seeds = np.column_stack([rng.uniform(0.15, 0.85, n) * rows, rng.uniform(0.15, 0.85, n) * cols])
        warp_y = ndimage.gaussian_filter(rng.normal(size=(rows, cols)), rows / 8) * rows * 3
        warp_x = ndimage.gaussian_filter(rng.normal(size=(rows, cols)), rows / 8) * cols * 3
        d = np.stack([np.hypot(yy + warp_y - r, xx + warp_x - c) for r, c in seeds])
        truth = d.argmin(axis=0)
    else:
        raise ParameterError(f"unknown layout {kind!r}", fix="use 2x2, nested, layers, thin_layers, islands or grains",
                             where="layout")
    _, truth = np.unique(truth, return_inverse=True)
    return truth.reshape(rows, cols).astype(np.int16)


# --------------------------------------------------------------------------- materials


def _distinct_angles(rng: np.random.Generator, n: int, period: float, gap: float = 15.0) -> list[float]:
    """``n`` in-plane orientations at least ``gap`` degrees apart modulo the lattice ``period``."""
    while True:
        angles = rng.uniform(0, period, n)
        diffs = np.abs(angles[:, None] - angles[None, :]) % period
        diffs = np.minimum(diffs, period - diffs) + np.eye(n) * period
        if diffs.min() >= gap:
            return [float(a) for a in angles]


def _material_palette(rng: np.random.Generator, n: int, *, amorphous: bool = True) -> list[Crystal | Amorphous]:
    """``n`` distinct materials: phase A at distinct orientations, phase B, amorphous."""
    angles = _distinct_angles(rng, 2, 90.0)
    palette: list[Crystal | Amorphous] = [Crystal(_LATTICE_A, angles[0]), Crystal(_LATTICE_A, angles[1]),
                                          Crystal(_LATTICE_B, float(rng.uniform(0, 60)), True, 0.85)]
    if amorphous:
        palette.append(Amorphous())
    order = rng.permutation(len(palette))[:n]
    return [palette[i] for i in order]


# --------------------------------------------------------------------------- EELS


def eels_spectra(compositions: np.ndarray, *, density: np.ndarray | None = None,
                 energy: tuple[float, float, int] = ENERGY) -> np.ndarray:
    """Noiseless spectra per unit thickness of each composition, ``(k, channels)``.

    ``compositions``: ``(k, 3)`` amounts of C, Ti, O; ``density``: ``(k,)`` relative
    background strength (default 1).
    """
    offset, dispersion, n = energy
    e = offset + dispersion * np.arange(n)
    density = np.ones(len(compositions)) if density is None else np.asarray(density)
    out = []
    for comp, rho in zip(np.asarray(compositions, float), density):
        s = rho * (e / 250.0) ** -3.0
        for amount, (e0, jump, delay) in zip(comp, _EDGES.values()):
            x = np.clip(e - e0, 0, None)
            rise = (e >= e0).astype(float) if delay == 0 else (x / delay) ** 2 / (1 + (x / delay) ** 2)
            s = s + amount * jump * (e0 / 250.0) ** -3.0 * rise * (np.maximum(e, e0) / e0) ** -3.0
        out.append(ndimage.gaussian_filter1d(s, 1.0 / 2.355 / dispersion))
    return np.array(out)


def _eels_cube(truth_scan: np.ndarray, spectra: np.ndarray, thickness: np.ndarray, dose: float,
               rng: np.random.Generator) -> np.ndarray:
    """Poisson counts ``(rows, cols, channels)``: each position's region spectrum times thickness,
    scaled so the mean spectrum holds ``dose`` counts."""
    mean = spectra[truth_scan] * thickness[..., None]
    mean *= dose / mean.sum(axis=-1).mean()
    return rng.poisson(mean).astype(np.float32)


def _thickness(rng: np.random.Generator, rows: int, cols: int, gradient: float) -> np.ndarray:
    """Relative thickness, mean 1: a linear ramp of ``gradient`` peak to peak in a random direction."""
    phi = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:rows, 0:cols]
    ramp = ((yy + 0.5) / rows - 0.5) * math.sin(phi) + ((xx + 0.5) / cols - 0.5) * math.cos(phi)
    return 1.0 + gradient * (ramp - ramp.mean()) / max(ramp.max() - ramp.min(), 1e-9)


# --------------------------------------------------------------------------- modalities


def _image_modality(image: np.ndarray, pixel_size: float) -> ModalityData:
    axes = [Axis("y", image.shape[0], pixel_size, 0.0, "nm"), Axis("x", image.shape[1], pixel_size, 0.0, "nm")]
    return ModalityData("haadf", "image", da.from_array(image), axes, "<phantom family haadf>")


def _eels_modality(cube: np.ndarray, step: float) -> ModalityData:
    offset, dispersion, n = ENERGY
    axes = [Axis("y", cube.shape[0], step, 0.0, "nm"), Axis("x", cube.shape[1], step, 0.0, "nm"),
            Axis("energy", n, dispersion, offset, "eV")]
    return ModalityData("eels", "spectrum", da.from_array(cube, chunks=(16, cube.shape[1], n)), axes,
                        "<phantom family eels>")


def _scan_truth(truth: np.ndarray, factor: int) -> np.ndarray:
    """Majority region of each ``factor x factor`` block: the truth seen on the scan grid."""
    rows, cols = truth.shape[0] // factor, truth.shape[1] // factor
    blocks = truth[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3)
    flat = blocks.reshape(rows, cols, -1)
    n = int(truth.max()) + 1
    counts = np.stack([(flat == k).sum(axis=-1) for k in range(n)])
    return counts.argmax(axis=0).astype(np.int16)


def _render(truth: np.ndarray, materials: list, rng: np.random.Generator, *, dose: float,
            gradient: float, pixel_size: float = PIXEL_SIZE) -> np.ndarray:
    geo, noise = rng.spawn(2)
    return render_haadf(truth, materials, geo, noise, pixel_size=pixel_size, dose=dose,
                        reference_spacing=_LATTICE_A, thickness_gradient=gradient)


# --------------------------------------------------------------------------- families


def _image_family(seed: int, rng: np.random.Generator, family: str) -> Draw:
    size = IMAGE_SIZE
    pixel_size = PIXEL_SIZE
    # (the order of the random draws is kept: it makes each seed's specimen)
    if family == "magnification":
        low, high = np.log(MAGNIFIED_PERIODS)
        pixel_size = _LATTICE_A / float(np.exp(rng.uniform(low, high)))
        kind = str(rng.choice(["2x2", "nested", "layers", "islands", "grains"]))
    elif family == "orientation":
        kind = "grains"
    else:
        kind = str(rng.choice(["2x2", "nested", "layers", "thin_layers", "islands"] if family == "layouts"
                              else ["layers", "nested"]))
    truth = layout(kind, size, size, rng)
    if family == "gradient":
        truth = np.minimum(truth, 2).astype(np.int16)  # 2-3 regions
    n = int(truth.max()) + 1
    if kind == "grains":  # grains of one phase that differ only by orientation
        materials = [Crystal(_LATTICE_A, a) for a in _distinct_angles(rng, n, 90.0)]
    else:
        materials = _material_palette(rng, n)
    gradient = float(rng.uniform(0.4, 0.6) if family == "gradient" else rng.uniform(0.0, 0.3))
    dose = float(rng.uniform(80.0, 400.0))
    image = _render(truth, materials, rng, dose=dose, gradient=gradient, pixel_size=pixel_size)
    params = {"layout": kind, "materials": [repr(m) for m in materials], "gradient": gradient, "dose": dose,
              "lattice_period_px": _LATTICE_A / pixel_size}
    return Draw(family, seed, {"haadf": _image_modality(image, pixel_size)}, truth, params)


def _multimodal_family(seed: int, rng: np.random.Generator, family: str) -> Draw:
    size = SCAN * IMAGE_PER_SCAN
    gradient = float(rng.uniform(0.0, 0.3))
    eels_dose = float(rng.uniform(2e4, 1e5))
    image_dose = float(rng.uniform(120.0, 400.0))
    if family == "complementary":
        truth = layout("2x2", size, size, rng)  # 0, 1 | 2, 3: columns differ in order, rows in chemistry
        ordered = Crystal(_LATTICE_A, float(rng.uniform(0, 90)))
        # composition X on top, Y below; Y's columns 4 % heavier: far weaker than the texture contrast
        materials = [ordered, Amorphous(), Crystal(ordered.spacing, ordered.angle, False, 1.04),
                     Amorphous(weight=0.70 * 1.04)]
        x, y = [0.1, 1.0, 2.0], [0.1, 1.0 + rng.uniform(0.25, 0.5), 2.0 - rng.uniform(0.3, 0.6)]
        compositions = np.array([x, x, y, y])
        density = np.ones(4)  # the EELS sees the chemistry only, not the order
    else:
        kind = str(rng.choice(["layers", "nested", "2x2"]))
        truth = layout(kind, size, size, rng)
        n = int(truth.max()) + 1
        materials = _material_palette(rng, n)
        base = np.array([0.1, 1.0, 2.0])
        compositions = np.array([base + rng.uniform(-0.6, 0.6, 3) * [0.1, 0.6, 1.0] for _ in range(n)])
        compositions = np.clip(compositions, 0.02, None)
        density = np.array([0.8 if isinstance(m, Amorphous) else 1.0 for m in materials])
        if family == "blind_eels":
            compositions[:] = compositions[0]
            density[:] = 1.0
        elif family == "noisy":
            if rng.uniform() < 0.5:
                eels_dose = float(rng.uniform(1.5e3, 3e3))
            else:
                image_dose = float(rng.uniform(8.0, 15.0))
    image = _render(truth, materials, rng, dose=image_dose, gradient=gradient)
    truth_scan = _scan_truth(truth, IMAGE_PER_SCAN)
    spectra = eels_spectra(compositions, density=density)
    thickness = _thickness(np.random.default_rng([seed, 7]), SCAN, SCAN, gradient)
    cube = _eels_cube(truth_scan, spectra, thickness, eels_dose, np.random.default_rng([seed, 11]))
    modalities = {"haadf": _image_modality(image, PIXEL_SIZE),
                  "eels": _eels_modality(cube, PIXEL_SIZE * IMAGE_PER_SCAN)}
    params = {"materials": [repr(m) for m in materials], "compositions": compositions.round(3).tolist(),
              "gradient": gradient, "image_dose": image_dose, "eels_dose": eels_dose}
    return Draw(family, seed, modalities, truth_scan, params)


def _diffraction_family(seed: int, rng: np.random.Generator, family: str) -> Draw:
    params = {"thickness_wedge": float(rng.uniform(0.0, 0.6)), "thickness_wiggle": float(rng.uniform(0.0, 0.08)),
              "pattern_size": int(rng.choice([32, 48, 64])), "dose_diffraction": float(10 ** rng.uniform(3.7, 4.7))}
    phantom = multimodal_phantom((SCAN, SCAN), seed=seed, **params)
    return Draw(family, seed, {"diffraction": phantom.modalities()["diffraction"]}, phantom.truth, params)


_DRAWERS: dict[str, Callable[[int, np.random.Generator, str], Draw]] = {
    **dict.fromkeys(IMAGE_FAMILIES, _image_family),
    **dict.fromkeys(("complementary", "redundant", "blind_eels", "noisy"), _multimodal_family),
    "thickness": _diffraction_family,
}


def draw(family: str, seed: int) -> Draw:
    """One specimen of ``family`` (see the module docstring), reproducible from ``seed``.

    Raises
    ------
    ParameterError
        Unknown family or a negative seed.
    """
    if family not in _DRAWERS:
        raise ParameterError(f"unknown phantom family {family!r}", fix=f"use one of {', '.join(FAMILIES)}",
                             where="family")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}", fix="e.g. seed=0", where="seed")
    rng = np.random.default_rng([int(seed), FAMILIES.index(family)])
    return _DRAWERS[family](int(seed), rng, family)
