"""Polar resampling of images around per-image centres (diffraction patterns around their beam).

:func:`polar_grid` lays the sample offsets once per detector size; :func:`polar_maps`
samples a block of images on it, each around its own centre, bilinearly, and averages the
two Friedel mates (angles ``t`` and ``t + 180`` deg).

The sampler is a small numba kernel (compiled once per machine: numba's on-disk cache), not
scipy's ``map_coordinates``: it gives the same values (order 1, edge pixels extended; to
1e-7 in float32) at 0.11 against 0.54 ms per 128^2 pattern (docs/design.md), and releases the
interpreter lock, so Dask's threads sample blocks side by side.  numba is already in every
install (pynndescent's kernels) and adds about 50 MiB when imported; the kernel is imported on
first use only.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def polar_grid(r_max: float, n_radial: int, n_angular: int) -> tuple[np.ndarray, ...]:
    """Sample offsets of a polar grid around a centre.

    Radii: ``n_radial * k`` radii evenly in ``(0, r_max)`` with steps of at most
    1 px.  Angles: ``2 * n_angular * j`` angles over [0, 360) deg with arcs of at
    most 1 px at ``r_max``, ordered so that angle ``t`` and ``t + 180`` deg
    (Friedel mates) are the two halves.

    Parameters
    ----------
    r_max
        Outer radius in pixels.
    n_radial, n_angular
        The radii and angles (per half circle) are multiples of these, so that they fold
        into that many bins.

    Returns
    -------
    ``(dy, dx, radii)``: float32 offsets in pixels of shape ``(R, 2, T)`` (T angles per half
    circle) and the ``R`` radii (float64, pixels).
    """
    n_r = n_radial * max(1, int(np.ceil(r_max / n_radial)))
    n_t = n_angular * max(1, int(np.ceil(np.pi * r_max / n_angular)))
    radii = (np.arange(n_r) + 0.5) * (r_max / n_r)
    theta = (np.arange(2 * n_t) + 0.5) * (np.pi / n_t)
    dy = (radii[:, None] * np.sin(theta)[None, :]).reshape(n_r, 2, n_t)
    dx = (radii[:, None] * np.cos(theta)[None, :]).reshape(n_r, 2, n_t)
    return dy.astype(np.float32), dx.astype(np.float32), radii


def polar_maps(images: np.ndarray, cy: np.ndarray, cx: np.ndarray, dy: np.ndarray,
               dx: np.ndarray) -> np.ndarray:
    """Bilinear samples of each image on a polar grid around its centre, Friedel-averaged.

    Parameters
    ----------
    images
        ``(m, qy, qx)`` float32.
    cy, cx
        ``(m,)`` centres in pixels (row, column).
    dy, dx
        ``(R, 2, T)`` offsets from :func:`polar_grid`.

    Returns
    -------
    ``(m, R, T)`` float32: mean of the samples at angle ``t`` and ``t + 180``
    deg.  Samples beyond the detector take the nearest edge pixel's value (scipy's
    ``map_coordinates(order=1, mode="nearest")``).
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    out = np.empty((len(images), dy.shape[0], dy.shape[2]), dtype=np.float32)
    _kernel()(images, np.ascontiguousarray(cy, dtype=np.float64), np.ascontiguousarray(cx, dtype=np.float64),
              np.ascontiguousarray(dy, dtype=np.float32), np.ascontiguousarray(dx, dtype=np.float32), out)
    return out


@lru_cache(maxsize=1)
def _kernel():
    """The compiled sampler (numba imported and the function compiled or loaded from its cache
    on first use)."""
    import numba

    try:
        jit = numba.njit(nogil=True, cache=True)
        return jit(_friedel_bilinear)
    except RuntimeError as error:  # no writable cache directory: compile in every process
        log.warning("numba cannot cache the polar sampler (%s); it is compiled in each process", error)
        return numba.njit(nogil=True)(_friedel_bilinear)


def _friedel_bilinear(images, cy, cx, dy, dx, out):
    m, qy, qx = images.shape
    n_r, _, n_t = dy.shape
    for i in range(m):
        image = images[i]
        for r in range(n_r):
            for t in range(n_t):
                total = 0.0
                for half in range(2):
                    y = cy[i] + dy[r, half, t]
                    x = cx[i] + dx[r, half, t]
                    y0 = np.floor(y)
                    x0 = np.floor(x)
                    wy = y - y0
                    wx = x - x0
                    # neighbours clamped to the detector: edge pixels extended
                    iy0 = min(max(int(y0), 0), qy - 1)
                    iy1 = min(max(int(y0) + 1, 0), qy - 1)
                    ix0 = min(max(int(x0), 0), qx - 1)
                    ix1 = min(max(int(x0) + 1, 0), qx - 1)
                    total += ((1.0 - wy) * ((1.0 - wx) * image[iy0, ix0] + wx * image[iy0, ix1])
                              + wy * ((1.0 - wx) * image[iy1, ix0] + wx * image[iy1, ix1]))
                out[i, r, t] = 0.5 * total
