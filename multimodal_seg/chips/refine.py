"""Boundary refinement: regions painted at a finer step than the chip grid.

Chip labels painted back to pixels (:meth:`ChipGrid.chip_labels_to_pixels`) place a
boundary to within about one stride.  ``refine = f`` (an integer > 1) lays a second
grid of chips of the same size every ``stride // f`` pixels.  A fine chip whose
window holds one painted community keeps it; a fine chip on a boundary (its window
holds several) is embedded with the same encoder, projected into the graph's space
(same standardisation and PCA, :class:`~multimodal_seg.graphs.knn.FeatureReducer`), and
takes the community its ``k`` nearest chips of the partition vote for, weighted by
cosine similarity, *among the communities under its window*.  Only chips whose own window
holds one community vote (:func:`window_voters`).  The fine grid is then painted back as
usual.

So refinement moves boundaries, by at most one chip; it never creates or renames a
community, and chips away from boundaries are not re-encoded.  Nor does it remove one: how many
communities there are is the decision's (:mod:`multimodal_seg.graphs.decide`), made on the
chips.  A region thinner than a chip could vanish from the fine grid's map: every fine window
over it also holds its neighbour, and the fine grid's chips, painted back by majority, outvote
it (the Bruker P45 BSE + EDS map's joint partition: a bright particle of about 3 x 3 px, 7
chips of 5 px, painted on 11 positions from the chips and on none from the fine grid).  A
community the fine grid paints nowhere keeps the positions its own chips paint
(:func:`keep_communities`).
With several modalities each casts its own normalised vote, weighted by its layer
weight, so that no modality outvotes the others just because cosine similarities
are higher in its space; and each spreads its vote evenly over the communities its own
partition does not tell apart (:func:`multimodal_seg.graphs.labels.community_groups`,
:func:`pooled_votes`).

Measured on the HAADF phantom (512 px, 32 px chips, stride 16, ``refine=4``): pixel
ARI 0.940 -> 0.966, for 2,777 extra chips embedded (about 2 s with ``fourier``).  The
default, ``refine="auto"``, is a factor of 2 wherever the stride is at least 2 px and the
encoders are lightweight (:func:`refine_factor`); see docs/design.md for what it does on the phantom families
and docs/user-guide.md for its cost.
"""

from __future__ import annotations

import warnings

import numpy as np

from .grid import ChipGrid
from ..errors import ParameterError
from ..graphs.knn import cosine_neighbours

#: Floor of a vote weight: neighbours with cosine similarity <= 0 still count a little.
MIN_VOTE = 1e-3


#: Version of the vote's rules, part of the refine stage's fingerprint: studies refined under
#: older rules are refined again.  2: voters are the chips whose window holds one community,
#: and each modality votes only among the communities its own partition tells apart.  3: a
#: community the fine grid paints nowhere keeps its chips' painting (:func:`keep_communities`).
VOTE_RULES = 3


#: The factor ``refine="auto"`` stands for: half the stride.  Most of refinement's gain for
#: a fraction of the cost of a quarter (docs/design.md, "Boundary refinement on by default").
AUTO_FACTOR = 2


def refine_factor(grid: ChipGrid, refine: int | str, *, lightweight: bool) -> int:
    """The refinement factor ``refine`` stands for on ``grid``.

    ``"auto"`` is :data:`AUTO_FACTOR` where the stride is at least 2 px and every encoder is
    ``lightweight`` (:attr:`multimodal_seg.encoders.base.Encoder.lightweight`), else 1 (off,
    with no warning): chips already start every pixel, or embedding the boundary chips again
    with a neural network would cost about as much as the run (ResNet50 on a CPU: the
    pipeline's overhead over the forward pass rose from 11 % to 64 %).  A number stands for
    itself.
    """
    if refine == "auto":
        return AUTO_FACTOR if grid.stride >= 2 and lightweight else 1
    return refine  # type: ignore[return-value]  # checked by fine_grid


