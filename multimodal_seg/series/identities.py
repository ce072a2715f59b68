"""Community ids that last: new chips join a partition whose old memberships stay fixed.

Live, frames arrive one by one.  Their chips join the graph of the frames before, and
the partition is updated by Leiden (leidenalg's ``Optimiser``) with the memberships of
the earlier chips fixed (:func:`join`): a new chip goes to the community of the chips
it resembles, or, with others like it, founds a new community, which gets a new id.
Every so often the whole graph is re-optimised starting from the current membership,
every chip free (:func:`reoptimise`, with igraph's faster Leiden); communities that survive keep their ids by their
largest overlap with the old ones (:func:`match_ids`), the others get new ids.

Fixed chips are collapsed first: each fixed community becomes one node whose
self-loop carries its internal weight (:func:`multimodal_seg.graphs.labels.aggregate`;
igraph counts a loop twice, so the loop is half the diagonal of ``P A P^T``) and whose
edges carry its weight to every other node.  The
gain of moving a free chip into a community depends only on its weight to that
community and the community's total degree, both kept, so the optimisation is the
same as on the full graph (checked: equal RB-configuration quality) and costs a graph
of ``n_communities + n_new`` nodes, whatever the history.

Objective: the RB configuration model at ``resolution`` (modularity at 1), the
objective the batch partition optimises with igraph's Leiden.
"""

from __future__ import annotations

import igraph as ig
import leidenalg
import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from ..graphs.communities import seeded_igraph, to_igraph
from ..graphs.labels import aggregate


def _optimise(graph: ig.Graph, initial: np.ndarray, fixed: np.ndarray, *, resolution: float,
              seed: int, n_iterations: int) -> np.ndarray:
    partition = leidenalg.RBConfigurationVertexPartition(
        graph, initial_membership=initial.tolist(), weights="weight", resolution_parameter=resolution)
    optimiser = leidenalg.Optimiser()
    optimiser.set_rng_seed(int(seed))
    optimiser.optimise_partition(partition, n_iterations=n_iterations,
                                 is_membership_fixed=fixed.tolist())
    return np.asarray(partition.membership)


