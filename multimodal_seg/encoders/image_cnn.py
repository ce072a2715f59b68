"""``image-cnn``: a small image convnet, trained from scratch on the user's own images.

Where no MicroNet or ImageNet ResNet50 weights are at hand (they are not downloaded
at run time), ``mmseg train --modality image`` trains this network
self-supervised on the user's unlabelled images in minutes on a CPU; the
checkpoint then embeds image chips in any run (``--weights encoder.ckpt``).
Untrained (``weights="random"``) it is a baseline, not a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .convnet import ConvChipEncoder, small_convnet
from .options import check_int
from .positions import as_chips

#: Output channels of the four conv blocks: twice the spectrum and diffraction nets', since
#: micrographs hold more kinds of texture than one pattern or spectrum.
IMAGE_CHANNELS = (32, 64, 128, 128)


class ImageCNNEncoder(ConvChipEncoder):
    """A small 2D convnet over each image chip.

    Preprocessing per chip: intensities (already scaled to [0, 1] with one range for
    the whole image by the pipeline) clipped to [0, 1] and resized to ``size`` x
    ``size`` px (antialiased bilinear), so chips of any size give the network the
    same input.  The network (:func:`~multimodal_seg.encoders.convnet.small_convnet`
    with 32, 64, 128, 128 channels, kernels 5, 3, 3, 3) ends in a global average
    pool: features of texture and grey level, not of where in the chip they are.
    ``weights`` (required), ``embedding_dim``, ``batch_size`` (chips per forward
    pass), ``device``, ``compile``, ``progress`` and the errors: see
    :class:`~multimodal_seg.encoders.convnet.ConvChipEncoder`.

    Parameters
    ----------
    size
        Edge length chips are resized to; ``None`` keeps the chip size.
    """

    name = "image-cnn"
    kind = "image"
    architecture = "image-cnn 2D convnet"
    two_dimensional = True
    pools_positions = False  # a chip is one item

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        size: int | None = 64,
        embedding_dim: int = 64,
        batch_size: int | str = "auto",
        device: str = "auto",
        compile: bool = False,
        progress: bool = False,
    ) -> None:
        self.size = None if size is None else check_int(size, "size", minimum=16, example="64")
        self._setup(weights=weights, embedding_dim=embedding_dim, batch_size=batch_size,
                    device=device, progress=progress, compile=compile)

    def _build_network(self) -> Any:
        return small_convnet(2, kernels=(5, 3, 3, 3), pooled=1, embedding_dim=self.embedding_dim,
                             channels=IMAGE_CHANNELS)

    def architecture_options(self) -> dict[str, Any]:
        return {"size": self.size, "embedding_dim": self.embedding_dim}

    def preprocessing(self) -> str:
        size = "kept at the chip size" if self.size is None else f"resized to {self.size} x {self.size} px"
        return f"each chip: intensities scaled to [0, 1] by the image's robust range and clipped, {size}"

    def signals(self, chips: np.ndarray) -> tuple[np.ndarray, int]:
        """Image chips ``(n, size, size)`` are the items themselves (one per chip)."""
        return as_chips(chips, self.kind), 1

    def prepare(self, items: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)).to(self.device)
        x = x.clamp(0.0, 1.0).unsqueeze(1)
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x.contiguous(memory_format=self.memory_format)
