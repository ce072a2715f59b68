"""Community detection on chip graphs: Leiden (default) and Louvain.

One community step for every partition (:func:`partition_graph`): one graph, or
several graphs on the same chips (one per modality, "multiplex"), with the same
options everywhere: restarts or a consensus of runs, and merging of
well-connected communities.

Single graphs use igraph's C implementations of Leiden (Traag, van Eck &
Waltman 2019) and Louvain: about ten times faster than leidenalg for the same
modularity on 10^5 chips (docs/design.md).  igraph takes no seed argument, so
its random generator is set around each call: the same seed gives the same
labels.  Several graphs use leidenalg's multiplex Leiden.  Community ids are
ordered by size: 0 is the largest.
"""

from __future__ import annotations

import itertools
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, NamedTuple

import igraph as ig
import leidenalg
import numpy as np
import scipy.sparse as sp

from ..errors import ParameterError
from .ahead import runs_ahead
from .decide import Memo, decide_communities
from .labels import aggregate, communities_phrase, community_weights, n_labels, order_by_size
from .reassign import reassign_boundary_chips

Method = Literal["leiden", "louvain"]
METHODS = ("leiden", "louvain")

#: Two runs whose partitions agree at least this well (adjusted Rand index) give the same
#: answer: the agreement between seeds the project promises (issue 9's goal).
SAME_ANSWER_ARI = 0.95
#: Level of the sequential sign test that ends a consensus early (:func:`stop_boundary`).
STOP_LEVEL = 0.01
#: Version of how a consensus picks its partition, part of a stored partition's fingerprint
#: (a study made by earlier rules partitions again).  Before it (versions of the decision rules
#: up to 7): the medoid of every run; 1: where the runs do not agree, the medoid of those
#: ending with the number of communities most runs ended with (:func:`medoid_labels`); 2: at a
#: close call, ``CLOSE_CALL_DRAWS`` times as many runs.
CONSENSUS_RULES = 2
#: At a close call (the planned runs did not show that most of them end with one number of
#: communities) a consensus draws this many times as many runs in all, and keeps the number most
#: of all of them ended with: its share is then estimated with half the standard error, so another
#: seed, another sample of runs, keeps the same number unless the shares are nearly equal
#: (docs/design.md, "More runs at a close call").  A budget, not a threshold: the runs cost this
#: many times as much, only where the runs split.
CLOSE_CALL_DRAWS = 4


@dataclass
class Partition:
    """Community labels of the graph's vertices.

    Attributes
    ----------
    labels
        ``(n_vertices,)`` int32 community ids, 0 = largest community.
    modularity
        Weighted modularity of the labels at the resolution used.
    params
        Method and parameters that produced it.
    """

    labels: np.ndarray
    modularity: float
    params: dict
    #: What the data-driven decision merged (:meth:`multimodal_seg.graphs.decide.Decision.to_dict`), if it ran.
    decision: dict | None = None
    #: Community runs made (a consensus may stop before ``consensus`` runs, and makes up to
    #: ``CLOSE_CALL_DRAWS`` times as many at a close call: :func:`medoid_labels`).
    runs: int = 1
    #: Of a consensus: how many of its runs ended with each number of communities
    #: (:attr:`Consensus.counts`); ``None`` without one, or for a consensus on groups of chips
    #: (its runs are not decided).
    run_counts: dict[int, int] | None = None
    #: Of a consensus: its runs split on the number of communities (:attr:`Consensus.close_call`).
    close_call: bool = False

    @property
    def n_communities(self) -> int:
        return n_labels(self.labels)

    def record(self) -> dict:
        """What a store or ``provenance.json`` keeps of the partition besides its labels (JSON-able:
        ``run_counts`` keyed by strings)."""
        return {"params": self.params, "modularity": self.modularity, "n_communities": self.n_communities,
                "runs": self.runs, "run_counts": {str(k): n for k, n in (self.run_counts or {}).items()} or None,
                "close_call": self.close_call, "decision": self.decision}

    def close_call_message(self, name: str) -> str | None:
        """The warning for partition ``name`` when it is a :attr:`close_call`, else ``None``."""
        if not self.close_call:
            return None
        return (f"{name} has {communities_phrase(self.n_communities)}, but "
                f"{describe_runs(self.n_communities, self.run_counts, self.close_call)}. The data hold marginal "
                "evidence for the communities between those numbers; compare a few seeds (seed=...) before "
                "reading much into them (provenance: run_counts).")

    def warn_if_close_call(self, name: str, *, stacklevel: int = 1) -> None:
        """Warn (``UserWarning``, :meth:`close_call_message`) when the partition is a close call;
        ``stacklevel`` as ``warnings.warn``'s, counted from the caller."""
        if (message := self.close_call_message(name)) is not None:
            warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)


