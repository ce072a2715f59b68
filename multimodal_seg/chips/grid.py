"""Chip grids: where chips sit, how they are cut, and how chip labels go back to pixels.

A chip is a square window of ``size`` pixels; chips start every ``stride`` pixels
along each axis (``stride < size`` makes them overlap).

Edge policy
-----------
The grid always covers every pixel.  When the image length is not ``size + n *
stride``, one more row (column) of chips is added whose chips end exactly on the
image edge, so the last two rows (columns) overlap more than the others.  Nothing
is padded and nothing is dropped.  An image smaller than one chip is an error.

Back-projection
---------------
Each pixel takes the community that most chips covering it voted for.  Ties go to
the chip whose centre is nearest the pixel block, so a stride equal to the chip
size gives exactly the chip map, and overlapping chips give finer boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

#: :func:`iter_chips` reads chips in bands of rows: a band may span more than two chip heights
#: where it holds at most this many bytes.  One read of a Dask array over a zarr store costs
#: about 4 ms whatever its size, as much as 2-3 MB of its rows (a 2048 px float32 image: 16
#: rows 4.4 ms, 256 rows 7.6 ms, all 2048 rows 31 ms), so windows scattered over a 2048 px
#: image are read in one band instead of a dozen.
BAND_BYTES = 16 * 2**20


def _starts(length: int, size: int, stride: int) -> np.ndarray:
    """Chip start offsets along one axis (pixels); the last chip ends on the edge."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True)
