"""Points of interest: where in this frame a microscopist should look next, ranked.

Every chip of a frame gets an *interest* in [0, 1], the largest of

* **moved boundary**: 1 where its community differs from the previous frame's at the
  same grid position (the region under it changed: a moving front, a growing phase);
* **new community**: 1 where its community first appears in this frame;
* **rare community**: 1 where its community holds at most ``k`` chips of this frame
  (fewer than one chip's graph neighbourhood: a small, unusual region);
* **uncertain**: ``1 - confidence``, where ``confidence`` is the share of the chip's
  graph edge weight that goes to its own community (the community step was unsure
  where a chip's neighbours lie mostly elsewhere).

Chips of interest at least one half (changed, new, rare, or more than half of their
similarity outside their own community) are grouped into 8-connected regions on the
chip grid.  A region's **score** is the sum of its chips' interest (so a long moving
front outranks one flickering chip), its **kind** the reason that contributes most,
and its **position** the chip where the most happens: the one whose 3 x 3
neighbourhood holds the most interest (where a front moved most, not the centroid of
a curved band, which may lie off it).  Positions are chip centres in the frame's
calibrated coordinates.  The threshold of one half is a majority rule, not a fitted
value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..chips.grid import ChipGrid
from ..modalities.base import Axis

#: Reasons a chip is interesting, in the order of the interest channels.
KINDS = ("moved boundary", "new community", "rare community", "uncertain")
#: A chip is part of a point of interest from this interest on (a majority rule).
INTEREST_THRESHOLD = 0.5


@dataclass
class PointOfInterest:
    """One place worth a closer look in one frame.

    Attributes
    ----------
    frame, rank
        The frame and the rank in it (1 = most interesting).
    y, x, units
        Position in the frame's calibrated coordinates (chip centre).
    row, col
        The same position in pixels.
    kind
        What makes it interesting (:data:`KINDS`).
    score
        Summed interest of its chips (chips of a changed boundary count 1 each).
    community
        The community of the chip at the position.
    n_chips
        Chips in the region.
    extent
        ``[y0, y1, x0, x1]`` bounding box of the region's chips, calibrated.
    """

    frame: int
    rank: int
    y: float
    x: float
    units: str
    row: float
    col: float
    kind: str
    score: float
    community: int
    n_chips: int
    extent: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def interest(labels: np.ndarray, previous: np.ndarray | None, confidence: np.ndarray, *,
             new_ids: set[int], rare_max: int) -> np.ndarray:
    """Interest of every chip for each reason: ``(len(KINDS), rows, cols)`` in [0, 1].

    Parameters
    ----------
    labels
        ``(rows, cols)`` community of each chip in this frame.
    previous
        The previous frame's labels on the same grid, or ``None`` for the first frame.
    confidence
        ``(rows, cols)`` share of each chip's edge weight inside its community.
    new_ids
        Communities that first appear in this frame.
    rare_max
        Communities with at most this many chips in this frame are rare.
    """
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    rare = ids[counts <= rare_max]
    channels = np.zeros((len(KINDS), *labels.shape))
    if previous is not None:
        channels[0] = labels != np.asarray(previous)
    channels[1] = np.isin(labels, list(new_ids))
    channels[2] = np.isin(labels, rare)
    channels[3] = 1.0 - np.clip(confidence, 0.0, 1.0)
    return channels


def points_of_interest(channels: np.ndarray, labels: np.ndarray, grid: ChipGrid, axes: list[Axis], *,
                       frame: int, max_points: int = 10) -> list[PointOfInterest]:
    """The ranked points of interest of one frame (see the module docstring).

    Parameters
    ----------
    channels
        From :func:`interest`.
    labels
        ``(rows, cols)`` community of each chip.
    grid
        The chip grid (chip centres in pixels).
    axes
        The frame's ``y``, ``x`` axes (calibration of positions).
    frame
        The frame's number in the series.
    max_points
        Most points returned.

    Returns
    -------
    At most ``max_points`` points, highest score first (ties: nearer the top-left first).
    """
    total = channels.max(axis=0)
    hot = total >= INTEREST_THRESHOLD
    regions, n = ndimage.label(hot, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    local = ndimage.uniform_filter(np.where(hot, total, 0.0), size=3, mode="constant") * 9
    centre_r = grid.row_starts + grid.size / 2.0
    centre_c = grid.col_starts + grid.size / 2.0
    (y_axis, x_axis) = axes[:2]
    found = []
    for region, box in enumerate(ndimage.find_objects(regions), start=1):
        inside = regions[box] == region
        rr, cc = np.nonzero(inside)
        rr, cc = rr + box[0].start, cc + box[1].start
        best = int(np.lexsort((cc, rr, -local[rr, cc]))[0])
        r, c = rr[best], cc[best]
        by_kind = channels[:, rr, cc].sum(axis=1)
        py, px = float(centre_r[r]), float(centre_c[c])
        half = grid.size / 2.0
        found.append(dict(
            score=float(total[rr, cc].sum()), kind=KINDS[int(np.argmax(by_kind))], row=py, col=px,
            y=y_axis.offset + py * y_axis.scale, x=x_axis.offset + px * x_axis.scale,
            community=int(labels[r, c]), n_chips=int(rr.size),
            extent=[y_axis.offset + (centre_r[rr.min()] - half) * y_axis.scale,
                    y_axis.offset + (centre_r[rr.max()] + half) * y_axis.scale,
                    x_axis.offset + (centre_c[cc.min()] - half) * x_axis.scale,
                    x_axis.offset + (centre_c[cc.max()] + half) * x_axis.scale]))
    found.sort(key=lambda p: (-p["score"], p["row"], p["col"]))
    return [PointOfInterest(frame=frame, rank=i + 1, units=y_axis.units, **p)
            for i, p in enumerate(found[:max_points])]
