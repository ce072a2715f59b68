"""An example encoder plugin: each chip becomes its normalised intensity histogram.

Install with ``pip install -e plugins/mmseg-histogram-encoder``; then
``mmseg segment img.tif --encoder histogram`` or ``segment(..., encoder="histogram")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multimodal_seg.encoders.base import Encoder


class HistogramEncoder(Encoder):
    """Chip -> histogram of its intensities (``bins`` bins over [0, 1]), summing to 1.

    Good for regions told apart by brightness distribution alone (phases in BSE
    images); blind to texture and orientation.
    """

    name = "histogram"

    def __init__(self, *, bins: int = 32) -> None:
        self.bins = int(bins)

    @property
    def dim(self) -> int:
        return self.bins

    def encode(self, chips: np.ndarray) -> np.ndarray:
        flat = np.clip(np.asarray(chips, dtype=np.float32).reshape(len(chips), -1), 0.0, 1.0)
        index = np.minimum((flat * self.bins).astype(int), self.bins - 1)
        counts = np.stack([np.bincount(row, minlength=self.bins) for row in index])
        return (counts / flat.shape[1]).astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "bins": self.bins, "version": 1}
