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
from .knn import balanced_blocks

FUSION_METHODS = ("concat", "multiplex")


def concatenated_features(reduced: Mapping[str, np.ndarray], *,
                          layer_weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Each modality's chips in its graph's space, variance-balanced, side by side.

    Parameters
    ----------
    reduced
        ``(n_chips, d_m)`` per modality, same chips in the same order: the embeddings already
        standardised and reduced as each modality's own graph was built
        (:func:`multimodal_seg.graphs.knn.reduce_features`; the pipeline keeps them from that
        stage, so the joint graph reuses them instead of reducing them again).
    layer_weights
        ``{modality: weight}`` (default 1 each).

    Returns
    -------
    ``(n_chips, sum of d_m)`` float32.
    """
    names = list(reduced)
    weights = dict(zip(names, check_layer_weights(names, layer_weights)))
    return balanced_blocks(reduced, weights).astype(np.float32)
