"""Community labels: ids ordered by size, so that 0 is the largest community everywhere."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def communities_phrase(n: int) -> str:
    """``"1 community"``, ``"3 communities"``: a number of communities in words for people."""
    return f"{n} {'community' if n == 1 else 'communities'}"


def n_labels(labels: np.ndarray) -> int:
    """How many communities labels ``0 .. n - 1`` name (0 for no labels)."""
    return int(labels.max()) + 1 if labels.size else 0


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that 0 is the largest community, 1 the next ... (ties: lower old id first)."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(sizes.size), -sizes))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    return new_id[labels].astype(np.int32)


def aggregate(graph: sp.spmatrix, groups: np.ndarray) -> sp.csr_matrix:
    """The graph of the groups: ``A'[a, b]`` is the total weight between groups ``a`` and ``b``.

    The diagonal holds each group's inner weight (twice its edges' weights, as a symmetric
    matrix counts them), so a group's degree is the sum of its members' degrees and a
    labelling of the groups has the modularity of the same labelling of their members
    (:func:`multimodal_seg.graphs.communities.igraph_edges` turns the diagonal into loops).

    Parameters
    ----------
    graph
        ``(n, n)`` sparse adjacency.
    groups
        ``(n,)`` group of each vertex, ``0 .. n_groups - 1``.

    Returns
    -------
    ``(n_groups, n_groups)`` CSR, symmetric for a symmetric graph.
    """
    groups = np.asarray(groups).ravel()
    member = sp.csr_matrix((np.ones(groups.size), (np.arange(groups.size), groups)),
                           shape=(groups.size, int(groups.max()) + 1))
    return (member.T @ graph @ member).tocsr()


def community_weights(graph: sp.spmatrix, labels: np.ndarray) -> np.ndarray:
    """Total edge weight of ``graph`` within (diagonal) and between every pair of communities.

    Returns
    -------
    ``(n_communities, n_communities)`` dense, symmetric for a symmetric graph (the dense
    form of :func:`aggregate`).
    """
    return aggregate(graph, labels).toarray()


def community_groups(labels: np.ndarray, own: np.ndarray, n_communities: int) -> np.ndarray:
    """Which communities of a (joint) partition one modality tells apart.

    Parameters
    ----------
    labels
        ``(n_chips,)`` the partition's communities.
    own
        ``(n_chips,)`` the modality's own partition of the same chips.
    n_communities
        How many communities ``labels`` numbers.

    Returns
    -------
    ``(n_communities,)`` int: for each community, the modality's own community that holds most
    of its chips (``-1 - j`` for a community ``j`` without labelled chips, a group of its own).
    Communities with the same group are ones the modality's own partition does not separate.
    """
    labels, own = np.asarray(labels), np.asarray(own)
    groups = -1 - np.arange(n_communities)
    keep = (labels >= 0) & (own >= 0)
    if keep.any():
        table = np.zeros((n_communities, int(own.max()) + 1), np.int64)
        np.add.at(table, (labels[keep], own[keep]), 1)
        seen = table.sum(axis=1) > 0
        groups[seen] = table[seen].argmax(axis=1)
    return groups