def fine_grid(grid: ChipGrid, factor: int, *, warn: bool = True) -> ChipGrid | None:
    """The grid of chips of ``grid``'s size laid every ``grid.stride // factor`` pixels (at least 1).

    ``None`` when there is nothing to refine: ``factor`` 1, or a stride of 1 px already
    (then with a warning unless ``warn=False``, since the option asked for has no effect).
    """
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ParameterError(f"refine={factor!r} is not a whole number >= 1",
                             fix="use refine=1 (off), 2 or 4", where="refine")
    if factor == 1:
        return None
    if grid.stride == 1:
        if not warn:
            return None
        warnings.warn(f"refine={factor} has no effect: chips already start every pixel (stride 1), "
                      "so boundaries are as fine as the chip grid can place them",
                      UserWarning, stacklevel=3)
        return None
    return ChipGrid(grid.shape, grid.size, max(1, grid.stride // int(factor)))


def window_labels(painted: np.ndarray, grid: ChipGrid) -> tuple[np.ndarray, np.ndarray]:
    """Which labels of ``painted`` lie under each chip window of ``grid``.

    Parameters
    ----------
    painted
        Pixel labels of shape ``grid.shape`` (``-1``: unlabelled).
    grid
        The (fine) chip grid.

    Returns
    -------
    ``values`` (the sorted labels found in ``painted``, shape ``(n_values,)``) and
    ``present``, boolean ``(grid.n_chips, n_values)``: whether ``values[j]`` occurs in
    chip ``i``'s window (chips row-major like ``grid.origins``).
    """
    # Painted maps are piecewise constant: cut them where any row (column) differs from
    # the one before, so each block of the cut is one label.  Per-label summed-area
    # tables over those blocks count a window's labels in O(1); exact, and far cheaper
    # than a pass over every pixel of every window.
    painted = np.asarray(painted)
    rows = np.concatenate([[0], np.flatnonzero((painted[1:] != painted[:-1]).any(axis=1)) + 1])
    cols = np.concatenate([[0], np.flatnonzero((painted[:, 1:] != painted[:, :-1]).any(axis=0)) + 1])
    values, index = np.unique(painted[np.ix_(rows, cols)], return_inverse=True)
    index = index.reshape(len(rows), len(cols))
    table = np.zeros((len(values), len(rows) + 1, len(cols) + 1), np.int32)
    table[:, 1:, 1:] = (index[None] == np.arange(len(values))[:, None, None]).cumsum(1).cumsum(2)
    origins, last = grid.origins, grid.size - 1
    r0 = np.searchsorted(rows, origins[:, 0], side="right") - 1
    r1 = np.searchsorted(rows, origins[:, 0] + last, side="right")
    c0 = np.searchsorted(cols, origins[:, 1], side="right") - 1
    c1 = np.searchsorted(cols, origins[:, 1] + last, side="right")
    counts = table[:, r1, c1] - table[:, r0, c1] - table[:, r1, c0] + table[:, r0, c0]
    return values, (counts > 0).T


def boundary_chips(painted: np.ndarray, grid: ChipGrid) -> np.ndarray:
    """Which chips of ``grid`` cover more than one label of ``painted`` (arguments as in
    :func:`window_labels`): boolean ``(grid.n_chips,)``, row-major like ``grid.origins``."""
    return window_labels(painted, grid)[1].sum(axis=1) > 1


def window_voters(labels: np.ndarray, painted: np.ndarray, grid: ChipGrid, *, k: int) -> np.ndarray:
    """The partition's chips that vote in refinement: ``labels`` with ``-1`` where a chip's
    window holds several communities of ``painted``, unless fewer than ``k`` of its
    community's chips hold it alone.

    Parameters
    ----------
    labels
        ``(grid.n_chips,)`` communities of the partitioned chips (``-1``: none).
    painted
        Pixel labels painted from them, shape ``grid.shape``.
    grid
        The partition's (coarse) chip grid.
    k
        The neighbours each vote asks (:func:`neighbour_votes`).

    A window across a boundary embeds as neither side, and its label is the partition's own
    guess at that boundary.  With such chips among the voters a fine chip across the same
    boundary copied that guess: a texture's islands grew into a lattice around them
    (docs/design.md, "Refinement votes").  A community with fewer than ``k`` windows of its
    own (a layer thinner than a chip, a small region) votes through all its chips: with fewer
    voters than a vote's neighbours it could never win one, and refinement would shrink it
    to its own windows whatever the chips looked like.
    """
    labels = np.asarray(labels)
    mixed = boundary_chips(painted, grid)
    enough = np.bincount(labels[~mixed & (labels >= 0)], minlength=int(labels.max()) + 1) >= k
    return np.where(mixed & (labels >= 0) & enough[np.maximum(labels, 0)], -1, labels)


def pooled_votes(votes: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``votes`` (``(n_new, n_communities)`` shares) with each group's shares replaced by their
    mean: no preference among communities a modality does not tell apart.

    Its preference among them would come from whatever else its features carry: on a
    specimen whose HAADF sees order and whose EELS sees composition, the EELS's vote across
    a boundary of order followed the thickness gradient, and the joint's boundary moved with
    it (docs/design.md, "Refinement votes").  Row sums are kept.
    """
    votes = np.array(votes, dtype=float)
    for group in np.unique(groups):
        columns = np.flatnonzero(groups == group)
        if columns.size > 1:
            votes[:, columns] = votes[:, columns].mean(axis=1, keepdims=True)
    return votes


def neighbour_votes(partition_features: np.ndarray, labels: np.ndarray, features: np.ndarray, *,
                    k: int) -> np.ndarray:
    """Each new chip's vote share for every community, from its ``k`` nearest partition chips.

    Parameters
    ----------
    partition_features
        ``(n_chips, d)`` reduced features of the partitioned chips.
    labels
        ``(n_chips,)`` their communities (``-1``: none, no vote).
    features
        ``(n_new, d)`` reduced features of the chips to place.
    k
        Neighbours asked (capped at the number of labelled chips).

    Returns
    -------
    ``(n_new, n_communities)`` float64; each row sums to 1.
    """
    labels = np.asarray(labels)
    voters = np.flatnonzero(labels >= 0)
    n_labels = int(labels.max()) + 1
    votes = np.zeros((len(features), n_labels))
    if len(features) == 0:
        return votes
    dist, idx = cosine_neighbours(partition_features[voters], features, min(k, len(voters)))
    k = idx.shape[1]
    weights = np.clip(1.0 - dist, MIN_VOTE, 1.0)
    rows = np.repeat(np.arange(len(features)), k)
    np.add.at(votes, (rows, labels[voters][idx].ravel()), weights.ravel())
    return votes / votes.sum(axis=1, keepdims=True)


def refined_chip_labels(painted: np.ndarray, grid: ChipGrid, boundary: np.ndarray,
                        votes: np.ndarray) -> np.ndarray:
    """Labels of every chip of the fine ``grid``.

    Parameters
    ----------
    painted
        Pixel labels painted from the partition, shape ``grid.shape``.
    grid
        The fine grid.
    boundary
        ``(grid.n_chips,)`` mask from :func:`boundary_chips`.
    votes
        ``(boundary.sum(), n_communities)`` vote shares of the boundary chips.

    Returns
    -------
    ``grid.grid_shape`` int32 labels: a chip off the boundaries keeps the one label under
    it; a boundary chip takes its best-voted label among those under its window.
    """
    origins = grid.origins
    labels = painted[origins[:, 0], origins[:, 1]].astype(np.int32)
    values, present = window_labels(painted, grid)
    usable = (values >= 0) & (values < votes.shape[1])
    values, present = values[usable], present[np.flatnonzero(boundary)][:, usable]
    # the best-voted label among those under each window (ties: the lowest label)
    best = np.argmax(np.where(present, votes[:, values], -np.inf), axis=1)
    placed = present.any(axis=1)
    labels[np.flatnonzero(boundary)[placed]] = values[best[placed]]
    return labels.reshape(grid.grid_shape)


def keep_communities(refined: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """A map painted from the fine grid, ``refined``, with every community that it shows
    nowhere but ``painted`` (the same positions painted from the partition's own chips)
    shows, painted where ``painted`` has it; any shapes, the same for both.

    Refinement places boundaries; the number of communities was decided on the chips, and a
    fine grid whose windows all straddle a region thinner than a chip would paint the region
    over (the module's docstring).  Where nothing is lost ``refined`` is returned as it is.
    """
    refined, painted = np.asarray(refined), np.asarray(painted)
    lost = np.setdiff1d(np.unique(painted[painted >= 0]), np.unique(refined))
    return np.where(np.isin(painted, lost), painted, refined) if lost.size else refined