def describe_runs(n_communities: int, run_counts: Mapping[int | str, int] | None, close_call: bool) -> str | None:
    """One line for people on what a consensus's runs found (:attr:`Partition.run_counts`, keys
    as numbers or, read back from a record, as strings), e.g. "of 30 consensus runs, 19 ended
    with 3 communities and 11 with 1: a close call, another seed may give 1" (the last part for
    a close call; each run is Leiden's, merged and decided);
    ``None`` without a consensus."""
    if not run_counts:
        return None
    by_count = sorted(((int(k), n) for k, n in run_counts.items()), key=lambda item: (-item[1], item[0]))
    total = sum(n for _, n in by_count)
    if len(by_count) == 1:
        return f"all {total} consensus runs ended with {communities_phrase(by_count[0][0])}"
    # the first count names its noun ("19 ended with 1 community and 11 with 3")
    found = [f"{runs}{' ended' * (i == 0)} with {communities_phrase(k) if i == 0 else k}"
             for i, (k, runs) in enumerate(by_count)]
    line = f"of {total} consensus runs, {', '.join(found[:-1])} and {found[-1]}"
    other = next((k for k, _ in by_count if k != n_communities), None)
    return line + (f": a close call, another seed may give {other}" if close_call and other is not None else "")


#: A consensus of Leiden runs works on chip graphs of up to this many chips as they are.  A
#: larger graph is first cut into this many groups of similar chips, the runs work on the graph
#: of the groups, and one Leiden pass on the chip graph, started from their medoid, places every
#: chip (:func:`group_chips`).  Why (docs/design.md, "Consensus on groups of chips"): one Leiden
#: run takes about 30 s on 10^6 chips here, so a consensus of 9-30 runs took 5-15 minutes.
CONSENSUS_VERTICES = 4096
#: Seed of the k-means that groups chips (:func:`group_chips`): the same for every partition seed.
GROUPING_SEED = 0

#: Edges handed to igraph per call.  python-igraph converts an edge list through Python
#: objects: 12 million edges at once took 2.2 GiB for a moment (10^6 chips), in chunks of
#: this size 0.6 GiB, in the same time (12.6 s against 12.2 s).
EDGE_CHUNK = 4_000_000


def igraph_edges(graph: sp.csr_matrix) -> tuple[ig.Graph, np.ndarray]:
    """Undirected igraph graph of a symmetric sparse matrix, and its edge weights.

    A non-zero diagonal entry ``A[i, i]`` becomes a self-loop of half its weight: igraph
    counts a loop twice in a vertex's degree, so every degree stays the matrix's row sum
    (an aggregated graph keeps the modularity of its chips:
    :func:`multimodal_seg.graphs.labels.aggregate`).

    Returns
    -------
    The graph (one edge per pair of the upper triangle, then the loops; no attributes) and
    ``(n_edges,)`` float64 weights in igraph's edge order: pass them as ``weights=`` to
    igraph's methods, which costs no Python float per edge as an edge attribute does
    (0.36 GiB at 10^6 chips).
    """
    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], directed=False)
    for start in range(0, upper.nnz, EDGE_CHUNK):
        g.add_edges(np.column_stack([upper.row[start:start + EDGE_CHUNK], upper.col[start:start + EDGE_CHUNK]]))
    diagonal = graph.diagonal()
    loops = np.flatnonzero(diagonal)
    g.add_edges(np.column_stack([loops, loops]))
    return g, np.concatenate([upper.data, diagonal[loops] / 2]).astype(np.float64)


def to_igraph(graph: sp.csr_matrix) -> ig.Graph:
    """Undirected igraph graph from a symmetric sparse matrix, weights in the edge attribute ``"weight"``."""
    g, weights = igraph_edges(graph)
    g.es["weight"] = weights
    return g


def group_chips(features: Mapping[str, np.ndarray], n_groups: int) -> np.ndarray:
    """Groups of similar chips: mini-batch k-means in the chips' feature spaces side by side.

    The groups are a function of the chips alone (k-means is seeded with
    ``GROUPING_SEED`` whatever the partition's seed), so two seeds of a consensus differ
    only by their Leiden runs: on 1500 chips of five overlapping blobs in 300 groups, the
    worst agreement between six seeds rose from 0.64 (groups drawn with each seed) to 0.83
    (0.68 for the consensus on the chips).

    Parameters
    ----------
    features
        ``{modality: (n_chips, d)}``, each the space its graph was built in (standardised PCA).
    n_groups
        Number of groups (k-means centres); fewer come back if some centres stay empty.

    Returns
    -------
    ``(n_chips,)`` int64 group ids ``0 .. n - 1``, every id used.
    """
    from sklearn.cluster import MiniBatchKMeans

    points = np.hstack([np.asarray(f, dtype=np.float32) for f in features.values()])
    # k-means++ seeding is most of the cost here (14 884 chips into 4096 groups: 4.2 of 4.3 s)
    # but centres drawn at random or by plain k-means++ grouped worse (docs/design.md)
    kmeans = MiniBatchKMeans(n_clusters=n_groups, batch_size=8192, n_init=1, random_state=GROUPING_SEED,
                             max_no_improvement=5)
    return np.unique(kmeans.fit_predict(points), return_inverse=True)[1].ravel()


