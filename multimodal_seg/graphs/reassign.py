"""Chips on a boundary go to the adjacent community whose mean they are nearest.

Leiden places a chip by its edges: a chip joins the community it is most connected to.
Where a chip is a mixture of two regions (its window straddles their boundary, or a
probe wider than the scan step mixed their signals), its nearest neighbours in the graph
are often the other mixed chips along that boundary, which all lean one way, so a whole
strip of the boundary goes to one side. Its features, though, still lie nearer the mean of
the region that fills most of it, as long as the features mix close to linearly.

So, once the number of communities is decided, every chip with a grid neighbour in another
community is moved to whichever of its own and its neighbours' communities has the nearest
mean in feature space (squared Euclidean distance in the graph's standardised PCA space;
several modalities side by side, each balanced to unit total variance as the ``concat``
fusion balances them). It runs as many rounds as mixing reaches deep (the decision's
``reach``: one grid step at the default stride of half a chip, two or three where a probe
wider than the scan step mixed seams that deep), so a boundary moves by at most that many
grid steps, and chips inside a community (all neighbours alike) are only reached that far
from a boundary, so that a community whose chips vary widely (pores in a coating) is not
cut by a nearest-mean rule that knows nothing of that spread (docs/design.md, "Boundary
chips to the nearest mean").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from .decide import neighbour_pairs
from .knn import balanced_blocks
from .labels import order_by_size


def community_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(k, d)`` mean of ``features`` ``(n, d)`` over each community of ``labels`` ``(n,)``
    (``0 .. k - 1``; an empty community's mean is 0)."""
    labels = np.asarray(labels).ravel()
    n, k = labels.size, int(labels.max()) + 1
    members = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    counts = np.bincount(labels, minlength=k)
    return np.asarray(members @ features) / np.maximum(counts, 1)[:, None]


def reassign_boundary_chips(features: Mapping[str, np.ndarray], labels: np.ndarray,
                            grid_shape: tuple[int, ...], *, weights: Mapping[str, float] | None = None,
                            steps: int = 1) -> tuple[np.ndarray, int]:
    """Move each boundary chip to the adjacent community with the nearest mean, ``steps`` times.

    Parameters
    ----------
    features
        ``{modality: (n_chips, d)}``, the chips in each modality's graph space.
    labels
        ``(n_chips,)`` communities, row-major over ``grid_shape``.
    grid_shape
        ``(rows, cols)``, or ``(frames, rows, cols)`` for frames of one grid (neighbours are
        taken within each frame).
    weights
        ``{modality: weight}`` of the blocks side by side (default 1 each).
    steps
        At most this many rounds (each with the means of the labels it starts from), so that
        a boundary moves by at most ``steps`` grid steps: how deep mixing reaches from a
        boundary (the decision's ``reach``).  Stops early once no chip moves.

    Returns
    -------
    The labels, ordered by size (``int32``), and the number of moves made.  A chip
    moves only to a strictly nearer mean; a community can lose every chip, and then it is
    gone from the labels.
    """
    labels = np.asarray(labels).ravel()
    if labels.size == 0 or labels.max() < 1:
        return order_by_size(labels) if labels.size else labels.astype(np.int32), 0
    x = balanced_blocks(features, weights)
    pairs = neighbour_pairs(grid_shape)
    total = 0
    for _ in range(max(1, int(steps))):
        labels, moved = _one_round(x, labels, pairs)
        total += moved
        if not moved:
            break
    return order_by_size(labels), total


def _one_round(x: np.ndarray, labels: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """One round of :func:`reassign_boundary_chips` on balanced features ``x``."""
    means = community_means(x, labels)
    across = labels[pairs[:, 0]] != labels[pairs[:, 1]]
    a, b = pairs[across, 0], pairs[across, 1]
    if a.size == 0:  # no two communities touch on the grid
        return labels, 0
    # each boundary chip's candidate communities: its neighbours' (its own is the default)
    options = np.unique(np.stack([np.r_[a, b], np.r_[labels[b], labels[a]]], axis=1), axis=0)
    chips, candidates = options[:, 0], options[:, 1]
    distance = ((x[chips] - means[candidates]) ** 2).sum(axis=1)
    own = ((x[chips] - means[labels[chips]]) ** 2).sum(axis=1)
    order = np.lexsort((distance, chips))  # by chip, nearest first
    first = order[np.r_[True, chips[order][1:] != chips[order][:-1]]]
    move = distance[first] < own[first]
    new = labels.copy()
    new[chips[first][move]] = candidates[first][move]
    return new, int(move.sum())
