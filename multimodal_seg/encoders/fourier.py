"""A weight-free encoder: intensity statistics plus a polar map of the chip's power spectrum.

Why these features: microscopists tell regions apart by brightness (Z contrast,
phase), by texture, by order (sharp Fourier peaks of a lattice vs the diffuse ring
of amorphous material) and by lattice orientation.  A radially averaged power
spectrum sees order and spacing but is blind to orientation, so grains of one
phase merge; the polar map keeps the angle (folded to [0, 180) deg by Friedel
symmetry) and so separates orientations as well.

Feature vector (``dim = n_stats + n_radial * n_angular + n_radial``):

* intensity: mean, standard deviation, 10/50/90th percentiles, mean gradient
  magnitude (all in the image's [0, 1] scale);
* polar power: log mean power in ``n_radial`` linear radial bins (from 1 pixel of
  spatial frequency to Nyquist) times ``n_angular`` angular bins, after removing
  the chip mean and applying a Hann window against edge leakage;
* radial power: the same summed over angles (rotation-invariant spacing).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft

from .base import Encoder

N_STATS = 6


@lru_cache(maxsize=16)
def polar_bins(size: int, n_radial: int, n_angular: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse averaging operator from a ``size x size`` rfft2 power map to polar bins.

    Returns the flat bin index of each rfft2 sample (-1 where unused) and the
    sample count per bin.
    """
    fy = np.fft.fftfreq(size)[:, None] * size        # cycles per chip, rows
    fx = np.fft.rfftfreq(size)[None, :] * size       # cycles per chip, cols (>= 0)
    radius = np.hypot(fy, fx)
    angle = np.mod(np.arctan2(fy, fx), np.pi)        # Friedel: [0, pi)
    r_edges = np.linspace(1.0, size / 2, n_radial + 1)
    r_bin = np.digitize(radius, r_edges) - 1
    a_bin = np.minimum((angle / np.pi * n_angular).astype(int), n_angular - 1)
    valid = (r_bin >= 0) & (r_bin < n_radial)
    flat = np.where(valid, r_bin * n_angular + a_bin, -1).ravel()
    counts = np.bincount(flat[flat >= 0], minlength=n_radial * n_angular)
    return flat, counts


class FourierEncoder(Encoder):
    """Weight-free chip features from intensity statistics and the polar power spectrum.

    Parameters
    ----------
    n_radial
        Radial (spatial-frequency) bins between 1 cycle/chip and Nyquist.
    n_angular
        Angular bins over [0, 180) deg; 1 makes the features rotation-invariant.
    """

    name = "fourier"
    lightweight = True  # a few array operations per chip

    def __init__(self, *, n_radial: int = 12, n_angular: int = 12) -> None:
        if n_radial < 1 or n_angular < 1:
            from ..errors import ParameterError

            raise ParameterError(
                f"n_radial={n_radial} and n_angular={n_angular} must both be >= 1",
                fix="use e.g. n_radial=12, n_angular=12",
                where="encoder options",
            )
        self.n_radial = n_radial
        self.n_angular = n_angular

    @property
    def dim(self) -> int:
        return N_STATS + self.n_radial * self.n_angular + self.n_radial

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "n_radial": self.n_radial, "n_angular": self.n_angular, "version": 2}

    def encode(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips, dtype=np.float32)
        n, size, _ = chips.shape
        flat = chips.reshape(n, -1)
        # Chips of one pixel (a survey image at the scan's own pixel size) have no texture:
        # their gradient, like their spectrum, is flat, and their intensity speaks alone.
        gradient = (np.hypot(*np.gradient(chips, axis=(1, 2))).reshape(n, -1).mean(axis=1) if size > 1
                    else np.zeros(n, dtype=np.float32))
        stats = np.column_stack([
            flat.mean(axis=1),
            flat.std(axis=1),
            # NumPy's vectorised sort, then percentiles of sorted rows: the same values, about
            # four times faster than np.percentile's selection on the raw rows
            *np.percentile(np.sort(flat, axis=1), [10, 50, 90], axis=1),
            gradient,
        ])
        window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
        centred = (chips - flat.mean(axis=1)[:, None, None]) * window
        power = np.abs(scipy.fft.rfft2(centred)) ** 2  # float32 throughout (NumPy's FFT: 4x slower)
        bins, counts = polar_bins(size, self.n_radial, self.n_angular)
        used = bins >= 0
        n_bins = self.n_radial * self.n_angular
        polar = np.zeros((n, n_bins))
        for i in range(n):  # bincount per chip: fast, and no (n x pixels x bins) operator
            polar[i] = np.bincount(bins[used], weights=power[i].ravel()[used], minlength=n_bins)
        radial = polar.reshape(n, self.n_radial, self.n_angular).sum(axis=2)
        radial /= np.maximum(counts.reshape(self.n_radial, self.n_angular).sum(axis=1), 1)
        polar /= np.maximum(counts, 1)
        # log power: lattice peaks span decades; epsilon keeps empty bins finite.
        eps = 1e-6 * size * size
        return np.column_stack([stats, np.log(polar + eps), np.log(radial + eps)]).astype(np.float32)
