"""Physical checks of the multimodal phantom: one specimen as HAADF, EELS and 4D-STEM.

Every check measures the rendered data the way one would measure a real data
set (background fits, edge onsets, spot positions, radial profiles, noise
statistics) and compares it with the specimen's stated physics.
"""

from __future__ import annotations

import math
import tracemalloc

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage

from multimodal_seg.errors import ParameterError
from multimodal_seg.synthetic.multimodal import MultimodalPhantom, multimodal_phantom
from multimodal_seg.synthetic.phantoms import haadf_phantom

A0, A_ROT, B, AMORPHOUS = 0, 1, 2, 3
LATTICE_A = 0.40  # nm, phase A square lattice
LATTICE_B = 0.34  # nm, phase B hexagonal lattice (column distance)
D_B = LATTICE_B * math.sqrt(3) / 2  # nm, phase B (10) plane spacing
ROTATION = 35.0  # deg, grain 1 relative to grain 0
ORIENT_B = 15.0  # deg, phase B lattice vector a1
D_NN = 0.375  # nm, amorphous nearest-neighbour distance
EDGES = {"C K": 284.0, "Ti L3": 456.0, "O K": 532.0}
SCAN = (32, 32)
N_PAT = 48
SEED = 1


@pytest.fixture(scope="module")
def mp() -> MultimodalPhantom:
    return multimodal_phantom(SCAN, seed=SEED, pattern_size=N_PAT)


@pytest.fixture(scope="module")
def mp0() -> MultimodalPhantom:
    """The same specimen without noise (expected counts)."""
    return multimodal_phantom(SCAN, seed=SEED, pattern_size=N_PAT, noise=False)


# --- helpers ----------------------------------------------------------------


def _energy(mp: MultimodalPhantom) -> np.ndarray:
    offset, scale, _ = mp.energy_axis
    return offset + scale * np.arange(mp.eels.shape[-1])


def _pure_cells(mp: MultimodalPhantom, region: int) -> np.ndarray:
    """Scan positions whose whole cell of the HAADF truth map is ``region``."""
    rows, cols = mp.truth.shape
    o = mp.truth_image.shape[0] // rows
    return (mp.truth_image == region).reshape(rows, o, cols, o).all(axis=(1, 3))


def _interior(mp: MultimodalPhantom, region: int, margin: int = 2) -> np.ndarray:
    """Pure cells at least ``margin`` cells from any other region, so that the
    diffraction probe (FWHM 0.85 nm = 2.7 scan steps) sees only ``region``."""
    pure = _pure_cells(mp, region)
    return ndimage.binary_erosion(pure, np.ones((2 * margin + 1,) * 2), border_value=1)


def _mean_spectrum(mp: MultimodalPhantom, mask: np.ndarray) -> np.ndarray:
    assert mask.sum() >= 5, "too few positions in the region"
    return np.asarray(mp.eels)[mask].astype(np.float64).mean(axis=0)


