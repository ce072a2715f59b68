"""Spectrum-image encoders (EELS, EDS): one vector per chip of spectra.

Chips are ``(n, h, w, channels)`` raw counts: ``h x w`` scan positions, one
spectrum each (``h = w = 1`` is a chip of one spectrum).  Each encoder embeds the
spectra and pools them over the chip's positions.

``spectrum-pca`` (weight-free, the default for spectra)
    The standard multivariate analysis of spectrum images: normalise each
    spectrum, weight channels for Poisson noise (Keenan & Kotula, Surf. Interface
    Anal. 36, 203 (2004)), project on a PCA basis learnt by :meth:`fit` from a
    sample of the data.  Per chip: mean and standard deviation of the scores over
    its positions, and the mean log total counts (thickness / density cue).
``spectrum-cnn`` (trainable; random init only when asked)
    A small 1D convnet over normalised, log-scaled spectra resampled to a fixed
    length, so any channel count works.

This module also holds the pieces both trainable convnet encoders share (the
diffraction convnet in :mod:`multimodal_seg.encoders.patterns` uses them):
chip validation, weights resolution and strict loading, and batched inference
(:class:`ConvChipEncoder`).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ParameterError, WeightsError
from .base import Encoder
from .weights import RANDOM, ResolvedWeights, file_sha256, load_state_dict
from .weights import check_layout as check_state_dict

#: Spectrum normalisations: ``total`` (sum 1), ``max`` (peak 1), ``none`` (raw counts).
NORMALISATIONS = ("total", "none", "max")

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
            fix="pass a stack of chips cut on the scan grid (see multimodal_seg.chips)",
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

        from ..device import pick_device

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

        from ..device import autocast_context

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


def normalise_spectra(spectra: np.ndarray, mode: str) -> np.ndarray:
    """Scale each spectrum (row): ``total`` to sum 1, ``max`` to peak 1, ``none`` unchanged.

    Spectra whose total (or maximum) is not positive, e.g. no counts at all, become
    all zeros rather than NaN.
    """
    if mode == "none":
        return spectra
    scale = spectra.sum(axis=1, dtype=np.float64) if mode == "total" else spectra.max(axis=1)
    scale = np.asarray(scale, dtype=np.float32)
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    return spectra * inverse[:, None]


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
    encoded chips are scaled.

    Parameters
    ----------
    n_components
        Principal components kept.
    normalise
        ``"total"`` (sum of counts 1, default: removes dose and thickness
        scaling), ``"max"`` (largest channel 1) or ``"none"`` (raw counts).
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
        Bad option.
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
    ) -> None:
        self.n_components = check_int(n_components, "n_components", minimum=1, example="16")
        self.normalise = check_choice(normalise, "normalise", NORMALISATIONS)
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

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_components": self.n_components,
            "normalise": self.normalise,
            "poisson": self.poisson,
            "log_counts": self.log_counts,
            "max_fit_spectra": self.max_fit_spectra,
            "version": 1,
        }

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
            Not a spectrum chip stack, or fewer spectra or channels than
            ``n_components``.
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
        x = normalise_spectra(spectra, self.normalise)
        if self.poisson:
            mean_spectrum = x.mean(axis=0, dtype=np.float64)
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
            :meth:`fit` has not been called.
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
        x = normalise_spectra(spectra, self.normalise) * self.channel_weights
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
