"""Spectrum normalisation and the energy axis: pure functions on arrays of spectra and axes.

Spectra are rows of an ``(m, channels)`` array of counts.  :func:`normalise_spectra`
scales each one (``total``, ``max``, ``none``) or, for EELS core loss
(``edges``), first subtracts its power-law background ``A E^-r``
(:func:`subtract_power_law`) fitted over a pre-edge window of channels
(:func:`edge_window_channels`, from an energy axis and an optional window in its
units, :func:`check_edge_window`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ParameterError

if TYPE_CHECKING:
    from ..modalities.base import Axis

#: Spectrum normalisations: ``total`` (sum 1), ``max`` (peak 1), ``none`` (raw counts),
#: ``edges`` (power-law background subtracted, net signal above the pre-edge window sums
#: to 1; needs the energy axis, see :func:`normalise_spectra`).
NORMALISATIONS = ("total", "none", "max", "edges")

# ``normalise="edges"`` (EELS core loss), see :func:`edge_window_channels` and
# :func:`subtract_power_law`.
#: Automatic pre-edge window: skip the first ``max(EDGE_SKIP_MIN, EDGE_SKIP_FRACTION *
#: channels)`` channels (spectrometer and aperture edge artefacts, deconvolution ringing) ...
EDGE_SKIP_MIN = 2
EDGE_SKIP_FRACTION = 0.01
#: ... then fit from that channel's energy ``E1`` up to ``EDGE_WINDOW_RATIO * E1`` ...
EDGE_WINDOW_RATIO = 1.10
#: ... over at least ``EDGE_MIN_CHANNELS`` and at most ``EDGE_WINDOW_MAX_FRACTION`` of the channels.
EDGE_WINDOW_MAX_FRACTION = 0.25
#: Fewest channels a pre-edge window may hold (the fit has two parameters).
EDGE_MIN_CHANNELS = 3
#: Counts in the window below this fraction of the spectrum's mean window count are raised
#: to it before the logarithm (zero and negative counts would give -inf / NaN).
EDGE_CLIP_FRACTION = 0.1
#: The fitted exponent ``r`` of ``A E^-r`` is clipped to this range: noise-only windows can
#: give any slope, and ``r >= 0`` keeps the extrapolated background below its window value.
EDGE_EXPONENT_RANGE = (0.0, 10.0)
#: The net signal above the window that is scaled to 1 is at least this fraction of the raw
#: counts there, so spectra without edges (net ~ 0 +- noise) are not blown up to unit sum.
EDGE_MIN_NET_FRACTION = 0.01


def check_edge_window(value: Any) -> tuple[float, float] | None:
    """``None`` or ``value`` as ``(start, end)`` floats with ``start < end``, else ParameterError."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)) or len(value) != 2:
            raise TypeError
        start, end = (float(v) for v in value)
        if any(isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError
    except (TypeError, ValueError):
        raise ParameterError(
            f"edge_window must be two energies (start, end) in the energy axis units, "
            f"not {value!r}",
            fix="use e.g. edge_window=(250, 280) for a pre-edge window from 250 to 280 eV, "
            "or leave it out for the automatic window",
            where="edge_window",
        ) from None
    if not (np.isfinite(start) and np.isfinite(end)):
        raise ParameterError(
            f"edge_window={value!r} is not finite",
            fix="give two finite energies, e.g. edge_window=(250, 280)", where="edge_window",
        )
    if start >= end:
        raise ParameterError(
            f"edge_window=({start:g}, {end:g}) starts at or above its end",
            fix=f"give (start, end) with start < end, e.g. edge_window=({min(start, end):g}, "
            f"{max(start, end) if start != end else start + 30:g})",
            where="edge_window",
        )
    return start, end


def channel_energies(axis: Axis) -> np.ndarray:
    """Energy of each channel of a calibrated ``axis`` (``offset + i * scale``), float64."""
    return axis.offset + axis.scale * np.arange(axis.size, dtype=np.float64)


def edge_window_channels(axis: Axis, window: tuple[float, float] | None = None) -> tuple[int, int]:
    """Channels ``[start, stop)`` of the pre-edge window of the power-law background fit.

    Parameters
    ----------
    axis
        The spectrum image's energy axis (``scale > 0``, calibrated: not ``"px"``).
    window
        ``(E_start, E_end)`` in the axis units: every channel whose energy lies in
        it is fitted.  ``None`` chooses it automatically.

    The automatic window skips the first ``max(2, 1 %)`` channels (spectrometer
    and aperture edge artefacts, Fourier-log deconvolution ringing), then spans
    from that channel's energy ``E1`` up to ``1.10 * E1``, at least 3 and at most
    25 % of the channels.  Why a fixed energy ratio rather than a fixed fraction
    of the channels: the leverage of a log-log fit depends on ``E_end / E_start``
    only, and core-loss spectra are acquired to start some way below their first
    edge, more eV below for higher-energy edges.  A fraction of the channels depends
    on the dispersion and the channel count instead: on the
    multimodal phantom (250-761 eV, 1 eV channels, C K at 284 eV) the first 15 %
    of the channels would run 77 eV, across the C K edge; the ratio gives 255-280 eV.
    It assumes the spectrum starts at least about 10 % below its first edge; when
    it does not, pass ``window``.

    Raises
    ------
    ParameterError
        Uncalibrated or decreasing axis, ``window`` (partly) outside the energy
        range, fewer than 3 channels in the window, no channel above it, or
        energies that are not positive in it (a power law needs ``E > 0``: use
        ``normalise="total"`` for low-loss spectra).
    """
    units, c = axis.units, int(axis.size)
    if units == "px" or not (np.isfinite(axis.scale) and axis.scale > 0 and np.isfinite(axis.offset)):
        raise ParameterError(
            f"normalise='edges' needs a calibrated, increasing energy axis, but it has scale "
            f"{axis.scale:g} {units} per channel and offset {axis.offset:g} {units}",
            fix="calibrate the energy axis (eV per channel and the energy of channel 0; "
            "Axis('energy', channels, scale, offset, 'eV') for arrays), or use normalise='total'",
            where="normalise",
        )
    energies = channel_energies(axis)
    if window is None:
        skip = max(EDGE_SKIP_MIN, round(EDGE_SKIP_FRACTION * c))
        stop = int(np.searchsorted(energies, EDGE_WINDOW_RATIO * energies[min(skip, c - 1)],
                                   side="right"))
        stop = min(max(stop, skip + EDGE_MIN_CHANNELS), skip + int(EDGE_WINDOW_MAX_FRACTION * c))
        start, what = skip, "the automatic pre-edge window"
        if stop - start < EDGE_MIN_CHANNELS or stop >= c:
            raise ParameterError(
                f"{c} channels are too few for {what} ({EDGE_MIN_CHANNELS} channels after the "
                f"first {skip}, and channels above them for the edges)",
                fix="give edge_window=(start, end) in the energy axis units, or use "
                "normalise='total'",
                where="edge_window",
            )
    else:
        low, high = energies[0] - axis.scale / 2, energies[-1] + axis.scale / 2
        what = f"edge_window=({window[0]:g}, {window[1]:g}) {units}"
        if window[0] < low or window[1] > high:
            raise ParameterError(
                f"{what} lies (partly) outside the energy axis, {energies[0]:g} to "
                f"{energies[-1]:g} {units}",
                fix="choose a pre-edge window inside the energy range that ends a few "
                "channels below the first edge, or leave edge_window out for the automatic one",
                where="edge_window",
            )
        inside = np.flatnonzero((energies >= window[0]) & (energies <= window[1]))
        if len(inside) < EDGE_MIN_CHANNELS:
            raise ParameterError(
                f"{what} holds {len(inside)} channel(s) ({axis.scale:g} {units} per channel); "
                f"the power-law fit needs at least {EDGE_MIN_CHANNELS}",
                fix=f"widen the window to at least {EDGE_MIN_CHANNELS * axis.scale:g} {units} "
                "(a few tens of eV is usual)",
                where="edge_window",
            )
        start, stop = int(inside[0]), int(inside[-1]) + 1
        if stop >= c:
            raise ParameterError(
                f"{what} leaves no channel above it for the edges",
                fix="end the window below the first edge of the spectrum",
                where="edge_window",
            )
    if energies[start] <= 0:
        raise ParameterError(
            f"{what} starts at {energies[start]:g} {units}: a power-law background A E^-r "
            "needs positive energies (is this a low-loss spectrum?)",
            fix="use normalise='edges' on core-loss spectra with a window at positive "
            "energies, or normalise='total' for low-loss spectra",
            where="edge_window" if window is not None else "normalise",
        )
    return start, stop


def subtract_power_law(spectra: np.ndarray, energies: np.ndarray,
                       window: tuple[int, int]) -> np.ndarray:
    """Each spectrum (row) minus its power-law background ``A E^-r``, as float32.

    ``log A`` and ``r`` come from a plain (unweighted) linear least-squares fit of
    ``log(counts)`` against ``log(E)`` over the channels ``window`` (the standard
    EELS background fit), solved in closed form for all spectra at once.  Counts
    below 10 % of the spectrum's mean count in the window (zeros, negative values
    after dark subtraction) are raised to it first, so that empty spectra give no
    NaN; a weighted fit would follow Poisson statistics more closely at low counts
    but its weights vanish exactly where counts are 0.  ``r`` is clipped to
    ``[0, 10]`` (:data:`EDGE_EXPONENT_RANGE`).  The background is subtracted from
    the window start upwards; channels below the window, where the power law is no
    model (it diverges towards 0 eV), are set to 0.
    """
    start, stop = window
    log_e = np.log(energies[start:])
    x = log_e[: stop - start]
    counts = spectra[:, start:stop].astype(np.float64)
    floor = EDGE_CLIP_FRACTION * np.maximum(counts, 0.0).mean(axis=1, keepdims=True)
    y = np.log(np.maximum(counts, np.maximum(floor, np.finfo(np.float64).tiny)))
    xc = x - x.mean()
    r = np.clip(-(y @ xc) / (xc @ xc), *EDGE_EXPONENT_RANGE)
    log_a = y.mean(axis=1) + r * x.mean()
    out = np.array(spectra, dtype=np.float32, copy=True)
    out[:, :start] = 0.0
    # r >= 0: the background never exceeds its value at the window start (no overflow)
    out[:, start:] -= np.exp(log_a[:, None].astype(np.float32)
                             - r[:, None].astype(np.float32) * log_e.astype(np.float32))
    return out


def edge_normalised(spectra: np.ndarray, energy_axis: Axis,
                    window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Spectra without their power-law background, scaled to net sum 1 above the window.

    The ``edges`` normalisation of :func:`normalise_spectra` for a pre-edge window
    of channels already chosen (:func:`edge_window_channels`).

    Returns
    -------
    The normalised spectra ``(m, channels)`` float32 and each spectrum's scale
    ``(m,)`` float32 (0 where the net signal is not positive).

    Raises
    ------
    InputError
        ``energy_axis`` does not have one channel per spectrum column.
    """
    _check_channels(spectra.shape[1], energy_axis)
    stop = window[1]
    net = subtract_power_law(spectra, channel_energies(energy_axis), window)
    net_above = net[:, stop:].sum(axis=1, dtype=np.float64)
    raw_above = np.maximum(spectra[:, stop:], 0.0).sum(axis=1, dtype=np.float64)
    denominator = np.maximum(net_above, EDGE_MIN_NET_FRACTION * raw_above)
    inverse = np.divide(1.0, denominator, out=np.zeros_like(denominator),
                        where=denominator > 0).astype(np.float32)
    return net * inverse[:, None], inverse


def normalise_spectra(spectra: np.ndarray, mode: str, *, energy_axis: Axis | None = None,
                      edge_window: tuple[float, float] | None = None) -> np.ndarray:
    """Scale each spectrum (row): ``total`` to sum 1, ``max`` to peak 1, ``none`` unchanged.

    ``edges`` (EELS core loss): subtract each spectrum's power-law background,
    fitted over the pre-edge window (:func:`subtract_power_law`,
    :func:`edge_window_channels`), then scale it so that the net signal above the
    window sums to 1 (at least 1 % of the raw counts there,
    :data:`EDGE_MIN_NET_FRACTION`).  Dose, thickness (background height) and the
    background slope then drop out; edge shapes and relative edge strengths remain.
    Needs ``energy_axis`` (the spectra's channels); ``edge_window`` is
    ``(E_start, E_end)`` in its units, or ``None`` for the automatic window.

    Spectra whose total (or maximum, or net signal) is not positive, e.g. no
    counts at all, become all zeros rather than NaN.

    Raises
    ------
    ParameterError
        ``edges`` without ``energy_axis``, or a bad window (see
        :func:`edge_window_channels`).
    InputError
        ``energy_axis`` does not have one channel per spectrum column.
    """
    if mode == "edges":
        if energy_axis is None:
            raise ParameterError(
                "normalise='edges' needs the energy axis of the spectra, and none was given",
                fix="pass energy_axis=Axis('energy', channels, eV_per_channel, eV_of_channel_0, "
                "'eV'), or use normalise='total'",
                where="normalise",
            )
        window = edge_window_channels(energy_axis, check_edge_window(edge_window))
        return edge_normalised(spectra, energy_axis, window)[0]
    if mode == "none":
        return spectra
    scale = spectra.sum(axis=1, dtype=np.float64) if mode == "total" else spectra.max(axis=1)
    scale = np.asarray(scale, dtype=np.float32)
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    return spectra * inverse[:, None]


def _check_channels(channels: int, axis: Axis) -> None:
    if channels != axis.size:
        raise InputError(
            f"the spectra have {channels} channels but the energy axis has {axis.size}",
            fix="give the energy axis of this spectrum image (same channels)",
            where="chips",
        )
