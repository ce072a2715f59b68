"""PNNL's GraphEM recipe, re-implemented on the project's own chip features.

GraphEM (``pnnl/GraphEM``, the public code of Ter-Petrosyan, Spurgeon et al.,
arXiv 2311.08585 and 2411.09896) segments a micrograph from per-chip features:

1. the dense cosine similarity between every pair of chips, ``1 - cosine distance``;
2. an *unweighted* graph joining every pair whose similarity is at least a cutoff
   ``c`` (``0 < c < 1``, a required argument of their script; no self loops);
3. Louvain modularity communities of that graph;
4. modality pairs fused by averaging their similarity matrices before step 2.

Their code pins TensorFlow 2.11 (VGG16 chip features), so it is re-implemented here
from that description and on the project's features: the chip embeddings of a
:class:`~multimodal_seg.pipeline.study.Study` (``embeddings/<modality>``), so that only
the graph and community steps differ from the project's.  Two feature variants:

``raw``
    The embeddings as the encoder wrote them, the recipe word for word.  The
    project's encoders give non-negative features (power spectra, counts), whose
    cosine similarities all lie near 1, so most cutoffs join every pair.
``reduced``
    The features the project's kNN graph is built on: standardised and projected
    on its principal components (:func:`multimodal_seg.graphs.knn.reduce_features`
    with the study's ``n_pcs`` and standardisation), centred, so similarities spread
    over ``[-1, 1]``.

Departures, stated: igraph's Louvain (``Graph.community_multilevel``, modularity,
seeded through igraph's random generator) instead of the retired ``louvain``
package's ``ModularityVertexPartition`` (the same objective and algorithm); the
fused pair thresholds the *averaged* similarity as the description says (the
published script thresholds the last single modality's matrix there, a slip);
every subset of two or more modalities is fused, not only pairs.  Nothing is tuned:
the cutoff is swept (:data:`CUTOFFS`) and the benchmark reports the spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..graphs.labels import n_labels

#: Cutoffs swept by the benchmark.
CUTOFFS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: Feature variants (see the module docstring).
FEATURES = ("raw", "reduced")
#: Largest number of chips for the dense ``n x n`` similarity (float32: 400 MB).
MAX_CHIPS = 10_000


@dataclass(frozen=True)
class GraphemPartition:
    """One GraphEM partition of a study's chips.

    Attributes
    ----------
    features
        ``"raw"`` or ``"reduced"``.
    modalities
        The modalities whose similarities were averaged (one for a single modality).
    cutoff
        The similarity cutoff ``c``.
    chip_labels
        ``(n_chips,)`` int32 communities, 0 the largest.
    scan_labels
        The communities painted on the study's reference grid (image pixels for one
        image, the scan for several modalities), by the chips' majority vote.
    """

    features: str
    modalities: tuple[str, ...]
    cutoff: float
    chip_labels: np.ndarray
    scan_labels: np.ndarray

    @property
    def name(self) -> str:
        """``"+".join(modalities)``."""
        return "+".join(self.modalities)

    @property
    def n_communities(self) -> int:
        return n_labels(self.chip_labels)


def cosine_similarity(features: np.ndarray) -> np.ndarray:
    """``(n, n)`` float32 cosine similarity between the rows of ``(n, dim)`` ``features``.

    A row of zeros has similarity 0 with every row (itself included).

    Raises
    ------
    ParameterError
        Not a 2-D array, or more than :data:`MAX_CHIPS` rows (the matrix is dense).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(f"features must be (n_chips, dim), got shape {x.shape}",
                             fix="pass one row of features per chip", where="features")
    if x.shape[0] > MAX_CHIPS:
        raise ParameterError(
            f"{x.shape[0]} chips: the dense similarity matrix would need {x.shape[0] ** 2 * 4 / 2**30:.1f} GiB",
            fix=f"use at most {MAX_CHIPS} chips (larger chips or stride), as GraphEM's dense recipe needs",
            where="features")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return (unit @ unit.T).astype(np.float32)


def _check_cutoff(cutoff: Any) -> float:
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.integer, np.floating)) \
            or not -1.0 < float(cutoff) <= 1.0:
        raise ParameterError(f"cutoff must be a number in (-1, 1], got {cutoff!r}",
                             fix="use a cosine similarity cutoff such as 0.5", where="cutoff")
    return float(cutoff)


