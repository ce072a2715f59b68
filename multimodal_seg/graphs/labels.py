"""Community labels: ids ordered by size, so that 0 is the largest community everywhere."""

from __future__ import annotations

import numpy as np


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that 0 is the largest community, 1 the next ... (ties: lower old id first)."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels)
    order = np.lexsort((np.arange(sizes.size), -sizes))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    return new_id[labels].astype(np.int32)
