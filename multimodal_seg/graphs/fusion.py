"""Fusing modalities: one joint graph, or one partition over several graphs.

Two ways, chosen by ``fusion.method``:

``concat``
    Each modality's embeddings are standardised and reduced by PCA
    (:func:`multimodal_seg.graphs.knn.reduce_features`), each block is scaled to unit
    total variance (times the square root of its layer weight) so that no modality
    dominates by having more dimensions, the blocks are concatenated, and one
    cosine kNN graph (``graphs/joint``) is built on them.
``multiplex``
    One kNN graph per modality; leidenalg's ``find_partition_multiplex`` optimises
    a single partition over all of them, each layer's modularity (RB configuration
    model) weighted by its layer weight.
"""

from __future__ import annotations

import leidenalg
import numpy as np
import scipy.sparse as sp

from .communities import Partition, order_by_size, to_igraph
from ..errors import ParameterError
from .knn import reduce_features

FUSION_METHODS = ("concat", "multiplex")


def _weights(names: list[str], layer_weights: dict[str, float] | None) -> list[float]:
    layer_weights = layer_weights or {}
    unknown = sorted(set(layer_weights) - set(names))
    if unknown:
        raise ParameterError(f"layer weights given for unknown modalities {unknown}",
                             fix=f"use modality names among {names}", where="fusion.layer_weights")
    weights = [float(layer_weights.get(name, 1.0)) for name in names]
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ParameterError(f"layer weights {weights} must be >= 0 with at least one > 0",
                             fix="give non-negative weights, e.g. 1 for every modality",
                             where="fusion.layer_weights")
    return weights


def concatenated_features(embeddings: dict[str, np.ndarray], *, n_pcs: int | None = 30,
                          layer_weights: dict[str, float] | None = None, seed: int = 0,
                          standardise: dict[str, bool] | None = None) -> np.ndarray:
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
    weights = _weights(names, layer_weights)
    blocks = []
    for name, weight in zip(names, weights):
        block = reduce_features(embeddings[name], n_pcs=n_pcs, seed=seed,
                                standardise=(standardise or {}).get(name, True)).astype(np.float64)
        block -= block.mean(axis=0)
        total = np.sqrt((block ** 2).sum(axis=1).mean())
        blocks.append(block * (np.sqrt(weight) / total if total > 0 else 0.0))
    return np.hstack(blocks).astype(np.float32)


def multiplex_partition(graphs: dict[str, sp.csr_matrix], *, layer_weights: dict[str, float] | None = None,
                        resolution: float = 1.0, seed: int = 0, n_iterations: int = -1) -> Partition:
    """One partition of the chips that is good on every modality's graph at once.

    Returns
    -------
    Partition whose ``modularity`` is the layer-weighted sum of each layer's modularity.
    """
    names = list(graphs)
    weights = _weights(names, layer_weights)
    layers = [to_igraph(graphs[name]) for name in names]
    membership, _ = leidenalg.find_partition_multiplex(
        layers, leidenalg.RBConfigurationVertexPartition, layer_weights=weights,
        n_iterations=n_iterations, seed=seed, weights="weight", resolution_parameter=resolution,
    )
    labels = order_by_size(np.asarray(membership))
    quality = sum(w * g.modularity(labels.tolist(), weights="weight", resolution=resolution)
                  for w, g in zip(weights, layers))
    params = {"method": "multiplex-leiden", "resolution": resolution, "seed": seed,
              "n_iterations": n_iterations, "layer_weights": dict(zip(names, weights))}
    return Partition(labels=labels, modularity=float(quality), params=params)
