"""``LeidenClustering``: the project's graph and community step as a scikit-learn estimator.

The same functions the pipeline's ``build_graphs`` and ``find_communities`` stages run
(:func:`multimodal_seg.graphs.knn.reduce_features`, :func:`~multimodal_seg.graphs.knn.knn_graph`,
:func:`multimodal_seg.graphs.communities.partition_graph`), on features given by the
caller: so the same features and options give the same labels as ``segment()``.  It
is usable as the ``algorithm`` of HyperSpy's ``cluster_analysis``, which needs an
object with ``fit`` and ``labels_``::

    s.decomposition()
    s.cluster_analysis("decomposition", algorithm=LeidenClustering())

The number of clusters is not an input: Leiden finds it by modularity, and
``resolution`` moves it (higher: more, smaller communities).  HyperSpy passes
``n_clusters`` only to its built-in algorithms, so ``estimate_number_of_clusters``
has nothing to estimate for this one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClusterMixin

from ..config import CommunityConfig, GraphConfig, validated
from ..errors import InputError
from ..graphs.communities import check_options, partition_graph
from ..graphs.knn import knn_graph, reduce_features

_GRAPH = GraphConfig()
_COMMUNITIES = CommunityConfig()


class LeidenClustering(ClusterMixin, BaseEstimator):
    """Leiden communities of a kNN similarity graph over feature vectors.

    Defaults are the pipeline's (:class:`multimodal_seg.config.GraphConfig` and
    :class:`~multimodal_seg.config.CommunityConfig`).

    Parameters
    ----------
    k
        Neighbours per sample in the cosine kNN graph.
    n_pcs
        Principal components kept before the graph (``None``: all features).
    standardise
        Scale every feature to unit variance first (default off).  Off suits scores
        whose variances carry meaning, such as HyperSpy's decomposition loadings, and
        leaves scaling to ``cluster_analysis(preprocessing=...)``; on suits features in
        mixed units (what ``segment()`` does for the Fourier image encoder).
    resolution
        Modularity resolution: higher gives more, smaller communities.
    method
        ``"leiden"`` or ``"louvain"``.
    consensus
        If > 1, the most representative of up to this many runs (steadier across
        seeds; fewer once most agree); 0 or 1: one run.
    merge
        Optional, in (0, 1]: merge communities whose connectivity exceeds it.
    decide, alpha
        ``"dip"`` (default): merge neighbouring communities whose samples are one
        population (dip test at level ``alpha``, :mod:`multimodal_seg.graphs.decide`);
        ``"none"`` keeps Leiden's communities.
    seed
        Random seed: the same features and seed give the same labels.
    grid_shape
        ``(rows, cols)`` when the samples are the positions of a scan in row-major order
        (HyperSpy's navigation: ``s.axes_manager.navigation_shape[::-1]``).  With
        ``decide="dip"`` the decision then uses the grid as ``segment()`` does: seams of
        mixed samples along boundaries are dissolved and boundary samples go to the
        adjacent community whose mean is nearest (:mod:`multimodal_seg.graphs.reassign`).
        ``None`` (default): the samples are taken without positions.

    Attributes
    ----------
    labels_
        ``(n_samples,)`` community of each sample, 0 = largest community.
    n_clusters_
        Number of communities found.
    modularity_
        Modularity of ``labels_`` on ``graph_``.
    run_counts_
        With a consensus: ``{number of communities: runs that ended with it}``; where the runs
        do not show that most of them end with ``n_clusters_``, ``fit`` warns that the number
        is a close call (:class:`multimodal_seg.graphs.communities.Consensus`).  ``None``
        without a consensus.
    graph_
        ``(n_samples, n_samples)`` sparse similarity graph.
    """

    def __init__(self, *, k: int = _GRAPH.k, n_pcs: int | None = _GRAPH.n_pcs, standardise: bool = False,
                 resolution: float = _COMMUNITIES.resolution, method: str = _COMMUNITIES.method,
                 consensus: int = _COMMUNITIES.consensus, merge: float | None = _COMMUNITIES.merge,
                 decide: str = _COMMUNITIES.decide, alpha: float = _COMMUNITIES.alpha,
                 seed: int = 0, grid_shape: tuple[int, int] | None = None) -> None:
        self.k = k
        self.n_pcs = n_pcs
        self.standardise = standardise
        self.resolution = resolution
        self.method = method
        self.consensus = consensus
        self.merge = merge
        self.decide = decide
        self.alpha = alpha
        self.seed = seed
        self.grid_shape = grid_shape

    def fit(self, X: Any, y: Any = None) -> "LeidenClustering":
        """Find the communities of the samples (rows) of ``X``.

        Parameters
        ----------
        X
            ``(n_samples, n_features)`` real, finite features, at least 2 samples.
        y
            Ignored (scikit-learn's signature).

        Raises
        ------
        InputError
            ``X`` is not a 2-D array of finite real numbers with at least 2 rows.
        ParameterError
            An option out of range (named, with the valid range).
        """
        graph_options = validated(GraphConfig, "LeidenClustering", k=self.k, n_pcs=self.n_pcs)
        community = validated(CommunityConfig, "LeidenClustering", resolution=self.resolution,
                              method=self.method, consensus=self.consensus, merge=self.merge,
                              decide=self.decide, alpha=self.alpha)
        check_options(method=community.method, resolution=community.resolution,
                      consensus=community.consensus, merge=community.merge, decide=community.decide,
                      alpha=community.alpha)
        features = _features(X)
        grid_shape = _grid_shape(self.grid_shape, len(features))
        reduced = reduce_features(features, n_pcs=graph_options.n_pcs, seed=self.seed,
                                  standardise=bool(self.standardise))
        graph: sp.csr_matrix = knn_graph(reduced, k=graph_options.k, seed=self.seed)
        partition = partition_graph(graph, method=community.method, resolution=community.resolution,
                                    seed=self.seed, n_iterations=community.n_iterations,
                                    n_restarts=community.n_restarts, consensus=community.consensus,
                                    merge=community.merge, decide=community.decide, alpha=community.alpha,
                                    features={"X": reduced}, grid_shape=grid_shape)
        self.labels_ = partition.labels.astype(np.intp)
        self.n_clusters_ = partition.n_communities
        self.modularity_ = partition.modularity
        self.run_counts_ = partition.run_counts
        self.graph_ = graph
        partition.warn_if_close_call("LeidenClustering", stacklevel=2)
        return self


def _grid_shape(grid_shape: Any, n_samples: int) -> tuple[int, int] | None:
    """``grid_shape`` checked against the number of samples."""
    if grid_shape is None:
        return None
    try:
        shape = tuple(int(n) for n in grid_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < 1 or shape[0] * shape[1] != n_samples:
        raise InputError(f"grid_shape={grid_shape!r} does not hold the {n_samples} samples",
                         fix="pass the scan's (rows, cols) in row-major order, e.g. "
                             "s.axes_manager.navigation_shape[::-1], or grid_shape=None",
                         where="LeidenClustering(grid_shape=...)")
    return shape


def _features(X: Any) -> np.ndarray:
    """``X`` as a float64 ``(n_samples, n_features)`` array, or a clear error."""
    x = np.asarray(X)
    where = "LeidenClustering.fit(X)"
    if np.iscomplexobj(x):
        raise InputError("features are complex numbers", fix="pass real features (e.g. np.abs or the real "
                                                             "and imaginary parts side by side)", where=where)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InputError(f"features of shape {x.shape}: need (n_samples >= 2, n_features >= 1)",
                         fix="pass one row of features per sample, e.g. X.reshape(n_samples, -1)", where=where)
    try:
        x = x.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(f"features of type {x.dtype} are not numbers", fix="pass numeric features",
                         where=where) from None
    if not np.isfinite(x).all():
        raise InputError(f"{int((~np.isfinite(x)).sum())} feature values are NaN or infinite",
                         fix="remove or fill them first (e.g. mask those samples out)", where=where)
    return x
