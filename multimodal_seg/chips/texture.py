"""The lattice period of an image: the texture scale chips must hold.

A crystal lattice puts sharp peaks (Bragg reflections) into an image's power spectrum.
The radially averaged spectrum of a window of the image is compared bin by bin with its
own smooth trend (a running median over a factor of ``TREND_SPAN`` in frequency, which a
peak a few bins wide does not move).  A bin's mean power is the mean of about ``2 pi r``
periodogram values, each exponentially distributed about the trend when there is no peak,
so its relative excess has standard error ``1 / sqrt(n_r / CORRELATED)`` (the Hann
window correlates neighbouring frequencies; ``CORRELATED`` values count as one).  A bin
is a peak when its excess is significant at ``level``, Bonferroni-corrected over the bins
searched, is a local maximum, and holds at least ``LATTICE_EXCESS`` times the trend's
power; the lattice period is that of the lowest-frequency peak (the first-order
reflection, the largest repeat).  Images without a lattice (most SEM images: grey levels
and shapes, a smooth spectrum) have none, and ``None`` is returned.

Why the size condition beside the test: real images carry bumps that are significant but
small (scan artefacts, the quasi-regular spacing of precipitates).  Measured: the
phantoms' lattices (0.34-0.40 nm at 0.016-0.08 nm pixels) hold 25-200 times their trend;
the strongest bump of 16 real SEM and HAADF images without a lattice (the NASA EBC and
superalloy sets, nanoporous gold, Zeiss grains, Velox particles) at most 3.4 times.  Any
value in between decides these alike; ``LATTICE_EXCESS`` sits in the gap.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage, stats

#: Edge (px) of the central window whose spectrum is analysed.
WINDOW = 1024
#: The trend is a running median over frequencies within this factor of each bin.
TREND_SPAN = 1.5
#: Periodogram values that count as one independent value (Hann window: 4 x 4 bins).
CORRELATED = 16
#: Shortest period searched (px): the Nyquist limit.
MIN_PERIOD = 2.0
#: A lattice peak holds at least this many times its trend's power (see the module docstring).
LATTICE_EXCESS = 10.0


def window_edge(shape: tuple[int, ...]) -> int:
    """Edge (px) of the central square window analysed in an image of ``shape``."""
    return min(min(shape), WINDOW)


def radial_power(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the central square window (edge
    :func:`window_edge`), Hann-windowed; only that window is read from a Dask array.

    Returns
    -------
    ``(power, counts)``, both ``(n // 2 + 1,)`` over integer radii ``r`` (cycles per
    ``n`` pixels, ``n`` the window's edge): mean periodogram value and number of values.
    """
    n = window_edge(image.shape)
    top, left = (image.shape[0] - n) // 2, (image.shape[1] - n) // 2
    img = np.asarray(image[top : top + n, left : left + n], dtype=np.float64)
    img = img - img.mean()
    hann = np.hanning(n)
    # Half the spectrum (a real image's is symmetric): every column but the first and, for
    # even n, the last stands for itself and its mirror image, so it counts twice.
    spectrum = np.abs(scipy.fft.rfft2(img * np.outer(hann, hann))) ** 2
    freq = np.fft.fftfreq(n) * n
    radius = np.rint(np.hypot(freq[:, None], np.fft.rfftfreq(n)[None, :] * n)).astype(np.int64)
    twice = np.full(radius.shape[1], 2.0)
    twice[0] = 1.0
    if n % 2 == 0:
        twice[-1] = 1.0
    weight = np.broadcast_to(twice, radius.shape).ravel()
    radius = radius.ravel()
    keep = radius <= n // 2
    counts = np.bincount(radius[keep], weights=weight[keep], minlength=n // 2 + 1).astype(np.int64)
    power = np.bincount(radius[keep], weights=(spectrum.ravel() * weight)[keep], minlength=n // 2 + 1)
    return power / np.maximum(counts, 1), counts


def lattice_period(image: np.ndarray, *, max_period: float | None = None, level: float = 1e-3) -> float | None:
    """The image's lattice period in pixels, or ``None`` where it shows no lattice.

    Parameters
    ----------
    image
        ``(rows, cols)``, a NumPy or Dask array; only a central window of at most ``WINDOW``
        px is read and analysed.
    max_period
        Longest period searched (px); default a quarter of the window.
    level
        Significance of a peak above the spectrum's trend (Bonferroni over the bins).
    """
    if len(image.shape) != 2 or min(image.shape) < 16:
        return None
    n = window_edge(image.shape)
    power, counts = radial_power(image)
    longest = n / 4 if max_period is None else min(float(max_period), n / 4)
    radii = np.arange(power.size)
    searched = (radii >= max(2, int(np.ceil(n / longest)))) & (radii <= n / MIN_PERIOD)
    if not searched.any() or not (power[1:] > 0).all():
        return None
    log_power = np.log(power[1:])
    trend = np.empty_like(log_power)
    r = radii[1:]
    for i, radius in enumerate(r):  # running median over [r / span, r * span]
        inside = (r >= radius / TREND_SPAN) & (r <= radius * TREND_SPAN)
        trend[i] = np.median(log_power[inside])
    excess = np.concatenate([[0.0], np.exp(log_power - trend) - 1.0])
    z = excess * np.sqrt(counts / CORRELATED)
    critical = stats.norm.isf(level / int(searched.sum()))
    local_max = excess >= ndimage.maximum_filter1d(excess, size=3)
    peaks = np.flatnonzero(searched & local_max & (z > critical) & (excess + 1.0 >= LATTICE_EXCESS))
    return None if peaks.size == 0 else float(n / peaks[0])