class ChipGrid:
    """A regular grid of square chips over an image of ``shape`` (rows, cols) pixels.

    Attributes
    ----------
    shape
        Image shape in pixels, ``(rows, cols)``.
    size
        Chip edge length in pixels.
    stride
        Step between chip starts in pixels (``stride == size``: no overlap).
    """

    shape: tuple[int, int]
    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ParameterError(
                f"chip size {self.size} px must be at least one pixel",
                fix="use a chip size of at least 1 px (images: 16-128 px is typical)",
                where="chip_size",
            )
        if not 1 <= self.stride:
            raise ParameterError(
                f"stride {self.stride} px must be a positive number of pixels",
                fix="use a stride between 1 px and the chip size",
                where="stride",
            )
        if self.stride > self.size:
            raise ParameterError(
                f"stride {self.stride} px is larger than the chip size {self.size} px, "
                "so pixels between chips would get no label",
                fix="use a stride no larger than the chip size",
                where="stride",
            )
        rows, cols = self.shape
        if self.size > rows or self.size > cols:
            raise ParameterError(
                f"chip size {self.size} px is larger than the image ({rows} x {cols} px)",
                fix=f"use a chip size of at most {min(rows, cols)} px",
                where="chip_size",
            )

    @property
    def row_starts(self) -> np.ndarray:
        """Start row of each chip row, shape ``(n_rows,)``."""
        return _starts(self.shape[0], self.size, self.stride)

    @property
    def col_starts(self) -> np.ndarray:
        """Start column of each chip column, shape ``(n_cols,)``."""
        return _starts(self.shape[1], self.size, self.stride)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of chips along rows and columns."""
        return len(self.row_starts), len(self.col_starts)

    @property
    def n_chips(self) -> int:
        r, c = self.grid_shape
        return r * c

    @property
    def half_chip_steps(self) -> int:
        """Half a chip in grid steps, to the nearest whole step (at least 1).

        Chips this many rows or columns apart share about half their pixels, as neighbours
        do at the default stride of half a chip (where this is 1, except for 3 px chips,
        whose default stride of 1 px leaves neighbours sharing two thirds: 2).  The decision
        on the number of communities tests chips at this spacing only
        (:func:`multimodal_seg.graphs.decide.spaced_chips`), so that a denser grid, whose
        neighbours are near-copies of each other, does not make its tests see more
        independent chips than there are.
        """
        return max(1, int(self.size / (2 * self.stride) + 0.5))

    @property
    def origins(self) -> np.ndarray:
        """Top-left pixel of every chip in row-major order, shape ``(n_chips, 2)``."""
        rr, cc = np.meshgrid(self.row_starts, self.col_starts, indexing="ij")
        return np.stack([rr.ravel(), cc.ravel()], axis=1)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "size": self.size, "stride": self.stride}

    def extract_row(self, band: np.ndarray) -> np.ndarray:
        """Cut one chip row from a band of ``size`` image rows.

        Parameters
        ----------
        band
            Array of shape ``(size, cols)``: the image rows of one chip row.

        Returns
        -------
        Chips of shape ``(n_cols, size, size)``.
        """
        return np.stack([band[:, c : c + self.size] for c in self.col_starts])

    def pixel_labels_to_chips(self, pixel_labels: np.ndarray) -> np.ndarray:
        """Majority label of the pixels under each chip: a pixel map seen at chip level.

        Used to score at chip level against a pixel truth, and for the best score any
        chip-level partition can reach: ``chip_labels_to_pixels`` of this map.

        Parameters
        ----------
        pixel_labels
            Non-negative integer labels of shape ``shape``; negative values (unlabelled)
            do not vote.

        Returns
        -------
        Integer labels of shape ``grid_shape``; ``-1`` where no pixel of a chip is labelled.
        """
        labels = np.asarray(pixel_labels)
        if labels.shape != self.shape:
            raise ValueError(f"pixel_labels has shape {labels.shape}, expected {self.shape}")
        n_labels = max(int(labels.max()) + 1, 1)
        out = np.full(self.grid_shape, -1, dtype=np.int64)
        for i, r0 in enumerate(self.row_starts):
            band = labels[r0 : r0 + self.size]
            for j, c0 in enumerate(self.col_starts):
                chip = band[:, c0 : c0 + self.size].ravel()
                chip = chip[chip >= 0]
                if chip.size:
                    out[i, j] = np.bincount(chip, minlength=n_labels).argmax()
        return out

    def chip_labels_to_pixels(self, chip_labels: np.ndarray, *, rows: np.ndarray | None = None,
                              cols: np.ndarray | None = None) -> np.ndarray:
        """Paint chip labels back onto the image by majority vote.

        Parameters
        ----------
        chip_labels
            Integer labels of shape ``grid_shape``; ``-1`` marks chips without a label.
        rows, cols
            Paint only these pixel rows and columns (1-D integer arrays; default all): the
            whole map's labels there, without painting the rest.

        Returns
        -------
        int32 labels of shape ``shape`` (pixels), or ``(len(rows), len(cols))``; ``-1`` where no
        labelled chip covers a pixel.
        """
        chip_labels = np.asarray(chip_labels)
        if chip_labels.shape != self.grid_shape:
            raise ValueError(f"chip_labels has shape {chip_labels.shape}, expected {self.grid_shape}")
        # Votes are constant on the blocks between consecutive chip edges, so vote
        # per block instead of per pixel: exact, and small even for huge images.  The
        # chip centres and the midpoints between neighbouring centres cut the blocks too:
        # with stride = size / 2 a block between edges alone is equidistant from the centres
        # of the four chips covering it, and a tie in votes then went to the lowest label id
        # (a relabelled partition was painted differently).
        row_edges, col_edges = (
            np.unique(np.concatenate([starts, starts + self.size, [0, length], *_centre_cuts(starts, self.size)]))
            for starts, length in ((self.row_starts, self.shape[0]), (self.col_starts, self.shape[1]))
        )
        n_labels = max(int(chip_labels.max()) + 1, 1)
        block_r = 0.5 * (row_edges[:-1] + row_edges[1:])
        block_c = 0.5 * (col_edges[:-1] + col_edges[1:])
        shape = (n_labels, len(block_r), len(block_c))
        votes = np.zeros(shape, dtype=np.int32)
        nearest = np.full(shape, np.inf)  # distance to the nearest chip centre of each label
        half = self.size / 2
        # Chips every k-th along an axis do not overlap, so each such class of chips paints
        # its blocks in one vectorised step (each block at most once per class): the same
        # votes and distances as chip by chip (2.4 s for 131 000 chips in a Python loop).
        row_classes = _disjoint_classes(self.row_starts, self.size, row_edges)
        col_classes = _disjoint_classes(self.col_starts, self.size, col_edges)
        for row_owner in row_classes:
            for col_owner in col_classes:
                rr, cc = np.nonzero((row_owner >= 0)[:, None] & (col_owner >= 0)[None, :])
                i, j = row_owner[rr], col_owner[cc]
                label = chip_labels[i, j]
                keep = label >= 0
                rr, cc, i, j, label = rr[keep], cc[keep], i[keep], j[keep], label[keep]
                votes[label, rr, cc] += 1
                dist = np.hypot(block_r[rr] - self.row_starts[i] - half, block_c[cc] - self.col_starts[j] - half)
                nearest[label, rr, cc] = np.minimum(nearest[label, rr, cc], dist)
        top = votes.max(axis=0)
        # Among the labels with the most votes, the one with the nearest chip centre wins.
        contenders = np.where(votes == top, nearest, np.inf)
        # int32: an image's map is as large as the image (an 8192² one is 256 MiB, not 512)
        block_labels = np.where(top > 0, contenders.argmin(axis=0), -1).astype(np.int32)
        if rows is not None or cols is not None:
            at_rows, at_cols = (np.arange(length) if at is None else np.asarray(at)
                                for at, length in ((rows, self.shape[0]), (cols, self.shape[1])))
            return block_labels[np.ix_(np.searchsorted(row_edges, at_rows, side="right") - 1,
                                       np.searchsorted(col_edges, at_cols, side="right") - 1)]
        return np.repeat(
            np.repeat(block_labels, np.diff(row_edges), axis=0), np.diff(col_edges), axis=1
        )


def _disjoint_classes(starts: np.ndarray, size: int, edges: np.ndarray) -> list[np.ndarray]:
    """Chips along one axis split into classes whose windows do not overlap (every k-th chip,
    k as small as the starts allow); for each class, ``(n_blocks,)`` the chip index covering
    each block between consecutive ``edges`` (-1 for none)."""
    n = len(starts)
    k = next(k for k in range(1, n + 1) if k == n or np.all(starts[k:] >= starts[:-k] + size))
    first = np.searchsorted(edges, starts)  # the block each chip starts on
    last = np.searchsorted(edges, starts + size)  # and the block after its end
    classes = []
    for offset in range(min(k, n)):
        owner = np.full(len(edges) - 1, -1, dtype=np.int64)
        for chip in range(offset, n, k):
            owner[first[chip] : last[chip]] = chip
        classes.append(owner)
    return classes


def _centre_cuts(starts: np.ndarray, size: int) -> list[np.ndarray]:
    """Chip centres and the midpoints between consecutive centres, in whole pixels."""
    centres = np.asarray(starts) + size // 2
    return [centres, (centres[:-1] + centres[1:]) // 2]


def iter_chips(data, origins: np.ndarray, size: int, *, batch: int = 256, band_bytes: int = BAND_BYTES):
    """Yield ``(first_index, chips)`` batches of chips cut from a (lazy) array.

    Parameters
    ----------
    data
        Array whose first two axes are the scan (or image) axes: ``(rows, cols, ...)``.
        A Dask array is read in bands (only the columns the chips cover), never whole unless
        it is small: consecutive chips share one band while it spans at most ``2 * size`` rows
        or holds at most ``band_bytes``.
    origins
        ``(n_chips, 2)`` top-left pixel of each chip, in row-major order.
    size
        Chip edge in pixels.
    batch
        Most chips per batch.
    band_bytes
        Bytes a band of more than ``2 * size`` rows may hold (:data:`BAND_BYTES`).

    Yields
    ------
    The index of the batch's first chip and an array ``(n, size, size, ...)``.
    """
    origins = np.asarray(origins)
    shape = tuple(int(n) for n in data.shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(data.dtype).itemsize
    most_rows = max(2 * size, band_bytes // max(1, row_bytes))
    for first in range(0, len(origins), batch):
        part = origins[first : first + batch]
        yield first, np.concatenate([_read_band(data, group, size) for group in _row_groups(part, size, most_rows)])


def _row_groups(origins: np.ndarray, size: int, most_rows: int) -> list[np.ndarray]:
    """Split row-major ``origins`` into runs whose rows fit in a band of ``most_rows`` rows.

    A regular grid gives one or a few runs per batch; a scattered sample of a large scan (such
    as an encoder's fit sample) one run per few chip rows, so that no read spans the whole scan
    for a handful of chips.
    """
    groups, start = [], 0
    for i in range(1, len(origins) + 1):
        if i == len(origins) or origins[i, 0] + size - origins[start, 0] > most_rows:
            groups.append(origins[start:i])
            start = i
    return groups


def _read_band(data, origins: np.ndarray, size: int) -> np.ndarray:
    top, bottom = int(origins[:, 0].min()), int(origins[:, 0].max()) + size
    left, right = int(origins[:, 1].min()), int(origins[:, 1].max()) + size
    band = np.asarray(data[top:bottom, left:right])
    return np.stack([band[r - top : r - top + size, c - left : c - left + size] for r, c in origins])
