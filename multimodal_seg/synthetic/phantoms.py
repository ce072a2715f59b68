"""Synthetic HAADF-STEM phantoms with a ground-truth region map.

The specimen models an irradiation-induced order-disorder transition seen in
projection by high-angle annular dark-field (HAADF) STEM:

* two grains of phase A (square lattice of atomic columns) that differ only in
  their in-plane orientation,
* one grain of phase B (hexagonal lattice, different spacing and different
  Z-contrast),
* an amorphous, irradiation-damaged region advancing from the bottom edge
  with a wavy, rough front.

Image formation
---------------
Every atomic column (or, in the amorphous region, every randomly placed atom
site) is a point scatterer whose weight is its relative Z-contrast.  The points
are splatted bilinearly onto a pixel grid at their sub-pixel positions and the
grid is convolved once with a Gaussian of width ``column_sigma`` (the probe
convolved with the column's own spread).  This is equivalent to drawing one
2-D Gaussian per column, but costs one filter pass instead of one Gaussian per
column per pixel.  A weak diffuse background (thermal diffuse scattering and
surface contamination) is added, everything is multiplied by a mild linear
thickness ramp, scaled so that the mean is ``dose`` counts per pixel, and then
Poisson (shot) noise and Gaussian read noise are applied.

Geometry
--------
The layout is defined in normalised image coordinates, so region areas scale
with ``shape`` (also for non-square images), while lattice spacings and column
widths are physical (nm) and so scale with ``pixel_size``.  Grain boundaries
come from a weighted Voronoi diagram (additive weights tuned so that every
region gets a sizeable share of the image, multiplicative weights that bend
the boundaries into arcs) drawn in smoothly warped coordinates, so the
boundaries are curved and slightly rough.  The amorphous front is a sinusoid
plus smoothed random roughness.  Crumbs cut off a region are merged into
their surroundings, so every region is one connected piece.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import ParameterError

__all__ = ["Amorphous", "Crystal", "Phantom", "haadf_phantom", "render_haadf"]

# --- fixed specimen constants (relative units unless stated) -----------------
_WEIGHT_A = 1.00  # Z-contrast weight of one phase-A column
_WEIGHT_B = 0.85  # phase-B column weight (lighter columns, but packed denser)
_WEIGHT_AMORPHOUS = 0.70  # mean weight of one amorphous atom site
# Share of the amorphous signal that is spread evenly (atoms overlapping in
# projection through the foil) rather than concentrated on resolved sites.
_AMORPHOUS_DIFFUSE = 0.35
#: Amorphous site density relative to phase A (swelling); shared with the multimodal phantom.
AMORPHOUS_DENSITY = 0.80
_AMORPHOUS_MIN_SEP = 0.34  # nm, closest approach of two amorphous sites (packing ~0.45)
_WEIGHT_JITTER = 0.03  # relative column-to-column weight scatter in the crystals
_THERMAL_JITTER = 0.005  # nm, rms static displacement of crystal columns
_BACKGROUND = 0.25  # diffuse background, as a fraction of phase A's mean signal
_BOUNDARY_MIN_SEP = 0.22  # nm, columns of different regions closer than this clash
#: Orientation of the phase-B lattice, degrees; shared with the multimodal phantom.
ORIENTATION_B = 15.0


@dataclass
class Phantom:
    """A synthetic image with its ground-truth segmentation.

    Attributes
    ----------
    image
        ``(rows, cols)`` float32 detector counts, non-negative.
    truth
        ``(rows, cols)`` int16 region id, ``0 .. n_regions - 1``, for every pixel.
    region_names
        Human-readable name of each region id (``region_names[i]`` names id ``i``).
    pixel_size
        Pixel size in ``units`` per pixel.
    units
        Length unit of ``pixel_size``.
    description
        One paragraph saying what the regions are and their parameters.
    """

    image: np.ndarray
    truth: np.ndarray
    region_names: list[str]
    pixel_size: float
    units: str = "nm"
    description: str = ""


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def check_positive(value: float, name: str, fix: str) -> float:
    """``value`` as a positive finite float, or a ParameterError naming ``name`` with ``fix``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}", fix=fix, where=name) from None
    if not math.isfinite(v) or v <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {value!r}", fix=fix, where=name)
    return v