@contextmanager
def seeded_igraph(seed: int) -> Iterator[None]:
    """Make igraph's randomness follow ``seed`` for the duration of the block."""
    ig.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        ig.set_random_number_generator(random)


def check_options(*, method: str = "leiden", resolution: float = 1.0, n_restarts: int = 1,
                  consensus: int = 0, merge: float | None = None, n_layers: int = 1,
                  decide: str | None = None, alpha: float = 0.01) -> None:
    """Check community options before any work (:func:`partition_graph` calls it too).

    Raises
    ------
    ParameterError
        Unknown method, a resolution that is not positive, fewer than one restart,
        consensus runs combined with restarts, a merge threshold outside (0, 1], or
        Louvain on several layers (only Leiden optimises one partition over layers).
    """
    if method not in METHODS:
        raise ParameterError(f"unknown community method {method!r}",
                             fix=f"use one of {', '.join(METHODS)}", where="method")
    if not resolution > 0:
        raise ParameterError(f"resolution={resolution} must be positive",
                             fix="use a resolution > 0 (1.0 is standard modularity)", where="resolution")
    if n_restarts < 1:
        raise ParameterError(f"n_restarts={n_restarts} must be at least 1",
                             fix="use n_restarts >= 1 (1 is the default)", where="n_restarts")
    if consensus < 0 or (consensus > 1 and n_restarts > 1):
        raise ParameterError(f"consensus={consensus} with n_restarts={n_restarts}",
                             fix="use consensus >= 0, and either consensus runs or restarts, not both "
                                 "(consensus=0 turns consensus off)",
                             where="consensus")
    if merge is not None and not 0 < merge <= 1:
        raise ParameterError(f"merge threshold {merge} must be in (0, 1]",
                             fix="use e.g. 0.5 (lower merges more), or no merging", where="merge")
    if decide not in (None, "none", "dip"):
        raise ParameterError(f"unknown decision {decide!r} on the number of communities",
                             fix="use decide='dip' (the pipeline's default) or decide='none' (keep Leiden's communities)",
                             where="decide")
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha={alpha} is not a significance level", fix="use a level in (0, 1), e.g. 0.01",
                             where="alpha")
    if n_layers > 1 and method != "leiden":
        raise ParameterError(
            f"method={method!r} cannot find one partition over {n_layers} graphs: only Leiden "
            "optimises several layers at once (fusion='multiplex')",
            fix="use method='leiden', or fusion='concat' (one joint graph) for Louvain",
            where="method")


def check_layer_weights(names: list[str], layer_weights: Mapping[str, float] | None) -> list[float]:
    """Each layer's weight in the order of ``names`` (1 where not given).

    Raises
    ------
    ParameterError
        Weights for layers not in ``names``, a negative weight, or all zero.
    """
    layer_weights = dict(layer_weights or {})
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


def weighted_sum(layers: Mapping[str, sp.csr_matrix], layer_weights: Mapping[str, float] | None = None
                 ) -> sp.csr_matrix:
    """The layers' adjacency matrices summed with their weights: one graph standing for all."""
    names = list(layers)
    weights = check_layer_weights(names, layer_weights)
    if len(names) == 1:
        return sp.csr_matrix(layers[names[0]])
    return sum(w * layers[n] for n, w in zip(names, weights)).tocsr()


class _Layers:
    """One graph or several graphs on the same vertices, and one seeded community run over them.

    One layer runs igraph's Leiden or Louvain (about ten times faster than leidenalg
    on one graph); several layers run leidenalg's multiplex Leiden, which optimises
    one partition for the layer-weighted sum of every layer's modularity (RB
    configuration model).  The quality of a labelling is that same weighted sum.
    """

    def __init__(self, layers: Mapping[str, sp.csr_matrix], weights: list[float], method: Method,
                 resolution: float, n_iterations: int) -> None:
        if len(layers) > 1:  # leidenalg's multiplex takes one attribute name for every layer
            self.graphs = [to_igraph(g) for g in layers.values()]
            self.edge_weights: list[str | np.ndarray] = ["weight"] * len(self.graphs)
        else:
            graph, edge_weights = igraph_edges(next(iter(layers.values())))
            self.graphs, self.edge_weights = [graph], [edge_weights]
        self.weights, self.method = weights, method
        self.resolution, self.n_iterations = resolution, n_iterations

    def run(self, seed: int, initial: np.ndarray | None = None) -> np.ndarray:
        """Labels of one seeded run, ordered by size; Leiden starts from ``initial`` labels if given."""
        start = None if initial is None else initial.tolist()
        if len(self.graphs) > 1:
            membership, _ = leidenalg.find_partition_multiplex(
                self.graphs, leidenalg.RBConfigurationVertexPartition, layer_weights=self.weights,
                n_iterations=self.n_iterations, seed=seed, weights="weight",
                resolution_parameter=self.resolution, initial_membership=start)
            return order_by_size(np.asarray(membership))
        g, edge_weights = self.graphs[0], self.edge_weights[0]
        with seeded_igraph(seed):
            if self.method == "leiden":
                clusters = g.community_leiden(objective_function="modularity", weights=edge_weights,
                                              resolution=self.resolution, n_iterations=self.n_iterations,
                                              initial_membership=start)
            else:
                clusters = g.community_multilevel(weights=edge_weights, resolution=self.resolution)
        return order_by_size(np.asarray(clusters.membership))

    def quality(self, labels: np.ndarray) -> float:
        """Layer-weighted modularity of ``labels`` at the resolution used."""
        membership = labels.tolist()
        return float(sum(w * g.modularity(membership, weights=ew, resolution=self.resolution)
                         for w, g, ew in zip(self.weights, self.graphs, self.edge_weights)))


