"""Adaptive average pooling whose backward pass is deterministic on CUDA.

``torch.nn.AdaptiveAvgPool{1,2}d`` has no deterministic CUDA backward
(``adaptive_avg_pool2d_backward_cuda``), so training a network that uses it on a GPU
with deterministic algorithms (``mmseg train``'s default, for reproducible weights)
fails.  :class:`BinAverage` computes the same bins, ``[floor(i L / p), ceil((i + 1) L / p))``
along each pooled axis of length ``L`` into ``p`` outputs, as products with small
bin-averaging matrices, whose gradients are matrix products too.  It has no parameters or
buffers, so it replaces the torch module in a network without changing its state dict.
:func:`channel_bins` computes the same bins of a batch of spectra for inference, fast where
they are equal.
"""

from __future__ import annotations

import torch
from torch import nn


def bin_matrix(length: int, bins: int, *, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(length, bins)`` matrix whose column ``i`` averages the inputs of adaptive bin ``i``."""
    matrix = torch.zeros(length, bins, device=device, dtype=torch.float32)
    for i in range(bins):
        start, stop = (i * length) // bins, -((-(i + 1) * length) // bins)
        matrix[start:stop, i] = 1.0 / (stop - start)
    return matrix.to(dtype)


class BinAverage(nn.Module):
    """Adaptive average pooling of the last ``ndim`` axes to ``size`` bins each.

    Axes that ``size`` divides are pooled by plain average pooling (the same bins), the
    others by products with bin-averaging matrices (1D always: there the products are
    the faster).

    ``(n, c, L)`` -> ``(n, c, size)`` for ``ndim=1``; ``(n, c, h, w)`` -> ``(n, c, size,
    size)`` for ``ndim=2``: equal to ``nn.AdaptiveAvgPool{ndim}d(size)`` (to float
    rounding), with a deterministic backward pass.  With ``ndim=1`` a 1D signal may also
    come as a 2D one of height one, ``(n, c, 1, L)`` -> ``(n, c, 1, size)`` (how
    :func:`multimodal_seg.encoders.heightone.height_one` runs 1D networks).
    """

    def __init__(self, size: int, ndim: int) -> None:
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, not {ndim}")
        self.size, self.ndim = int(size), int(ndim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.shape[-self.ndim:]
        if x.dim() == 4 and all(length % self.size == 0 for length in pooled):
            # equal bins: average pooling, whose CUDA backward is deterministic; on a CPU 30x
            # faster than the products on channels-last input (64 x 64 x 8 x 8: 0.04 against 1.4 ms)
            return torch.nn.functional.avg_pool2d(x, (x.shape[-2] // self.size if self.ndim == 2 else 1,
                                                      x.shape[-1] // self.size))
        if self.ndim == 1:
            return x @ bin_matrix(x.shape[-1], self.size, device=x.device, dtype=x.dtype)
        rows = bin_matrix(x.shape[-2], self.size, device=x.device, dtype=x.dtype)
        cols = bin_matrix(x.shape[-1], self.size, device=x.device, dtype=x.dtype)
        return rows.transpose(0, 1) @ x @ cols

    def extra_repr(self) -> str:
        return f"size={self.size}, ndim={self.ndim}"


def channel_bins(x: torch.Tensor, length: int) -> torch.Tensor:
    """Each row of ``x`` ``(b, c)`` averaged over ``length`` bins of channels,
    ``[floor(i c / length), ceil((i + 1) c / length))``: ``(b, length)``, the values of
    ``torch.nn.functional.adaptive_avg_pool1d``.

    Where ``length`` divides ``c``, as sums of strided views in the pooling kernel's order
    (bitwise the same values, tested): on a 2-core CPU 0.02 against 0.27 ms for 256 spectra
    of 512 channels, where the pooling took most of ``spectrum-cnn``'s preparation.
    """
    factor, rest = divmod(x.shape[1], length)
    if rest:
        return torch.nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), length)[:, 0]
    total = x[:, 0::factor].clone()
    for start in range(1, factor):
        total += x[:, start::factor]
    return total.div_(factor)
