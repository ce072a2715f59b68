"""Per-chip and per-community descriptors a microscopist can read.

Crystallinity index
-------------------
Order shows in Fourier space as sharp Bragg spots; disorder as a smooth ring.
In the annulus (+-1.5 cycles) around the strongest spatial frequency of a window
(Hann-tapered, mean removed, frequencies below 2 cycles ignored), the index is
the fraction of power in samples brighter than ``PEAK_FACTOR`` times the annulus
median.  Speckle of a ring or of noise is exponentially distributed and passes
ten times its median with probability about 0.001, so amorphous material and
noise score near 0 and a lattice near 1.  Spots need several lattice periods per
window to be resolved, so the index is measured on windows of at least
``CRYSTALLINITY_WINDOW`` pixels centred on a community's chips, not on the chips
themselves (measured on the HAADF phantom: lattices 0.99, amorphous 0.003 with
64 px windows; with 32 px windows the spots blur and lattices fall to 0.0-0.4).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import dask.array as da
import numpy as np
import scipy.fft

from ..chips.grid import ChipGrid
from ..chips.shared import ModalityChips

PEAK_FACTOR = 10.0
#: Spatial frequencies below this (cycles per window) are ignored: slow background.
MIN_RADIUS = 2.0
#: Smallest window (px) on which crystallinity is measured.
CRYSTALLINITY_WINDOW = 64
#: Smallest window (px) on which crystallinity means anything: below it, fewer than 15 rings lie
#: between the slow background (MIN_RADIUS) and the Nyquist ring, and the strongest ring of so
#: few is picked out of noise.  An image smaller than this (a 10 x 50 px Velox survey) gets NaN.
SMALLEST_CRYSTALLINITY_WINDOW = CRYSTALLINITY_WINDOW // 2
#: Windows sampled per community for its crystallinity.
CRYSTALLINITY_SAMPLES = 32

#: Columns of the per-chip statistics array written by the embedding stage.
CHIP_STATS = ("mean_intensity", "std_intensity")


def crystallinity(windows: np.ndarray) -> np.ndarray:
    """Crystallinity index of each window.

    Parameters
    ----------
    windows
        ``(n, size, size)`` intensities (any scale); ``size`` >= 64 px resolves
        spots of lattices with spacings up to about 10 px.

    Returns
    -------
    ``(n,)`` float32 in [0, 1].
    """
    windows = np.asarray(windows, dtype=np.float32)
    n, size, _ = windows.shape
    taper = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    centred = (windows - windows.mean(axis=(1, 2), keepdims=True)) * taper
    # scipy's FFT keeps float32 (NumPy's works in float64: 4x slower on 150 windows of 128 px)
    power = np.abs(scipy.fft.rfft2(centred)).reshape(n, -1) ** 2
    radius = np.hypot(np.fft.fftfreq(size)[:, None] * size, np.fft.rfftfreq(size)[None, :] * size).ravel()
    use = (radius >= MIN_RADIUS) & (radius <= size / 2)
    power, radius = power[:, use], radius[use]
    rings = np.rint(radius).astype(int)
    ring_ids, ring_of = np.unique(rings, return_inverse=True)
    # Radial profile of every window at once: sum per ring / samples per ring.
    profile = np.stack([np.bincount(ring_of, weights=row, minlength=ring_ids.size) for row in power])
    profile /= np.bincount(ring_of, minlength=ring_ids.size)
    peak_ring = ring_ids[profile.argmax(axis=1)]
    out = np.zeros(n, dtype=np.float32)
    for ring in np.unique(peak_ring):  # few distinct rings: vectorised per group
        sel = peak_ring == ring
        annulus = power[np.ix_(sel, np.abs(radius - ring) <= 1.5)]
        median = np.median(annulus, axis=1, keepdims=True)
        total = annulus.sum(axis=1)
        peaks = (annulus * (annulus > PEAK_FACTOR * median)).sum(axis=1)
        out[sel] = np.divide(peaks, total, out=np.zeros_like(peaks), where=total > 0)
    return out


def sampled_crystallinity(image: da.Array | np.ndarray, grid: ChipGrid | ModalityChips,
                          chip_labels: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crystallinity of windows centred on a seeded sample of each community's chips.

    ``grid`` is anything with chip ``origins`` and ``size`` in the image's pixels (a
    ChipGrid, or one modality's chips on a shared grid).  Up to
    ``CRYSTALLINITY_SAMPLES`` chips per community are drawn (seeded); each gets a window of ``max(chip size, CRYSTALLINITY_WINDOW)`` px (capped by the
    image) centred on it and shifted inside the image.

    Returns
    -------
    ``owner`` ``(n,)``, the community of each sampled window, and ``index`` ``(n,)`` float32,
    its crystallinity.
    """
    from ..chips.grid import BAND_BYTES, iter_chips

    labels = np.asarray(chip_labels).ravel()
    shape = np.array(image.shape[:2])
    size = min(max(grid.size, CRYSTALLINITY_WINDOW), *shape)
    rng = np.random.default_rng(seed)
    n_communities = int(labels.max()) + 1
    picked, owner = [], []
    for community in range(n_communities):
        members = np.flatnonzero(labels == community)
        chosen = rng.choice(members, min(CRYSTALLINITY_SAMPLES, members.size), replace=False)
        picked.append(chosen)
        owner.append(np.full(chosen.size, community))
    picked, owner = np.concatenate(picked), np.concatenate(owner)
    centres = grid.origins[picked] + grid.size // 2
    starts = np.clip(centres - size // 2, 0, shape - size)
    order = np.lexsort((starts[:, 1], starts[:, 0]))  # row-major: one band read per batch
    index = np.empty(len(order), dtype=np.float32)
    # batches of a band's bytes: windows scattered over a small image come from one read
    batch = max(64, BAND_BYTES // (size * size * np.dtype(image.dtype).itemsize))
    for first, windows in iter_chips(image, starts[order], size, batch=batch):
        index[order[first : first + len(windows)]] = crystallinity(windows)
    return owner, index


def community_crystallinity(image: da.Array | np.ndarray, grid: ChipGrid | ModalityChips,
                            chip_labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Mean crystallinity of each community from windows centred on its chips
    (:func:`sampled_crystallinity`).

    Returns
    -------
    ``(n_communities,)`` float32, NaN for an empty community and for every community of an
    image smaller than ``SMALLEST_CRYSTALLINITY_WINDOW`` on a side.
    """
    n_communities = int(np.asarray(chip_labels).max()) + 1
    out = np.full(n_communities, np.nan, dtype=np.float32)
    if min(image.shape[:2]) < SMALLEST_CRYSTALLINITY_WINDOW:
        return out
    owner, index = sampled_crystallinity(image, grid, chip_labels, seed=seed)
    for community in range(n_communities):
        if (owner == community).any():
            out[community] = index[owner == community].mean()
    return out


def chip_statistics(raw_chips: np.ndarray) -> np.ndarray:
    """``(n, len(CHIP_STATS))`` mean and std of each chip's values, in the data's own units.

    ``raw_chips`` is ``(n, h, w, ...)``: images, spectra or patterns alike.
    """
    flat = np.asarray(raw_chips, dtype=np.float32).reshape(len(raw_chips), -1)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1)])


def pooled_std(chip_stats: np.ndarray) -> float:
    """The std of the values of chips of one size pooled, from their ``(n, 2)`` means and
    stds (:func:`chip_statistics`): the square root of the mean variance plus the variance
    of the means."""
    means, stds = chip_stats[:, 0].astype(np.float64), chip_stats[:, 1].astype(np.float64)
    return float(np.sqrt(np.mean(stds**2) + np.var(means)))


@dataclass
class CommunityRow:
    """One community: its size and what it looks like."""

    community: int
    n_chips: int
    area_fraction: float
    mean_intensity: float
    std_intensity: float
    crystallinity: float


def community_table(
    chip_labels: np.ndarray, pixel_labels: np.ndarray, chip_stats: np.ndarray,
    crystallinity_index: np.ndarray,
) -> list[CommunityRow]:
    """Summarise each community.

    Parameters
    ----------
    chip_labels
        ``(n_chips,)`` community per chip, -1 for none.
    pixel_labels
        Image-sized community map (area fractions are taken from it).
    chip_stats
        ``(n_chips, 2)`` from :func:`chip_statistics`.  A community's mean intensity is the
        mean of its chips' means; its std is that of all its chips' values pooled (the chips
        are of one size): the mean of their variances plus the variance of their means, so
        that chips of one pixel, whose own std is 0, still show how the community varies.
    crystallinity_index
        ``(n_communities,)`` from :func:`community_crystallinity`.
    """
    chip_labels = np.asarray(chip_labels).ravel()
    # -1 first; bincount casts other integer types slowly (30 ms for 4 Mpx of int32), hence intp
    counts = np.bincount(np.asarray(pixel_labels).ravel().astype(np.intp) + 1, minlength=int(chip_labels.max()) + 2)
    areas = counts[1:]
    labelled_pixels = max(int(areas.sum()), 1)
    rows = []
    for community in range(int(chip_labels.max()) + 1):
        sel = chip_labels == community
        rows.append(CommunityRow(
            community=community,
            n_chips=int(sel.sum()),
            area_fraction=float(areas[community] / labelled_pixels),
            mean_intensity=float(chip_stats[sel, 0].mean()) if sel.any() else float("nan"),
            std_intensity=pooled_std(chip_stats[sel]) if sel.any() else float("nan"),
            crystallinity=float(crystallinity_index[community]),
        ))
    return rows


def unpainted_communities(chip_labels: np.ndarray, painted: np.ndarray) -> list[int]:
    """Communities that hold chips of ``chip_labels`` (any shape, ``-1``: none) but no position
    of the map ``painted`` from them (any shape): regions thinner than a chip, which the
    vote of their own overlapping chips paints over (refinement keeps what the chips paint:
    :func:`multimodal_seg.chips.refine.keep_communities`), or placed over."""
    chip_labels, painted = np.asarray(chip_labels).ravel(), np.asarray(painted).ravel()
    n = int(chip_labels.max()) + 1 if chip_labels.size else 0
    held = np.bincount(chip_labels[chip_labels >= 0], minlength=n) > 0
    shown = np.bincount(painted[(painted >= 0) & (painted < n)], minlength=n) > 0
    return np.flatnonzero(held & ~shown).tolist()


def table_to_csv(rows: list[CommunityRow]) -> str:
    """CSV text with a header line."""
    buffer = io.StringIO()
    fields = list(CommunityRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buffer.getvalue()


def community_mean_signals(data: da.Array, chips, labels: np.ndarray) -> np.ndarray:
    """Mean signal (spectrum or diffraction pattern) of each community.

    Parameters
    ----------
    data
        ``(rows, cols, *signal)`` modality array (streamed in bands of scan rows).
    chips
        The modality's chips (``origins``, ``size``), one per label.
    labels
        ``(n_chips,)`` community per chip (-1 skipped).

    Returns
    -------
    ``(n_communities, *signal)`` float64: the average over every scan position of
    every chip in the community (positions in overlapping chips count once per chip).
    Each position is read once: its signal enters each community weighted by the
    number of that community's chips covering it.
    """
    from ..encoders.pooling import iter_row_bands

    labels = np.asarray(labels).ravel()
    n = int(labels.max()) + 1
    rows, cols = int(data.shape[0]), int(data.shape[1])
    weights = np.zeros((n, rows, cols))
    size = chips.size
    for (r, c), label in zip(np.asarray(chips.origins), labels):
        if label >= 0:
            weights[label, r : r + size, c : c + size] += 1
    sums = np.zeros((n, int(np.prod(data.shape[2:], dtype=np.int64))))
    for top, block in iter_row_bands(data):
        # one float32 product per band (a few thousand positions; no float64 copy of the
        # band), summed over bands in float64
        w = weights[:, top : top + len(block)].reshape(n, -1).astype(np.float32)
        sums += w @ block.reshape(w.shape[1], -1)
    totals = weights.reshape(n, -1).sum(axis=1)
    return (sums / np.maximum(totals, 1)[:, None]).reshape(n, *data.shape[2:])
