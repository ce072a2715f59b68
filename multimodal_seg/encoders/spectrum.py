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

The normalisations are in :mod:`multimodal_seg.encoders.spectra`, the convnet
machinery shared with ``diffraction-cnn`` in :mod:`multimodal_seg.encoders.convnet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ParameterError
from .base import Encoder
from .convnet import ConvChipEncoder, small_convnet
from .options import check_bool, check_choice, check_int
from .positions import as_chips, position_signals
from .spectra import (
    NORMALISATIONS,
    check_edge_window,
    edge_normalised,
    edge_window_channels,
    normalise_spectra,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..modalities.base import Axis

#: Poisson weights never exceed those of a channel with this fraction of the mean
#: channel intensity, so that (nearly) empty channels do not dominate.
POISSON_FLOOR = 1e-3

#: Seed of the fit subsample and of the PCA solver.
FIT_SEED = 0


# ---------------------------------------------------------------- spectrum-pca


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
        pre-edge window sums to 1: see
        :func:`~multimodal_seg.encoders.spectra.normalise_spectra`).
    edge_window
        With ``normalise="edges"``: the pre-edge fit window ``(E_start, E_end)``
        in the energy axis units (eV); ``None`` (default) chooses it from the
        energy axis
        (:func:`~multimodal_seg.encoders.spectra.edge_window_channels`).
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
    lightweight = True  # a few array operations per chip
    kind = "spectrum"
    # every scan position is encoded once, and chips (and refinement's finer chips) are
    # pooled from the moments: on the JEOL FeS map (512 x 512 x 4096) chip by chip read
    # each spectrum about 4 times in the embedding and again in refinement
    pools_positions = True
    # Not standardised: the scores' variances tell signal components from noise ones, and
    # scaling every component to unit variance lifted 14 noise components to the level of
    # the one or two that carry the chemistry (EELS of the complementary phantom family:
    # composition ARI 0.22-0.36 standardised, 0.98-1.00 not).  The over-splitting that
    # unscaled scores gave before (9 communities on the multimodal phantom) is what the
    # number-of-communities decision (graphs/decide.py) now removes.
    standardise = False

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
            Not exactly one signal axis, or fewer channels than ``n_components``.
        ParameterError
            The window does not fit this energy axis
            (:func:`~multimodal_seg.encoders.spectra.edge_window_channels`).
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
        if axes[0].size < self.n_components:
            raise InputError(
                f"the spectra have {axes[0].size} channels: too few for n_components={self.n_components}",
                fix=f"use n_components <= {axes[0].size} (encoder_options={{'<modality>': {{'n_components': "
                    f"{axes[0].size}}}}}), or pass spectra with more energy channels",
                where=self.name,
            )
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
        x, inverse = edge_normalised(spectra, self.energy_axis, self.edge_channels)
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

        spectra, _ = position_signals(as_chips(sample, self.kind))
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
            rng = np.random.default_rng(FIT_SEED)
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
        pca = PCA(n_components=k, random_state=FIT_SEED).fit(x)
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
        self._check_fitted(channels=None)
        arr = as_chips(chips, self.kind)
        spectra, per_chip = position_signals(arr)
        n = arr.shape[0]
        return self.from_pooled(self.position_features(spectra).reshape(n, per_chip, self.dim).mean(axis=1))

    def position_features(self, signals: np.ndarray) -> np.ndarray:
        """Moments of single spectra ``(m, channels)`` -> ``(m, dim)`` float64: each PCA score,
        its square, and the log total counts; a chip's means of these make its embedding
        (:meth:`from_pooled`), so the pipeline encodes each scan position once.

        Raises
        ------
        ParameterError
            :meth:`fit` has not been called.
        InputError
            A channel count other than the fit sample's.
        """
        spectra = np.asarray(signals)
        self._check_fitted(channels=spectra.shape[-1])
        x = self._normalised(spectra)[0] * self.channel_weights
        scores = ((x - self.mean_) @ self.components_.T).astype(np.float64)  # (m, k)
        parts = [scores, scores * scores]
        if self.log_counts:
            parts.append(np.log1p(np.maximum(spectra.sum(axis=1, dtype=np.float64), 0.0))[:, None])
        return np.concatenate(parts, axis=1)

    def _check_fitted(self, *, channels: int | None) -> None:
        """Refuse to encode before :meth:`fit`, or spectra of ``channels`` other than its."""
        if not self.is_fitted:
            raise ParameterError(
                "spectrum-pca has no PCA basis yet: encode was called before fit",
                fix="call encoder.fit(sample_chips) first (the pipeline does this with "
                "the modality's chips)",
                where=self.name,
            )
        if channels is not None and channels != self.n_channels:
            raise InputError(
                f"chips have {channels} channels but the PCA basis was fitted on {self.n_channels}",
                fix="fit and encode the same spectrum image (same energy axis)",
                where="chips",
            )

    def from_pooled(self, means: np.ndarray) -> np.ndarray:
        """Chip embeddings from the means over each chip of :meth:`position_features`: the
        mean of each score, its standard deviation (from the means of the scores and of their
        squares, both float64: the scores are centred, of order 1, so the difference keeps
        about 12 digits where a chip's spread is 1 % of its mean), and the mean log counts
        minus the fit sample's median."""
        means = np.asarray(means, dtype=np.float64)
        k = self.n_components
        mean, square = means[:, :k], means[:, k : 2 * k]
        parts = [mean, np.sqrt(np.maximum(square - mean * mean, 0.0))]
        if self.log_counts:
            parts.append(means[:, 2 * k : 2 * k + 1] - self.log_counts_median_)
        return np.concatenate(parts, axis=1).astype(np.float32)


# ---------------------------------------------------------------- spectrum-cnn


class SpectrumCNNEncoder(ConvChipEncoder):
    """A small 1D convnet over each spectrum, averaged over the chip's positions.

    Preprocessing per spectrum: negative counts clipped to 0, scaled to mean 1
    per channel (total normalisation: dose-invariant), resampled to ``length``
    channels (area averaging when shrinking, linear interpolation when
    stretching, so any channel count works), then ``log1p`` when ``log``.  The
    network (:func:`~multimodal_seg.encoders.convnet.small_convnet`, kernels 7,
    5, 5, 3) pools to 8 energy positions, so the embedding keeps coarse energy
    position: an edge's onset identifies the element.  Weights (required),
    ``embedding_dim``, ``batch_size`` (spectra per forward pass), ``device``,
    ``compile``, ``progress`` and errors: see :class:`~multimodal_seg.encoders.convnet.ConvChipEncoder`.

    Parameters
    ----------
    length
        Channels each spectrum is resampled to before the network.
    log
        ``log1p`` of the normalised spectrum (compresses zero-loss / low-energy
        peaks against weak edges).
    """

    name = "spectrum-cnn"
    kind = "spectrum"
    architecture = "spectrum-cnn 1D convnet"
    # on a 2-core CPU the 4096 spectra of the speed benchmark's phantom, position by position
    # with the batch norms folded: 0.096 s in batches of 256 against 0.12-0.14 s of 1024
    # (medians of 5, alternated in one process, twice)
    cpu_batch = 256
    accelerator_batch = 1024

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        length: int = 256,
        embedding_dim: int = 64,
        log: bool = True,
        batch_size: int | str = "auto",
        device: str = "auto",
        compile: bool = False,
        progress: bool = False,
    ) -> None:
        self.length = check_int(length, "length", minimum=16, example="256")
        self.log = check_bool(log, "log")
        self._setup(weights=weights, embedding_dim=embedding_dim, batch_size=batch_size,
                    device=device, progress=progress, compile=compile)

    def _build_network(self) -> Any:
        return small_convnet(1, kernels=(7, 5, 5, 3), pooled=8, embedding_dim=self.embedding_dim)

    def architecture_options(self) -> dict[str, Any]:
        return {"length": self.length, "embedding_dim": self.embedding_dim, "log": self.log}

    def preprocessing(self) -> str:
        return (f"each spectrum: negative counts clipped to 0, scaled to mean 1 per channel, resampled "
                f"to {self.length} channels{', log1p' if self.log else ''}")

    def prepare(self, items: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F

        from .binpool import channel_bins

        # a new tensor (the caller's array is never modified), then every step in place
        x = torch.from_numpy(items).to(self.device).clamp_min(0.0)
        total = x.sum(dim=1, keepdim=True)
        x.mul_(torch.where(total > 0, x.shape[1] / total.clamp_min(1e-30), 0.0))
        if x.shape[1] > self.length:
            x = channel_bins(x, self.length)
        elif x.shape[1] < self.length:
            x = F.interpolate(x.unsqueeze(1), size=self.length, mode="linear", align_corners=False)[:, 0]
        x = x.unsqueeze(1)  # (b, 1, length)
        return x.log1p_() if self.log else x

