"""The encoder interface: chips in, one embedding vector per chip out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..modalities.base import Axis


class Encoder(ABC):
    """Embeds image chips as fixed-length vectors.

    Subclasses set ``name`` (the registry key) and implement :meth:`encode`,
    :attr:`dim` and :meth:`fingerprint`.  An encoder must be deterministic: the
    same chips give the same embeddings (up to float rounding on GPUs).
    """

    #: Registry key, e.g. ``"resnet50"`` or ``"fourier"``.
    name: str = ""
    #: Modality kind this encoder embeds: ``"image"`` chips are ``(n, h, w)``,
    #: ``"spectrum"`` chips ``(n, h, w, channels)``, ``"diffraction"`` chips
    #: ``(n, h, w, qy, qx)`` (see :mod:`multimodal_seg.modalities.base`).
    kind: str = "image"
    #: Whether the graph stage should scale each feature to unit variance before
    #: PCA; ``False`` for features whose variances are meaningful (PCA scores).
    standardise: bool = True
    #: True when a chip's embedding follows from the mean of per-position features over its
    #: scan positions; such an encoder also defines ``position_features(signals)``, mapping
    #: ``(m, *signal)`` to ``(m, dim)``, and may override :meth:`from_pooled` (a chip's
    #: embedding from that mean: the mean itself by default).  The pipeline then encodes each
    #: position once, not once per chip it lies in (:mod:`multimodal_seg.encoders.pooling`).
    pools_positions: bool = False
    #: True when an embedding may change, in its last bits, with the batch it is computed
    #: in and the device (torch picks kernels by batch shape and hardware).  Such an
    #: encoder puts its batch size and device type in :meth:`fingerprint`, and the
    #: embedding stage adds how many chips it passes per call.
    batch_dependent: bool = False
    #: Items per call of the network, for a ``batch_dependent`` encoder that pools positions:
    #: its ``position_features`` works through its signals this many at a time from the
    #: first, and the pipeline hands it whole batches of the scan, so that the features do not
    #: depend on how the work was shared out (:func:`multimodal_seg.encoders.pooling.position_spans`).
    batch_size: int = 1
    #: True when :meth:`encode` keeps every core busy by itself (a torch network): the
    #: pipeline then runs its embedding tasks one at a time on a local scheduler, in parallel
    #: only on a cluster's workers.
    uses_all_cores: bool = False
    #: True when embedding a chip costs little beside the rest of a run (no neural network):
    #: boundary refinement's default (``refine="auto"``) embeds the boundary chips again only
    #: with such encoders.  Unknown (plugin) encoders are taken as costly unless they say so.
    lightweight: bool = False

    def set_signal_axes(self, axes: Sequence[Axis]) -> None:
        """Receive the calibrated signal axes of the modality this encoder embeds.

        Called by the multimodal pipeline right after building the encoder, before
        :meth:`fingerprint`, :meth:`fit` and :meth:`encode`, with the modality's
        axes after the two scan axes: ``[energy]`` for spectrum images, ``[qy, qx]``
        for 4D-STEM, none for images.  The default ignores them.  An encoder whose
        output depends on the calibration overrides this, puts the calibration in
        :meth:`fingerprint`, and may raise ``ParameterError`` when its options do
        not fit the axes.
        """

    def from_pooled(self, means: np.ndarray) -> np.ndarray:
        """Chip embeddings ``(n, dim)`` float32 from the means ``(n, dim)`` (float64 where the
        encoder's ``position_features`` are) of their positions' features, for an encoder that
        pools positions: the means themselves by default.  An encoder whose chip feature is
        not a mean (a spread over the chip's positions) makes it from means of moments here."""
        return np.asarray(means, dtype=np.float32)

    def fit(self, sample: np.ndarray) -> None:
        """Learn data-dependent state (e.g. a PCA basis) from a sample of chips.

        Called once by the pipeline, before :meth:`encode`, with every chip of the
        modality where they fit in Dask's ``array.chunk-size`` (as float32), else
        with chips laid edge to edge (every scan position once), a seeded sample
        of those where they do not fit either
        (:func:`multimodal_seg.pipeline.embedding.fit_origins`).  The default does
        nothing.  An encoder that fits must be deterministic given the sample.
        """

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one embedding vector."""

    @abstractmethod
    def encode(self, chips: np.ndarray) -> np.ndarray:
        """Embed a batch of chips.

        Parameters
        ----------
        chips
            Array of shape ``(n, size, size)``, float32, intensities scaled to
            about ``[0, 1]`` with one scale for the whole image (the pipeline does
            this, so that chips keep their relative brightness).

        Returns
        -------
        Array of shape ``(n, dim)``, float32.
        """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description of everything that changes the embeddings.

        Used for provenance and to decide whether cached embeddings are still
        valid: name, options, and the identity (e.g. SHA-256) of any weights.
        """

    def describe(self) -> str:
        """One line for logs and reports."""
        fp = self.fingerprint()
        opts = ", ".join(f"{k}={v}" for k, v in fp.items() if k != "name")
        return f"{self.name}({opts})"
