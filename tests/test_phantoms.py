"""Physical checks of the HAADF phantom: geometry, lattices in Fourier space, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from multimodal_seg.errors import ParameterError
from multimodal_seg.synthetic.phantoms import Phantom, haadf_phantom

A0, A_ROT, B, AMORPHOUS = 0, 1, 2, 3
LATTICE_A = 0.40  # nm, default square lattice of phase A
LATTICE_B = 0.34  # nm, default hexagonal lattice of phase B
ROTATION = 35.0  # deg, default rotation between the two phase-A grains


@pytest.fixture(scope="module")
def ph() -> Phantom:
    return haadf_phantom()


# --- helpers ----------------------------------------------------------------


def _tiles(ph: Phantom, region: int, size: int) -> list[np.ndarray]:
    """Non-overlapping ``size`` x ``size`` tiles lying wholly inside ``region``."""
    # Summed-area table: a window is inside iff it holds size^2 region pixels.
    m = np.pad((ph.truth == region).astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    full = (m[size:, size:] - m[:-size, size:] - m[size:, :-size] + m[:-size, :-size]) == size * size
    out: list[np.ndarray] = []
    taken = np.zeros(ph.truth.shape, bool)
    step = max(size // 4, 1)
    for r0, c0 in zip(*np.nonzero(full[::step, ::step])):
        r0, c0 = r0 * step, c0 * step
        if taken[r0 : r0 + size, c0 : c0 + size].any():
            continue
        taken[r0 : r0 + size, c0 : c0 + size] = True
        assert np.all(ph.truth[r0 : r0 + size, c0 : c0 + size] == region)
        out.append(ph.image[r0 : r0 + size, c0 : c0 + size].astype(np.float64))
    return out


def _spectrum(ph: Phantom, region: int, size: int = 64, pad: int = 256):
    """Welch-averaged power spectrum of tiles inside ``region``.

    Returns power, |k| (nm^-1) and the direction of k in degrees, counter-clockwise
    from the +column axis as the image is displayed (rows point down).
    """
    tiles = _tiles(ph, region, size)
    assert len(tiles) >= 1, f"no {size}-px tile fits inside region {region}"
    win = np.outer(np.hanning(size), np.hanning(size))
    power = np.zeros((pad, pad))
    for t in tiles:
        power += np.abs(np.fft.fft2((t - t.mean()) * win, s=(pad, pad))) ** 2
    k = np.fft.fftfreq(pad, d=ph.pixel_size)
    kr, kc = np.meshgrid(k, k, indexing="ij")
    return power / len(tiles), np.hypot(kr, kc), np.degrees(np.arctan2(-kr, kc)), len(tiles)


def _strongest_peak(power, kmag, angle, k_lo=1.5, k_hi=6.0):
    """|k| (nm^-1) and direction (deg) of the strongest spectral peak in an annulus,
    refined to sub-bin precision by the power-weighted centroid of its 5x5 neighbourhood."""
    n = power.shape[0]
    ann = (kmag > k_lo) & (kmag < k_hi)
    i, j = np.unravel_index(np.argmax(np.where(ann, power, 0.0)), power.shape)
    k = np.fft.fftfreq(n)  # cycles per sample of the padded grid
    dk = kmag[0, 1]  # nm^-1 per bin
    ii, jj = np.meshgrid(np.arange(i - 2, i + 3), np.arange(j - 2, j + 3), indexing="ij")
    w = power[ii % n, jj % n]
    kr = (k[i] * n + (ii - i)).ravel() @ w.ravel() / w.sum() * dk
    kc = (k[j] * n + (jj - j)).ravel() @ w.ravel() / w.sum() * dk
    return math.hypot(kr, kc), math.degrees(math.atan2(-kr, kc))


def _peaks_on_ring(power, kmag, k0, rel=0.15, frac=0.1):
    """Number of local maxima within ``rel`` of |k| = k0 above ``frac`` of the strongest."""
    ring = np.abs(kmag - k0) < rel * k0
    p = np.where(ring, power, 0.0)
    is_max = (p == ndimage.maximum_filter(p, size=9, mode="wrap")) & (p > frac * p.max())
    return int(is_max.sum())


def _ring_stats(power, kmag, angle, k_lo=1.2, k_hi=6.0, dk=0.1, n_sectors=12):
    """Ring radius (peak of the radial mean, nm^-1); how far the ring rises above
    the radial mean at ``k_lo`` (> 1: a real ring, not a tail from k = 0); and the
    max/min ratio of the angular-sector means on the ring (1 = azimuthally flat)."""
    edges = np.arange(k_lo, k_hi + dk, dk)
    which = np.digitize(kmag, edges)
    prof = ndimage.mean(power, which, np.arange(1, len(edges)))
    top = int(np.argmax(prof))
    k_ring = edges[top] + dk / 2
    ring = np.abs(kmag - k_ring) < 0.3
    sector = np.floor((angle[ring] % 180.0) / (180.0 / n_sectors)).astype(int)
    means = ndimage.mean(power[ring], sector, np.arange(n_sectors))
    return k_ring, prof[top] / prof[0], means.max() / means.min()


def _angle_diff(a: float, b: float, period: float) -> float:
    """Signed smallest difference a - b modulo ``period`` (degrees)."""
    return (a - b + period / 2) % period - period / 2


# --- basic contract ----------------------------------------------------------


def test_shapes_dtypes_and_metadata(ph: Phantom) -> None:
    assert ph.image.shape == ph.truth.shape == (512, 512)
    assert ph.image.dtype == np.float32
    assert ph.truth.dtype == np.int16
    assert ph.pixel_size == pytest.approx(0.04)
    assert ph.units == "nm"
    assert len(ph.region_names) == 4
    assert set(np.unique(ph.truth)) == set(range(len(ph.region_names)))
    assert "amorphous" in ph.region_names[AMORPHOUS]
    assert ph.description


def test_counts_non_negative_and_mean_matches_dose(ph: Phantom) -> None:
    assert np.all(np.isfinite(ph.image))
    assert ph.image.min() >= 0
    assert ph.image.mean() == pytest.approx(200.0, rel=0.01)
    low = haadf_phantom((256, 256), dose=20.0, read_noise=3.0)
    assert low.image.min() >= 0
    assert low.image.mean() == pytest.approx(20.0, rel=0.02)


@pytest.mark.parametrize("shape", [(512, 512), (128, 128), (200, 700), (700, 200)])
def test_every_region_is_sizeable_and_contiguous(shape: tuple[int, int]) -> None:
    for seed in (0, 1, 2):
        truth = haadf_phantom(shape, seed=seed).truth
        assert truth.shape == shape
        frac = np.bincount(truth.ravel(), minlength=4) / truth.size
        assert frac.min() >= 0.10, (shape, seed, frac)
        for r in range(4):
            lab, n = ndimage.label(truth == r)
            largest = np.bincount(lab.ravel())[1:].max()
            assert largest >= 0.95 * frac[r] * truth.size, (shape, seed, r, n)


def test_same_seed_identical_other_seed_differs() -> None:
    a = haadf_phantom((256, 256), seed=3)
    b = haadf_phantom((256, 256), seed=3)
    c = haadf_phantom((256, 256), seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)
    # Geometry changes, but only slightly: same layout, moved boundaries.
    moved = np.mean(a.truth != c.truth)
    assert 0.005 < moved < 0.4


# --- interfaces --------------------------------------------------------------


def test_damage_front_is_wavy_not_straight(ph: Phantom) -> None:
    rows, cols = ph.truth.shape
    is_am = ph.truth == AMORPHOUS
    # The amorphous layer advances from the bottom edge.
    assert is_am[-1].all() and not is_am[0].any()
    top = np.argmax(is_am, axis=0)  # first amorphous row in every column
    x = np.arange(cols)
    residual = top - np.polyval(np.polyfit(x, top, 1), x)
    assert residual.std() > 0.02 * rows  # > 10 px rms off the best straight line
    # Roughness on a fine scale too, not only a smooth sinusoid.
    assert np.abs(np.diff(top)).mean() > 0.5


def test_grain_boundaries_are_curved(ph: Phantom) -> None:
    t = ph.truth
    wiggle = []
    for a, b in [(A0, B), (A_ROT, B), (A0, A_ROT)]:
        edge = (t == a) & ndimage.binary_dilation(t == b)  # pixels of a touching b
        pts = np.argwhere(edge).astype(float)
        assert len(pts) > 50, (a, b)  # the three grains meet pairwise
        pts -= pts.mean(axis=0)
        # rms distance from the best-fitting straight line (smallest principal axis)
        wiggle.append(np.sqrt(np.linalg.eigvalsh(np.cov(pts.T))[0]))
    # A pixelated straight line gives ~0.3 px; at least two boundaries bend visibly.
    wiggle.sort()
    assert wiggle[-1] > 3.0 and wiggle[-2] > 1.5, wiggle


# --- lattices in Fourier space ----------------------------------------------


def test_phase_a_grains_show_lattice_spots_at_expected_spacing(ph: Phantom) -> None:
    for region in (A0, A_ROT):
        power, kmag, angle, _ = _spectrum(ph, region)
        k_peak, _ = _strongest_peak(power, kmag, angle)
        # (10) reflections of the square lattice at |k| = 1/a
        assert k_peak == pytest.approx(1 / LATTICE_A, rel=0.04)
        # four-fold symmetric first-order spots
        assert _peaks_on_ring(power, kmag, 1 / LATTICE_A) == 4


def test_phase_a_grains_are_rotated_by_the_requested_angle(ph: Phantom) -> None:
    dirs = []
    for region in (A0, A_ROT):
        power, kmag, angle, _ = _spectrum(ph, region)
        dirs.append(_strongest_peak(power, kmag, angle)[1])
    # Square lattice: spot directions repeat every 90 deg.
    assert abs(_angle_diff(dirs[0], 0.0, 90.0)) < 2.0
    assert abs(_angle_diff(dirs[1] - dirs[0], ROTATION, 90.0)) < 2.0


def test_phase_b_has_other_spacing_symmetry_and_intensity(ph: Phantom) -> None:
    power, kmag, angle, _ = _spectrum(ph, B)
    k_peak, _ = _strongest_peak(power, kmag, angle)
    # Hexagonal lattice: (10) planes d = a sqrt(3)/2, six first-order spots.
    k_b = 2 / (math.sqrt(3) * LATTICE_B)
    assert k_peak == pytest.approx(k_b, rel=0.04)
    assert abs(k_peak - 1 / LATTICE_A) > 0.2 * k_b
    assert _peaks_on_ring(power, kmag, k_b) == 6
    # Different Z-contrast per area: mean counts differ clearly from phase A.
    mean_a = ph.image[ph.truth == A0].mean()
    mean_b = ph.image[ph.truth == B].mean()
    assert abs(mean_b / mean_a - 1) > 0.15


def test_amorphous_region_gives_diffuse_ring_not_spots(ph: Phantom) -> None:
    am_power, kmag, angle, n_tiles = _spectrum(ph, AMORPHOUS)
    assert n_tiles >= 4
    k_ring, rise, am_aniso = _ring_stats(am_power, kmag, angle)
    # Short-range order only: a ring near 1 / nearest-neighbour distance (0.3-0.6 nm)...
    assert 1 / 0.6 < k_ring < 1 / 0.3
    assert rise > 1.5
    assert am_aniso < 4.0  # ...that is azimuthally flat
    cr_power, _, _, _ = _spectrum(ph, A0)
    _, _, cr_aniso = _ring_stats(cr_power, kmag, angle)
    assert cr_aniso > 50.0  # sharp Bragg spots
    # Sharpest feature relative to the ring's median: far lower than a crystal's.
    def peak_to_median(p, k0):
        ring = np.abs(kmag - k0) < 0.3
        return p[ring].max() / np.median(p[ring])

    assert peak_to_median(am_power, k_ring) < 0.05 * peak_to_median(cr_power, 1 / LATTICE_A)
    # Lower density after damage: darker than the crystal.
    assert ph.image[ph.truth == AMORPHOUS].mean() < 0.85 * ph.image[ph.truth == A0].mean()


def test_lattice_spacing_is_physical_not_in_pixels() -> None:
    fine = haadf_phantom((384, 384), pixel_size=0.025, seed=1)
    power, kmag, angle, _ = _spectrum(fine, A0)
    assert _strongest_peak(power, kmag, angle)[0] == pytest.approx(1 / LATTICE_A, rel=0.04)


# --- image formation ---------------------------------------------------------


def test_noise_is_poisson_plus_read_noise() -> None:
    kw = {"shape": (384, 384), "seed": 5, "dose": 100.0, "read_noise": 4.0}
    clean = haadf_phantom(**kw, noise=False)
    noisy = haadf_phantom(**kw)
    np.testing.assert_array_equal(clean.truth, noisy.truth)
    assert clean.image.mean() == pytest.approx(100.0, rel=1e-4)
    resid = noisy.image.astype(np.float64) - clean.image
    assert abs(resid.mean()) < 0.2
    # Shot noise variance equals the expected counts; read noise adds sigma^2.
    for lo, hi in [(0, 80), (80, 200), (200, np.inf)]:
        sel = (clean.image >= lo) & (clean.image < hi)
        assert sel.sum() > 5000
        expected = clean.image[sel].mean() + 4.0**2
        assert resid[sel].var() == pytest.approx(expected, rel=0.05), (lo, hi)


def test_thickness_gradient_is_a_mild_linear_ramp() -> None:
    flat = haadf_phantom((256, 256), seed=2, noise=False, thickness_gradient=0.0)
    ramp = haadf_phantom((256, 256), seed=2, noise=False, thickness_gradient=0.1)
    np.testing.assert_array_equal(flat.truth, ramp.truth)
    ratio = ramp.image.astype(np.float64) / flat.image
    assert ratio.max() / ratio.min() == pytest.approx(1.05 / 0.95, rel=0.01)
    # planar: a linear fit in (row, col) explains the ratio exactly
    r, c = np.mgrid[: ratio.shape[0], : ratio.shape[1]]
    design = np.column_stack([np.ones(r.size), r.ravel(), c.ravel()])
    coef, *_ = np.linalg.lstsq(design, ratio.ravel(), rcond=None)
    assert np.abs(design @ coef - ratio.ravel()).max() < 1e-4


def test_atomic_columns_are_resolved_bright_peaks(ph: Phantom) -> None:
    # Inside a phase-A grain, local maxima sit ~one lattice spacing apart and
    # stand well above the dark gaps between columns (HAADF: bright on dark).
    tile = _tiles(ph, A0, 64)[0]
    smooth = ndimage.gaussian_filter(tile, 1.0)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=7)) & (smooth > np.percentile(smooth, 70))
    n_expected = (64 * ph.pixel_size / LATTICE_A) ** 2
    assert 0.6 * n_expected < peaks.sum() < 1.4 * n_expected
    assert np.percentile(tile, 99) > 3 * np.percentile(tile, 20)


# --- argument checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"dose": 0.0}, "dose"),
        ({"dose": -5.0}, "dose"),
        ({"dose": float("nan")}, "dose"),
        ({"pixel_size": 0.0}, "pixel_size"),
        ({"pixel_size": -0.04}, "pixel_size"),
        ({"pixel_size": 0.2}, "pixel_size"),  # too coarse to resolve the lattice
        ({"read_noise": -1.0}, "read_noise"),
        ({"shape": (32, 512)}, "shape"),
        ({"shape": (512, 63)}, "shape"),
        ({"shape": (512,)}, "shape"),
        ({"shape": (100.5, 200)}, "shape"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"rotation": 90.0}, "rotation"),
        ({"column_sigma": 0.0}, "column_sigma"),
        ({"column_sigma": 0.5}, "column_sigma"),
        ({"lattice_a": -0.4}, "lattice_a"),
        ({"thickness_gradient": 1.5}, "thickness_gradient"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, where: str) -> None:
    with pytest.raises(ParameterError) as err:
        haadf_phantom(**kwargs)
    assert err.value.where == where
    assert err.value.fix
