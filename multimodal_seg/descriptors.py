"""Per-chip and per-community descriptors a microscopist can read.

Crystallinity index
-------------------
The fraction of a chip's spectral power (above 2 cycles per chip) that sits in
sharp peaks: Fourier samples brighter than ``PEAK_FACTOR`` times the median power
at the same spatial frequency.  A lattice puts most of its power in Bragg spots
(index near 1); amorphous material spreads it over a smooth ring and noise is
flat, where a sample passes ten times the median with probability about 0.001
(power of Gaussian noise is exponential), so the index is near 0.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import numpy as np

PEAK_FACTOR = 10.0
#: Spatial frequencies below this (cycles per chip) are ignored: slow background.
MIN_RADIUS = 2.0

#: Columns of the per-chip statistics array written by the embedding stage.
CHIP_STATS = ("mean_intensity", "crystallinity")


def crystallinity(chips: np.ndarray) -> np.ndarray:
    """Crystallinity index of each chip.

    Parameters
    ----------
    chips
        ``(n, size, size)`` intensities (any scale).

    Returns
    -------
    ``(n,)`` float32 in [0, 1].
    """
    chips = np.asarray(chips, dtype=np.float32)
    n, size, _ = chips.shape
    window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    centred = (chips - chips.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.rfft2(centred)) ** 2
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.rfftfreq(size)[None, :] * size
    ring = np.rint(np.hypot(fy, fx)).astype(int).ravel()
    use = (ring >= MIN_RADIUS) & (ring <= size // 2)
    ring, power = ring[use], power.reshape(n, -1)[:, use]
    out = np.zeros(n, dtype=np.float32)
    for radius in np.unique(ring):
        sel = ring == radius
        median = np.median(power[:, sel], axis=1, keepdims=True)
        peaks = power[:, sel] > PEAK_FACTOR * median
        out += (power[:, sel] * peaks).sum(axis=1)
    total = power.sum(axis=1)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def chip_statistics(raw_chips: np.ndarray) -> np.ndarray:
    """``(n, len(CHIP_STATS))`` statistics of chips in the image's own intensity units."""
    raw_chips = np.asarray(raw_chips, dtype=np.float32)
    return np.column_stack([raw_chips.mean(axis=(1, 2)), crystallinity(raw_chips)]).astype(np.float32)


@dataclass
class CommunityRow:
    """One community: its size and what it looks like."""

    community: int
    n_chips: int
    area_fraction: float
    mean_intensity: float
    crystallinity: float


def community_table(
    chip_labels: np.ndarray, pixel_labels: np.ndarray, chip_stats: np.ndarray
) -> list[CommunityRow]:
    """Summarise each community.

    Parameters
    ----------
    chip_labels
        ``(n_chips,)`` community per chip, -1 for none.
    pixel_labels
        Image-sized community map (area fractions are taken from it).
    chip_stats
        ``(n_chips, 2)`` from :func:`chip_statistics` (means are over chips).
    """
    chip_labels = np.asarray(chip_labels).ravel()
    labelled_pixels = max(int((pixel_labels >= 0).sum()), 1)
    areas = np.bincount(pixel_labels[pixel_labels >= 0].ravel(), minlength=chip_labels.max() + 1)
    rows = []
    for community in range(int(chip_labels.max()) + 1):
        sel = chip_labels == community
        rows.append(CommunityRow(
            community=community,
            n_chips=int(sel.sum()),
            area_fraction=float(areas[community] / labelled_pixels),
            mean_intensity=float(chip_stats[sel, 0].mean()) if sel.any() else float("nan"),
            crystallinity=float(chip_stats[sel, 1].mean()) if sel.any() else float("nan"),
        ))
    return rows


def table_to_csv(rows: list[CommunityRow]) -> str:
    """CSV text with a header line."""
    buffer = io.StringIO()
    fields = list(CommunityRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buffer.getvalue()
