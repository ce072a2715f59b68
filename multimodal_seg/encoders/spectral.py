"""Spectrum-image encoders (EELS, EDS): one vector per chip of spectra.

Chips are ``(n, h, w, channels)`` raw counts: ``h x w`` scan positions, one
spectrum each (``h = w = 1`` is a chip of one spectrum).  Each encoder embeds the
spectra and pools them over the chip's positions.

``spectrum-pca`` (weight-free, the default for spectra)
    The standard multivariate analysis of spectrum images: normalise each
    spectrum (by its total counts; for EELS core loss optionally after
    subtracting its power-law background, ``normalise="edges"``), weight
    channels for Poisson noise (Keenan & Kotula, Surf. Interface Anal. 36, 203
    (2004)), project on a PCA basis learnt by :meth:`fit` from a sample of the
    data.  Per chip: mean and standard deviation of the scores over
    its positions, and the mean log total counts (thickness / density cue).
``spectrum-cnn`` (trainable; random init only when asked)
    A small 1D convnet over normalised, log-scaled spectra resampled to a fixed
    length, so any channel count works.

This module also holds the pieces both trainable convnet encoders share (the
diffraction convnet in :mod:`multimodal_seg.encoders.diffraction` uses them):
chip validation, weights resolution and strict loading, and batched inference
(:class:`ConvChipEncoder`).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ParameterError, WeightsError
from .base import Encoder
from .weights import RANDOM, ResolvedWeights, file_sha256, load_state_dict
from .weights import check_layout as check_state_dict

if TYPE_CHECKING:
    from collections.abc import Sequence

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

#: Poisson weights never exceed those of a channel with this fraction of the mean
#: channel intensity, so that (nearly) empty channels do not dominate.
POISSON_FLOOR = 1e-3

#: Seed of the random initialisation (``weights="random"``) and of the fit subsample.
RANDOM_INIT_SEED = 0



# ---------------------------------------------------------------- shared helpers


def as_chips(chips: Any, *, ndim: int, layout: str) -> np.ndarray:
    """Validate a chip stack and return it as contiguous float32.

    Parameters
    ----------
    chips
        Array-like of real numbers (counts may be integers).
    ndim
        Number of dimensions the layout has (4 for spectra, 5 for diffraction).
    layout
        Human-readable layout for the error message, e.g. ``"(n, h, w, channels)"``.

    Raises
    ------
    InputError
        Wrong number of dimensions, an empty axis other than ``n``, not real
        numbers, or NaN / infinite values.
    """
    arr = np.asarray(chips)
    if arr.ndim != ndim or 0 in arr.shape[1:]:
        raise InputError(
            f"chips must have shape {layout} with non-empty axes, got {arr.shape}",
            fix="pass a stack of chips cut on the scan grid (see multimodal_seg.chips.grid)",
            where="chips",
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(
            f"chips must hold real numbers (counts), got dtype {arr.dtype}",
            fix="convert the data to float32 counts",
            where="chips",
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(
            "chips contain NaN or infinite values",
            fix="fill or mask invalid values (dead channels, detector gaps) before encoding",
            where="chips",
        )
    return arr


def check_int(value: Any, name: str, *, minimum: int, example: str) -> int:
    """``value`` if it is an int >= ``minimum`` (not a bool), else ParameterError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(
            f"{name} must be an integer >= {minimum}, not {value!r}",
            fix=f"use e.g. {name}={example}",
            where=name,
        )
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``choices``, else ParameterError."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in choices:
        raise ParameterError(
            f"{name}={value!r} is not one of {', '.join(map(repr, choices))}",
            fix=f"use {name}={choices[0]!r} (the default) or another listed value",
            where=name,
        )
    return text


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(
            f"{name} must be True or False, not {value!r}", fix=f"use {name}=True", where=name
        )
    return bool(value)