def _fresh_ids(groups: np.ndarray, next_id: int) -> np.ndarray:
    """Ids ``next_id, next_id + 1 ...`` for the distinct values of ``groups``, largest group first
    (ties: first seen first)."""
    values, first, counts = np.unique(groups, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    ids = np.empty(len(values), dtype=np.int64)
    ids[order] = next_id + np.arange(len(values))
    return ids[np.searchsorted(values, groups)]


def join(graph: sp.csr_matrix, labels: np.ndarray, free: np.ndarray, *, next_id: int, resolution: float = 1.0,
         seed: int = 0, n_iterations: int = -1) -> np.ndarray:
    """Labels of the free chips, the fixed ones kept: one Leiden optimisation with fixed memberships.

    Parameters
    ----------
    graph
        Symmetric ``(n, n)`` similarity graph over every chip (fixed and free).
    labels
        ``(n,)`` community ids; those of free chips are ignored.
    free
        ``(n,)`` bool: the chips to place (the new frame's).
    next_id
        The first id a new community may take (ids are never reused).
    resolution, seed, n_iterations
        Of the RB configuration objective and leidenalg's optimiser.

    Returns
    -------
    ``(n,)`` int64 labels: fixed chips unchanged; free chips in an existing community
    or in new ones numbered from ``next_id`` (largest first).
    """
    labels = np.asarray(labels, dtype=np.int64)
    free = np.asarray(free, dtype=bool)
    n = labels.size
    fixed_ids = np.unique(labels[~free])
    n_fixed, n_free = fixed_ids.size, int(free.sum())
    node = np.empty(n, dtype=np.int64)
    node[~free] = np.searchsorted(fixed_ids, labels[~free])
    node[free] = n_fixed + np.arange(n_free)
    fixed = np.arange(n_fixed + n_free) < n_fixed
    membership = _optimise(to_igraph(aggregate(graph, node)), np.arange(n_fixed + n_free), fixed,
                           resolution=resolution, seed=seed, n_iterations=n_iterations)
    out = labels.copy()
    # A community holding a fixed node is that node's community; the others are new.
    community_id = dict(zip(membership[:n_fixed].tolist(), fixed_ids.tolist()))
    placed = membership[n_fixed:]
    known = np.isin(placed, list(community_id))
    new_labels = np.empty(n_free, dtype=np.int64)
    new_labels[known] = [community_id[m] for m in placed[known].tolist()]
    if (~known).any():
        new_labels[~known] = _fresh_ids(placed[~known], next_id)
    out[free] = new_labels
    return out


def match_ids(old: np.ndarray, new: np.ndarray, *, next_id: int) -> np.ndarray:
    """``new`` communities named after the ``old`` ids they overlap most (one-to-one).

    The assignment maximises the chips shared (Hungarian); a new community that shares
    no chip with the old id it was paired with, or is left unpaired, gets a fresh id
    from ``next_id`` upward.  An old community that splits keeps its id on its larger
    part; two that merge leave the merged one the id of the larger share.

    Returns
    -------
    ``(n,)`` int64 labels.
    """
    old = np.asarray(old, dtype=np.int64)
    new_values, new_index = np.unique(np.asarray(new), return_inverse=True)
    old_values, old_index = np.unique(old, return_inverse=True)
    overlap = sp.csr_matrix((np.ones(old.size), (new_index, old_index)),
                            shape=(new_values.size, old_values.size)).toarray()
    rows, cols = linear_sum_assignment(-overlap)
    ids = np.full(new_values.size, -1, dtype=np.int64)
    paired = overlap[rows, cols] > 0
    ids[rows[paired]] = old_values[cols[paired]]
    unnamed = np.flatnonzero(ids < 0)
    if unnamed.size:  # fresh ids, largest community first
        sizes = np.bincount(new_index, minlength=new_values.size)[unnamed]
        ids[unnamed[np.lexsort((unnamed, -sizes))]] = next_id + np.arange(unnamed.size)
    return ids[new_index]


def reoptimise(graph: sp.csr_matrix, labels: np.ndarray, *, next_id: int, resolution: float = 1.0,
               seed: int = 0, n_iterations: int = -1) -> np.ndarray:
    """The whole graph optimised again from ``labels``, every chip free; ids kept by overlap.

    igraph's Leiden (modularity at ``resolution``, started from ``labels``): the same
    objective as :func:`join`, about ten times faster than leidenalg on a whole window
    (2.9 s against well under a second for 7,700 chips, measured here), so a
    re-optimisation fits in a live frame's time.

    Returns
    -------
    ``(n,)`` int64 labels (:func:`match_ids` of the optimised partition to ``labels``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    _, start = np.unique(labels, return_inverse=True)
    g = to_igraph(sp.csr_matrix(graph))
    with seeded_igraph(seed):
        clusters = g.community_leiden(objective_function="modularity", weights="weight", resolution=resolution,
                                      initial_membership=start.tolist(), n_iterations=n_iterations)
    return match_ids(labels, np.asarray(clusters.membership), next_id=next_id)


def confidence(graph: sp.csr_matrix, labels: np.ndarray, chips: np.ndarray) -> np.ndarray:
    """Share of each chip's edge weight that goes to its own community: ``(len(chips),)`` in [0, 1].

    Low where the community step was unsure: a chip whose neighbours are mostly in
    other communities.  A chip without edges scores 0.
    """
    chips = np.asarray(chips)
    rows = sp.csr_matrix(graph)[chips].tocoo()
    labels = np.asarray(labels)
    same = labels[rows.col] == labels[chips][rows.row]
    inside = np.bincount(rows.row, weights=np.where(same, rows.data, 0.0), minlength=chips.size)
    total = np.bincount(rows.row, weights=rows.data, minlength=chips.size)
    return np.divide(inside, total, out=np.zeros(chips.size), where=total > 0)


def settle_new(features: np.ndarray, labels: np.ndarray, graph: sp.csr_matrix, *, known: int,
               alpha: float = 0.01, tested: np.ndarray | None = None) -> np.ndarray:
    """New communities (ids ``>= known``) that the data cannot tell from a community they touch
    take its id: the first frame's decision (the dip test of
    :func:`~multimodal_seg.graphs.decide.merge_indistinct`) applied to what a frame adds.

    Modularity prefers splitting a region into parts to keeping it whole, so a frame whose
    chips all belong to one decided community would otherwise found new ones (noisy copies
    of one SEM frame: 1 community, then 6 new).  Only new communities move: a merged group
    holding old ids takes the largest old one's id (the old ones are left as they are); a
    group of new ones only takes the id of its largest.

    Parameters
    ----------
    features
        ``(n, d)``: every chip of ``labels`` in the graph's feature space.
    labels
        ``(n,)`` ids of the window's chips after :func:`join`.
    graph
        The window's graph.
    known
        Ids below this existed before the frame.
    tested
        ``(n,)`` bool: the chips that enter the tests (default all).
    """
    from ..graphs.decide import merge_indistinct

    labels = np.asarray(labels, dtype=np.int64)
    if not (labels >= known).any():
        return labels
    ids, consecutive = np.unique(labels, return_inverse=True)
    merged = merge_indistinct({"chips": features}, consecutive, graph, alpha=alpha, tested=tested).labels
    out = labels.copy()
    sizes = np.bincount(consecutive, minlength=ids.size)
    for group in np.unique(merged):
        members = np.unique(consecutive[merged == group])
        old = [m for m in members if ids[m] < known]
        keep = max(old, key=lambda m: sizes[m]) if old else max(members, key=lambda m: sizes[m])
        for m in members:
            if ids[m] >= known:
                out[labels == ids[m]] = ids[keep]
    return out
