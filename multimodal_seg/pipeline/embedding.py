"""Streaming a modality's chips through its encoder, never holding the modality whole.

Image chips are scaled to [0, 1] by the image's robust intensity range (one scale
for the whole image, so chips keep their relative brightness); spectra and
diffraction patterns reach their encoders as raw counts.  Encoders that learn
from the data (``Encoder.fit``) see every chip first, or on a large modality chips laid edge
to edge (every position once; a seeded sample of them on a larger one).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from ..analysis.descriptors import CHIP_STATS, chip_statistics
from ..chips.grid import iter_chips
from ..chips.shared import ModalityChips
from ..compute.stopping import stop_point
from ..encoders.base import Encoder
from ..encoders.pooling import PositionMap, position_map
from ..modalities.base import ModalityData

#: Pixels sampled to find the intensity scale (percentiles) of an image.
SCALE_SAMPLE = 1_000_000
#: Percentiles mapped to 0 and 1 before encoding: robust to hot pixels.
SCALE_PERCENTILES = (0.5, 99.5)
#: How the chips an encoder learns from are drawn, in the fingerprint of such an encoder's
#: embeddings (a stored study re-embeds under another): 2, every chip or chips laid edge to
#: edge (:func:`fit_origins`); before, a seeded 512 of the grid's chips.
FIT_RULES = 2
#: Chips handed to an encoder per call (:func:`chip_batch`: fewer where they would hold more
#: than one task's share of memory).
BATCH_CHIPS = 256


def intensity_scale(data, *, sample: int = SCALE_SAMPLE) -> tuple[float, float]:
    """Robust (low, high) intensity of an image from a regular subsample of about ``sample`` pixels."""
    step = max(1, int(np.sqrt(data.size / sample)))
    values = np.asarray(data[::step, ::step]).ravel()
    low, high = np.percentile(np.sort(values), SCALE_PERCENTILES)  # sorted first: same values, faster
    if high <= low:  # very sparse images: fall back to the full range
        low, high = float(values.min()), float(values.max())
    return float(low), float(high)


def modality_intensity(modality: ModalityData) -> tuple[float, float]:
    """The (low, high) range mapped to [0, 1] before encoding: images only, (0, 1) otherwise."""
    return intensity_scale(modality.data) if modality.kind == "image" else (0.0, 1.0)


def scaler(modality: ModalityData, intensity: tuple[float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """Images are scaled to [0, 1] by their robust range; spectra and patterns stay raw counts."""
    if modality.kind != "image":
        return lambda raw: raw
    low, high = intensity
    return lambda raw: np.clip((raw - low) / (high - low), 0.0, 1.0)


def fit_origins(chips: ModalityChips, *, seed: int, n: int) -> np.ndarray:
    """``(m, 2)`` origins of the chips an encoder that learns from the data sees, at most ``n``:
    every chip of the grid where there are at most ``n``; else chips laid edge to edge over
    the area the grid's chips cover, every position once (the last row and column of tiles
    end at that area's far edge); a seeded random ``n`` of those where they too are more.

    Why not a seeded sample of the grid's chips, as before: the embedding then changed with
    the seed.  On the real Bruker P45 EDS map (75 x 100 positions, 5-position chips: 1728
    chips, 300 tiles) a seeded 512 of the grid's chips gave 2 to 5 communities with the seed
    (worst ARI between seeds 0-4: 0.61); its 300 tiles give one basis whatever the seed.  The
    grid's overlapping chips repeat each position (about four times at a stride of half a
    chip; 5.8 times there), so the tiles hold the modality in that much less memory
    (docs/design.md, "The fit sees every chip, or every position once").
    """
    if len(chips.origins) <= n:
        return chips.origins
    lo, hi = chips.origins.min(axis=0), chips.origins.max(axis=0)
    starts = [np.unique(np.append(np.arange(a, b + 1, chips.size), b)) for a, b in zip(lo, hi)]
    tiles = np.stack(np.meshgrid(*starts, indexing="ij"), axis=-1).reshape(-1, 2)
    if len(tiles) > n:
        rng = np.random.default_rng(seed)
        tiles = tiles[np.sort(rng.choice(len(tiles), n, replace=False))]
    return tiles


def fit_sample(modality: ModalityData, chips: ModalityChips, *, seed: int) -> np.ndarray:
    """The chips ``(m, size, size, ...)`` an encoder that learns from the data sees
    (:func:`fit_origins`): as many as one task's share of memory holds (Dask's
    ``array.chunk-size``, as float32)."""
    from ..compute.tasks import chunk_bytes

    n = max(1, chunk_bytes() // chip_nbytes(modality, chips.size))
    return np.concatenate([batch for _, batch in iter_chips(modality.data, fit_origins(chips, seed=seed, n=n),
                                                            chips.size)])


def learns(encoder: Encoder) -> bool:
    """Whether ``encoder`` learns from the data (overrides ``Encoder.fit``)."""
    return type(encoder).fit is not Encoder.fit


def fit_encoder(modality: ModalityData, chips: ModalityChips, encoder: Encoder, *,
                intensity: tuple[float, float], seed: int) -> None:
    """Let an encoder that learns from the data (``Encoder.fit``) see its sample (:func:`fit_sample`); others are
    left as they are."""
    if learns(encoder):
        encoder.fit(scaler(modality, intensity)(fit_sample(modality, chips, seed=seed)))


def chip_nbytes(modality: ModalityData, size: int) -> int:
    """Bytes of one ``size``-position chip of ``modality`` as an encoder receives it (float32)."""
    return size ** 2 * int(np.prod(modality.data.shape[2:], dtype=np.int64)) * 4


def chip_batch(batch_chips: int, nbytes: int) -> int:
    """Chips passed to an encoder per call: ``batch_chips``, fewer where that many chips of
    ``nbytes`` each would hold more than one task's share of memory (Dask's
    ``array.chunk-size``): the large chips of a large image."""
    from ..compute.tasks import chunk_bytes

    return max(1, min(int(batch_chips), chunk_bytes() // max(1, int(nbytes))))


def chip_spans(n_chips: int, *, batch_chips: int, chip_bytes: int, tasks: int,
               whole_batches: bool = True) -> list[tuple[int, int]]:
    """``[(first, stop), ...]``: the chips of each embedding task, in order.

    A span reads at most about Dask's ``array.chunk-size`` of chips (at least one
    batch), and there are about ``tasks`` spans or more, so every thread or worker
    gets work.  With ``whole_batches`` a span is a whole number of ``batch_chips``
    batches, so an encoder whose results depend on its batches
    (``Encoder.batch_dependent``) sees the same batches whatever the spans and
    embeddings do not depend on the scheduler; without it the chips are shared
    evenly, so that, say, three batches' worth of chips keep two threads busy to the end.
    """
    from ..compute.tasks import chunk_bytes

    by_memory = max(1, chunk_bytes() // max(1, chip_bytes * batch_chips))
    if whole_batches:
        by_tasks = max(1, -(-n_chips // (batch_chips * max(1, tasks))))
        step = batch_chips * min(by_memory, by_tasks)
    else:
        step = max(1, min(batch_chips * by_memory, -(-n_chips // max(1, tasks))))
    return [(first, min(first + step, n_chips)) for first in range(0, n_chips, step)]


def _encode_span(reader, origins: np.ndarray, size: int, encoder: Encoder, scale: Callable,
                 batch_chips: int) -> tuple[np.ndarray, np.ndarray]:
    """One task: embeddings and raw statistics of a span of chips, read by the task itself."""
    embeddings = np.empty((len(origins), encoder.dim), dtype=np.float32)
    stats = np.empty((len(origins), len(CHIP_STATS)), dtype=np.float32)
    for first, raw in iter_chips(reader, origins, size, batch=batch_chips):
        stop_point()
        raw = raw.astype(np.float32, copy=False)
        embeddings[first : first + len(raw)] = encoder.encode(scale(raw))
        stats[first : first + len(raw)] = chip_statistics(raw)
    return embeddings, stats


def pools_positions(modality: ModalityData, encoder: Encoder) -> bool:
    """Whether chips of this modality are embedded as means of per-position features
    (``Encoder.pools_positions``; images are always seen chip by chip)."""
    return encoder.pools_positions and modality.kind != "image"


def embed_positions(modality: ModalityData, encoder: Encoder, *, progress: bool = True,
                    desc: str = "embedding") -> PositionMap:
    """Every scan position's features (:func:`multimodal_seg.encoders.pooling.position_map`),
    for an encoder that pools positions (:func:`pools_positions`)."""
    return position_map(modality.data, encoder, progress=progress, desc=f"{desc} {modality.name} ({encoder.name})")


def encode_chips(modality: ModalityData, chips: ModalityChips, encoder: Encoder, *,
                 intensity: tuple[float, float], batch_chips: int = BATCH_CHIPS, progress: bool = True,
                 desc: str = "embedding", positions: PositionMap | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``(n_chips, encoder.dim)`` and raw statistics ``(n_chips, 2)`` of some chips.

    The chips are split into spans (:func:`chip_spans`), each one Dask task that
    reads its own chips from the (lazy) modality, a band of chip rows at a time,
    and encodes them ``batch_chips`` at a time.  The tasks run on the current Dask
    scheduler (:mod:`multimodal_seg.compute`): Dask's threads by default, so every
    core works, or the workers of a cluster; memory holds about one span per
    running task, never the modality.  Encoders that pool per-position features
    (:func:`pools_positions`) encode each scan position once instead
    (:mod:`multimodal_seg.encoders.pooling`), or pool the ``positions`` already
    encoded (:func:`embed_positions`).  ``intensity`` is the image's (low, high)
    range mapped to [0, 1] (ignored for spectra and patterns).
    """
    import dask

    from ..compute.tasks import SyncReader, run_tasks, scheduler_threads

    if pools_positions(modality, encoder):
        if positions is None:
            positions = embed_positions(modality, encoder, progress=progress, desc=desc)
        return positions.pool(chips.origins, chips.size, encoder)
    desc = f"{desc} {modality.name} ({encoder.name})"
    scale = scaler(modality, intensity)
    origins = np.asarray(chips.origins)
    n_chips = len(origins)
    nbytes = chip_nbytes(modality, chips.size)
    # an encoder's intermediates are several times its input: a batch of a large image's
    # chips (256 of 512 px) held 2.3 GB on two threads
    batch_chips = chip_batch(batch_chips, nbytes)
    # A torch network uses every core, or the GPU, by itself: its spans run one at a time
    # in this thread (run_tasks, local_threads=1), in parallel only on a cluster's workers.
    serial = encoder.uses_all_cores
    spans = chip_spans(n_chips, batch_chips=batch_chips, chip_bytes=nbytes,
                       tasks=1 if serial else 2 * scheduler_threads(), whole_batches=encoder.batch_dependent)
    # One key each for the encoder and the reader: a cluster ships them once per worker.
    shared_encoder, reader = dask.delayed(encoder, pure=False), dask.delayed(SyncReader(modality.data), pure=False)
    tasks = [dask.delayed(_encode_span, pure=False)(reader, origins[a:b], chips.size, shared_encoder, scale,
                                                    batch_chips) for a, b in spans]
    with tqdm(total=n_chips, desc=desc, unit="chip", disable=not progress, leave=False) as bar:
        parts = run_tasks(tasks, on_result=lambda i, part: bar.update(len(part[0])),
                          local_threads=1 if serial else None)
    if not parts:
        return np.empty((0, encoder.dim), np.float32), np.empty((0, len(CHIP_STATS)), np.float32)
    return np.concatenate([e for e, _ in parts]), np.concatenate([s for _, s in parts])
