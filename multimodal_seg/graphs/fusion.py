"""Fusing modalities into one partition of the chips.

Two ways, chosen by ``fusion.method``:

``concat``
    Each modality's embeddings are standardised and reduced by PCA
    (:func:`multimodal_seg.graphs.knn.reduce_features`), each block is scaled to unit
    total variance (times the square root of its layer weight) so that no modality
    dominates by having more dimensions (:func:`multimodal_seg.graphs.knn.balanced_blocks`),
    the blocks are concatenated (:func:`concatenated_features`), and one cosine kNN graph
    (``graphs/joint``) is built on them and partitioned like any other graph.
``multiplex``
    One kNN graph per modality; the community step
    (:func:`multimodal_seg.graphs.communities.partition_graph` given every graph)
    optimises a single partition over all of them, each layer's modularity (RB
    configuration model) weighted by its layer weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .communities import check_layer_weights
from .knn import balanced_blocks, reduce_features

FUSION_METHODS = ("concat", "multiplex")


def concatenated_features(embeddings: Mapping[str, np.ndarray], *, n_pcs: int | None = 30,
                          layer_weights: Mapping[str, float] | None = None, seed: int = 0,
                          standardise: Mapping[str, bool] | None = None) -> np.ndarray:
    """Per-modality standardised, PCA-reduced, variance-balanced features side by side.

    Parameters
    ----------
    embeddings
        ``(n_chips, dim_m)`` per modality, same chips in the same order.
    standardise
        Per modality, whether to scale features to unit variance before PCA
        (default True; see :func:`multimodal_seg.graphs.knn.reduce_features`).

    Returns
    -------
    ``(n_chips, sum of kept components)`` float32.
    """
    names = list(embeddings)
    weights = dict(zip(names, check_layer_weights(names, layer_weights)))
    blocks = {name: reduce_features(embeddings[name], n_pcs=n_pcs, seed=seed,
                                    standardise=(standardise or {}).get(name, True)) for name in names}
    return balanced_blocks(blocks, weights).astype(np.float32)