def _powerlaw_fit(e: np.ndarray, s: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Least-squares fit of ``log s = log A - r log E`` in ``[lo, hi]`` eV: (A, r)."""
    w = (e >= lo) & (e <= hi)
    slope, icpt = np.polyfit(np.log(e[w]), np.log(s[w]), 1)
    return math.exp(icpt), -slope


def _edge_signal(e: np.ndarray, s: np.ndarray, e0: float) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted signal (power law fitted 30-3 eV below ``e0``) and the background."""
    a, r = _powerlaw_fit(e, s, e0 - 30, e0 - 3)
    bg = a * e**-r
    return s - bg, bg


def _steepest_rise(e: np.ndarray, s: np.ndarray, e0: float) -> float:
    """Energy of the steepest rise of the background-subtracted signal near ``e0``."""
    sig, _ = _edge_signal(e, s, e0)
    d = np.gradient(ndimage.gaussian_filter1d(sig, 0.7))
    w = (e > e0 - 12) & (e < e0 + 8)
    return float(e[w][np.argmax(d[w])])


def _jump_ratio(e: np.ndarray, s: np.ndarray, e0: float) -> float:
    """Post-edge counts (5-15 eV above ``e0``) over the extrapolated background."""
    sig, bg = _edge_signal(e, s, e0)
    w = (e >= e0 + 5) & (e <= e0 + 15)
    return float(1 + sig[w].sum() / bg[w].sum())


def _half_rise(e: np.ndarray, s: np.ndarray, e0: float) -> float:
    """First energy (interpolated) where the background-subtracted signal reaches
    half its maximum within 10 eV of ``e0``."""
    sig, _ = _edge_signal(e, s, e0)
    w = np.flatnonzero((e > e0 - 10) & (e < e0 + 10))
    x, y = e[w], sig[w]
    half = 0.5 * y.max()
    i = int(np.argmax(y >= half))
    return float(x[i - 1] + (half - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))


def _mean_pattern(mp: MultimodalPhantom, mask: np.ndarray) -> np.ndarray:
    assert mask.sum() >= 3, "too few interior positions in the region"
    return np.asarray(mp.diffraction)[mask].astype(np.float64).mean(axis=0)


def _beam_centroid(pat: np.ndarray, centre: float, radius: float) -> np.ndarray:
    n = pat.shape[-1]
    idx = np.arange(n) - centre
    win = (idx[:, None] ** 2 + idx[None, :] ** 2) <= radius**2
    w = pat * win
    tot = w.sum(axis=(-2, -1))
    return (
        np.stack([(w * idx[:, None]).sum(axis=(-2, -1)), (w * idx[None, :]).sum(axis=(-2, -1))], -1)
        / tot[..., None]
    )


def _spots(pat: np.ndarray, centre: np.ndarray, r_min: float, count: int) -> np.ndarray:
    """The ``count`` brightest local maxima farther than ``r_min`` px from ``centre``,
    refined by a background-subtracted centroid; ``(count, 2)`` offsets (drow, dcol)."""
    n = pat.shape[0]
    rr, cc = np.indices(pat.shape)
    far = np.hypot(rr - centre[0], cc - centre[1]) > r_min
    smooth = ndimage.gaussian_filter(pat, 1.0)  # no ties between equal-count pixels
    peaks = (smooth == ndimage.maximum_filter(smooth, size=5)) & far
    peaks &= (rr >= 2) & (rr < n - 2) & (cc >= 2) & (cc < n - 2)
    order = np.argsort(smooth[peaks])[::-1][:count]
    out = []
    for r, c in np.argwhere(peaks)[order]:
        win = pat[r - 2 : r + 3, c - 2 : c + 3]
        win = win - win.min()
        dr, dc = np.mgrid[-2:3, -2:3]
        out.append(
            [r + (win * dr).sum() / win.sum() - centre[0], c + (win * dc).sum() / win.sum() - centre[1]]
        )
    return np.array(out)


def _angles(offsets: np.ndarray) -> np.ndarray:
    """Direction of detector offsets in deg, counter-clockwise from +col as displayed."""
    return np.degrees(np.arctan2(-offsets[:, 0], offsets[:, 1]))


def _ang_diff(a: np.ndarray, b: float, period: float) -> np.ndarray:
    """Distance of angles ``a`` from ``b`` modulo ``period`` (deg)."""
    d = (a - b) % period
    return np.minimum(d, period - d)


# --- layout, calibrations, truth --------------------------------------------


def test_shapes_dtypes_calibrations(mp: MultimodalPhantom) -> None:
    rows, cols = SCAN
    assert mp.haadf.shape == (rows * 8, cols * 8) and mp.haadf.dtype == np.float32
    assert mp.truth_image.shape == mp.haadf.shape and mp.truth_image.dtype == np.int16
    assert mp.truth.shape == SCAN and mp.truth.dtype == np.int16
    assert mp.eels.shape == (rows, cols, 512) and mp.eels.dtype == np.float32
    assert mp.diffraction.shape == (rows, cols, N_PAT, N_PAT) and mp.diffraction.dtype == np.float32
    assert isinstance(mp.eels, np.ndarray) and isinstance(mp.diffraction, np.ndarray)
    assert mp.image_pixel_size == pytest.approx(0.04)
    assert mp.scan_step == pytest.approx(8 * mp.image_pixel_size)
    assert mp.energy_axis == (250.0, 1.0, "eV")
    # |q| = 7.5 nm^-1 at the detector edge, N/2 px from the centre.
    assert mp.q_scale == pytest.approx(7.5 / (N_PAT / 2))
    assert len(mp.region_names) == 4 and "amorphous" in mp.region_names[AMORPHOUS]
    assert set(np.unique(mp.truth)) == {0, 1, 2, 3}
    # Counts: non-negative whole numbers (Poisson).
    for cube in (mp.eels, mp.diffraction):
        assert cube.min() >= 0 and np.array_equal(cube, np.round(cube))
    assert 0.8 < mp.thickness.min() and mp.thickness.max() < 1.2
    assert np.abs(mp.descan).max() < 1.0


def test_truth_is_majority_of_image_truth_per_scan_cell(
    mp: MultimodalPhantom, mp0: MultimodalPhantom
) -> None:
    rows, cols = SCAN
    o = mp.truth_image.shape[0] // rows
    blocks = mp.truth_image.reshape(rows, o, cols, o).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    counts = np.stack([(blocks == k).sum(-1) for k in range(4)], -1)
    assert np.array_equal(mp.truth, counts.argmax(-1))
    # Every cell's majority holds more than half the cell except along boundaries.
    assert np.mean(counts.max(-1) == o * o) > 0.6
    # The HAADF image and its truth are the HAADF phantom of the same seed ...
    ph = haadf_phantom(mp.haadf.shape, seed=SEED, thickness_gradient=0.0, noise=False)
    assert np.array_equal(ph.truth, mp.truth_image)
    assert np.array_equal(mp0.truth_image, mp.truth_image)
    # ... scaled by the same thickness map as the EELS and 4D-STEM signals.
    ratio = (mp0.haadf / ph.image).reshape(rows, o, cols, o).mean(axis=(1, 3))
    assert np.allclose(ratio, mp0.thickness, rtol=1e-4)
    assert mp.haadf.mean() == pytest.approx(200, rel=0.01)  # the HAADF phantom's dose


# --- EELS -------------------------------------------------------------------


def test_eels_edges_at_tabulated_energies(mp: MultimodalPhantom) -> None:
    e = _energy(mp)
    for region in (A0, B):
        s = _mean_spectrum(mp, _pure_cells(mp, region))
        for name, e0 in EDGES.items():
            assert abs(_steepest_rise(e, s, e0) - e0) <= 2.0, (region, name)
            sig, bg = _edge_signal(e, s, e0)
            pre = (e > e0 - 25) & (e < e0 - 5)
            post = (e > e0 + 2) & (e < e0 + 12)
            # Flat (background only) before the edge, a clear jump after it.
            assert abs(sig[pre].mean()) < 0.01 * bg[pre].mean()
            assert sig[post].mean() > 0.05 * bg[post].mean(), (region, name)


def test_eels_background_is_power_law_scaling_with_thickness(mp: MultimodalPhantom) -> None:
    e = _energy(mp)
    # Below the C K edge there is background only: A E^-r with r = 3.
    _, r = _powerlaw_fit(e, _mean_spectrum(mp, np.ones(SCAN, bool)), 252, 280)
    assert r == pytest.approx(3.0, abs=0.05)
    for region in range(4):  # every region (fewer spectra, a short lever arm: looser)
        _, r = _powerlaw_fit(e, _mean_spectrum(mp, _pure_cells(mp, region)), 252, 280)
        assert r == pytest.approx(3.0, abs=0.2), region
    # Within phase A the pre-edge counts are proportional to the local thickness
    # (A ~ t): relative counts rise with relative thickness with slope 1, and
    # pre-edge / thickness scatters by Poisson noise only.
    mask = _pure_cells(mp, A0) | _pure_cells(mp, A_ROT)
    pre = np.asarray(mp.eels)[mask][:, (e >= 252) & (e <= 280)].sum(axis=1).astype(np.float64)
    t = mp.thickness[mask].astype(np.float64)
    assert t.std() > 0.01  # the specimen thickness does vary here
    slope = np.polyfit(t / t.mean(), pre / pre.mean(), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.15)
    noise = 1 / np.sqrt(pre.mean())
    assert (pre / t).std() / (pre / t).mean() < 1.5 * noise


def test_eels_phase_a_and_b_differ_in_composition(mp: MultimodalPhantom) -> None:
    e = _energy(mp)
    sa = _mean_spectrum(mp, _pure_cells(mp, A0) | _pure_cells(mp, A_ROT))
    sb = _mean_spectrum(mp, _pure_cells(mp, B))
    ja = {k: _jump_ratio(e, sa, e0) for k, e0 in EDGES.items()}
    jb = {k: _jump_ratio(e, sb, e0) for k, e0 in EDGES.items()}
    # Phase B (oxycarbide) is rich in C and poor in O compared with phase A (oxide).
    assert jb["C K"] - 1 > 3 * (ja["C K"] - 1)
    assert ja["O K"] - 1 > 2 * (jb["O K"] - 1)

    # Integrated edge signals: the C/O ratio differs by an order of magnitude.
    def integral(s: np.ndarray, e0: float) -> float:
        sig, _ = _edge_signal(e, s, e0)
        return float(sig[(e >= e0) & (e < e0 + 20)].sum())

    ratio_a = integral(sa, EDGES["C K"]) / integral(sa, EDGES["O K"])
    ratio_b = integral(sb, EDGES["C K"]) / integral(sb, EDGES["O K"])
    assert ratio_b > 10 * ratio_a


def _shape_chi2(mp: MultimodalPhantom, r1: int, r2: int) -> float:
    """Reduced chi^2 between the mean unit-sum spectra of two regions' pure cells."""
    out = []
    for region in (r1, r2):
        x = np.asarray(mp.eels)[_pure_cells(mp, region)].astype(np.float64)
        x /= x.sum(axis=1, keepdims=True)  # thickness drops out
        out.append((x.mean(axis=0), x.var(axis=0, ddof=1) / x.shape[0]))
    (m1, v1), (m2, v2) = out
    return float(np.mean((m1 - m2) ** 2 / (v1 + v2)))


def test_eels_two_phase_a_grains_have_the_same_spectrum(mp: MultimodalPhantom) -> None:
    # Chemistry cannot tell orientation apart: differences are noise only ...
    assert _shape_chi2(mp, A0, A_ROT) < 1.3
    # ... whereas another phase or the damaged layer is far outside the noise.
    assert _shape_chi2(mp, A0, B) > 20
    assert _shape_chi2(mp, A0, AMORPHOUS) > 2


def test_eels_amorphous_chemical_shift_and_density(mp: MultimodalPhantom) -> None:
    e = _energy(mp)
    sa = _mean_spectrum(mp, _pure_cells(mp, A0) | _pure_cells(mp, A_ROT))
    sm = _mean_spectrum(mp, _pure_cells(mp, AMORPHOUS))
    # Ti reduced in the damaged layer: the L3 onset moves 1-2.5 eV down ...
    shift = _half_rise(e, sa, EDGES["Ti L3"]) - _half_rise(e, sm, EDGES["Ti L3"])
    assert 1.0 <= shift <= 2.5
    # ... while the C K onset stays put.
    assert abs(_half_rise(e, sa, EDGES["C K"]) - _half_rise(e, sm, EDGES["C K"])) < 0.5

    # Near-edge structure: phase A's L3 white line is split by the crystal field
    # into t2g and eg peaks ~2 eV apart with a dip between; in the damaged layer
    # the splitting is smeared into one line.
    def l3_maxima(s: np.ndarray) -> np.ndarray:
        sig, _ = _edge_signal(e, s, EDGES["Ti L3"])
        w = (e >= 452) & (e <= 460)  # L3 only (L2 starts at 461.8 / 460.3 eV)
        x, y = e[w], sig[w]
        inner = (y[1:-1] > y[:-2]) & (y[1:-1] > y[2:]) & (y[1:-1] > 0.3 * y.max())
        return x[1:-1][inner]

    peaks_a = l3_maxima(sa)
    assert len(peaks_a) == 2 and 1.0 <= np.diff(peaks_a)[0] <= 3.0
    sig, _ = _edge_signal(e, sa, EDGES["Ti L3"])
    dip = sig[(e > peaks_a[0]) & (e < peaks_a[1])].min()
    assert dip < 0.85 * min(sig[np.isin(e, peaks_a)])
    assert len(l3_maxima(sm)) == 1

    # Lower density: less background per unit thickness (0.8x phase A's).
    def bg_per_t(region_mask: np.ndarray) -> float:
        pre = np.asarray(mp.eels)[region_mask][:, (e >= 252) & (e <= 280)].sum(axis=1)
        return float((pre / mp.thickness[region_mask]).mean())

    am = bg_per_t(_pure_cells(mp, AMORPHOUS))
    a = bg_per_t(_pure_cells(mp, A0) | _pure_cells(mp, A_ROT))
    assert am / a == pytest.approx(0.8, abs=0.03)


# --- 4D-STEM ----------------------------------------------------------------


def test_direct_beam_at_centre_with_sub_pixel_descan(mp: MultimodalPhantom) -> None:
    c = N_PAT / 2
    cen = _beam_centroid(np.asarray(mp.diffraction, dtype=np.float64), c, 4.0)
    # Every pattern is centred within 1 px, and the centre moves with the stated descan.
    assert np.abs(cen).max() < 1.0
    assert np.abs(cen - mp.descan).max() < 0.15
    # The direct beam is the brightest feature of every pattern.
    flat = np.asarray(mp.diffraction).reshape(-1, N_PAT * N_PAT)
    rr, cc = np.unravel_index(flat.argmax(axis=1), (N_PAT, N_PAT))
    assert np.all(np.hypot(rr - c, cc - c) <= 2)


def test_bragg_spots_match_lattice_spacing_and_orientation(mp: MultimodalPhantom) -> None:
    c = N_PAT / 2
    r_disc = mp.metadata["disc_radius_px"]
    ring = {}
    for region, d, count, period in [
        (A0, LATTICE_A, 4, 90.0),
        (A_ROT, LATTICE_A, 4, 90.0),
        (B, D_B, 6, 60.0),
    ]:
        mask = _interior(mp, region)
        pat = _mean_pattern(mp, mask)
        centre = c + mp.descan[mask].mean(axis=0)
        spots = _spots(pat, centre, r_disc + 2, count)
        # |g| = 1/d, converted to detector px by q_scale, within 1 px.
        radius = np.hypot(spots[:, 0], spots[:, 1])
        assert np.all(np.abs(radius - 1 / d / mp.q_scale) < 1.0), (region, radius)
        ang = _angles(spots)
        ring[region] = ang
        # Friedel pairs: every spot has a partner at -g.
        for s in spots:
            assert np.min(np.hypot(*(spots + s).T)) < 1.0
        # n-fold symmetry: spots spaced by the lattice's period.
        assert np.all(_ang_diff(ang, ang[0], period) < 2.0)
    # Grain 0 at 0 deg; grain 1 rotated by 35 deg; phase B's (10) spots at 15 + 30 deg.
    assert np.all(_ang_diff(ring[A0], 0.0, 90.0) < 2.0)
    assert np.all(_ang_diff(ring[A_ROT], ROTATION, 90.0) < 2.0)
    assert np.all(_ang_diff(ring[B], ORIENT_B + 30.0, 60.0) < 2.0)
    # Intensities fall off with |g|: second-order (20) spots of phase A are weaker.
    pat = _mean_pattern(mp, _interior(mp, A0))
    i10 = pat[round(c), round(c + 1 / LATTICE_A / mp.q_scale)]
    i20 = pat[round(c), round(c + 2 / LATTICE_A / mp.q_scale)]
    assert i20 < 0.6 * i10


def test_spots_land_where_the_haadf_lattice_says(mp: MultimodalPhantom) -> None:
    """Cross-modality: grain 0's lattice measured in the HAADF image's Fourier
    transform gives the same |g| and direction as its diffraction spots."""
    region = A0
    # Largest square inside the grain (chessboard distance to the grain's outside,
    # with the image border counting as outside).
    dist = ndimage.distance_transform_cdt(np.pad(mp.truth_image == region, 1), metric="chessboard")[
        1:-1, 1:-1
    ]
    r0, c0 = np.unravel_index(np.argmax(dist), dist.shape)
    half = int(dist[r0, c0]) - 1
    assert half >= 24
    tile = mp.haadf[r0 - half : r0 + half, c0 - half : c0 + half].astype(np.float64)
    size = 512
    win = np.outer(np.hanning(tile.shape[0]), np.hanning(tile.shape[1]))
    power = np.abs(np.fft.fft2((tile - tile.mean()) * win, s=(size, size))) ** 2
    k = np.fft.fftfreq(size, d=mp.image_pixel_size)
    kr, kc = np.meshgrid(k, k, indexing="ij")
    kmag = np.hypot(kr, kc)
    band = (kmag > 1.5) & (kmag < 3.2)  # first order only
    i = np.argmax(np.where(band, power, 0))
    k_img = kmag.ravel()[i]
    ang_img = np.degrees(np.arctan2(-kr.ravel()[i], kc.ravel()[i]))
    mask = _interior(mp, region)
    spots = _spots(_mean_pattern(mp, mask), N_PAT / 2 + mp.descan[mask].mean(axis=0), 4, 4)
    g_px = np.hypot(spots[:, 0], spots[:, 1])
    assert np.all(np.abs(g_px - k_img / mp.q_scale) < 1.0)
    assert np.min(_ang_diff(_angles(spots), ang_img, 360.0)) < 3.0


def test_amorphous_shows_flat_ring_and_no_spots(mp: MultimodalPhantom) -> None:
    c = N_PAT / 2
    mask = _interior(mp, AMORPHOUS)
    pat = _mean_pattern(mp, mask)
    centre = c + mp.descan[mask].mean(axis=0)
    rr, cc = np.indices(pat.shape)
    rad = np.hypot(rr - centre[0], cc - centre[1])
    ang = np.degrees(np.arctan2(-(rr - centre[0]), cc - centre[1])) % 360
    # Radial profile (1 px bins) beyond the direct beam: its maximum is the ring.
    r_disc = mp.metadata["disc_radius_px"]
    bins = np.arange(int(r_disc + 3), int(c) - 1)
    prof = np.array([pat[(rad >= b) & (rad < b + 1)].mean() for b in bins])
    r_ring = bins[np.argmax(prof)] + 0.5
    assert abs(r_ring - 1 / D_NN / mp.q_scale) <= 1.0
    assert prof.max() > 1.5 * prof[0]  # a ring, not the tail of the direct beam
    # Azimuthally flat: 12 sectors of the ring agree within 10 % ...
    on = np.abs(rad - r_ring) < 1.0
    sector = (ang[on] // 30).astype(int)
    means = ndimage.mean(pat[on], sector, np.arange(12))
    assert means.max() / means.min() < 1.1
    # ... and no spots: the brightest ring pixel is close to the ring median, unlike
    # a crystal's pattern on its (10) spot radius.
    assert pat[on].max() / np.median(pat[on]) < 1.3
    cryst = _mean_pattern(mp, _interior(mp, A0))
    on_a = np.abs(rad - 1 / LATTICE_A / mp.q_scale) < 1.0
    assert cryst[on_a].max() / np.median(cryst[on_a]) > 3


# --- noise, determinism, chunked output ----------------------------------------


def test_poisson_noise_variance_equals_mean(mp: MultimodalPhantom, mp0: MultimodalPhantom) -> None:
    assert np.array_equal(mp.truth, mp0.truth)
    for noisy, mean in [(mp.eels, mp0.eels), (mp.diffraction, mp0.diffraction)]:
        x = np.asarray(noisy, dtype=np.float64)
        mu = np.asarray(mean, dtype=np.float64)
        sel = mu > 5
        z = (x[sel] - mu[sel]) / np.sqrt(mu[sel])
        assert abs(z.mean()) < 0.01
        assert z.var() == pytest.approx(1.0, abs=0.03)
    # The noiseless spectra hold dose_eels counts on average.
    assert np.asarray(mp0.eels).sum(axis=-1).mean() == pytest.approx(1e5, rel=1e-4)
    # Each pattern records the incident dose minus a few percent scattered off the detector.
    tot = np.asarray(mp0.diffraction).sum(axis=(-2, -1))
    assert np.all((tot > 0.85 * 2e4) & (tot < 2e4))


def test_same_seed_identical_other_seed_differs() -> None:
    kw = {"pattern_size": 32}
    a = multimodal_phantom((16, 16), seed=5, **kw)
    b = multimodal_phantom((16, 16), seed=5, **kw)
    c = multimodal_phantom((16, 16), seed=6, **kw)
    for name in ("haadf", "eels", "diffraction", "truth", "truth_image", "descan", "thickness"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.truth, c.truth)
    assert not np.array_equal(a.eels, c.eels)
    assert not np.array_equal(a.diffraction, c.diffraction)


def test_zarr_output_is_chunked_and_equals_in_memory(tmp_path) -> None:
    kw = {"seed": 2, "pattern_size": 32}
    mem = multimodal_phantom((16, 16), **kw)
    z3 = multimodal_phantom((16, 16), out=tmp_path / "a.zarr", chunk_rows=3, **kw)
    z7 = multimodal_phantom((16, 16), out=tmp_path / "b.zarr", chunk_rows=7, **kw)
    for ph, rows in [(z3, 3), (z7, 7)]:
        assert isinstance(ph.eels, da.Array) and isinstance(ph.diffraction, da.Array)
        assert ph.eels.chunks[0][0] == rows and ph.diffraction.chunks[0][0] == rows
        assert np.array_equal(ph.eels.compute(), mem.eels)
        assert np.array_equal(ph.diffraction.compute(), mem.diffraction)
        assert np.array_equal(ph.truth, mem.truth)
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert g["diffraction"].chunks == (3, 16, 32, 32)
    assert g["eels"].chunks == (3, 16, 512)
    assert g["haadf"].chunks == (24, 128) and g["truth"].chunks == (3, 16)
    for name in ("haadf", "truth", "truth_image"):
        assert np.array_equal(g[name][...], getattr(mem, name)), name
    attrs = dict(g.attrs)
    assert attrs["region_names"] == mem.region_names
    assert attrs["q_scale"] == pytest.approx(mem.q_scale)
    assert attrs["scan_step"] == pytest.approx(mem.scan_step)
    assert tuple(attrs["energy_axis"]) == mem.energy_axis
    assert [a["name"] for a in attrs["axes"]["diffraction"]] == ["y", "x", "qy", "qx"]
    # An existing group is not replaced unless asked.
    with pytest.raises(ParameterError, match="not empty"):
        multimodal_phantom((16, 16), out=tmp_path / "a.zarr", **kw)
    again = multimodal_phantom((16, 16), out=tmp_path / "a.zarr", overwrite=True, chunk_rows=4, **kw)
    assert np.array_equal(again.diffraction.compute(), mem.diffraction)
    # A folder that is not a zarr group is never deleted.
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("x")
    with pytest.raises(ParameterError, match="not a zarr group"):
        multimodal_phantom((16, 16), out=tmp_path / "keep", overwrite=True, **kw)
    assert (tmp_path / "keep" / "notes.txt").exists()


def test_zarr_render_memory_stays_at_one_chunk(tmp_path) -> None:
    """Peak memory of a zarr render does not grow with the number of scan rows."""
    cols, n, chunk_rows = 32, 64, 2
    peaks = {}
    tracemalloc.start()
    try:
        for rows in (16, 48):
            tracemalloc.reset_peak()
            multimodal_phantom(
                (rows, cols),
                pattern_size=n,
                image_oversample=4,
                out=tmp_path / f"{rows}.zarr",
                chunk_rows=chunk_rows,
            )
            peaks[rows] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    chunk_bytes = chunk_rows * cols * n * n * 4
    row_bytes = cols * n * n * 4
    assert peaks[16] > chunk_bytes  # the chunk buffers are seen ...
    # ... but 32 more scan rows (16.8 MB more data) raise the peak by little: only
    # the in-memory HAADF image and the small scan-grid maps grow with the rows.
    assert peaks[48] - peaks[16] < 0.15 * 32 * row_bytes
    assert peaks[48] < 0.35 * 48 * row_bytes


@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"scan_shape": (4, 64)}, "scan_shape"),
        ({"scan_shape": (16, 16, 16)}, "scan_shape"),
        ({"scan_shape": "16x16"}, "scan_shape"),
        ({"scan_shape": (16, 16), "image_oversample": 2}, "scan_shape"),
        ({"image_oversample": 0}, "image_oversample"),
        ({"pattern_size": 8}, "pattern_size"),
        ({"pattern_size": 32.0}, "pattern_size"),
        ({"dose_eels": 0}, "dose_eels"),
        ({"dose_diffraction": -1.0}, "dose_diffraction"),
        ({"dose_diffraction": float("nan")}, "dose_diffraction"),
        ({"n_channels": 128}, "n_channels"),
        ({"energy_offset": 300.0}, "energy_offset"),
        ({"dispersion": 0.5}, "n_channels"),  # 512 channels then end at 505.5 eV, before O K
        ({"dispersion": 4.0}, "dispersion"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"seed": -1}, "seed"),
        ({"image_pixel_size": 0.2}, "image_pixel_size"),
    ],
)
def test_bad_parameters_raise(kwargs, where) -> None:
    kwargs = {"scan_shape": (16, 16), "pattern_size": 32, **kwargs}
    with pytest.raises(ParameterError) as err:
        multimodal_phantom(**kwargs)
    assert err.value.where == where
    assert err.value.fix


