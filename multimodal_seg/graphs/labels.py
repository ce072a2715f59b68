"""Community labels: ids ordered by size, so that 0 is the largest community everywhere."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that 0 is the largest community, 1 the next ... (ties: lower old id first)."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(sizes.size), -sizes))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    return new_id[labels].astype(np.int32)


def community_weights(graph: sp.spmatrix, labels: np.ndarray) -> np.ndarray:
    """Total edge weight of ``graph`` within (diagonal) and between every pair of communities.

    Returns
    -------
    ``(n_communities, n_communities)`` dense, symmetric for a symmetric graph.
    """
    labels = np.asarray(labels).ravel()
    n = int(labels.max()) + 1
    member = sp.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))), shape=(n, labels.size))
    return (member @ graph @ member.T).toarray()