def threshold_louvain(similarity: np.ndarray, cutoff: float, *, seed: int = 0) -> np.ndarray:
    """Louvain communities of the unweighted graph ``similarity >= cutoff``.

    Parameters
    ----------
    similarity
        ``(n, n)`` symmetric similarity (the diagonal is ignored: no self loops).
    cutoff
        Pairs at or above it are joined, in ``(-1, 1]``.
    seed
        Seed of igraph's random generator for Louvain's node order.

    Returns
    -------
    np.ndarray
        ``(n,)`` int32 communities, 0 the largest; a chip joined to nobody is its own
        community.
    """
    import igraph as ig

    from ..graphs.communities import order_by_size, seeded_igraph

    cutoff = _check_cutoff(cutoff)
    sim = np.asarray(similarity)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ParameterError(f"similarity must be a square matrix, got shape {sim.shape}",
                             fix="pass the (n_chips, n_chips) similarity", where="similarity")
    rows, cols = np.nonzero(np.triu(sim >= cutoff, k=1))
    # Pairs of Python ints: igraph reads them about 3x faster than a numpy edge array,
    # which matters here (dense graphs of up to n^2 / 2 edges, dozens per specimen).
    graph = ig.Graph(n=sim.shape[0], edges=list(zip(rows.tolist(), cols.tolist())), directed=False)
    with seeded_igraph(seed):
        membership = graph.community_multilevel().membership
    return order_by_size(np.asarray(membership)).astype(np.int32)


def study_features(study: Any, *, features: str = "raw") -> dict[str, np.ndarray]:
    """``{modality: (n_chips, dim)}`` chip features of a study whose chips are embedded.

    ``features="raw"``: ``embeddings/<modality>`` as written; ``"reduced"``: as the
    project's graph stage reduces them (its ``n_pcs`` and seed, the embeddings'
    standardisation flag; 30 components if the graph stage has not run).
    """
    from ..graphs.knn import reduce_features

    if features not in FEATURES:
        raise ParameterError(f"unknown features {features!r}", fix=f"use one of {', '.join(FEATURES)}",
                             where="features")
    out = {}
    graph = study.stage_params.get("graphs", {"n_pcs": 30, "seed": 0})
    for name in study.modality_names():
        raw = study.read_array(f"embeddings/{name}")
        out[name] = raw if features == "raw" else reduce_features(
            raw, n_pcs=graph["n_pcs"], seed=graph["seed"],
            standardise=study.attrs_of(f"embeddings/{name}").get("standardise", True))
    return out


def modality_sets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every modality alone, then every set of two or more, smallest first (GraphEM's pairs)."""
    return [combo for size in range(1, len(names) + 1) for combo in combinations(names, size)]


def sweep(study: Any, *, cutoffs: Sequence[float] = CUTOFFS, features: Sequence[str] = FEATURES,
          seed: int = 0) -> list[GraphemPartition]:
    """GraphEM on a study's chips at every cutoff, feature variant and modality set.

    Parameters
    ----------
    study
        A :class:`~multimodal_seg.pipeline.study.Study` with its chips laid and embedded.
    cutoffs
        Similarity cutoffs to try, each in ``(-1, 1]``.
    features
        Feature variants among :data:`FEATURES`.
    seed
        Louvain's seed.

    Returns
    -------
    list of GraphemPartition
        ``len(features) * len(modality_sets) * len(cutoffs)`` partitions.
    """
    cutoffs = [_check_cutoff(c) for c in cutoffs]
    grid = study.grid().grid
    out = []
    for variant in features:
        similarity = {n: cosine_similarity(f) for n, f in study_features(study, features=variant).items()}
        for combo in modality_sets(list(similarity)):
            mean = similarity[combo[0]] if len(combo) == 1 else sum(similarity[n] for n in combo) / len(combo)
            for cutoff in cutoffs:
                labels = threshold_louvain(mean, cutoff, seed=seed)
                out.append(GraphemPartition(variant, combo, cutoff, labels,
                                            grid.chip_labels_to_pixels(labels.reshape(grid.grid_shape))))
    return out


def by_key(partitions: Sequence[GraphemPartition]) -> Mapping[tuple[str, str, float], GraphemPartition]:
    """``{(features, modality set name, cutoff): partition}``."""
    return {(p.features, p.name, p.cutoff): p for p in partitions}