def resolve_trainable_weights(spec: str | Path | None, encoder: str) -> ResolvedWeights:
    """Weights of a trainable encoder that has no published weights (yet).

    Parameters
    ----------
    spec
        ``"random"`` (seeded random initialisation) or the path of a local state
        dict.  ``None`` is refused: random features must be asked for explicitly.
    encoder
        Encoder name, for messages.

    Raises
    ------
    WeightsError
        ``spec`` is ``None`` or not an existing file.
    """
    if spec is None:
        raise WeightsError(
            f"encoder {encoder!r} has no trained weights yet, and random features are "
            "used only when asked for",
            fix=f"pass weights='{RANDOM}' for a seeded random-initialisation baseline, or "
            f"the path of a state dict trained for {encoder!r}; for a weight-free encoder "
            "use 'spectrum-pca' or 'diffraction-profiles'",
            where="weights",
        )
    if isinstance(spec, str) and spec.strip().lower() == RANDOM:
        return ResolvedWeights(RANDOM, None, None, "random initialisation (no trained weights)")
    if not isinstance(spec, (str, Path)):
        raise ParameterError(
            f"weights must be {RANDOM!r} or a file path, not {type(spec).__name__}",
            fix=f"pass weights='{RANDOM}' or the path of a state dict",
            where="weights",
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(
            f"weights file {what}",
            fix=f"give the path of a state dict saved with torch.save(encoder.network."
            f"state_dict(), path) for {encoder!r}, or weights='{RANDOM}'",
            where=path,
        )
    return ResolvedWeights(path.name, path, file_sha256(path), f"local file {path.resolve()}")


def check_layout(state: dict[str, Any], expected: dict[str, Any], path: Path, what: str) -> None:
    """Raise WeightsError unless ``state`` has exactly the keys and shapes of ``expected``."""
    check_state_dict(
        state, expected, path, what=f"the {what}",
        fix="load a state dict saved from this encoder's network with the same options "
        "(embedding_dim and the architecture options must match those used in training)",
    )


class ConvChipEncoder(Encoder):
    """Shared machinery of the trainable convnet encoders.

    Subclasses build :attr:`network` (a ``torch.nn.Module`` mapping a batch of
    preprocessed items to ``(batch, dim)``), say how a chip stack is split into
    items (one spectrum or one pattern per scan position) and how a batch of
    items is preprocessed.  Embeddings are the mean over the chip's positions.
    """

    #: Human-readable architecture name for weights errors.
    architecture: str = ""

    def _setup(
        self, *, weights: Any, embedding_dim: int, batch_size: int, device: str, progress: bool
    ) -> None:
        import torch

        from .device import pick_device

        self.embedding_dim = check_int(embedding_dim, "embedding_dim", minimum=1, example="64")
        self.batch_size = check_int(batch_size, "batch_size", minimum=1, example="256")
        self.progress = check_bool(progress, "progress")
        self.device = pick_device(device)
        self.weights = resolve_trainable_weights(weights, self.name)
        # the seeded init also fixes parameters a loaded state dict overwrites anyway;
        # fork_rng keeps the caller's random stream untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            network = self._build_network()
        if self.weights.path is not None:
            state = load_state_dict(self.weights.path)
            check_layout(state, network.state_dict(), self.weights.path, self.architecture)
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            network.load_state_dict(state, strict=True)
        self.network = network.eval().to(self.device)

    @abstractmethod
    def _build_network(self) -> Any:
        """The ``torch.nn.Module`` for the current options (random init)."""

    @abstractmethod
    def _items(self, chips: np.ndarray) -> tuple[np.ndarray, int]:
        """Validated chips -> (items stacked along axis 0, positions per chip)."""

    @abstractmethod
    def _prepare(self, items: np.ndarray) -> Any:
        """A batch of raw items (numpy) -> network input tensor on :attr:`device`."""

    def _options(self) -> dict[str, Any]:
        """Options that change the embeddings (besides weights)."""
        return {"embedding_dim": self.embedding_dim}

    @property
    def dim(self) -> int:
        return self.embedding_dim

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights.name,
            "weights_sha256": self.weights.sha256,
            "random_weights": self.weights.is_random,
            **self._options(),
            "version": 1,
        }

    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed chips: ``(n, h, w, ...)`` raw counts -> ``(n, dim)`` float32."""
        import torch
        from tqdm.auto import tqdm

        from .device import autocast_context

        items, per_chip = self._items(chips)
        n = len(items) // per_chip
        features = np.empty((len(items), self.dim), dtype=np.float32)
        with torch.inference_mode(), tqdm(
            total=n, unit="chip", desc=self.name, disable=not self.progress
        ) as bar:
            for start in range(0, len(items), self.batch_size):
                x = self._prepare(items[start : start + self.batch_size])
                with autocast_context(self.device):
                    out = self.network(x)
                features[start : start + len(x)] = out.float().cpu().numpy()
                bar.update((start + len(x)) // per_chip - start // per_chip)
        return features.reshape(n, per_chip, self.dim).mean(axis=1, dtype=np.float64).astype(
            np.float32
        )


# ---------------------------------------------------------------- spectrum-pca


def _spectra(chips: np.ndarray) -> tuple[np.ndarray, int]:
    """``(n, h, w, c)`` chips -> ``(n * h * w, c)`` spectra and ``h * w``."""
    n, h, w, c = chips.shape
    return chips.reshape(n * h * w, c), h * w


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


def _edge_normalised(spectra: np.ndarray, energies: np.ndarray,
                     window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted spectra scaled to net sum 1 above the window, and the scales."""
    stop = window[1]
    net = subtract_power_law(spectra, energies, window)
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
        _check_channels(spectra.shape[1], energy_axis)
        return _edge_normalised(spectra, channel_energies(energy_axis), window)[0]
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


