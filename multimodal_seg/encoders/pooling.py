"""Chip embeddings of position-pooling encoders, each scan position encoded once.

Some encoders embed a chip as the mean of per-position features (a diffraction
pattern's profiles, for instance).  With overlapping chips every position lies in
several chips (four at the default stride of half a chip), so encoding chip by
chip repeats the work.  Here the features of every position are computed once,
in bands of scan rows, each band one Dask task on the current scheduler (every
core, or a cluster's workers; memory holds a band per running task), and each
chip's embedding is the mean over its window, read off a summed-area table
(:class:`PositionMap`).  The chip statistics (mean and standard deviation of the
raw values) are pooled the same way from per-position sums.  The embed stage keeps
the map in the study, so that refinement pools its finer chips from it without
reading or encoding the modality again.

An encoder whose features may change in their last bits with the batch they are
computed in (``Encoder.batch_dependent``: the torch convnets) sees the same batches
whatever the bands: the scan's positions, in row-major order, are cut into batches of
its ``batch_size`` from the first, and every task encodes whole batches
(:func:`position_spans`), so the map does not depend on the scheduler, the number of
threads or Dask's chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..compute.stopping import stop_point
from .base import Encoder


def row_bands(shape: tuple[int, ...], *, band_bytes: int, tasks: int = 1,
              row_chunks: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
    """``[(top, stop), ...]``: bands of whole scan rows of a ``(rows, cols, *signal)`` array,
    each about ``band_bytes`` as float32 or less (at least one row), and at least
    ``tasks`` bands where there are that many rows, so every thread or worker gets work.

    ``row_chunks`` (the array's chunk heights along the scan rows, e.g. a Dask array's
    ``chunks[0]``): where every chunk fits in a band, bands are made of whole chunks, so
    no chunk is read (and decompressed) by two bands.
    """
    rows, cols = int(shape[0]), int(shape[1])
    per_row = cols * int(np.prod(shape[2:], dtype=np.int64)) * 4
    band = max(1, min(band_bytes // max(1, per_row), -(-rows // max(1, tasks))))
    if row_chunks is None or max(row_chunks, default=0) > band:
        return [(top, min(top + band, rows)) for top in range(0, rows, band)]
    bands, top, stop = [], 0, 0
    for height in row_chunks:
        if stop + height - top > band:
            bands.append((top, stop))
            top = stop
        stop += height
    return [*bands, (top, stop)] if stop > top else bands


def position_spans(shape: tuple[int, ...], *, band_bytes: int, tasks: int = 1,
                   row_chunks: tuple[int, ...] | None = None, batch: int = 1) -> list[tuple[int, int]]:
    """``[(first, stop), ...]``: the scan positions of each task, in row-major order, in
    :func:`row_bands`' bands, each start moved on to the next multiple of ``batch``, so that
    a task that encodes its positions ``batch`` at a time from its first sees the same
    batches as one pass over the whole scan.  With ``batch=1`` the spans are the bands."""
    rows, cols = int(shape[0]), int(shape[1])
    n = rows * cols
    batch = max(1, int(batch))
    starts = {min(n, -(-top * cols // batch) * batch)
              for top, _ in row_bands(shape, band_bytes=band_bytes, tasks=tasks, row_chunks=row_chunks)}
    cuts = sorted(starts | {0, n})
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def iter_row_bands(data, band_bytes: int | None = None):
    """Yield ``(top, block)``: the (lazy) ``(rows, cols, *signal)`` array read as float32
    blocks of whole scan rows (:func:`row_bands`; ``band_bytes`` defaults to Dask's
    ``array.chunk-size``).  The next band is read in a second thread while the
    caller works on this one, so reading and decompressing overlap the caller's
    work; memory holds two bands.  A band's chunks are read side by side on a local
    thread pool (never a cluster's workers: the caller holds the band): on the 8.9 GB
    cube 3.7 s per 240 rows against 6.3 s one chunk after another."""
    import contextvars
    from concurrent.futures import Future, ThreadPoolExecutor

    from ..compute.tasks import chunk_bytes

    bands = row_bands(data.shape, band_bytes=chunk_bytes() if band_bytes is None else band_bytes,
                      row_chunks=_row_chunks(data))

    def read(band: tuple[int, int]) -> np.ndarray:
        part = data[band[0] : band[1]]
        return np.asarray(part.compute(scheduler="threads") if hasattr(part, "compute") else part,
                          dtype=np.float32)

    def ahead_read(band: tuple[int, int]) -> Future:
        # in a copy of the caller's context, so that what the read warns reaches the caller's
        # run (provenance.RunWarnings), not every run recording in the process
        return ahead.submit(contextvars.copy_context().run, read, band)

    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead_read(bands[0]) if bands else None
        for i, (top, _) in enumerate(bands):
            stop_point()
            block = pending.result()
            pending = ahead_read(bands[i + 1]) if i + 1 < len(bands) else None
            yield top, block


def _row_chunks(data) -> tuple[int, ...] | None:
    """Chunk heights along the scan rows of a Dask or zarr array, ``None`` for others."""
    chunks = getattr(data, "chunks", None)
    if chunks is None or not len(chunks):
        return None
    first = chunks[0]
    if isinstance(first, (int, np.integer)):  # zarr: one chunk shape
        return tuple(min(int(first), int(data.shape[0]) - top) for top in range(0, int(data.shape[0]), int(first)))
    return tuple(int(h) for h in first)


def _span_features(reader, first: int, stop: int, cols: int, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """One task: ``(m, dim)`` features and ``(m, 2)`` sums of values and of their squares of
    the scan positions ``first:stop`` (row-major), read by the task itself (whole rows)."""
    top = first // cols
    block = np.asarray(reader[top : -(-stop // cols)], dtype=np.float32)
    flat = block.reshape(-1, *block.shape[2:])[first - top * cols : stop - top * cols]
    features = encoder.position_features(flat)
    values = flat.reshape(len(flat), -1)
    moments = np.stack([values.sum(axis=1, dtype=np.float64),
                        np.einsum("ij,ij->i", values, values, dtype=np.float64)], axis=1)
    return features, moments


def _window_sums(table: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
    """Sums over ``size x size`` windows at ``origins`` from a summed-area ``table``
    ``(rows + 1, cols + 1, ...)``."""
    r, c = origins[:, 0], origins[:, 1]
    return table[r + size, c + size] - table[r, c + size] - table[r + size, c] + table[r, c]


def _summed_area(values: np.ndarray) -> np.ndarray:
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1, *values.shape[2:]), dtype=np.float64)
    table[1:, 1:] = values.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    return table


@dataclass
class PositionMap:
    """Per-position features of a whole scan, from which any chip's embedding is pooled.

    Attributes
    ----------
    features
        ``(rows, cols, dim)``: the encoder's features of each scan position's signal (float32,
        or float64 where the encoder gives moments whose differences a chip's spread needs).
    moments
        ``(rows, cols, 2)`` float64: sum of each position's raw values and of their squares.
    signal_size
        Values per position (channels, or detector pixels).
    """

    features: np.ndarray
    moments: np.ndarray
    signal_size: int

    def pool(self, origins: np.ndarray, size: int, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(n_chips, dim)`` and raw mean and standard deviation ``(n_chips, 2)``
        (float32) of the ``size x size`` chips at ``origins`` ``(n_chips, 2)``: means over
        each chip's window, read off summed-area tables, made embeddings by the ``encoder``
        that computed the features (:meth:`Encoder.from_pooled`)."""
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 2)
        positions = size * size
        means = _window_sums(_summed_area(self.features), origins, size) / positions
        embeddings = encoder.from_pooled(means)
        sums = _window_sums(_summed_area(self.moments), origins, size)
        count = positions * max(1, self.signal_size)
        mean = sums[:, 0] / count
        std = np.sqrt(np.maximum(sums[:, 1] / count - mean ** 2, 0.0))
        return embeddings.astype(np.float32), np.column_stack([mean, std]).astype(np.float32)


def position_map(data, encoder: Encoder, *, progress: bool = False, desc: str = "embedding") -> PositionMap:
    """Encode every scan position of a ``(rows, cols, *signal)`` (lazy) modality once.

    Spans of positions in bands of scan rows (:func:`position_spans`; whole batches of the
    scan for a batch-dependent encoder) are Dask tasks on the current scheduler, one at a
    time locally for an encoder that uses every core itself; memory holds a band per
    running task, and the map, never the modality.

    Parameters
    ----------
    data
        ``(rows, cols, *signal)`` raw counts.
    encoder
        An encoder with ``pools_positions`` true: its chip embedding is the mean of its
        ``position_features`` over the chip.
    """
    import dask

    from ..compute.tasks import SyncReader, chunk_bytes, run_tasks, scheduler_threads

    rows, cols = int(data.shape[0]), int(data.shape[1])
    features: np.ndarray | None = None  # of the dtype the encoder's features come in
    moments = np.empty((rows * cols, 2), dtype=np.float64)
    # an encoder that uses every core by itself (a torch network) runs one task at a time here
    serial = encoder.uses_all_cores
    spans = position_spans(data.shape, band_bytes=chunk_bytes(), tasks=1 if serial else 2 * scheduler_threads(),
                           row_chunks=_row_chunks(data), batch=encoder.batch_size if encoder.batch_dependent else 1)
    # One key each for the encoder and the reader: a cluster ships them once per worker.
    shared_encoder, reader = dask.delayed(encoder, pure=False), dask.delayed(SyncReader(data), pure=False)
    tasks = [dask.delayed(_span_features, pure=False)(reader, first, stop, cols, shared_encoder)
             for first, stop in spans]

    def store(i: int, result: tuple[np.ndarray, np.ndarray]) -> None:
        nonlocal features
        first, stop = spans[i]
        if features is None:
            kind = np.float64 if result[0].dtype == np.float64 else np.float32
            features = np.empty((rows * cols, encoder.dim), dtype=kind)
        features[first:stop], moments[first:stop] = result
        bar.update(stop - first)

    with tqdm(total=rows * cols, desc=desc, unit="position", disable=not progress, leave=False) as bar:
        run_tasks(tasks, on_result=store, local_threads=1 if serial else None)
    if features is None:  # a scan of no positions
        features = np.empty((0, encoder.dim), dtype=np.float32)
    return PositionMap(features.reshape(rows, cols, -1), moments.reshape(rows, cols, 2),
                       int(np.prod(data.shape[2:], dtype=np.int64)))