def partition_graph(
    graph: sp.csr_matrix | Mapping[str, sp.csr_matrix],
    *,
    method: Method = "leiden",
    resolution: float = 1.0,
    seed: int = 0,
    n_iterations: int = -1,
    n_restarts: int = 1,
    consensus: int = 0,
    merge: float | None = None,
    layer_weights: Mapping[str, float] | None = None,
    decide: str | None = None,
    alpha: float = 0.01,
    features: Mapping[str, np.ndarray] | None = None,
    feature_weights: Mapping[str, float] | None = None,
    grid_shape: tuple[int, ...] | None = None,
    grid_step: int = 1,
    own_partitions: Mapping[str, np.ndarray] | None = None,
    consensus_vertices: int = CONSENSUS_VERTICES,
    helper: bool = True,
) -> Partition:
    """Split a weighted graph, or several graphs on the same vertices, into communities by modularity.

    Parameters
    ----------
    graph
        Symmetric ``(n, n)`` sparse similarity matrix; or ``{layer: matrix}``, one graph
        per modality over the same chips, for one partition that is good on all of
        them (a single layer is the same as passing its matrix).
    method
        ``"leiden"`` or ``"louvain"`` (one graph only).
    resolution
        Modularity resolution: higher gives more, smaller communities.
    seed
        Random seed; the same seed gives the same labels.
    n_iterations
        Leiden iterations; negative runs until the partition is stable.
    n_restarts
        Independent runs (seeds derived from ``seed``); the one of highest
        modularity is kept (default 1).  More runs make labels less seed-dependent
        but may split a region more; costs ``n_restarts`` times one run (Leiden:
        about 4 s per run on 10^5 chips here).
    consensus
        If > 1, the partition is the most representative of this many runs
        (:func:`medoid_labels`) instead of one run; runs stop early once most of them
        are shown to agree, and where they split on the number of communities (a close
        call) ``CLOSE_CALL_DRAWS`` times as many are made (``Partition.runs`` says how many
        were).  0 or 1 is one
        run (the function's default; the pipeline's default is 30).  Cannot be combined
        with ``n_restarts``.  With ``merge`` or ``decide``, each run is merged, decided and
        its boundary chips placed before the medoid is taken: the consensus is of what
        the user gets, since runs that Leiden finds nearly alike can be merged differently
        (docs/design.md, "The consensus of decided runs").  Runs that repeat are finished once
        (once in each process, with a helper: see ``helper``).
    merge
        If given, in (0, 1]: communities are then merged while their connectivity
        exceeds it (:func:`merge_connected`, on the layer-weighted sum of the graphs).
    layer_weights
        ``{layer: weight}`` for several layers (default 1 each).
    decide, alpha, features
        ``decide="dip"``: then merge neighbouring communities whose chips are one
        population, by a dip test at level ``alpha`` in each modality's feature space
        ``features`` (``{modality: (n, d)}``, the graph's standardised PCA space)
        (:func:`multimodal_seg.graphs.decide.merge_indistinct`).  The pipeline's default.
    feature_weights
        ``{modality: weight}`` of ``features`` side by side where chips are placed by their
        distance to community means (default 1 each; see ``grid_shape``).
    grid_shape
        ``(rows, cols)`` of the chip grid the vertices lie on, row-major (``(frames, rows,
        cols)`` for the frames of a series on one grid).  With
        ``decide="dip"``, communities without an interior chip (seams of mixed chips along
        boundaries) are then dissolved into the communities their chips are most connected
        to (:func:`multimodal_seg.graphs.decide.dissolve_rims`), and once the number of
        communities is decided, each chip on a boundary goes to the adjacent community whose
        mean it is nearest (:func:`multimodal_seg.graphs.reassign.reassign_boundary_chips`;
        ``decision["boundary_chips_moved"]`` counts them).
    grid_step
        With ``decide="dip"`` and ``grid_shape``: only chips on every ``grid_step``-th row and
        column enter the dip tests (:func:`multimodal_seg.graphs.decide.spaced_chips`); the
        pipeline passes half a chip in grid steps
        (:attr:`multimodal_seg.chips.grid.ChipGrid.half_chip_steps`), 1 at the default stride.
    own_partitions
        With ``decide="dip"``, for a joint partition: ``{modality: (n,) labels}``, each
        modality's own partition of the same chips; communities that none of them tells
        apart are then merged (:func:`multimodal_seg.graphs.decide.merge_untold`).
    consensus_vertices
        A Leiden consensus on a graph of more chips than this, with ``features`` given, runs
        on the graph of this many groups of similar chips (:func:`group_chips`,
        :func:`multimodal_seg.graphs.labels.aggregate`), and one Leiden pass on the chip graph started from the groups'
        medoid places every chip; ``params["groups"]`` records how many groups there were.
        Louvain, and a graph without ``features``, always run on the chips.  Only the
        medoid then has a partition of the chips themselves, so it alone is merged and decided.
    helper
        A consensus's runs beyond the fewest it can stop after (:func:`earliest_stop`; each run
        Leiden's and, where they are finished, its merges and decision) may be made by a helper
        process on a second core beside this one (:func:`multimodal_seg.graphs.ahead.runs_ahead`:
        Linux, two CPUs or more); the labels and the decision are the same either way.
        ``False`` makes every run in this process.

    Returns
    -------
    Partition
        Labels ordered by size; ``modularity`` is the layer-weighted sum of each
        layer's modularity (plain modularity for one graph).
    """
    layers = dict(graph) if isinstance(graph, Mapping) else {"graph": graph}
    check_options(method=method, resolution=resolution, n_restarts=n_restarts, consensus=consensus,
                  merge=merge, n_layers=len(layers), decide=decide, alpha=alpha)
    decide = None if decide == "none" else decide
    if decide is not None and not features:
        raise ParameterError("the number of communities is decided from the chips' features, and none were given",
                             fix="pass features={modality: (n_chips, d) array}, or decide='none'", where="decide")
    weights = check_layer_weights(list(layers), layer_weights)
    params = {"method": method, "resolution": resolution, "seed": seed, "n_iterations": n_iterations,
              "n_restarts": n_restarts, "consensus": consensus, "merge": merge, "decide": decide,
              "alpha": alpha}
    if len(layers) > 1:
        params["layer_weights"] = dict(zip(layers, weights))
    runner = _Layers(layers, weights, method, resolution, n_iterations)
    if grid_step < 1:
        raise ParameterError(f"grid_step={grid_step} must be a whole number of grid steps, at least 1",
                             fix="use 1 (every chip is tested) or more", where="grid_step")
    if consensus_vertices < 2:
        raise ParameterError(f"consensus_vertices={consensus_vertices} leaves no graph to run a consensus on",
                             fix=f"use at least 2 (default {CONSENSUS_VERTICES})", where="consensus_vertices")
    n_chips = next(iter(layers.values())).shape[0]
    grouped = consensus > 1 and method == "leiden" and bool(features) and n_chips > consensus_vertices
    params["groups"] = None
    summed = weighted_sum(layers, dict(zip(layers, weights))) if merge is not None or decide else None
    # each distinct run (Leiden runs often repeat) finished once: raw labels -> finished
    # labels and the decision behind them
    finished: dict[bytes, tuple[np.ndarray, dict | None]] = {}
    memo = Memo()  # what the runs' decisions share

    def finish(run: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """One run's partition after the steps that follow Leiden (merged, decided, its
        boundary chips placed), and its decision."""
        key = run.tobytes()
        if key not in finished:
            labels = merge_connected(summed, run, merge) if merge is not None else run
            decision = None
            if decide is not None:
                result = decide_communities(features, labels, summed, alpha=alpha, seed=seed, grid_shape=grid_shape,
                                            grid_step=grid_step, memo=memo, own_partitions=own_partitions)
                labels, decision = result.labels, result.to_dict()
                if grid_shape is not None:
                    labels, moved = reassign_boundary_chips(features, labels, grid_shape, weights=feature_weights,
                                                            steps=result.reach)
                    decision |= {"boundary_chips_moved": moved,
                                 "n_after": n_labels(labels)}
            finished[key] = labels, decision
        return finished[key]

    if consensus > 1:
        # the first `consensus` seeds are the same whatever the number drawn (SeedSequence's
        # stream): runs that settle within the planned ones are those of a plain consensus
        run_seeds = np.random.SeedSequence(seed).generate_state(consensus * CLOSE_CALL_DRAWS).tolist()
        if grouped:
            groups = group_chips(features, consensus_vertices)
            params["groups"] = int(groups.max()) + 1
            coarse = _Layers({name: aggregate(g, groups) for name, g in layers.items()}, weights, method,
                             resolution, n_iterations)
            # the groups' medoid, with every chip then free to move on its own graph; finished
            # once, since only the medoid has a partition of the chips themselves.  The runs'
            # numbers of communities are Leiden's before any decision, not the answer's: neither
            # settled first nor judged a close call.
            with runs_ahead(coarse.run, run_seeds, helper=helper, alone=earliest_stop(consensus)) as coarse_runs:
                kept = medoid_labels((order_by_size(run[groups]) for run in coarse_runs), planned=consensus,
                                     by_count=False)
            labels, decision = finish(runner.run(seed, initial=kept.labels))
        else:
            # the medoid of the finished runs: of what the user gets, not of Leiden's raw
            # partitions, whose small differences the decision's merges can amplify.  Each
            # distinct finished partition keeps the decision of the first run (in seed order)
            # that finished so.
            decisions: dict[bytes, dict | None] = {}

            def in_seed_order(finished_runs: Iterator[tuple[np.ndarray, dict | None]]) -> Iterator[np.ndarray]:
                for run_labels, run_decision in finished_runs:
                    decisions.setdefault(run_labels.tobytes(), run_decision)
                    yield run_labels

            with runs_ahead(lambda s: finish(runner.run(s)), run_seeds, helper=helper,
                            alone=earliest_stop(consensus)) as finished_runs:
                kept = medoid_labels(in_seed_order(finished_runs), planned=consensus,
                                     close_call_draws=len(run_seeds))
            labels, decision = kept.labels, decisions[kept.labels.tobytes()]
        runs, run_counts, close_call = kept.drawn, kept.counts if not grouped else None, kept.close_call
    else:
        runs, run_counts, close_call = n_restarts, None, False
        # Several runs from seeds derived from `seed`, keeping the best modularity: the
        # result depends less on the seed (worst pairwise ARI between seeds on three NASA
        # EBC images rose from 0.60-0.83 with one run to 0.80-0.89 with ten), but higher
        # modularity can mean splitting a true cluster (on four overlapping Gaussian blobs
        # ten runs found a split with ARI 0.80 where one run scored > 0.95), so one run
        # is the default.  The first run uses `seed` itself.
        run_seeds = [seed, *np.random.SeedSequence(seed).generate_state(n_restarts - 1).tolist()]
        best_run, best = None, -np.inf
        for run_seed in run_seeds:
            candidate = runner.run(int(run_seed))
            quality = runner.quality(candidate)
            if quality > best:
                best_run, best = candidate, quality
        labels, decision = finish(best_run)
    return Partition(labels=labels, modularity=runner.quality(labels), params=params, decision=decision,
                     runs=runs, run_counts=run_counts, close_call=close_call)


def stop_boundary(planned: int, level: float = STOP_LEVEL) -> np.ndarray:
    """How many of the first ``m`` runs must agree for a consensus to stop after ``m`` runs.

    A group-sequential sign test: after each run, the consensus stops if so many runs
    give the medoid's answer that "at most half of all runs would" is rejected.  The
    per-look level is the largest for which a fair coin (half the runs agreeing) crosses
    the boundary at any of the ``planned`` looks with probability at most ``level``, so
    looking after every run costs no extra false stops.  For ``planned=30`` and
    ``level=0.01``: 9 runs if all agree, 23 of 30 at the last look.

    Returns
    -------
    ``(planned,)`` int: entry ``m - 1`` is the count needed after ``m`` runs (``m + 1``
    where stopping is impossible).
    """
    return _stop_boundary(int(planned), float(level)).copy()


def earliest_stop(planned: int, level: float = STOP_LEVEL) -> int:
    """The fewest runs after which a consensus of ``planned`` runs can stop (:func:`stop_boundary`;
    9 for 30 at level 0.01); ``planned`` where it cannot stop early."""
    bound = _stop_boundary(int(planned), float(level))
    possible = np.flatnonzero(bound <= np.arange(1, len(bound) + 1))
    return int(possible[0]) + 1 if possible.size else int(planned)


@lru_cache(maxsize=64)  # a pure function of two numbers, asked again by every consensus
def _stop_boundary(planned: int, level: float) -> np.ndarray:
    from scipy.stats import binom

    looks = np.arange(1, planned + 1)

    def boundary(per_look: float) -> np.ndarray:
        # the smallest s with P(Binomial(m, 1/2) >= s) <= per_look, for each m
        return binom.isf(per_look, looks, 0.5).astype(int) + 1

    def crossing(bound: np.ndarray) -> float:
        dist, crossed = np.zeros(planned + 2), 0.0
        dist[0] = 1.0
        for b in bound:
            dist = 0.5 * dist + 0.5 * np.r_[0.0, dist[:-1]]  # one more run: agrees or not
            crossed += dist[b:].sum()
            dist[b:] = 0.0
        return crossed

    # The crossing probability grows with the per-look level: bisect for the largest level
    # that keeps it within `level` (0 allows no stop: too few planned runs for the level).
    low, high = 0.0, level
    if crossing(boundary(high)) <= level:
        return boundary(high)
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if crossing(boundary(mid)) <= level else (low, mid)
    return boundary(low)


class Consensus(NamedTuple):
    """What :func:`medoid_labels` kept, and how firmly its runs back its number of communities."""

    #: ``(n,)`` labels of the medoid run.
    labels: np.ndarray
    #: Runs drawn.
    drawn: int
    #: ``{number of communities: runs that found it}`` over the runs drawn.
    counts: dict[int, int]
    #: The runs did not show that most of them find the kept number of communities: fewer of
    #: them found it than the sequential sign test that stops a consensus asks for
    #: (:func:`stop_boundary`, at the level the consensus used, or ``STOP_LEVEL``).  The data
    #: sit near the decision between two numbers, and another seed (another sample of runs)
    #: may keep the other.  Seeds 0-4 of the 46 labelled NASA images (docs/design.md, "Close
    #: calls on the number of communities"): each of the 4 whose seeds disagree was called a
    #: close call, and 10 of the other 42.
    close_call: bool


def medoid_labels(runs: Iterable[np.ndarray], *, planned: int | None = None,
                  level: float | None = STOP_LEVEL, by_count: bool = True,
                  close_call_draws: int | None = None) -> Consensus:
    """The most representative of several community detections (the medoid partition).

    The run whose mean adjusted Rand index with all the other runs is highest is kept
    (each distinct partition is compared once and weighted by how many runs found it).
    When most runs find the same partition, that is the one returned, whatever the seed.

    Runs are drawn one at a time and stop early once most of them are shown to give
    the medoid's answer (within ``SAME_ANSWER_ARI`` of it), by a sequential sign test
    at ``level`` over the ``planned`` runs (:func:`stop_boundary`): on a clearly
    structured graph 9 runs of 30 are made, on a weakly structured one (where the
    consensus matters) all of them.

    Where they do not stop early (the runs did not agree), the number of communities is
    settled first: the kept partition is the medoid of the runs that ended with the number
    most runs ended with (a tie goes to the medoid's number, else to the fewest).  Runs that
    ended with other numbers are other answers; left in, they pull which partition of the
    common number is the most representative one way or another with the sample drawn.
    Where the planned runs do not show that most of them end with that number (a close call),
    more runs are drawn, up to ``close_call_draws`` in all, and the number is settled on all
    of them: a split of 60 to 40 % is a coin toss between samples of 30 runs, not between
    samples of 120 (docs/design.md, "More runs at a close call").

    Why: one Leiden run on a weakly structured graph lands in one of many
    near-equal partitions, picked by the seed.  Measured (30 runs, seeds 0-3): the
    worst pairwise ARI between seeds on NASA images rose from 0.56-0.83 to
    0.78-0.99 (EBC) and from 0.38/0.73 to 0.43/0.94 (superalloy), with the same
    agreement with the human labels.  Unlike a co-association consensus graph
    (tried: it split a large planted cluster that 9 of 10 single runs kept whole)
    or the best-modularity run (``n_restarts``), the medoid is a partition Leiden
    itself finds, and the common one.

    Parameters
    ----------
    runs
        ``(n,)`` labels of each run, drawn lazily (a generator makes only the runs needed).
    planned
        The runs planned (default: ``len(runs)``); more are drawn only at a close call.
    level
        Level of the sequential test; ``None`` draws every planned run.
    by_count
        Settle the number of communities first where the runs disagree, and judge whether it is
        a close call (default).  ``False`` for runs whose numbers are not yet the answer's (a
        consensus on groups of chips, whose runs are Leiden's before any decision): the medoid of
        every run, and never a close call.
    close_call_draws
        At a close call after the planned runs, draw on to this many runs in all (as many as
        ``runs`` holds); ``None`` (default) or at most ``planned``: none more.

    Returns
    -------
    Consensus
        The ``(n,)`` labels (one of ``runs``), the number of runs drawn, how many found each
        number of communities, and whether that number is a close call on all the runs drawn.
    """
    from ..metrics import adjusted_rand_fast

    if planned is None:
        runs = list(runs)
        planned = len(runs)
    runs = iter(runs)
    bound = stop_boundary(planned, level) if level is not None and planned else None
    distinct: dict[bytes, int] = {}  # partition -> its index in `parts`
    parts: list[np.ndarray] = []
    counts: list[float] = []
    agreement = np.zeros((0, 0))

    def add(labels: np.ndarray) -> None:
        """Count one more run, comparing it with every distinct partition so far if it is new."""
        nonlocal agreement
        key = labels.tobytes()
        if key in distinct:
            counts[distinct[key]] += 1
            return
        distinct[key] = len(parts)
        row = np.array([adjusted_rand_fast(labels, other) for other in parts])
        agreement = np.block([[agreement, row[:, None]], [row[None, :], np.ones((1, 1))]])
        parts.append(labels)
        counts.append(1.0)

    def common_count() -> tuple[int, dict[int, int], bool]:
        """The kept partition's index, the runs per number of communities, and whether the
        runs drawn so far leave that number a close call."""
        numbers = np.array([n_labels(p) for p in parts])  # of communities, each distinct partition's
        counts_of_k = {int(k): int(np.array(counts)[numbers == k].sum()) for k in np.unique(numbers)}
        # the medoid: highest mean ARI with all runs (each run counted once)
        kept = int((agreement @ np.array(counts)).argmax())
        if by_count and not stopped:
            kept = _medoid_of_the_common_count(numbers, np.array(counts), agreement, counts_of_k, kept)
        looks = bound if bound is not None and drawn <= len(bound) else stop_boundary(drawn, level or STOP_LEVEL)
        # too few runs to show a majority at all (fewer than 7 at level 0.01): nothing to judge
        close = by_count and bool(counts_of_k[int(numbers[kept])] < looks[drawn - 1] <= drawn)
        return kept, counts_of_k, close

    drawn, stopped = 0, False
    for labels in itertools.islice(runs, planned):
        drawn += 1
        add(labels)
        if bound is not None and drawn <= len(bound):
            medoid = int((agreement @ np.array(counts)).argmax())
            agreeing = float(np.array(counts)[agreement[medoid] >= SAME_ANSWER_ARI].sum())
            if agreeing >= bound[drawn - 1]:
                stopped = True
                break
    if drawn == 0:
        raise ValueError("a consensus needs at least one run")
    kept, counts_of_k, close_call = common_count()
    if close_call and close_call_draws is not None and close_call_draws > drawn:
        for labels in itertools.islice(runs, close_call_draws - drawn):
            drawn += 1
            add(labels)
        kept, counts_of_k, close_call = common_count()
    return Consensus(parts[kept], drawn, counts_of_k, close_call)


def _medoid_of_the_common_count(numbers: np.ndarray, counts: np.ndarray, agreement: np.ndarray,
                                counts_of_k: dict[int, int], medoid: int) -> int:
    """Of runs that did not agree: the index of the most representative distinct partition
    among those with the number of communities most runs ended with (``numbers``: each
    partition's number of communities; ``counts``: runs per partition; ``agreement``: their
    pairwise ARI; a tie between numbers goes to the medoid's, else to the fewest).  Runs that ended with another number are other answers, and left in
    they pull which partition of the common number is the most representative one way or the
    other with the sample of runs drawn (docs/design.md, "The medoid of the common count")."""
    top = max(counts_of_k.values())
    tied = [k for k, n in counts_of_k.items() if n == top]
    common = numbers[medoid] if numbers[medoid] in tied else min(tied)
    members = np.flatnonzero(numbers == common)
    return int(members[(agreement[np.ix_(members, members)] @ counts[members]).argmax()])


def connectivity(graph: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """Observed over expected edge weight between every pair of communities.

    ``C[a, b] = w(a, b) * W / (vol(a) * vol(b))`` with ``W`` the total edge weight
    and ``vol`` the summed degree (the configuration-model expectation that
    modularity uses; PAGA's connectivity is of this kind).  Leiden at resolution 1
    leaves every pair below 1; halves of one noisy region stay well connected
    (0.5-0.8 measured here), distinct regions hardly at all (< 0.1).

    Returns
    -------
    ``(n_communities, n_communities)`` with a zero diagonal.
    """
    between = community_weights(graph, labels)
    volume = between.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.nan_to_num(between * volume.sum() / np.outer(volume, volume))
    np.fill_diagonal(ratio, 0.0)
    return ratio


def merge_connected(graph: sp.csr_matrix, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Merge communities, most connected pair first, while their connectivity exceeds ``threshold``.

    An option against modularity's habit of cutting one noisy, homogeneous region
    into several communities (e.g. the support film of a particle image).

    Returns
    -------
    Labels ordered by size (0 = largest).
    """
    if not 0 < threshold <= 1:
        raise ParameterError(f"merge threshold {threshold} must be in (0, 1]",
                             fix="use e.g. 0.5 (lower merges more), or no merging", where="merge")
    labels = order_by_size(labels)
    while labels.max() > 0:
        ratio = connectivity(graph, labels)
        a, b = np.unravel_index(ratio.argmax(), ratio.shape)
        if ratio[a, b] < threshold:
            break
        labels = order_by_size(np.where(labels == max(a, b), min(a, b), labels))
    return labels