class SpectrumPCAEncoder(Encoder):
    """Weight-free spectrum-image features: PCA scores pooled over each chip.

    Per spectrum: normalise (``normalise``), divide each channel by the square
    root of the sample's mean normalised spectrum (``poisson``: makes Poisson noise
    about equally strong in every channel, the usual weighting for EDS and EELS
    PCA), subtract the sample mean and project on the ``n_components`` leading
    principal components learnt by :meth:`fit`.  Scores are in units of the
    sample's first-component standard deviation.

    Per chip (``dim = 2 * n_components + log_counts``):

    * mean of each score over the chip's positions (composition / fine structure);
    * standard deviation of each score over the positions (heterogeneity, e.g.
      an interface inside the chip; zero for one-position chips);
    * mean ``log(1 + total counts)`` over the positions minus its median over
      the fit sample (thickness or density cue), when ``log_counts``.

    With ``normalise="total"`` the embeddings do not change when every count is
    multiplied by one factor, both in the fit sample and the encoded chips; only
    the log-counts feature moves (by the log of the factor) when only the
    encoded chips are scaled.  ``normalise="edges"`` (EELS core loss) also removes
    the power-law background, so that thickness (background height and slope)
    leaves only the log-counts feature; the Poisson weights then come from the
    mean of the spectra before background subtraction, on the same scale (the
    noise of a net channel is that of its raw counts).  It needs the energy axis:
    the pipeline gives it through :meth:`set_signal_axes`; call that yourself when
    using the encoder directly.

    Parameters
    ----------
    n_components
        Principal components kept.
    normalise
        ``"total"`` (sum of counts 1, default: removes dose and thickness
        scaling), ``"max"`` (largest channel 1), ``"none"`` (raw counts) or
        ``"edges"`` (power-law background subtracted, net signal above the
        pre-edge window sums to 1: see :func:`normalise_spectra`).
    edge_window
        With ``normalise="edges"``: the pre-edge fit window ``(E_start, E_end)``
        in the energy axis units (eV); ``None`` (default) chooses it from the
        energy axis (:func:`edge_window_channels`).
    poisson
        Poisson-noise weighting of the channels before PCA.
    log_counts
        Append the log-total-counts feature.
    max_fit_spectra
        :meth:`fit` uses at most this many spectra of the sample (a seeded random
        subset of positions), which bounds its time and memory.

    Raises
    ------
    ParameterError
        Bad option (also ``edge_window`` without ``normalise="edges"``).
    """

    name = "spectrum-pca"
    kind = "spectrum"
    # Standardised like other features: unscaled scores made Leiden split EELS of the
    # multimodal phantom into 9 communities (ARI 0.43) instead of 4 (ARI 0.60).
    standardise = True

    def __init__(
        self,
        *,
        n_components: int = 16,
        normalise: str = "total",
        poisson: bool = True,
        log_counts: bool = True,
        max_fit_spectra: int = 20_000,
        edge_window: tuple[float, float] | None = None,
    ) -> None:
        self.n_components = check_int(n_components, "n_components", minimum=1, example="16")
        self.normalise = check_choice(normalise, "normalise", NORMALISATIONS)
        self.edge_window = check_edge_window(edge_window)
        if self.edge_window is not None and self.normalise != "edges":
            raise ParameterError(
                f"edge_window only applies to normalise='edges', not normalise={self.normalise!r}",
                fix="add normalise='edges' (EELS core loss), or drop edge_window",
                where="edge_window",
            )
        self.energy_axis: Axis | None = None  # set by set_signal_axes
        self.edge_channels: tuple[int, int] | None = None  # fit window, normalise="edges"
        self.poisson = check_bool(poisson, "poisson")
        self.log_counts = check_bool(log_counts, "log_counts")
        self.max_fit_spectra = check_int(
            max_fit_spectra, "max_fit_spectra", minimum=2, example="20000"
        )
        # fitted state
        self.n_channels: int | None = None
        self.channel_weights: np.ndarray | None = None  # (c,) Poisson weights (ones if off)
        self.mean_: np.ndarray | None = None  # (c,) mean weighted spectrum of the sample
        self.components_: np.ndarray | None = None  # (k, c) principal axes, scaled
        self.explained_variance_ratio_: np.ndarray | None = None
        self.log_counts_median_: float = 0.0

    @property
    def dim(self) -> int:
        return 2 * self.n_components + int(self.log_counts)

    @property
    def is_fitted(self) -> bool:
        return self.components_ is not None

    def set_signal_axes(self, axes: Sequence[Axis]) -> None:
        """Take the energy axis; with ``normalise="edges"``, check and fix the fit window.

        Raises
        ------
        InputError
            Not exactly one signal axis.
        ParameterError
            The window does not fit this energy axis (:func:`edge_window_channels`).
        """
        axes = list(axes)
        if len(axes) != 1:
            raise InputError(
                f"a spectrum image has one signal axis (energy), got {len(axes)}",
                fix="pass the modality's axes after the two scan axes, e.g. modality.axes[2:]",
                where=self.name,
            )
        window = (edge_window_channels(axes[0], self.edge_window)
                  if self.normalise == "edges" else None)
        self.energy_axis, self.edge_channels = axes[0], window

    def fingerprint(self) -> dict[str, Any]:
        fp = {
            "name": self.name,
            "n_components": self.n_components,
            "normalise": self.normalise,
            "poisson": self.poisson,
            "log_counts": self.log_counts,
            "max_fit_spectra": self.max_fit_spectra,
            "version": 1,
        }
        if self.normalise == "edges":  # other modes do not depend on the calibration
            axis = self.energy_axis
            fp["edge_window"] = list(self.edge_window) if self.edge_window else "auto"
            fp["energy_axis"] = None if axis is None else {
                "size": int(axis.size), "scale": float(axis.scale), "offset": float(axis.offset),
                "units": axis.units}
            fp["edge_fit_channels"] = list(self.edge_channels) if self.edge_channels else None
        return fp

    def _normalised(self, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised spectra, and the spectra on the same scale before background subtraction."""
        if self.normalise != "edges":
            x = normalise_spectra(spectra, self.normalise)
            return x, x
        if self.energy_axis is None or self.edge_channels is None:
            raise ParameterError(
                "normalise='edges' needs the energy axis of the spectrum image, and the "
                "encoder was given none",
                fix="segment() gives it for spectrum modalities; when using the encoder "
                "directly call encoder.set_signal_axes([Axis('energy', channels, "
                "eV_per_channel, eV_of_channel_0, 'eV')]) first, or use normalise='total'",
                where="normalise",
            )
        _check_channels(spectra.shape[1], self.energy_axis)
        x, inverse = _edge_normalised(spectra, channel_energies(self.energy_axis),
                                      self.edge_channels)
        return x, spectra * inverse[:, None]

    def fit(self, sample: np.ndarray) -> None:
        """Learn the channel weights and PCA basis from a sample of chips.

        Parameters
        ----------
        sample
            Chips ``(n, h, w, channels)`` raw counts; all their spectra are used
            (at most ``max_fit_spectra``, a seeded random subset).

        Raises
        ------
        InputError
            Not a spectrum chip stack, fewer spectra or channels than
            ``n_components``, or (``normalise="edges"``) not the energy axis's
            channel count.
        ParameterError
            ``normalise="edges"`` and no energy axis was set (:meth:`set_signal_axes`).
        """
        from sklearn.decomposition import PCA

        spectra, _ = _spectra(as_chips(sample, ndim=4, layout="(n, h, w, channels)"))
        m, c = spectra.shape
        k = self.n_components
        if m < max(k, 2) or c < k:
            raise InputError(
                f"the fit sample has {m} spectra of {c} channels: too few for "
                f"n_components={k}",
                fix=f"fit on more chips, or use n_components <= {max(1, min(m, c))}",
                where="sample",
            )
        if m > self.max_fit_spectra:
            rng = np.random.default_rng(RANDOM_INIT_SEED)
            spectra = spectra[np.sort(rng.choice(m, self.max_fit_spectra, replace=False))]
        total = spectra.sum(axis=1, dtype=np.float64)
        x, gross = self._normalised(spectra)
        if self.poisson:
            mean_spectrum = gross.mean(axis=0, dtype=np.float64)
            floor = POISSON_FLOOR * max(float(np.abs(mean_spectrum).mean()), np.finfo(np.float32).tiny)
            weights = 1.0 / np.sqrt(np.maximum(mean_spectrum, floor))
        else:
            weights = np.ones(c)
        weights = weights.astype(np.float32)
        x = x * weights
        pca = PCA(n_components=k, random_state=RANDOM_INIT_SEED).fit(x)
        scale = np.sqrt(pca.explained_variance_[0]) if pca.explained_variance_[0] > 0 else 1.0
        self.n_channels = c
        self.channel_weights = weights
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = (pca.components_ / scale).astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.copy()
        self.log_counts_median_ = float(np.median(np.log1p(np.maximum(total, 0.0))))

    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed chips ``(n, h, w, channels)`` raw counts -> ``(n, dim)`` float32.

        Raises
        ------
        ParameterError
            :meth:`fit` has not been called, or ``normalise="edges"`` without an
            energy axis.
        InputError
            Bad chips, or a channel count other than the fit sample's.
        """
        if not self.is_fitted:
            raise ParameterError(
                "spectrum-pca has no PCA basis yet: encode was called before fit",
                fix="call encoder.fit(sample_chips) first (the pipeline does this with a "
                "seeded sample of the modality's chips)",
                where=self.name,
            )
        arr = as_chips(chips, ndim=4, layout="(n, h, w, channels)")
        n = arr.shape[0]
        if arr.shape[3] != self.n_channels:
            raise InputError(
                f"chips have {arr.shape[3]} channels but the PCA basis was fitted on "
                f"{self.n_channels}",
                fix="fit and encode the same spectrum image (same energy axis)",
                where="chips",
            )
        spectra, per_chip = _spectra(arr)
        x = self._normalised(spectra)[0] * self.channel_weights
        scores = (x - self.mean_) @ self.components_.T  # (m, k)
        scores = scores.reshape(n, per_chip, self.n_components).astype(np.float64)
        parts = [scores.mean(axis=1), scores.std(axis=1)]
        if self.log_counts:
            counts = np.log1p(np.maximum(spectra.sum(axis=1, dtype=np.float64), 0.0))
            parts.append(counts.reshape(n, per_chip).mean(axis=1, keepdims=True)
                         - self.log_counts_median_)
        return np.concatenate(parts, axis=1).astype(np.float32)


# ---------------------------------------------------------------- spectrum-cnn


def _spectrum_network(embedding_dim: int) -> Any:
    """Small 1D convnet: ``(b, 1, length) -> (b, embedding_dim)``.

    Four conv blocks (16, 32, 64, 64 channels; the first three with stride 2,
    which is cheaper on CPUs than max pooling), then adaptive average pooling
    to 8 positions, so the embedding keeps coarse energy position (an edge's
    onset identifies the element), and a linear layer.
    """
    from torch import nn

    def block(c_in: int, c_out: int, k: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(1, 16, 7, 2),
        *block(16, 32, 5, 2),
        *block(32, 64, 5, 2),
        *block(64, 64, 3, 1),
        nn.AdaptiveAvgPool1d(8),
        nn.Flatten(),
        nn.Linear(64 * 8, embedding_dim),
    )


class SpectrumCNNEncoder(ConvChipEncoder):
    """A small 1D convnet over each spectrum, averaged over the chip's positions.

    Preprocessing per spectrum: negative counts clipped to 0, scaled to mean 1
    per channel (total normalisation: dose-invariant), resampled to ``length``
    channels (area averaging when shrinking, linear interpolation when
    stretching, so any channel count works), then ``log1p`` when ``log``.

    There are no trained weights yet: ``weights="random"`` gives a seeded random
    initialisation (a baseline; the fingerprint says ``random_weights: true``), a
    file path loads a state dict of :attr:`network` strictly.

    Parameters
    ----------
    weights
        ``"random"`` or the path of a state dict saved with
        ``torch.save(encoder.network.state_dict(), path)``.  Required.
    length
        Channels each spectrum is resampled to before the network.
    embedding_dim
        Length of the embedding (the last linear layer's output).
    log
        ``log1p`` of the normalised spectrum (compresses zero-loss / low-energy
        peaks against weak edges).
    batch_size
        Spectra per forward pass.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    progress
        Show a progress bar over chips.

    Raises
    ------
    WeightsError
        No weights named, file missing or unreadable, or not this network's layout.
    ParameterError
        Bad option or unavailable device.
    """

    name = "spectrum-cnn"
    kind = "spectrum"
    architecture = "spectrum-cnn 1D convnet"

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        length: int = 256,
        embedding_dim: int = 64,
        log: bool = True,
        batch_size: int = 1024,
        device: str = "auto",
        progress: bool = False,
    ) -> None:
        self.length = check_int(length, "length", minimum=16, example="256")
        self.log = check_bool(log, "log")
        self._setup(weights=weights, embedding_dim=embedding_dim, batch_size=batch_size,
                    device=device, progress=progress)

    def _build_network(self) -> Any:
        return _spectrum_network(self.embedding_dim)

    def _options(self) -> dict[str, Any]:
        return {"length": self.length, "embedding_dim": self.embedding_dim, "log": self.log}

    def _items(self, chips: np.ndarray) -> tuple[np.ndarray, int]:
        return _spectra(as_chips(chips, ndim=4, layout="(n, h, w, channels)"))

    def _prepare(self, items: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(items).to(self.device).clamp_min(0.0)
        total = x.sum(dim=1, keepdim=True)
        x = torch.where(total > 0, x * (x.shape[1] / total.clamp_min(1e-30)), torch.zeros_like(x))
        x = x.unsqueeze(1)  # (b, 1, c)
        if x.shape[-1] > self.length:
            x = F.adaptive_avg_pool1d(x, self.length)
        elif x.shape[-1] < self.length:
            x = F.interpolate(x, size=self.length, mode="linear", align_corners=False)
        return torch.log1p(x) if self.log else x