def _validate(
    shape: tuple[int, int],
    seed: int,
    pixel_size: float,
    dose: float,
    read_noise: float,
    lattice_a: float,
    lattice_b: float,
    rotation: float,
    column_sigma: float,
    thickness_gradient: float,
) -> tuple[tuple[int, int], dict[str, float]]:
    try:
        rows, cols = (int(s) for s in shape)
        if any(int(s) != s for s in shape):
            raise ValueError
    except (TypeError, ValueError):
        raise ParameterError(
            f"shape must be two integers (rows, cols), got {shape!r}",
            fix="pass e.g. shape=(512, 512)",
            where="shape",
        ) from None
    if rows < 64 or cols < 64:
        raise ParameterError(
            f"shape {rows}x{cols} px is too small to hold four regions of lattice",
            fix="use at least 64 px along each axis (256-2048 px is typical)",
            where="shape",
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(
            f"seed must be a non-negative integer, got {seed!r}",
            fix="pass e.g. seed=0",
            where="seed",
        )
    p = {
        "pixel_size": check_positive(pixel_size, "pixel_size", "give the pixel size in nm, e.g. 0.04"),
        "dose": check_positive(dose, "dose", "give the mean counts per pixel, e.g. 200"),
        "lattice_a": check_positive(lattice_a, "lattice_a", "give phase A's lattice parameter in nm, e.g. 0.40"),
        "lattice_b": check_positive(lattice_b, "lattice_b", "give phase B's lattice parameter in nm, e.g. 0.34"),
        "column_sigma": check_positive(column_sigma, "column_sigma", "give the column width in nm, e.g. 0.07"),
    }
    try:
        rn = float(read_noise)
    except (TypeError, ValueError):
        rn = float("nan")
    if not math.isfinite(rn) or rn < 0:
        raise ParameterError(
            f"read_noise must be a non-negative finite number of counts, got {read_noise!r}",
            fix="use 0 for a noiseless detector or a few counts, e.g. 2",
            where="read_noise",
        )
    p["read_noise"] = rn
    try:
        rot = float(rotation)
    except (TypeError, ValueError):
        rot = float("nan")
    if not math.isfinite(rot) or abs(rot % 90.0) < 5.0 or abs(rot % 90.0) > 85.0:
        raise ParameterError(
            f"rotation {rotation!r} deg makes the two phase-A grains look alike "
            "(the square lattice repeats every 90 deg)",
            fix="use a rotation at least 5 deg away from any multiple of 90 deg, e.g. 35",
            where="rotation",
        )
    p["rotation"] = rot
    try:
        tg = float(thickness_gradient)
    except (TypeError, ValueError):
        tg = float("nan")
    if not math.isfinite(tg) or not 0.0 <= tg < 1.0:
        raise ParameterError(
            f"thickness_gradient must be in [0, 1), got {thickness_gradient!r}",
            fix="use a mild fractional ramp such as 0.1 (0 switches it off)",
            where="thickness_gradient",
        )
    p["thickness_gradient"] = tg
    ps = p["pixel_size"]
    # Finest lattice-plane spacing in the image: phase B's (10) planes.
    d_min = min(p["lattice_a"], p["lattice_b"] * math.sqrt(3.0) / 2.0)
    if d_min < 2.5 * ps:
        raise ParameterError(
            f"pixel_size {ps:g} nm cannot resolve lattice planes {d_min:.3f} nm apart "
            "(need at least 2.5 px per spacing)",
            fix=f"use pixel_size <= {d_min / 2.5:.3f} nm or larger lattice parameters",
            where="pixel_size",
        )
    if p["column_sigma"] < 0.5 * ps:
        raise ParameterError(
            f"column_sigma {p['column_sigma']:g} nm is below half a pixel ({ps:g} nm/px), "
            "so columns would alias",
            fix=f"use column_sigma >= {0.5 * ps:.3f} nm or a smaller pixel_size",
            where="column_sigma",
        )
    if p["column_sigma"] > 0.35 * d_min:
        raise ParameterError(
            f"column_sigma {p['column_sigma']:g} nm blurs columns only {d_min:.3f} nm apart together",
            fix=f"use column_sigma <= {0.35 * d_min:.3f} nm",
            where="column_sigma",
        )
    a_max = max(p["lattice_a"], p["lattice_b"])
    if min(rows, cols) * ps < 6 * a_max:
        raise ParameterError(
            f"a {rows}x{cols} px field of view at {ps:g} nm/px holds fewer than 6 unit cells "
            "along its short axis",
            fix=f"use a larger shape or a pixel_size >= {6 * a_max / min(rows, cols):.3f} nm",
            where="shape",
        )
    return (rows, cols), p


# ---------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------


def _smooth_1d(rng: np.random.Generator, n: int, sigma_frac: float) -> np.ndarray:
    """Smoothed white noise of length ``n``, zero mean and unit rms."""
    sig = max(sigma_frac * n, 1.0)
    noise = ndimage.gaussian_filter1d(rng.standard_normal(n + int(8 * sig)), sig, mode="wrap")
    noise = noise[: n]
    noise -= noise.mean()
    return noise / (noise.std() + 1e-12)


def _warp_field(rng: np.random.Generator, rows: int, cols: int, amplitude: float) -> np.ndarray:
    """Smooth random displacement field (normalised units), float32 ``(rows, cols)``.

    A sum of plane waves in random directions: three broad undulations of
    ``amplitude`` and three finer ripples (boundary curvature and roughness)
    of half of it.  Each wave splits into two outer products
    (``sin(a x + b y) = sin(a x) cos(b y) + cos(a x) sin(b y)``), so the field is
    cheap even at 4096^2.  The caller rescales the field if its slope gets
    near 1, so that the warp stays invertible and warped cells connected.
    """
    y = (np.arange(rows, dtype=np.float64) + 0.5) / rows
    x = (np.arange(cols, dtype=np.float64) + 0.5) / cols
    u_cols, v_cols = [], []
    for k_lo, k_hi, amp in [(0.5, 1.2, amplitude)] * 3 + [(2.0, 4.0, 0.5 * amplitude)] * 3:
        k = 2 * np.pi * rng.uniform(k_lo, k_hi)
        theta = rng.uniform(0, 2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        a = amp * rng.uniform(0.6, 1.0)
        ay = k * math.sin(theta) * y
        ax = k * math.cos(theta) * x + phase
        u_cols += [a * np.cos(ay), a * np.sin(ay)]
        v_cols += [np.sin(ax), np.cos(ax)]
    # All outer products summed in one matrix product.
    u = np.stack(u_cols, axis=1).astype(np.float32)
    v = np.stack(v_cols, axis=1).astype(np.float32)
    return u @ v.T


def _front_depth(rng: np.random.Generator, cols: int) -> np.ndarray:
    """Depth of the amorphous layer (fraction of image height) per column.

    Mean depth ~0.26 of the height; a sinusoid (1-2.5 periods across) plus
    smoothed random roughness on two scales, as for a damage front that
    advanced unevenly from the bottom edge.
    """
    x = (np.arange(cols) + 0.5) / cols
    mean = rng.uniform(0.24, 0.28)
    periods = rng.uniform(1.0, 2.5)
    depth = (
        mean
        + rng.uniform(0.04, 0.06) * np.sin(2 * np.pi * periods * x + rng.uniform(0, 2 * np.pi))
        + 0.025 * _smooth_1d(rng, cols, 0.04)
        + 0.006 * _smooth_1d(rng, cols, 0.006)
    )
    return np.clip(depth, 0.12, 0.45)


def region_layout(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The specimen's grains and its damage front, drawn from ``rng``.

    Returns
    -------
    grains
        int16 ``(rows, cols)``: 0 A(0), 1 A(rot), 2 B everywhere, as if nothing were damaged.
    depth
        ``(cols,)`` depth of the amorphous layer per column, as a fraction of the height
        (mean ~0.26); :func:`with_front` puts it on the grains.  The grains' areas are tuned
        for the crystal left above this front.
    """
    depth = _front_depth(rng, cols)
    # Grain seeds (normalised row, col): A grains top-left / top-right, B in the
    # middle above the damage front; jittered per seed.
    seeds = np.array([[0.20, 0.20], [0.22, 0.80], [0.55, 0.50]]) + rng.uniform(-0.05, 0.05, (3, 2))
    targets = np.array([0.37, 0.35, 0.28]) + rng.uniform(-0.03, 0.03, 3)
    targets /= targets.sum()

    # Multiplicative weights m_i (like grains that grew at different rates) make
    # the boundaries circular arcs rather than straight lines.
    # The two A grains always differ (else their boundary would be straight).
    u = rng.uniform(0.3, 0.55) * rng.choice([-1.0, 1.0])
    mult = np.exp([u, -u, rng.uniform(-0.12, 0.12)])

    def scores(wy: np.ndarray, wx: np.ndarray, yy: np.ndarray, xx: np.ndarray, w: np.ndarray) -> list:
        # Weighted power-diagram score m_i |P - s_i|^2 - w_i at warped P = (Y, X).
        Y = yy + wy
        X = xx + wx
        R2 = Y * Y + X * X
        return [
            np.float32(m) * (R2 - np.float32(2 * s[0]) * Y - np.float32(2 * s[1]) * X)
            + np.float32(m * (s[0] ** 2 + s[1] ** 2) - wi)
            for s, m, wi in zip(seeds, mult, w)
        ]

    def labels(rr: int, cc: int, wy, wx, w, dep) -> np.ndarray:
        yy = ((np.arange(rr, dtype=np.float32) + 0.5) / rr)[:, None]
        xx = ((np.arange(cc, dtype=np.float32) + 0.5) / cc)[None, :]
        s0, s1, s2 = scores(wy, wx, yy, xx, w)
        lab = np.where(s1 < s0, 1, 0).astype(np.int16)
        lab[s2 < np.minimum(s0, s1)] = 2
        return lab if dep is None else _put_front(lab, dep)

    # Draw the warp once at a coarse size to tune the weights, then at full size
    # with the same random state, so both see the same smooth field.
    amp = 0.03
    state = rng.bit_generator.state
    coarse = 96
    wy_c = _warp_field(rng, coarse, coarse, amp)
    wx_c = _warp_field(rng, coarse, coarse, amp)
    # Keep the warp invertible: the Jacobian of p -> p + w(p) must not fold,
    # so cap the slope (Frobenius norm of grad w, an upper bound) at 0.7.
    grads = np.gradient(wy_c, 1 / coarse) + np.gradient(wx_c, 1 / coarse)
    slope = float(np.sqrt(sum(g.astype(np.float64) ** 2 for g in grads)).max())
    gain = min(1.0, 0.7 / slope)
    wy_c *= np.float32(gain)
    wx_c *= np.float32(gain)
    dep_c = np.interp((np.arange(coarse) + 0.5) / coarse, (np.arange(cols) + 0.5) / cols, depth)
    w = np.zeros(3)
    step = 0.1
    for _ in range(80):
        lab = labels(coarse, coarse, wy_c, wx_c, w, dep_c)
        crystal = np.count_nonzero(lab < 3)
        frac = np.array([np.count_nonzero(lab == i) for i in range(3)]) / max(crystal, 1)
        err = targets - frac
        if np.abs(err).max() < 0.01:
            break
        w += step * err  # grow cells that are too small
        step *= 0.97  # damped, so the iteration cannot oscillate for ever
    rng.bit_generator.state = state
    wy = _warp_field(rng, rows, cols, amp) * np.float32(gain)
    wx = _warp_field(rng, rows, cols, amp) * np.float32(gain)
    return labels(rows, cols, wy, wx, w, None), depth


def _put_front(grains: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``grains`` with region 3 (amorphous) below the front ``depth`` (fraction of the height per column)."""
    rows = grains.shape[0]
    yy = ((np.arange(rows, dtype=np.float32) + 0.5) / rows)[:, None]
    lab = grains.copy()
    lab[yy > (1.0 - depth)[None, :].astype(np.float32)] = 3
    return lab


def with_front(grains: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Ground-truth map, int16 ``(rows, cols)``: 0 A(0), 1 A(rot), 2 B, 3 amorphous.

    ``depth`` ``(cols,)`` is the amorphous layer's depth per column as a fraction of the
    height, advancing from the bottom edge.  Crumbs of a region cut off by the front join
    the region around them, so every region is one piece.
    """
    return _merge_fragments(_put_front(grains, depth))


def _region_map(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Ground-truth map, int16 ``(rows, cols)``: 0 A(0), 1 A(rot), 2 B, 3 amorphous."""
    return with_front(*region_layout(rng, rows, cols))


def _merge_fragments(lab: np.ndarray) -> np.ndarray:
    """Give every detached crumb of a region (where the rough front pinches a
    grain off) to the region that surrounds it, so each region is one piece."""
    for region in range(int(lab.max()) + 1):
        comp, n = ndimage.label(lab == region)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        main = int(np.argmax(sizes))
        for i, sl in enumerate(ndimage.find_objects(comp), start=1):
            if i == main or sl is None:
                continue
            # grow the window by one pixel to see the 4-neighbours around the crumb
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
            crumb = comp[sl] == i
            ring = ndimage.binary_dilation(crumb) & ~crumb
            lab[sl][crumb] = np.bincount(lab[sl][ring]).argmax()
    return lab


# ---------------------------------------------------------------------------
# column positions
# ---------------------------------------------------------------------------


def _bbox(mask: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounding box ``(lo, hi)`` (row, col) in px of a mask, grown by ``margin``."""
    r = np.flatnonzero(mask.any(axis=1))
    c = np.flatnonzero(mask.any(axis=0))
    if r.size == 0:
        return None
    return np.array([r[0] - margin, c[0] - margin]), np.array([r[-1] + margin, c[-1] + margin])


def region_at(truth: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Region id at sub-pixel positions; positions off the image take the edge pixel."""
    rows, cols = truth.shape
    ri = np.clip(np.rint(r).astype(np.int64), 0, rows - 1)
    ci = np.clip(np.rint(c).astype(np.int64), 0, cols - 1)
    return truth[ri, ci]


def _lattice_columns(
    rng: np.random.Generator,
    truth: np.ndarray,
    region: int,
    spacing_px: float,
    angle_deg: float,
    hexagonal: bool,
    margin: float,
) -> np.ndarray:
    """Column positions ``(n, 2)`` (row, col) in px of one grain's lattice.

    ``angle_deg`` is the direction of the first lattice vector, counter-clockwise
    from the +column axis as the image is displayed (row axis points down).
    """
    th = math.radians(angle_deg)
    # (row, col) components; row = -y_up
    a1 = spacing_px * np.array([-math.sin(th), math.cos(th)])
    th2 = th + math.radians(60.0 if hexagonal else 90.0)
    a2 = spacing_px * np.array([-math.sin(th2), math.cos(th2)])
    box = _bbox(truth == region, margin)
    if box is None:
        return np.zeros((0, 2))
    lo, hi = box
    origin = lo + rng.uniform(0, 1, 2) * spacing_px  # random lattice registry
    basis = np.stack([a1, a2], axis=1)  # columns are the lattice vectors
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]]) - origin
    ij = np.linalg.solve(basis, corners.T)  # lattice coordinates of the corners
    i = np.arange(math.floor(ij[0].min()) - 1, math.ceil(ij[0].max()) + 2)
    j = np.arange(math.floor(ij[1].min()) - 1, math.ceil(ij[1].max()) + 2)
    I, J = np.meshgrid(i, j, indexing="ij")
    pos = origin + I.reshape(-1, 1) * a1 + J.reshape(-1, 1) * a2
    inside = np.all((pos >= lo) & (pos <= hi), axis=1)
    pos = pos[inside]
    pos = pos[region_at(truth, pos[:, 0], pos[:, 1]) == region]
    return pos


def _amorphous_sites(
    rng: np.random.Generator,
    truth: np.ndarray,
    region: int,
    density_px: float,
    min_sep_px: float,
    margin: float,
) -> np.ndarray:
    """Random atom sites ``(n, 2)`` (row, col) in px with a hard minimum separation.

    Random sequential addition done in vectorised rounds: each round draws a batch
    of uniform candidates, drops those too close to accepted sites, and of every
    clashing pair inside the batch drops the later one.  The default target
    (packing fraction ~0.45) is below the RSA jamming limit (~0.55), so the
    target is reached, or nearly, within the round limit.  The result has
    short-range order only (a liquid-like pair correlation), so its power
    spectrum is a diffuse ring at |k| ~ 1 / nearest-neighbour distance.
    """
    box = _bbox(truth == region, margin)
    if box is None:
        return np.zeros((0, 2))
    lo, hi = box
    box_area = float(np.prod(hi - lo))
    n_batch = max(int(density_px * box_area), 16)
    accepted = np.zeros((0, 2))
    target = None
    for _ in range(40):
        cand = lo + rng.uniform(0, 1, (n_batch, 2)) * (hi - lo)
        keep = region_at(truth, cand[:, 0], cand[:, 1]) == region
        if target is None:
            target = round(density_px * box_area * keep.mean())
        cand = cand[keep]
        if accepted.shape[0]:
            d, _ = cKDTree(accepted).query(cand, distance_upper_bound=min_sep_px)
            cand = cand[~np.isfinite(d)]
        if cand.shape[0] > 1:
            pairs = cKDTree(cand).query_pairs(min_sep_px, output_type="ndarray")
            if pairs.size:
                drop = np.zeros(cand.shape[0], bool)
                drop[pairs.max(axis=1)] = True
                cand = cand[~drop]
        need = target - accepted.shape[0]
        if cand.shape[0] >= need:
            accepted = np.concatenate([accepted, cand[rng.permutation(cand.shape[0])[:need]]])
            break
        accepted = np.concatenate([accepted, cand])
    return accepted


def _splat(shape: tuple[int, int], pos: np.ndarray, weight: np.ndarray, pad: int) -> np.ndarray:
    """Bilinear splat of point weights onto a grid padded by ``pad`` px per side."""
    rows, cols = shape[0] + 2 * pad, shape[1] + 2 * pad
    r = pos[:, 0] + pad
    c = pos[:, 1] + pad
    r0 = np.floor(r).astype(np.int64)
    c0 = np.floor(c).astype(np.int64)
    fr = r - r0
    fc = c - c0
    ok = (r0 >= 0) & (c0 >= 0) & (r0 < rows - 1) & (c0 < cols - 1)
    r0, c0, fr, fc, w = r0[ok], c0[ok], fr[ok], fc[ok], weight[ok]
    flat = r0 * cols + c0
    out = np.bincount(flat, w * (1 - fr) * (1 - fc), minlength=rows * cols)
    out += np.bincount(flat + 1, w * (1 - fr) * fc, minlength=rows * cols)
    out += np.bincount(flat + cols, w * fr * (1 - fc), minlength=rows * cols)
    out += np.bincount(flat + cols + 1, w * fr * fc, minlength=rows * cols)
    return out.reshape(rows, cols).astype(np.float32)


@dataclass(frozen=True)
class Crystal:
    """A crystalline region: a lattice of atomic columns seen down a zone axis.

    Attributes
    ----------
    spacing
        Lattice parameter (square) or nearest-column distance (hexagonal), nm.
    angle
        Direction of the first lattice vector, degrees counter-clockwise as displayed.
    hexagonal
        Hexagonal (60 deg) rather than square lattice.
    weight
        Z-contrast weight of one column (phase A's is 1).
    """

    spacing: float
    angle: float
    hexagonal: bool = False
    weight: float = _WEIGHT_A


@dataclass(frozen=True)
class Amorphous:
    """An amorphous region: atom sites at random positions with short-range order only.

    Attributes
    ----------
    density
        Site density relative to a square lattice of the reference spacing.
    weight
        Mean Z-contrast weight of one site (a share of it is spread evenly).
    """

    density: float = AMORPHOUS_DENSITY
    weight: float = _WEIGHT_AMORPHOUS


def render_haadf(truth: np.ndarray, materials: list[Crystal | Amorphous], geo_rng: np.random.Generator,
                 noise_rng: np.random.Generator, *, pixel_size: float, dose: float, read_noise: float = 2.0,
                 column_sigma: float = 0.07, reference_spacing: float = 0.40,
                 thickness_gradient: float = 0.10, noise: bool = True) -> np.ndarray:
    """Render a HAADF-STEM image of any region map (see the module docstring).

    The steps are public pieces (:func:`place_columns`, :func:`resolve_clashes`,
    :func:`perturb_and_weigh`, :func:`expected_counts`, :func:`detector_counts`), so that a
    specimen drawn once can be rendered again (the damage series).

    Parameters
    ----------
    truth
        ``(rows, cols)`` region id of every pixel, ``0 .. len(materials) - 1``.
    materials
        What each region is made of.
    geo_rng, noise_rng
        Random streams for the specimen (column registry, sites, jitter) and the noise.
    pixel_size, dose, read_noise, column_sigma, thickness_gradient, noise
        As for :func:`haadf_phantom` (nm, counts per pixel, counts, nm, fraction).
    reference_spacing
        Lattice parameter (nm) that amorphous densities and the background refer to.

    Returns
    -------
    ``(rows, cols)`` float32 counts.
    """
    optics = {"pixel_size": pixel_size, "column_sigma": column_sigma, "reference_spacing": reference_spacing}
    pos, reg = place_columns(geo_rng, truth, materials, **optics)
    keep = resolve_clashes(pos, reg, pixel_size, geo_rng)
    pos, weight = perturb_and_weigh(geo_rng, pos[keep], reg[keep], materials, pixel_size)
    ramp = geo_rng.uniform(0, 2 * np.pi) if thickness_gradient > 0 else 0.0
    img = expected_counts(truth.shape, pos, weight, truth, materials, **optics,
                          thickness_gradient=thickness_gradient, ramp_direction=ramp)
    return detector_counts(img, scale=dose / float(img.mean(dtype=np.float64)), rng=noise_rng,
                           read_noise=read_noise, noise=noise)


def default_materials(p: dict[str, float]) -> list[Crystal | Amorphous]:
    """The four materials of :func:`haadf_phantom` for its checked parameters ``p``
    (:func:`check_specimen`): phase A at 0 deg and at ``rotation``, phase B, amorphous."""
    return [Crystal(p["lattice_a"], 0.0, False, _WEIGHT_A), Crystal(p["lattice_a"], p["rotation"], False, _WEIGHT_A),
            Crystal(p["lattice_b"], ORIENTATION_B, True, _WEIGHT_B), Amorphous()]


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def haadf_phantom(
    shape: tuple[int, int] = (512, 512),
    *,
    seed: int = 0,
    pixel_size: float = 0.04,
    dose: float = 200.0,
    read_noise: float = 2.0,
    lattice_a: float = 0.40,
    lattice_b: float = 0.34,
    rotation: float = 35.0,
    column_sigma: float = 0.07,
    thickness_gradient: float = 0.10,
    noise: bool = True,
) -> Phantom:
    """Render a HAADF-STEM-like phantom of an order-disorder transition.

    Four regions (ids in ``truth``):

    0. phase A grain, square lattice ``lattice_a`` at 0 deg;
    1. phase A grain, same lattice rotated by ``rotation`` deg;
    2. phase B grain, hexagonal lattice ``lattice_b`` at 15 deg, column weight
       0.85 of A's but 1.6x A's columns per area (defaults), so ~1.35x A's
       mean Z-contrast signal;
    3. amorphous (irradiation-damaged) layer along the bottom edge: atom sites
       at random positions with a 0.34 nm minimum separation, 0.8x A's
       density, mean weight 0.7 of A's column weight (35 % of it spread evenly).

    Parameters
    ----------
    shape
        Image size ``(rows, cols)`` in pixels, each at least 64.  The region
        layout scales with the shape (in normalised coordinates).
    seed
        Seed for :func:`numpy.random.default_rng`.  The same seed gives identical
        arrays; another seed gives different noise and slightly different
        geometry (grain seeds, front profile, lattice registry).
    pixel_size
        Sampling in nm per pixel.  Must resolve the finest lattice planes with
        at least 2.5 px.
    dose
        Mean detector counts per pixel (> 0) of the noiseless image.
    read_noise
        Standard deviation in counts (>= 0) of the Gaussian detector read noise.
    lattice_a
        Phase A square lattice parameter in nm (0.3-0.45 is realistic).
    lattice_b
        Phase B hexagonal lattice parameter (nearest-column distance) in nm.
    rotation
        In-plane rotation of grain 1 relative to grain 0 in degrees,
        counter-clockwise as displayed.  Must be >= 5 deg from a multiple of 90.
    column_sigma
        Gaussian sigma of one projected atomic column in nm (probe size
        convolved with the column's spread).
    thickness_gradient
        Peak-to-peak fractional intensity change of the linear thickness ramp
        across the field of view, in ``[0, 1)``.
    noise
        If False, return the noiseless expected counts (same geometry as with
        noise for the same seed); useful for checking noise statistics.

    Returns
    -------
    Phantom
        ``image`` ``(rows, cols)`` float32 counts, ``truth`` ``(rows, cols)`` int16.

    Raises
    ------
    ParameterError
        For a shape under 64 px, non-positive ``dose``/``pixel_size``/lattice
        parameters, negative ``read_noise``, a pixel size too coarse for the
        lattice, and similar impossible settings.
    """
    (rows, cols), p = _validate(
        shape, seed, pixel_size, dose, read_noise, lattice_a, lattice_b, rotation,
        column_sigma, thickness_gradient,
    )
    ps = p["pixel_size"]
    # Independent streams so geometry does not depend on whether noise is drawn.
    geo_rng, noise_rng = np.random.default_rng(seed).spawn(2)

    truth = _region_map(geo_rng, rows, cols)
    rot = p["rotation"]
    img = render_haadf(truth, default_materials(p), geo_rng, noise_rng, pixel_size=ps, dose=p["dose"],
                       read_noise=p["read_noise"], column_sigma=p["column_sigma"],
                       reference_spacing=p["lattice_a"], thickness_gradient=p["thickness_gradient"],
                       noise=noise)
    g = p["thickness_gradient"]

    fr = np.bincount(truth.ravel(), minlength=4) / truth.size
    names = [
        "grain A (square, 0 deg)",
        f"grain A (square, {rot:g} deg)",
        "phase B (hexagonal)",
        "amorphous (irradiation-damaged)",
    ]
    d_b = p["lattice_b"] * math.sqrt(3.0) / 2.0
    description = (
        "Synthetic HAADF-STEM image of an irradiation-induced order-disorder transition "
        f"({rows}x{cols} px at {ps:g} nm/px). "
        f"Region 0 ({fr[0]:.0%} of the area): phase A, square lattice of atomic columns, "
        f"a = {p['lattice_a']:g} nm, at 0 deg, column weight {_WEIGHT_A:g}. "
        f"Region 1 ({fr[1]:.0%}): the same phase A rotated by {rot:g} deg counter-clockwise. "
        f"Region 2 ({fr[2]:.0%}): phase B, hexagonal lattice, a = {p['lattice_b']:g} nm "
        f"((10) planes {d_b:.3f} nm), at {ORIENTATION_B:g} deg, column weight {_WEIGHT_B:g}. "
        f"Region 3 ({fr[3]:.0%}): amorphous damage front advancing from the bottom edge, "
        f"atom sites at random positions (minimum separation {_AMORPHOUS_MIN_SEP:g} nm, "
        f"{AMORPHOUS_DENSITY:g}x phase A's density, mean weight {_WEIGHT_AMORPHOUS:g}). "
        f"Columns are Gaussians of sigma {p['column_sigma']:g} nm; diffuse background "
        f"{_BACKGROUND:g} of phase A's mean signal; linear thickness ramp "
        f"{g:.0%} peak-to-peak; scaled to a mean of {p['dose']:g} counts/px"
        + (
            f", then Poisson noise and Gaussian read noise of {p['read_noise']:g} counts."
            if noise
            else " (noiseless)."
        )
    )
    return Phantom(
        image=img,
        truth=truth.astype(np.int16),
        region_names=names,
        pixel_size=ps,
        units="nm",
        description=description,
    )


# ---------------------------------------------------------------------------
# the physics as pieces (the damage series draws a specimen once and renders
# it frame by frame: multimodal_seg.synthetic.series)
# ---------------------------------------------------------------------------


def check_specimen(shape: tuple[int, int], seed: int, *, pixel_size: float, dose: float, read_noise: float,
                   lattice_a: float, lattice_b: float, rotation: float, column_sigma: float,
                   thickness_gradient: float) -> tuple[tuple[int, int], dict[str, float]]:
    """Check the phantom's parameters (see :func:`haadf_phantom`) before anything is drawn.

    Returns
    -------
    ``(rows, cols)`` and the physical parameters as floats, by name.

    Raises
    ------
    ParameterError
        Naming the parameter that cannot work and a value that would.
    """
    return _validate(shape, seed, pixel_size, dose, read_noise, lattice_a, lattice_b, rotation, column_sigma,
                     thickness_gradient)


def place_columns(rng: np.random.Generator, truth: np.ndarray, materials: list[Crystal | Amorphous], *,
                  pixel_size: float, column_sigma: float, reference_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Atomic columns of every region of a region map: positions ``(n, 2)`` px and regions ``(n,)``.

    Crystal regions get their lattices, then amorphous regions their random sites (both
    in region order); a region absent from ``truth`` gets nothing and draws no random
    numbers.  Columns of different regions may clash where they meet:
    :func:`resolve_clashes`.
    """
    ps = pixel_size
    pad = math.ceil(4 * column_sigma / ps) + 1  # columns just outside still shine in
    density_a = 1.0 / (reference_spacing / ps) ** 2  # columns per px^2
    crystals = [i for i, m in enumerate(materials) if isinstance(m, Crystal)]
    groups, owners = [], []
    for i in crystals + [i for i in range(len(materials)) if i not in crystals]:
        m = materials[i]
        if isinstance(m, Crystal):
            groups.append(_lattice_columns(rng, truth, i, m.spacing / ps, m.angle, m.hexagonal, pad))
        else:
            groups.append(_amorphous_sites(rng, truth, i, m.density * density_a, _AMORPHOUS_MIN_SEP / ps, pad))
        owners.append(i)
    pos = np.concatenate(groups)
    reg = np.concatenate([np.full(g.shape[0], i) for i, g in zip(owners, groups)])
    return pos, reg


def resolve_clashes(pos: np.ndarray, reg: np.ndarray, pixel_size: float,
                    priority: np.ndarray | np.random.Generator) -> np.ndarray:
    """Which columns survive where two regions meet: ``(n,)`` bool.

    Columns of different regions closer than 0.22 nm cannot both be there; of each
    clashing pair the one of lower ``priority`` goes.  ``priority`` is an ``(n,)``
    ranking, or a generator that draws a random one (only when columns are that close).
    """
    keep = np.ones(pos.shape[0], bool)
    pairs = cKDTree(pos).query_pairs(_BOUNDARY_MIN_SEP / pixel_size, output_type="ndarray")
    if pairs.size:
        pairs = pairs[reg[pairs[:, 0]] != reg[pairs[:, 1]]]
        prio = priority.permutation(pos.shape[0]) if isinstance(priority, np.random.Generator) else priority
        loser = np.where(prio[pairs[:, 0]] < prio[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
        keep[loser] = False
    return keep


def perturb_and_weigh(rng: np.random.Generator, pos: np.ndarray, reg: np.ndarray,
                      materials: list[Crystal | Amorphous], pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns with their static displacements and scattering weights.

    Crystal columns move by a small random static displacement (thermal, strain:
    0.005 nm rms) and get their material's Z-contrast weight with 3 % scatter; amorphous
    sites get gamma-distributed weights (cv 0.2, mean their material's weight, less the
    share spread evenly: :func:`expected_counts`).

    Returns
    -------
    Positions ``(n, 2)`` px (a new array) and weights ``(n,)``.
    """
    pos = pos.copy()
    crystal = np.array([isinstance(m, Crystal) for m in materials])[reg]
    # Small static displacements (thermal/strain) keep Bragg peaks sharp but real.
    pos[crystal] += rng.normal(0, _THERMAL_JITTER / pixel_size, (int(crystal.sum()), 2))
    weight = np.empty(pos.shape[0])
    base = np.array([m.weight for m in materials])
    weight[crystal] = base[reg[crystal]] * (1 + _WEIGHT_JITTER * rng.standard_normal(int(crystal.sum())))
    # Amorphous sites: projected atom counts vary, gamma-distributed weights (cv 0.2).
    site_weight = (1 - _AMORPHOUS_DIFFUSE) * base[reg[~crystal]]
    weight[~crystal] = rng.gamma(25.0, site_weight / 25.0, int((~crystal).sum()))
    return pos, weight


def expected_counts(shape: tuple[int, int], pos: np.ndarray, weight: np.ndarray, truth: np.ndarray,
                    materials: list[Crystal | Amorphous], *, pixel_size: float, column_sigma: float,
                    reference_spacing: float, thickness_gradient: float, ramp_direction: float) -> np.ndarray:
    """The noiseless image of point scatterers, in relative units: ``(rows, cols)`` float32.

    Columns are splatted at their sub-pixel positions, each amorphous region's even share
    of signal is added on its area of ``truth``, everything is blurred by the column
    width, a diffuse background is added and a linear thickness ramp of peak-to-peak
    ``thickness_gradient`` along ``ramp_direction`` (radians) applied.
    :func:`detector_counts` scales it to counts and adds noise.
    """
    rows, cols = shape
    sigma_px = column_sigma / pixel_size
    pad = math.ceil(4 * sigma_px) + 1  # columns just outside still shine in
    density_a = 1.0 / (reference_spacing / pixel_size) ** 2  # reference columns per px^2
    img = _splat((rows, cols), pos, weight, pad)
    # Even share of the amorphous signal, added before the blur so its edge at
    # the front is as soft as the columns.
    for i, m in enumerate(materials):
        if isinstance(m, Amorphous):
            diffuse = _AMORPHOUS_DIFFUSE * m.weight * m.density * density_a
            img += np.float32(diffuse) * np.pad(truth == i, pad, mode="edge")
    img = ndimage.gaussian_filter(img, sigma_px, mode="constant", truncate=4.0)
    img = img[pad : pad + rows, pad : pad + cols]

    # Diffuse background (TDS, contamination) relative to A's mean signal per px.
    img += np.float32(_BACKGROUND * _WEIGHT_A * density_a)
    # Linear thickness ramp along a random direction, mean 1, peak-to-peak g.
    g = thickness_gradient
    if g > 0:
        phi = ramp_direction
        yy = ((np.arange(rows, dtype=np.float32) + 0.5) / rows - 0.5) * np.float32(math.sin(phi))
        xx = ((np.arange(cols, dtype=np.float32) + 0.5) / cols - 0.5) * np.float32(math.cos(phi))
        ramp = yy[:, None] + xx[None, :]
        span = float(ramp.max() - ramp.min())
        img *= np.float32(1.0) + np.float32(g / span) * (ramp - np.float32(ramp.mean()))
    return img


def detector_counts(expected: np.ndarray, *, scale: float, rng: np.random.Generator, read_noise: float,
                    noise: bool = True) -> np.ndarray:
    """``expected * scale`` as detector counts: Poisson shot noise and Gaussian read noise
    (``read_noise`` counts rms), clipped at 0; noiseless when ``noise`` is False.
    Returns ``(rows, cols)`` float32 (a new array)."""
    img = expected * np.float32(scale)
    if noise:
        img = rng.poisson(img).astype(np.float32)
        if read_noise > 0:
            img += np.float32(read_noise) * rng.standard_normal(img.shape, dtype=np.float32)
        np.maximum(img, 0, out=img)
    return np.ascontiguousarray(img, dtype=np.float32)
