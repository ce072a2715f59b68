"""One synthetic specimen seen by three modalities, with one ground truth.

The specimen is the order-disorder transition of :func:`multimodal_seg.synthetic.phantoms.haadf_phantom`
(two grains of a square phase A at different orientations, a hexagonal phase B,
an amorphous irradiation-damaged front).  It is rendered as

* a HAADF-STEM image at a fine pixel size (the phantom rendered noiseless,
  times the specimen's thickness map, mean 200 counts/px, then Poisson noise
  and 2 counts of read noise; its truth map defines the specimen),
* an EELS spectrum image ``(rows, cols, channels)`` on a coarser scan grid,
* a 4D-STEM data set ``(rows, cols, qy, qx)`` on the same scan grid,

so that segmentations of each modality, and of their fusion, can be scored
against one region map.

Specimen chemistry (EELS)
-------------------------
Phase A is a titanium oxide with a little carbon (Ti : O : C = 1 : 2 : 0.1),
phase B a titanium oxycarbide (Ti : O : C = 1.2 : 0.6 : 0.84, denser), the
amorphous layer is irradiation-damaged phase A: same composition at 0.8x the
density, Ti partly reduced (Ti L2,3 edge 1.5 eV lower, crystal-field splitting
of the white lines smeared, L3/L2 white-line ratio 1.0 instead of 0.8) and a
smeared O K near-edge structure.  The two phase-A grains have the *same*
spectrum: chemistry cannot see orientation.

Every spectrum is single scattering (as after Fourier-log deconvolution): a
power-law background ``A E^-r`` (``r = 3``) plus element edges, each a
saw-tooth (K) or delayed (L2,3 continuum) onset with an ``E^-3`` tail plus
Lorentzian near-edge peaks (white lines, pi*/sigma*, t2g/eg), convolved with a
Gaussian energy resolution of 1.0 eV FWHM and integrated over each channel.
All signals scale with the local relative thickness ``t`` (a mild ramp plus
smooth undulations, mean 1), so ``A`` varies mildly with thickness.

Diffraction (4D-STEM)
---------------------
Nano-beam electron diffraction at 200 kV (lambda = 2.508 pm) with a
convergence semi-angle of 1.5 mrad: the direct beam is a disc of radius
``alpha / lambda = 0.60 nm^-1``; crystalline positions show Bragg discs of the
same radius at every reciprocal-lattice vector ``g`` of the local lattice
(phase A: square, a = 0.40 nm, at 0 deg and at 35 deg, first-order spots at
|g| = 2.50 nm^-1; phase B: hexagonal, a = 0.34 nm, at 15 deg: (10) planes
0.294 nm apart, so six spots at |g| = 3.40 nm^-1 and 45 + 60 k deg), weighted
by ``exp(-B g^2)`` (B = 0.06 nm^2: atomic form factor times Debye-Waller
factor), up to the detector edge (second and third orders); amorphous positions show two diffuse rings (at
``1 / d_nn`` with ``d_nn = 0.375 nm``, the mean nearest-neighbour distance of
the HAADF phantom's amorphous sites, and at 1.85x that) and no spots.  Thermal
diffuse scattering ``f^2 (1 - exp(-2M))`` adds a mild smooth background.  The
probe (Airy FWHM 0.51 lambda / alpha = 0.85 nm) averages the region map over
its footprint, so patterns near boundaries are mixtures.  A Gaussian blur
(source size and detector point spread) softens every disc; each pattern is
displaced by a small descan error (a linear ramp over the scan plus jitter,
always < 1 px) by bilinear interpolation, which moves every disc's centroid by
exactly that shift.  The detector calibration ``q_scale`` puts ``|q| = 7.5
nm^-1`` at ``pattern_size / 2`` px from the pattern centre ``(pattern_size / 2,
pattern_size / 2)``.

Noise and determinism
---------------------
Both cubes get Poisson noise.  Random numbers come from
``numpy.random.SeedSequence(seed, spawn_key=(stream, row))``, one stream per
modality and scan row, so a render done in chunks of any size is bit-identical
to an in-memory one.  With ``out`` the cubes are written to a zarr group
``chunk_rows`` scan rows at a time, so memory stays at about one chunk.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage

from ..errors import OutputError, ParameterError
from ..modalities.base import Axis, ModalityData
from .phantoms import AMORPHOUS_DENSITY, ORIENTATION_B, check_positive, haadf_phantom

try:  # a dependency of scikit-learn, so normally present
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = ["MultimodalPhantom", "multimodal_phantom"]

# --- specimen (shared with the HAADF phantom) --------------------------------
_LATTICE_A = 0.40  # nm, phase A square lattice parameter
_LATTICE_B = 0.34  # nm, phase B hexagonal lattice parameter (column distance)
_ROTATION = 35.0  # deg, grain 1 relative to grain 0
_N_REGIONS = 4
_AMORPHOUS_NN = 0.375  # nm, mean nearest-neighbour distance of the HAADF amorphous sites
_THICKNESS_RAMP = 0.20  # peak-to-peak fractional thickness change across the field
_THICKNESS_WIGGLE = 0.03  # rms of smooth thickness undulations

# --- EELS ---------------------------------------------------------------------
_BG_EXPONENT = 3.0  # r in A E^-r
_BG_REF = 250.0  # eV, energy at which A is quoted
_EDGE_TAIL = 3.0  # edge continua decay as (E / E0)^-3 above threshold
_RESOLUTION_FWHM = 1.0  # eV, energy resolution (zero-loss peak width)
_AMORPHOUS_SHIFT = -1.5  # eV, Ti L2,3 chemical shift of the damaged (reduced) layer
_EDGE_C_K = 284.0  # eV, thresholds (onsets)
_EDGE_TI_L3 = 456.0
_EDGE_TI_L2 = 461.8
_EDGE_O_K = 532.0
# Relative atoms per unit volume (Ti, O, C) and background prefactor per region.
_COMPOSITION = np.array(
    [
        [1.0, 2.0, 0.10],  # phase A grain 0 (TiO2 with a little C)
        [1.0, 2.0, 0.10],  # phase A grain 1: same chemistry
        [1.2, 0.6, 0.84],  # phase B, titanium oxycarbide, denser
        [1.0 * AMORPHOUS_DENSITY, 2.0 * AMORPHOUS_DENSITY, 0.10 * AMORPHOUS_DENSITY],
    ]
)
_BACKGROUND = np.array([1.0, 1.0, 1.1, AMORPHOUS_DENSITY])
# Continuum step height per atom, as a fraction of phase A's background at the edge.
_JUMP = {"C": 1.0, "Ti": 0.50, "O": 0.50}

# --- 4D-STEM --------------------------------------------------------------------
_BEAM_KV = 200.0
_WAVELENGTH = 1.226426 / math.sqrt(_BEAM_KV * 1e3 * (1.0 + 0.978476e-6 * _BEAM_KV * 1e3))  # nm
_CONVERGENCE = 1.5e-3  # rad, probe convergence semi-angle
_Q_EDGE = 7.5  # nm^-1 at pattern_size / 2 px from the centre
_Q_ALL = 12.0  # nm^-1, reciprocal-lattice vectors counted in the normalisation
_B_FORM = 0.04  # nm^2, atomic form factor f(q)^2 ~ exp(-B_FORM q^2)
_B_DW = 0.02  # nm^2, Debye-Waller exponent 2M = B_DW q^2
_SOURCE_BLUR = 0.08  # nm^-1, Gaussian sigma from finite source size / partial coherence
_DETECTOR_PSF = 0.5  # px, Gaussian sigma of the detector point spread
# Per unit relative thickness: fraction of the beam into Bragg discs (or the
# amorphous rings), into thermal diffuse scattering, and to angles beyond the
# detector (HAADF angles; scaled like the HAADF contrast of each region).
_ELASTIC = np.array([0.22, 0.22, 0.26, 0.30])
_TDS = np.array([0.05, 0.05, 0.05, 0.04])
_LOSS = 0.03 * np.array([1.0, 1.0, 1.35, 0.56])
_DESCAN_RAMP = 0.35  # px, systematic descan error at the field edge (linear, random direction)
_DESCAN_JITTER = 0.08  # px, rms position-to-position jitter
_DESCAN_MAX = 0.6  # px, cap per axis (so |shift| < 0.85 px)

# Random streams (spawn keys): geometry maps, EELS noise rows, diffraction noise rows.
_STREAM_MAPS, _STREAM_EELS, _STREAM_DIFF, _STREAM_HAADF = 100, 101, 102, 103
_HAADF_READ_NOISE = 2.0  # counts, Gaussian read noise of the HAADF detector

_REGION_NAMES = [
    "grain A (square, 0 deg)",
    f"grain A (square, {_ROTATION:g} deg)",
    "phase B (hexagonal)",
    "amorphous (irradiation-damaged)",
]


@dataclass
class MultimodalPhantom:
    """One specimen as HAADF image, EELS spectrum image and 4D-STEM, with its truth.

    Attributes
    ----------
    haadf
        ``(H, W)`` float32 counts, HAADF image at ``image_pixel_size``;
        ``H = rows * image_oversample``.
    eels
        ``(rows, cols, channels)`` float32 counts on the scan grid; a dask
        array read from zarr when the phantom was written to disk.
        Channel ``i`` is centred at ``energy_axis[0] + i * energy_axis[1]``.
    diffraction
        ``(rows, cols, qy, qx)`` float32 counts on the scan grid (dask when on
        disk).  Detector pixel ``(i, j)`` lies at
        ``q = ((i - c) * q_scale, (j - c) * q_scale)`` nm^-1 with
        ``c = pattern_size / 2`` (plus the descan shift).
    truth
        ``(rows, cols)`` int16 region id on the scan grid: the majority region
        of each scan cell of ``truth_image``.
    truth_image
        ``(H, W)`` int16 region id on the HAADF grid.
    region_names
        Name of each region id.
    image_pixel_size
        nm per HAADF pixel.
    scan_step
        nm per scan position, ``image_oversample * image_pixel_size``.
    energy_axis
        ``(offset, scale, units)``: energy of channel 0 and eV per channel.
    q_scale
        Detector calibration in nm^-1 per detector pixel.
    description
        What the regions are and the physics parameters, in words.
    thickness
        ``(rows, cols)`` float32 relative specimen thickness (mean 1).
    descan
        ``(rows, cols, 2)`` float32 descan shift of each pattern in detector
        pixels (row, col).
    metadata
        JSON-able physics parameters (beam, lattices, edges, compositions ...).
    """

    haadf: np.ndarray
    eels: np.ndarray | da.Array
    diffraction: np.ndarray | da.Array
    truth: np.ndarray
    truth_image: np.ndarray
    region_names: list[str]
    image_pixel_size: float
    scan_step: float
    energy_axis: tuple[float, float, str]
    q_scale: float
    description: str = ""
    thickness: np.ndarray | None = None
    descan: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def modalities(self) -> dict[str, ModalityData]:
        """The three modalities, calibrated, ready for ``segment()``: ``haadf``, ``eels``, ``diffraction``."""
        def scan_axes(shape: tuple[int, ...], step: float) -> list[Axis]:
            return [Axis("y", shape[0], step, 0.0, "nm"), Axis("x", shape[1], step, 0.0, "nm")]

        offset, scale, units = self.energy_axis
        scan = self.eels.shape[:2]
        detector = self.diffraction.shape[2:]
        return {
            "haadf": ModalityData("haadf", "image", da.asarray(self.haadf),
                                  scan_axes(self.haadf.shape, self.image_pixel_size), "<phantom haadf>"),
            "eels": ModalityData("eels", "spectrum", da.asarray(self.eels),
                                 [*scan_axes(scan, self.scan_step),
                                  Axis("energy", self.eels.shape[2], scale, offset, units)], "<phantom eels>"),
            "diffraction": ModalityData(
                "diffraction", "diffraction", da.asarray(self.diffraction),
                [*scan_axes(scan, self.scan_step),
                 Axis("qy", detector[0], self.q_scale, -detector[0] / 2 * self.q_scale, "1/nm"),
                 Axis("qx", detector[1], self.q_scale, -detector[1] / 2 * self.q_scale, "1/nm")],
                "<phantom 4D-STEM>"),
        }


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _int(value: Any, name: str, lo: int, fix: str, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}", fix=fix, where=name)
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ParameterError(f"{name} must be {rng}, got {v}", fix=fix, where=name)
    return v


def _fraction(value: Any, name: str, below: float, example: str) -> float:
    """A real number in ``[0, below)``, or a :class:`ParameterError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= float(value) < below:
        raise ParameterError(f"{name} must be a number in [0, {below:g}), got {value!r}", fix=f"use {example}",
                             where=name)
    return float(value)


def _validate(
    scan_shape: Any,
    seed: Any,
    image_oversample: Any,
    n_channels: Any,
    pattern_size: Any,
    dose_eels: Any,
    dose_diffraction: Any,
    chunk_rows: Any,
    image_pixel_size: Any,
    energy_offset: Any,
    dispersion: Any,
) -> dict[str, Any]:
    try:
        if isinstance(scan_shape, (str, bytes)) or len(scan_shape) != 2:
            raise TypeError
        rows, cols = (_int(s, "scan_shape", 8, "") for s in scan_shape)
    except (TypeError, ParameterError):
        raise ParameterError(
            f"scan_shape must be two integers (rows, cols), each >= 8, got {scan_shape!r}",
            fix="pass e.g. scan_shape=(64, 64)",
            where="scan_shape",
        ) from None
    seed = _int(seed, "seed", 0, "pass a non-negative integer, e.g. seed=0")
    os_ = _int(image_oversample, "image_oversample", 1, "use e.g. image_oversample=8", hi=64)
    n_ch = _int(n_channels, "n_channels", 16, "use e.g. n_channels=512")
    n_pat = _int(
        pattern_size,
        "pattern_size",
        16,
        "use at least 16 detector pixels per side (64-256 is typical)",
        hi=1024,
    )
    c_rows = _int(chunk_rows, "chunk_rows", 1, "use e.g. chunk_rows=8")
    p = {
        "rows": rows,
        "cols": cols,
        "seed": seed,
        "os": os_,
        "n_channels": n_ch,
        "pattern_size": n_pat,
        "chunk_rows": min(c_rows, rows),
        "dose_eels": check_positive(dose_eels, "dose_eels", "give the mean counts per spectrum, e.g. 1e5"),
        "dose_diffraction": check_positive(
            dose_diffraction, "dose_diffraction", "give the electrons per pattern, e.g. 2e4"
        ),
        "ps": check_positive(image_pixel_size, "image_pixel_size", "give the HAADF pixel size in nm, e.g. 0.04"),
        "dispersion": check_positive(dispersion, "dispersion", "give the eV per channel, e.g. 1.0"),
    }
    try:
        e0 = float(energy_offset)
    except (TypeError, ValueError):
        e0 = float("nan")
    if not math.isfinite(e0) or e0 <= 0:
        raise ParameterError(
            f"energy_offset must be a positive energy in eV, got {energy_offset!r}",
            fix="use e.g. energy_offset=250",
            where="energy_offset",
        )
    p["energy_offset"] = e0
    # Phase B's (10) planes are the finest spacing the HAADF image must resolve.
    d_min = _LATTICE_B * math.sqrt(3.0) / 2.0
    if p["ps"] > d_min / 2.5:
        raise ParameterError(
            f"image_pixel_size {p['ps']:g} nm cannot resolve lattice planes {d_min:.3f} nm apart",
            fix=f"use image_pixel_size <= {d_min / 2.5:.3f} nm, e.g. 0.04",
            where="image_pixel_size",
        )
    if min(rows, cols) * os_ < 64:
        raise ParameterError(
            f"the HAADF image would be {rows * os_}x{cols * os_} px, below the 64 px the "
            "phantom needs for four regions",
            fix=f"use image_oversample >= {math.ceil(64 / min(rows, cols))} or a larger scan_shape",
            where="scan_shape",
        )
    if min(rows, cols) * os_ * p["ps"] < 6 * _LATTICE_A:
        raise ParameterError(
            f"the field of view ({min(rows, cols) * os_ * p['ps']:.2f} nm) holds fewer than "
            "6 unit cells along its short axis",
            fix="use a larger scan_shape, image_oversample or image_pixel_size",
            where="scan_shape",
        )
    if p["dispersion"] > 2.0:
        raise ParameterError(
            f"dispersion {p['dispersion']:g} eV/channel cannot resolve the Ti L3/L2 white lines 5.8 eV apart",
            fix="use at most 2 eV per channel (add channels to keep the window)",
            where="dispersion",
        )
    lo, hi = _EDGE_C_K - 25.0, _EDGE_O_K + 30.0  # pre-edge fit window .. post-edge window
    e_end = e0 + (n_ch - 1) * p["dispersion"]
    if e0 > lo or e_end < hi:
        raise ParameterError(
            f"the energy window {e0:g}-{e_end:g} eV does not cover the C K, Ti L2,3 and "
            f"O K edges with their pre-/post-edge windows ({lo:g}-{hi:g} eV)",
            fix=(
                f"use energy_offset <= {lo:g} and n_channels * dispersion >= {hi - min(e0, lo):g} eV, "
                "e.g. 512 channels at 1 eV from 250 eV"
            ),
            where="energy_offset" if e0 > lo else "n_channels",
        )
    return p


def _check_out(out: str | Path, overwrite: bool) -> Path:
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise ParameterError(
                f"{path} exists and is not a folder",
                fix="choose a new path for the zarr group",
                where="out",
            )
        if any(path.iterdir()):
            if not overwrite:
                raise ParameterError(
                    f"{path} exists and is not empty",
                    fix="choose a new path, or pass overwrite=True to replace a zarr group",
                    where="out",
                )
            if not (path / "zarr.json").exists():
                raise ParameterError(
                    f"{path} is not a zarr group; refusing to delete it",
                    fix="choose a new path for the zarr group",
                    where="out",
                )
            shutil.rmtree(path)
    return path


# ---------------------------------------------------------------------------
# maps on the scan grid
# ---------------------------------------------------------------------------


def _row_rng(seed: int, stream: int, row: int) -> np.random.Generator:
    """Generator for one scan row of one stream, independent of chunking."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, row)))


def _cell_fractions(
    truth_image: np.ndarray, rows: int, cols: int, os_: int, weight: np.ndarray | None = None
) -> np.ndarray:
    """Area fraction of each region in each scan cell, float64 ``(rows, cols, 4)``;
    with ``weight`` ``(H, W)`` the mean of ``weight`` over each region's part of the cell."""
    frac = np.empty((rows, cols, _N_REGIONS))
    for k in range(_N_REGIONS):
        m = truth_image == k
        m = m if weight is None else np.where(m, weight, 0.0)
        frac[..., k] = m.reshape(rows, os_, cols, os_).mean(axis=(1, 3))
    return frac


def _maps(seed: int, rows: int, cols: int, os_: int, wedge: float = _THICKNESS_RAMP,
          wiggle: float = _THICKNESS_WIGGLE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Specimen thickness and descan error.

    Returns the relative thickness on the HAADF grid ``(rows * os_, cols * os_)``
    (mean 1), its mean over each scan cell ``(rows, cols)``, and the descan
    shift ``(rows, cols, 2)`` in detector px (row, col).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_MAPS,)))
    h, w = rows * os_, cols * os_
    yy = (np.arange(h) + 0.5) / h - 0.5
    xx = (np.arange(w) + 0.5) / w - 0.5
    # Thickness: a linear wedge along a random direction plus smooth undulations
    # (drawn on the scan grid, spline-upsampled to the image grid).
    phi = rng.uniform(0, 2 * np.pi)
    ramp = math.sin(phi) * yy[:, None] + math.cos(phi) * xx[None, :]
    ramp *= wedge / (ramp.max() - ramp.min())
    wig = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), max(rows, cols) / 8, mode="wrap")
    wig *= wiggle / (wig.std() + 1e-12)
    if os_ > 1:
        wig = ndimage.zoom(wig, os_, order=3, mode="grid-wrap", grid_mode=True)
    fine = 1.0 + ramp + wig
    fine /= fine.mean()
    cell = fine.reshape(rows, os_, cols, os_).mean(axis=(1, 3))
    # Descan: a systematic linear error (random direction per axis) plus jitter.
    ys = (np.arange(rows) + 0.5) / rows - 0.5
    xs = (np.arange(cols) + 0.5) / cols - 0.5
    psi = rng.uniform(0, 2 * np.pi, 2)
    descan = np.stack(
        [_DESCAN_RAMP * 2 * (math.sin(a) * ys[:, None] + math.cos(a) * xs[None, :]) for a in psi],
        axis=-1,
    )
    descan += rng.normal(0, _DESCAN_JITTER, descan.shape)
    np.clip(descan, -_DESCAN_MAX, _DESCAN_MAX, out=descan)
    return fine.astype(np.float32), cell, descan


# ---------------------------------------------------------------------------
# EELS
# ---------------------------------------------------------------------------


def _lorentz(e: np.ndarray, e0: float, centre: float, fwhm: float, area: float) -> np.ndarray:
    """Near-edge peak: a Lorentzian (final-state lifetime) of ``area`` eV x counts,
    cut off below the edge threshold ``e0`` (no empty states there) by a
    0.2 eV-wide step (core-hole lifetime)."""
    g = fwhm / 2.0
    step = 0.5 * (1.0 + np.tanh((e - e0) / 0.2))
    return step * area * (g / np.pi) / ((e - centre) ** 2 + g * g)


def _onset(e: np.ndarray, e0: float, delay: float) -> np.ndarray:
    """Edge continuum shape: 0 below ``e0``; a saw-tooth step (``delay = 0``) or
    a delayed rise over ``delay`` eV; then an ``(E / e0)^-3`` tail."""
    x = np.clip(e - e0, 0.0, None)
    rise = np.where(e >= e0, 1.0, 0.0) if delay == 0 else (x / delay) ** 2 / (1.0 + (x / delay) ** 2)
    return rise * (np.maximum(e, e0) / e0) ** -_EDGE_TAIL


def _bg_a(e: float) -> float:
    """Phase A's background at ``e`` (unit prefactor)."""
    return (e / _BG_REF) ** -_BG_EXPONENT


def _region_spectrum(e: np.ndarray, region: int) -> np.ndarray:
    """Noiseless single-scattering spectrum of one region per unit thickness,
    before the energy resolution, on the fine grid ``e`` (eV)."""
    ti, o, c = _COMPOSITION[region]
    amorphous = region == 3
    s = _BACKGROUND[region] * (e / _BG_REF) ** -_BG_EXPONENT

    # C K: saw-tooth edge; pi*/sigma* of disordered C (A, amorphous) or carbide (B).
    jc = _JUMP["C"] * _bg_a(_EDGE_C_K) * c
    s += jc * _onset(e, _EDGE_C_K, 0.0)
    if region == 2:
        s += _lorentz(e, _EDGE_C_K, _EDGE_C_K + 3.0, 2.5, 1.5 * jc) + _lorentz(
            e, _EDGE_C_K, _EDGE_C_K + 12.0, 6.0, 3.0 * jc
        )
    else:
        s += _lorentz(e, _EDGE_C_K, _EDGE_C_K + 1.3, 1.0, 0.8 * jc) + _lorentz(
            e, _EDGE_C_K, _EDGE_C_K + 8.0, 5.0, 3.0 * jc
        )

    # Ti L2,3: delayed continuum (2:1 L3:L2 occupancy) plus white lines; the
    # damaged layer is reduced: edge 1.5 eV lower, crystal-field (t2g/eg) splitting
    # smeared into one broad line per edge, L3/L2 white-line ratio 1.0 not 0.8.
    shift = _AMORPHOUS_SHIFT if amorphous else 0.0
    l3, l2 = _EDGE_TI_L3 + shift, _EDGE_TI_L2 + shift
    jt = _JUMP["Ti"] * _bg_a(_EDGE_TI_L3) * ti
    s += jt * (2.0 / 3.0 * _onset(e, l3, 8.0) + 1.0 / 3.0 * _onset(e, l2, 8.0))
    area = 25.0 * jt  # white-line area, eV x step height
    if amorphous:
        a3, a2 = area * 0.5, area * 0.5
        s += _lorentz(e, l3, l3 + 1.6, 2.4, a3) + _lorentz(e, l2, l2 + 1.6, 3.0, a2)
    else:
        a3, a2 = area * 0.8 / 1.8, area / 1.8
        s += _lorentz(e, l3, l3 + 0.9, 0.6, 0.45 * a3) + _lorentz(e, l3, l3 + 2.9, 1.0, 0.55 * a3)
        s += _lorentz(e, l2, l2 + 0.9, 1.0, 0.45 * a2) + _lorentz(e, l2, l2 + 2.9, 1.6, 0.55 * a2)

    # O K: saw-tooth edge; t2g/eg pre-peaks (merged in the damaged layer) and a
    # broad multiple-scattering resonance.
    jo = _JUMP["O"] * _bg_a(_EDGE_O_K) * o
    s += jo * _onset(e, _EDGE_O_K, 0.0)
    if amorphous:
        s += _lorentz(e, _EDGE_O_K, _EDGE_O_K + 2.4, 3.0, 3.5 * jo) + _lorentz(
            e, _EDGE_O_K, _EDGE_O_K + 13.0, 9.0, 4.0 * jo
        )
    else:
        s += _lorentz(e, _EDGE_O_K, _EDGE_O_K + 1.0, 1.0, 1.5 * jo) + _lorentz(
            e, _EDGE_O_K, _EDGE_O_K + 3.6, 1.4, 2.0 * jo
        )
        s += _lorentz(e, _EDGE_O_K, _EDGE_O_K + 12.0, 7.0, 4.0 * jo)
    return s


def _eels_templates(offset: float, dispersion: float, n_channels: int) -> np.ndarray:
    """Channel-integrated region spectra per unit thickness, float64 ``(4, n_channels)``.

    Channel ``i`` covers ``offset + (i -/+ 1/2) dispersion`` eV.
    """
    m = max(math.ceil(dispersion / 0.1), 1)  # fine samples per channel (<= 0.1 eV)
    step = dispersion / m
    sigma = _RESOLUTION_FWHM / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    pad = math.ceil(6 * sigma / dispersion) + 1  # channels of margin for the convolution
    idx = np.arange(-pad, n_channels + pad)
    e = (offset + idx[:, None] * dispersion - dispersion / 2 + (np.arange(m) + 0.5) * step).ravel()
    out = np.empty((_N_REGIONS, n_channels))
    for k in range(_N_REGIONS):
        fine = ndimage.gaussian_filter1d(_region_spectrum(e, k), sigma / step, mode="nearest")
        out[k] = fine.reshape(-1, m).mean(axis=1)[pad : pad + n_channels]
    return out


# ---------------------------------------------------------------------------
# 4D-STEM
# ---------------------------------------------------------------------------


def _reciprocal_lattice(a: float, angle_deg: float, hexagonal: bool) -> np.ndarray:
    """Reciprocal-lattice vectors ``(n, 2)`` (gx, gy) in nm^-1, ``0 < |g| <= _Q_ALL``.

    Real-space vectors as in the HAADF phantom: ``a1`` at ``angle_deg``
    counter-clockwise from +x (x right, y up as displayed), ``a2`` 90 deg
    (square) or 60 deg (hexagonal) further.
    """
    th = math.radians(angle_deg)
    th2 = th + math.radians(60.0 if hexagonal else 90.0)
    real = a * np.array([[math.cos(th), math.sin(th)], [math.cos(th2), math.sin(th2)]])
    recip = np.linalg.inv(real).T  # rows b1, b2 with a_i . b_j = delta_ij
    m = math.ceil(_Q_ALL * a) + 1
    h, k = np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1), indexing="ij")
    g = h.reshape(-1, 1) * recip[0] + k.reshape(-1, 1) * recip[1]
    q = np.hypot(g[:, 0], g[:, 1])
    return g[(q > 1e-9) & (q <= _Q_ALL)]


def _add_disc(img: np.ndarray, cy: float, cx: float, radius: float, weight: float, ss: int = 8) -> None:
    """Add a uniform disc of total ``weight`` (over the whole plane), anti-aliased
    by ``ss`` x ``ss`` supersampling; the part off the detector is lost."""
    n = img.shape[0]
    r0, r1 = max(math.floor(cy - radius) - 1, 0), min(math.ceil(cy + radius) + 2, n)
    c0, c1 = max(math.floor(cx - radius) - 1, 0), min(math.ceil(cx + radius) + 2, n)
    if r0 >= r1 or c0 >= c1:
        return
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    yy = (np.arange(r0, r1)[:, None] + sub[None, :]).ravel() - cy
    xx = (np.arange(c0, c1)[:, None] + sub[None, :]).ravel() - cx
    inside = (yy[:, None] ** 2 + xx[None, :] ** 2) <= radius * radius
    cover = inside.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3))
    img[r0:r1, c0:c1] += cover * (weight / (math.pi * radius * radius))


def _radial_template(n: int, q_scale: float, profile) -> np.ndarray:
    """Detector image of an isotropic ``profile(q)`` normalised to unit integral
    over the whole q-plane (the part beyond the detector is lost)."""
    q_fine = np.linspace(0.0, 3 * _Q_ALL, 20001)
    total = np.trapezoid(profile(q_fine) * 2 * np.pi * q_fine, q_fine)
    c = n / 2.0
    idx = np.arange(n) - c
    q = np.hypot(idx[:, None], idx[None, :]) * q_scale
    return profile(q) * q_scale**2 / total


def _diffraction_templates(n: int, q_scale: float) -> tuple[np.ndarray, dict[str, float]]:
    """Noiseless basis patterns, float64 ``(6, n, n)``: direct beam, scattering of
    regions 0-3 (Bragg discs or amorphous rings), thermal diffuse scattering; each
    normalised to unit integral over the whole plane, then blurred."""
    c = n / 2.0
    r_disc = _CONVERGENCE / _WAVELENGTH / q_scale  # px
    base = np.zeros((6, n, n))
    _add_disc(base[0], c, c, r_disc, 1.0)
    lattices = [
        (_LATTICE_A, 0.0, False),
        (_LATTICE_A, _ROTATION, False),
        (_LATTICE_B, ORIENTATION_B, True),
    ]
    for k, (a, ang, hexa) in enumerate(lattices, start=1):
        g = _reciprocal_lattice(a, ang, hexa)
        q2 = (g**2).sum(axis=1)
        w = np.exp(-(_B_FORM + _B_DW) * q2)  # |f(g)|^2 exp(-2M)
        w /= w.sum()
        for (gx, gy), wi in zip(g, w):
            # Detector rows point down: row offset = -gy.
            _add_disc(base[k], c - gy / q_scale, c + gx / q_scale, r_disc, wi)
    q1 = 1.0 / _AMORPHOUS_NN

    def rings(q: np.ndarray) -> np.ndarray:
        # Two diffuse halos of the amorphous structure factor, times f(q)^2.
        s = np.exp(-0.5 * ((q - q1) / (0.12 * q1)) ** 2) + 0.45 * np.exp(
            -0.5 * ((q - 1.85 * q1) / (0.15 * 1.85 * q1)) ** 2
        )
        return s * np.exp(-_B_FORM * q**2)

    def tds(q: np.ndarray) -> np.ndarray:
        return np.exp(-_B_FORM * q**2) * (1.0 - np.exp(-_B_DW * q**2))

    base[4] = _radial_template(n, q_scale, rings)
    base[5] = _radial_template(n, q_scale, tds)
    blur = math.hypot(_SOURCE_BLUR / q_scale, _DETECTOR_PSF)
    for t in base:
        t[:] = ndimage.gaussian_filter(t, blur, mode="constant", truncate=4.0)
    return base, {"disc_radius_px": r_disc, "blur_sigma_px": blur}


def _shifted_bases(base: np.ndarray) -> np.ndarray:
    """Every basis pattern moved by each integer shift (dy, dx) in {-1, 0, 1}^2,
    edges repeated; ``(9 * 6, n * n)`` ordered shift-major."""
    nb, n, _ = base.shape
    out = np.empty((9 * nb, n * n))
    i = 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            for t in base:
                out[i] = ndimage.shift(t, (dy, dx), order=0, mode="nearest").ravel()
                i += 1
    return out


def _diffraction_row(
    shifted: np.ndarray,
    frac: np.ndarray,
    thick: np.ndarray,
    descan: np.ndarray,
    dose: float,
    n: int,
) -> np.ndarray:
    """Expected counts for one scan row, float64 ``(cols, n, n)``.

    ``frac`` ``(cols, 4)`` probe-footprint region fractions, ``thick`` ``(cols,)``,
    ``descan`` ``(cols, 2)`` px.
    """
    cols = frac.shape[0]
    ft = frac * thick[:, None]
    # Coefficients of the 6 bases: what the specimen takes out of the direct
    # beam goes into Bragg discs / rings, TDS, and beyond the detector.
    coef = np.empty((cols, 6))
    coef[:, 0] = 1.0 - ft @ (_ELASTIC + _TDS + _LOSS)
    coef[:, 1:5] = ft * _ELASTIC
    coef[:, 5] = ft @ _TDS
    coef *= dose
    # Bilinear interpolation between integer shifts: centroids move by exactly descan.
    lo = np.floor(descan).astype(np.int64)
    fr = descan - lo
    w = np.zeros((cols, 9, 6))
    ar = np.arange(cols)
    for a in (0, 1):
        wy = fr[:, 0] if a else 1.0 - fr[:, 0]
        for b in (0, 1):
            wx = fr[:, 1] if b else 1.0 - fr[:, 1]
            idx = (lo[:, 0] + a + 1) * 3 + (lo[:, 1] + b + 1)
            w[ar, idx, :] += (wy * wx)[:, None] * coef
    return (w.reshape(cols, 54) @ shifted).reshape(cols, n, n)


def _render(
    eels: Any,
    diff: Any,
    cell_t: np.ndarray,
    foot: np.ndarray,
    thickness: np.ndarray,
    descan: np.ndarray,
    e_tpl: np.ndarray,
    shifted: np.ndarray,
    p: dict[str, Any],
    noise: bool,
) -> None:
    """Fill ``eels`` ``(rows, cols, channels)`` and ``diff`` ``(rows, cols, n, n)``
    (numpy or zarr arrays) ``p["chunk_rows"]`` scan rows at a time."""
    rows, cols, c_rows, n = p["rows"], p["cols"], p["chunk_rows"], p["pattern_size"]
    for r0 in range(0, rows, c_rows):
        r1 = min(r0 + c_rows, rows)
        e_blk = np.empty((r1 - r0, cols, e_tpl.shape[1]), np.float32)
        d_blk = np.empty((r1 - r0, cols, n, n), np.float32)
        for r in range(r0, r1):
            # EELS: region spectra mixed by the cell's thickness-weighted area fractions.
            mu = cell_t[r] @ e_tpl
            if noise:
                mu = _row_rng(p["seed"], _STREAM_EELS, r).poisson(mu)
            e_blk[r - r0] = mu
            mu = _diffraction_row(shifted, foot[r], thickness[r], descan[r], p["dose_diffraction"], n)
            np.maximum(mu, 0.0, out=mu)  # guard against round-off below zero
            if noise:
                mu = _row_rng(p["seed"], _STREAM_DIFF, r).poisson(mu)
            d_blk[r - r0] = mu
        eels[r0:r1] = e_blk
        diff[r0:r1] = d_blk


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def multimodal_phantom(
    scan_shape: tuple[int, int] = (64, 64),
    *,
    seed: int = 0,
    image_oversample: int = 8,
    n_channels: int = 512,
    pattern_size: int = 64,
    dose_eels: float = 1e5,
    dose_diffraction: float = 2e4,
    out: str | Path | None = None,
    chunk_rows: int = 8,
    image_pixel_size: float = 0.04,
    energy_offset: float = 250.0,
    dispersion: float = 1.0,
    noise: bool = True,
    overwrite: bool = False,
    thickness_wedge: float = _THICKNESS_RAMP,
    thickness_wiggle: float = _THICKNESS_WIGGLE,
) -> MultimodalPhantom:
    """Render one specimen as HAADF image, EELS spectrum image and 4D-STEM data.

    Regions (ids in ``truth``): 0 phase A grain at 0 deg, 1 phase A grain at
    35 deg (same chemistry), 2 phase B (hexagonal titanium oxycarbide),
    3 amorphous damaged phase A (see the module docstring for the physics).

    Parameters
    ----------
    scan_shape
        Scan grid ``(rows, cols)``, each >= 8, with at least 64 HAADF pixels
        (``rows * image_oversample``) along each axis.
    seed
        Seed; the same seed gives identical arrays, however they are chunked.
    image_oversample
        HAADF pixels per scan step along each axis; the HAADF image is
        ``(rows * image_oversample, cols * image_oversample)`` px.
    n_channels
        EELS channels.  The window ``energy_offset + [0, n_channels) * dispersion``
        must cover 259-562 eV (C K pre-edge to O K post-edge).
    pattern_size
        Detector pixels per side of each diffraction pattern (16-1024).
    dose_eels
        Mean counts per spectrum (sum over the window, averaged over the scan).
    dose_diffraction
        Incident electrons per diffraction pattern; the detector records all but
        the few percent scattered beyond its edge.
    out
        Folder for a zarr group; ``None`` keeps everything in memory.
    chunk_rows
        Scan rows per zarr chunk (and per render step when writing).
    image_pixel_size
        HAADF pixel size in nm (<= 0.117 nm to resolve phase B's planes).
    energy_offset
        Energy of channel 0 in eV.
    dispersion
        eV per channel (<= 2).
    noise
        If False, return noiseless expected counts (same geometry as with noise).
    overwrite
        Replace an existing zarr group at ``out``.
    thickness_wedge, thickness_wiggle
        The specimen's relative thickness (mean 1): peak-to-peak change of its linear
        wedge across the field (in [0, 1)) and rms of its smooth undulations (in
        [0, 0.25)); every modality's signal scales with it.

    Returns
    -------
    MultimodalPhantom
        With numpy arrays, or dask arrays read from zarr for ``eels`` and
        ``diffraction`` when ``out`` is given.

    Raises
    ------
    ParameterError
        For a bad scan shape, non-positive doses, ``pattern_size < 16``, an
        energy window missing the edges, an existing non-empty ``out`` ...
    OutputError
        If the zarr group cannot be written.
    """
    p = _validate(
        scan_shape,
        seed,
        image_oversample,
        n_channels,
        pattern_size,
        dose_eels,
        dose_diffraction,
        chunk_rows,
        image_pixel_size,
        energy_offset,
        dispersion,
    )
    rows, cols, os_, n, n_ch = p["rows"], p["cols"], p["os"], p["pattern_size"], p["n_channels"]
    path = _check_out(out, bool(overwrite)) if out is not None else None

    # --- specimen: the HAADF phantom's truth map defines the regions ----------
    # Rendered noiseless and without its own thickness ramp: the specimen's one
    # thickness map is applied here, to every modality.
    ph = haadf_phantom(
        (rows * os_, cols * os_),
        seed=seed,
        pixel_size=p["ps"],
        lattice_a=_LATTICE_A,
        lattice_b=_LATTICE_B,
        rotation=_ROTATION,
        thickness_gradient=0.0,
        noise=False,
    )
    truth_image = ph.truth.astype(np.int16)
    scan_step = os_ * p["ps"]
    wedge = _fraction(thickness_wedge, "thickness_wedge", 1.0, "e.g. thickness_wedge=0.2 (20 % across the field)")
    wiggle = _fraction(thickness_wiggle, "thickness_wiggle", 0.25, "e.g. thickness_wiggle=0.03")
    thick_image, thickness, descan = _maps(seed, rows, cols, os_, wedge, wiggle)
    # Incoherent (thin-specimen) HAADF signal is proportional to thickness.
    haadf = ph.image * thick_image
    if noise:
        hrng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_HAADF,)))
        haadf = hrng.poisson(haadf).astype(np.float32)
        haadf += np.float32(_HAADF_READ_NOISE) * hrng.standard_normal(haadf.shape, dtype=np.float32)
        np.maximum(haadf, 0, out=haadf)
    haadf = np.ascontiguousarray(haadf, dtype=np.float32)
    cell = _cell_fractions(truth_image, rows, cols, os_)
    truth = np.argmax(cell, axis=-1).astype(np.int16)  # majority region per cell
    # EELS (a sharp probe swept over the cell): each region's area in the cell
    # times its local thickness.
    cell_t = _cell_fractions(truth_image, rows, cols, os_, weight=thick_image)
    # The diffraction probe (small convergence angle, wide probe) averages the
    # region map over its Airy footprint (FWHM 0.51 lambda / alpha).
    probe_fwhm = 0.514 * _WAVELENGTH / _CONVERGENCE  # nm
    sig = probe_fwhm / 2.3548 / scan_step
    foot = np.stack(
        [ndimage.gaussian_filter(cell[..., k], sig, mode="nearest") for k in range(_N_REGIONS)], axis=-1
    )
    foot /= foot.sum(axis=-1, keepdims=True)

    # --- EELS templates, scaled so the mean spectrum holds dose_eels counts ---
    e_tpl = _eels_templates(p["energy_offset"], p["dispersion"], n_ch)
    mix = cell_t.reshape(-1, _N_REGIONS)
    e_tpl *= p["dose_eels"] / float((mix @ e_tpl.sum(axis=1)).mean())

    # --- diffraction templates --------------------------------------------------
    q_scale = _Q_EDGE / (n / 2.0)
    base, dinfo = _diffraction_templates(n, q_scale)
    shifted = _shifted_bases(base)

    # --- output ---------------------------------------------------------------
    c_rows = p["chunk_rows"]
    if path is None:
        eels = np.empty((rows, cols, n_ch), np.float32)
        diff = np.empty((rows, cols, n, n), np.float32)
        group = None
    else:
        try:
            import zarr

            group = zarr.open_group(str(path), mode="w")
            eels = group.create_array(
                "eels", shape=(rows, cols, n_ch), chunks=(c_rows, cols, n_ch), dtype="float32"
            )
            diff = group.create_array(
                "diffraction", shape=(rows, cols, n, n), chunks=(c_rows, cols, n, n), dtype="float32"
            )
        except OSError as exc:
            raise OutputError(
                f"cannot create a zarr group: {exc}", fix="choose a writable path", where=path
            ) from None

    # Render c_rows scan rows at a time; random numbers per row, so the chunking
    # never changes the result.  The per-row matrix products are small: a
    # multi-threaded BLAS only adds wake-up overhead there.
    single = threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with single:
        _render(eels, diff, cell_t, foot, thickness, descan, e_tpl, shifted, p, bool(noise))
    energy_axis = (p["energy_offset"], p["dispersion"], "eV")
    fr = np.bincount(truth.ravel(), minlength=_N_REGIONS) / truth.size
    d_b = _LATTICE_B * math.sqrt(3.0) / 2.0
    metadata: dict[str, Any] = {
        "seed": p["seed"],
        "scan_shape": [rows, cols],
        "image_oversample": os_,
        "beam_energy_kV": _BEAM_KV,
        "wavelength_nm": _WAVELENGTH,
        "convergence_semiangle_mrad": _CONVERGENCE * 1e3,
        "probe_fwhm_nm": probe_fwhm,
        "pattern_centre_px": [n / 2.0, n / 2.0],
        "disc_radius_px": dinfo["disc_radius_px"],
        "blur_sigma_px": dinfo["blur_sigma_px"],
        "lattice_a_nm": _LATTICE_A,
        "lattice_b_nm": _LATTICE_B,
        "orientation_deg": [0.0, _ROTATION, ORIENTATION_B, None],
        "amorphous_nn_nm": _AMORPHOUS_NN,
        "envelope_B_nm2": _B_FORM + _B_DW,
        "edges_eV": {"C K": _EDGE_C_K, "Ti L3": _EDGE_TI_L3, "Ti L2": _EDGE_TI_L2, "O K": _EDGE_O_K},
        "amorphous_ti_shift_eV": _AMORPHOUS_SHIFT,
        "background_exponent": _BG_EXPONENT,
        "energy_resolution_eV": _RESOLUTION_FWHM,
        "composition_ti_o_c": _COMPOSITION.tolist(),
        "dose_eels": p["dose_eels"],
        "dose_diffraction": p["dose_diffraction"],
        "thickness_wedge": wedge,
        "thickness_wiggle": wiggle,
        "noise": bool(noise),
    }
    description = (
        f"One specimen as three modalities on a {rows}x{cols} scan ({scan_step:g} nm step): "
        f"HAADF {rows * os_}x{cols * os_} px at {p['ps']:g} nm/px; EELS {n_ch} channels "
        f"from {p['energy_offset']:g} eV at {p['dispersion']:g} eV/channel "
        f"(power law E^-{_BG_EXPONENT:g}, C K {_EDGE_C_K:g}, Ti L3/L2 {_EDGE_TI_L3:g}/{_EDGE_TI_L2:g}, "
        f"O K {_EDGE_O_K:g} eV, {_RESOLUTION_FWHM:g} eV resolution, {p['dose_eels']:g} counts/spectrum); "
        f"4D-STEM {n}x{n} px at {q_scale:.4g} nm^-1/px ({_BEAM_KV:g} kV, "
        f"{_CONVERGENCE * 1e3:g} mrad, {p['dose_diffraction']:g} e/pattern). "
        f"Region 0 ({fr[0]:.0%} of the scan): phase A (Ti:O:C 1:2:0.1), square a = {_LATTICE_A:g} nm "
        f"at 0 deg. Region 1 ({fr[1]:.0%}): the same phase rotated by {_ROTATION:g} deg - identical "
        f"spectra. Region 2 ({fr[2]:.0%}): phase B oxycarbide (Ti:O:C 1.2:0.6:0.84), hexagonal "
        f"a = {_LATTICE_B:g} nm ((10) planes {d_b:.3f} nm) at {ORIENTATION_B:g} deg. "
        f"Region 3 ({fr[3]:.0%}): amorphous damaged phase A, {AMORPHOUS_DENSITY:g}x density, Ti L2,3 "
        f"shifted {_AMORPHOUS_SHIFT:g} eV with smeared white lines, diffuse rings at "
        f"1/{_AMORPHOUS_NN:g} nm. Poisson noise" + ("." if noise else " off (expected counts).")
    )

    if group is not None:
        try:
            for name, arr, ch in [
                ("haadf", haadf, (c_rows * os_, cols * os_)),
                ("truth_image", truth_image, (c_rows * os_, cols * os_)),
                ("truth", truth, (c_rows, cols)),
                ("thickness", thickness.astype(np.float32), (c_rows, cols)),
                ("descan", descan.astype(np.float32), (c_rows, cols, 2)),
            ]:
                z = group.create_array(name, shape=arr.shape, chunks=ch, dtype=arr.dtype)
                z[...] = arr
            nm = {"scale": scan_step, "offset": 0.0, "units": "nm"}
            scan_axes = [{"name": "y", "size": rows, **nm}, {"name": "x", "size": cols, **nm}]
            qa = {"size": n, "scale": q_scale, "offset": -n / 2.0 * q_scale, "units": "1/nm"}
            group.attrs.update(
                {
                    "region_names": list(_REGION_NAMES),
                    "image_pixel_size": p["ps"],
                    "scan_step": scan_step,
                    "energy_axis": list(energy_axis),
                    "q_scale": q_scale,
                    "description": description,
                    "metadata": metadata,
                    "axes": {
                        "haadf": [
                            {"name": "y", "size": rows * os_, "scale": p["ps"], "offset": 0.0, "units": "nm"},
                            {"name": "x", "size": cols * os_, "scale": p["ps"], "offset": 0.0, "units": "nm"},
                        ],
                        "eels": scan_axes
                        + [
                            {
                                "name": "energy",
                                "size": n_ch,
                                "scale": p["dispersion"],
                                "offset": p["energy_offset"],
                                "units": "eV",
                            }
                        ],
                        "diffraction": scan_axes + [{"name": "qy", **qa}, {"name": "qx", **qa}],
                    },
                }
            )
        except OSError as exc:
            raise OutputError(
                f"cannot write the zarr group: {exc}", fix="check free space", where=path
            ) from None
        eels, diff = da.from_zarr(eels), da.from_zarr(diff)

    return MultimodalPhantom(
        haadf=haadf,
        eels=eels,
        diffraction=diff,
        truth=truth,
        truth_image=truth_image,
        region_names=list(_REGION_NAMES),
        image_pixel_size=p["ps"],
        scan_step=scan_step,
        energy_axis=energy_axis,
        q_scale=q_scale,
        description=description,
        thickness=thickness.astype(np.float32),
        descan=descan.astype(np.float32),
        metadata=metadata,
    )
