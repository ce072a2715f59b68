"""Chip embeddings of position-pooling encoders, each scan position encoded once.

Some encoders embed a chip as the mean of per-position features (a diffraction
pattern's profiles, for instance).  With overlapping chips every position lies in
several chips (four at the default stride of half a chip), so encoding chip by
chip repeats the work.  Here the features of every position are computed once,
streaming the scan in bands of rows, and each chip's embedding is the mean over its
window, read off a summed-area table.  The chip statistics (mean and standard
deviation of the raw values) are pooled the same way from per-position sums.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .base import Encoder

#: Bytes of raw data read per band of scan rows.
BAND_BYTES = 256 * 2**20


def iter_row_bands(data, band_bytes: int = BAND_BYTES):
    """Yield ``(top, block)``: the (lazy) ``(rows, cols, *signal)`` array read as float32
    blocks of whole scan rows, about ``band_bytes`` each (at least one row)."""
    rows, cols = int(data.shape[0]), int(data.shape[1])
    per_row = cols * int(np.prod(data.shape[2:], dtype=np.int64)) * 4
    band = max(1, band_bytes // max(1, per_row))
    for top in range(0, rows, band):
        yield top, np.asarray(data[top : top + band], dtype=np.float32)


def _window_sums(table: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
    """Sums over ``size x size`` windows at ``origins`` from a summed-area ``table``
    ``(rows + 1, cols + 1, ...)``."""
    r, c = origins[:, 0], origins[:, 1]
    return table[r + size, c + size] - table[r, c + size] - table[r + size, c] + table[r, c]


def _summed_area(values: np.ndarray) -> np.ndarray:
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1, *values.shape[2:]), dtype=np.float64)
    table[1:, 1:] = values.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    return table


def pooled_position_embeddings(data, origins: np.ndarray, size: int, encoder: Encoder, *,
                               progress: bool = False, desc: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and raw statistics of every chip, each position encoded once.

    Parameters
    ----------
    data
        ``(rows, cols, *signal)`` (lazy) modality array, raw counts.
    origins
        ``(n_chips, 2)`` top-left scan position of each chip.
    size
        Chip edge in scan positions.
    encoder
        An encoder with ``pools_positions`` true: its chip embedding is the mean of its
        ``position_features`` over the chip.

    Returns
    -------
    ``(n_chips, encoder.dim)`` float32 embeddings and ``(n_chips, 2)`` float32 mean and
    standard deviation of each chip's raw values.
    """
    rows, cols = int(data.shape[0]), int(data.shape[1])
    signal = tuple(int(n) for n in data.shape[2:])
    features = np.empty((rows, cols, encoder.dim), dtype=np.float32)
    moments = np.empty((rows, cols, 2), dtype=np.float64)  # sum and sum of squares of the values
    bar = tqdm(total=rows * cols, desc=desc, unit="position", disable=not progress, leave=False)
    with bar:
        for top, block in iter_row_bands(data, BAND_BYTES):
            flat = block.reshape(-1, *signal)
            n_rows = block.shape[0]
            features[top : top + n_rows] = encoder.position_features(flat).reshape(n_rows, cols, -1)
            values = flat.reshape(len(flat), -1)
            moments[top : top + n_rows, :, 0] = values.sum(axis=1, dtype=np.float64).reshape(n_rows, cols)
            moments[top : top + n_rows, :, 1] = np.einsum(
                "ij,ij->i", values, values, dtype=np.float64).reshape(n_rows, cols)
            bar.update(n_rows * cols)
    origins = np.asarray(origins, dtype=np.int64)
    positions = size * size
    embeddings = _window_sums(_summed_area(features), origins, size) / positions
    sums = _window_sums(_summed_area(moments), origins, size)
    count = positions * max(1, int(np.prod(signal)))
    mean = sums[:, 0] / count
    std = np.sqrt(np.maximum(sums[:, 1] / count - mean ** 2, 0.0))
    return embeddings.astype(np.float32), np.column_stack([mean, std]).astype(np.float32)