def test_thickness_wedge_and_undulations_are_parameters():
    default = multimodal_phantom((16, 16), seed=5, pattern_size=16, noise=False)
    same = multimodal_phantom((16, 16), seed=5, pattern_size=16, noise=False, thickness_wedge=0.2,
                              thickness_wiggle=0.03)
    np.testing.assert_array_equal(default.diffraction, same.diffraction)
    flat = multimodal_phantom((16, 16), seed=5, pattern_size=16, noise=False, thickness_wedge=0.0,
                              thickness_wiggle=0.0)
    np.testing.assert_allclose(flat.thickness, 1.0, atol=1e-6)
    steep = multimodal_phantom((16, 16), seed=5, pattern_size=16, noise=False, thickness_wedge=0.6)
    assert np.ptp(steep.thickness) > 2 * np.ptp(default.thickness)
    with pytest.raises(ParameterError, match="thickness_wedge"):
        multimodal_phantom((16, 16), thickness_wedge=1.0)
    with pytest.raises(ParameterError, match="thickness_wiggle"):
        multimodal_phantom((16, 16), thickness_wiggle=-0.1)


def test_diffraction_features_move_less_with_thickness_than_between_regions():
    # Noise-free patterns under a 50 % thickness wedge: inside each region (two positions
    # from its edge) the default features spread less, against the distance between
    # regions, than features of patterns scaled by their total counts.
    from multimodal_seg.encoders.diffraction import DiffractionProfilesEncoder

    ph = multimodal_phantom((24, 24), pattern_size=32, seed=1, noise=False, thickness_wedge=0.5,
                            thickness_wiggle=0.0)
    patterns = np.asarray(ph.diffraction, np.float32).reshape(-1, 32, 32)
    inside = np.any([ndimage.binary_erosion(ph.truth == r, iterations=2) for r in range(4)], axis=0).ravel()
    truth = ph.truth.ravel()

    def spread(normalise: str) -> float:
        f = DiffractionProfilesEncoder(normalise=normalise).pattern_features(patterns)
        centres = np.array([f[(truth == r) & inside].mean(axis=0) for r in range(4)])
        between = min(np.linalg.norm(centres[i] - centres[j]) for i in range(4) for j in range(i))
        within = np.mean([np.linalg.norm(f[(truth == r) & inside] - centres[r], axis=1).mean() for r in range(4)])
        return within / between

    assert spread("scattered") < 0.75 * spread("total")
