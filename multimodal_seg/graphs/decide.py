"""How many communities: merge neighbouring communities that are one population.

Modularity at a fixed resolution decides the number of communities by a knob, not by
the data: a large homogeneous region is cut into pieces by noise, and a region under a
slow intensity or thickness gradient is cut along the ramp.  Neither cut separates two
*populations* of chips: the chips of both sides together form one unimodal cloud (a
noise split) or one plateau (a gradient), whereas two materials (phases, grains of one
phase at different orientations, crystal and amorphous) form two modes.

The test, for every pair of communities joined by edges of the graph:

1. a shrinkage linear discriminant (LDA) axis separating the two is fitted on their chips,
   and the chips are projected on it;
2. the larger community is represented by as many of its projections as the smaller has,
   evenly spaced in rank (its quantiles, :func:`even_quantiles`), so that a small community
   weighs as much as a large one (a rare region is not drowned);
3. Hartigan's dip test asks whether the projected union is unimodal, at the union's
   effective number of independent chips (:func:`effective_size`: the quantiles carry less
   noise than as many chips drawn at random).

Nothing in the test is random: the same partition gets the same p-values whatever the seed.
Random subsamples (the median p over five, before rules version 6) added noise of their own
near ``alpha``: with one Leiden partition of a NASA EBC image held fixed, five seeds of the
subsamples decided 2, 3 or 4 communities (docs/design.md).

The axis is fitted on the chips it judges.  A cut through one cloud projects back onto one
Gaussian or plateau whatever the axis, so this costs no false splits on noise cuts and tail
cuts (10 seeds, 20-150 chips beside 600, 30-D: none), and it doubles the chips each test
sees: 20 chips 5 sd away from 600 were kept apart in 10 of 10 seeds, against 1 of 10 with
an axis fitted on one half and the other half tested.  On real images the held-out axis
merged everything it saw (NASA superalloy: one community, a Velox Nb/EDS interface: two of
five layers).

Each modality is tested in its own feature space (the graph's standardised PCA
space); a pair stays apart when any modality sees two modes (Bonferroni over the
modalities), since a difference one modality sees is a difference.  Pairs are merged
one at a time, the most clearly unimodal first, until every remaining pair is distinct
at level ``alpha``.  Communities too small to test (fewer than ``MIN_TEST_CHIPS``
chips) join their most connected neighbour.

The dip test's null hypothesis is the least favourable unimodal distribution (the
uniform), so a plateau from a gradient is rejected at rate ``alpha`` only.  A mixture of
two regions is distinct from both, so chips straddling a boundary can stay a community of
their own; on a chip grid :func:`dissolve_rims` then dissolves communities without an
interior chip, and :func:`dissolve_mixtures` wider seams whose chips are mixtures of the two
communities they lie between (docs/design.md, "How many communities").  Where the dip test
sees two modes in one region under a ramp (its two sides at two heights of the ramp),
:func:`merge_continuous` merges neighbours whose features run on across their boundary.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import diptest
from diptest.consts import Consts
import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.stats import levene

from .labels import community_groups, community_weights, n_labels, order_by_size

#: The rules' version, part of every partition's fingerprint, so that a study made by
#: earlier rules decides again: 1 dip test and rims; 2 also mixtures of two neighbours; 3 the
#: mixtures found set how deep a rim can be; 4 also neighbours continuous across their
#: boundary (:func:`merge_continuous`); 5 then boundary chips to the nearest adjacent
#: community mean (:mod:`multimodal_seg.graphs.reassign`, run by ``partition_graph``); 6 the
#: dip test on the larger community's quantiles and evenly spread chips, not random subsamples;
#: 7 a consensus keeps the medoid of its runs once each is decided (``partition_graph``); 9 a
#: joint partition's communities that no modality's own partition tells apart are merged at
#: the end (:func:`merge_untold`; 8 was a variant tried and reverted).
RULES_VERSION = 9
#: Communities with fewer chips than this cannot be tested; they join their most connected neighbour.
MIN_TEST_CHIPS = 6
#: At most this many chips per community enter one test, evenly spread over its chips in
#: grid order (bounds time on huge partitions; :func:`evenly_spread`).
MAX_TEST_CHIPS = 2000
#: A community is a mixture of two neighbours A and B only if its mean lies between
#: theirs: its projection on the line through their means falls in the middle half of
#: the segment, and it lies off that line by less than a third of the segment's length
#: (:func:`dissolve_mixtures`).
MIXTURE_MIDDLE = (0.25, 0.75)
MIXTURE_OFFSET = 1.0 / 3.0
#: A boundary between two communities is a cut through one continuum, not an edge, when
#: their features step across it by at most this many times what noise steps that straddle
#: a cut do (the upper ``1 - alpha`` bootstrap bound of that ratio; :func:`step_ratio`).
#: Under the null of one smooth field cut in two the ratio is about 1.
CONTINUITY_MARGIN = 2.0
#: Bootstrap resamples of the step ratio.
STEP_RESAMPLES = 200
#: ... and when the jump at their boundary is at most this share of the difference between
#: them, the rest being a slow trend through both (:func:`jump_share`): a ramp, not an edge.
JUMP_SHARE = 0.5


@dataclass
class Decision:
    """What the decision did to a partition.

    Attributes
    ----------
    labels
        ``(n_chips,)`` labels after merging, ordered by size (0 = largest).
    merges
        One entry per merge, in order: the two communities (ids at that moment, sizes in
        chips), the p-value of the dip test (``None`` when one was too small to test) and
        the reason.
    alpha
        Significance level used.
    """

    labels: np.ndarray
    merges: list[dict] = field(default_factory=list)
    alpha: float = 0.01
    #: Communities before merging.
    n_before: int = 0
    #: Grid steps between the chips that entered the tests (1: every chip; :func:`spaced_chips`).
    grid_step: int = 1
    #: How deep mixing reaches from a boundary, in grid steps: half a chip, or the deepest seam
    #: of mixtures found (:func:`depth`); 1 off a grid.
    reach: int = 1
    #: The tested pair that came closest to merging but was kept apart (ids at that moment,
    #: sizes in chips, its p-value, below ``alpha``), ``None`` when no tested pair was left.
    #: With the p-value of the last dip-test merge it is the decision's margin: both near
    #: ``alpha`` mean another seed or a slightly different image can give another count.
    closest_kept: dict | None = None

    def to_dict(self) -> dict:
        """JSON-able record for provenance."""
        return {"method": "dip-test", "rules_version": RULES_VERSION, "alpha": self.alpha, "merges": self.merges,
                "closest_kept": self.closest_kept, "grid_step": int(self.grid_step), "reach": int(self.reach),
                "n_before": int(self.n_before), "n_after": n_labels(self.labels)}


@dataclass
class Memo:
    """What decisions on the same chips' features share, so that none is computed twice: the
    runs of a consensus (:func:`multimodal_seg.graphs.communities.partition_graph`), whose
    communities recur from run to run.  Measured on a NASA EBC image (961 chips, 30 runs):
    1784 Ledoit-Wolf covariances asked for, 265 of them distinct.
    """

    #: The dip test's p-value (times the modalities), by the tested chips of the two
    #: communities (:func:`merge_indistinct`): valid for one set of features only.
    pvalues: dict[tuple[bytes, bytes], float] = field(default_factory=dict)
    #: Ledoit-Wolf covariances (:func:`shrunk_covariance`), by the modality and the chips'
    #: indices: valid for one set of features only.  Indices make a key a five-hundredth of
    #: the time a digest of the chips' values took (300 chips of 30 features: 0.3 against
    #: 146 us; the real P45 BSE + EDS run asked for 99 768 covariances).
    covariances: dict[Hashable, np.ndarray] = field(default_factory=dict)
    #: The chips' mean features, by the same keys (two means for every axis: the P45 run's
    #: 99 768 took 1.2 s computed afresh).
    means: dict[Hashable, np.ndarray] = field(default_factory=dict)

    def covariance(self, x: np.ndarray, key: Hashable) -> np.ndarray:
        """:func:`shrunk_covariance` of the chips ``x``, computed once per ``key``, the chips'
        modality and indices."""
        if key not in self.covariances:
            self.covariances[key] = shrunk_covariance(x)
        return self.covariances[key]

    def mean(self, x: np.ndarray, key: Hashable) -> np.ndarray:
        """The mean of the chips ``x`` ``(d,)``, computed once per ``key``, as for :meth:`covariance`."""
        if key not in self.means:
            self.means[key] = x.mean(axis=0)
        return self.means[key]


#: The start of each rule's recorded merge reason (the records' ``"reason"``), and how
#: :func:`describe_decision` counts that rule's merges.
DIP_TEST = "one population (dip test)"
TOO_SMALL = "too small to test"
RAMP = "continuous across their boundary"
MIXTURE = "mixture of its neighbours"
NO_INTERIOR = "no interior chip"
UNTOLD = "no modality's own partition tells them apart"
MERGE_KINDS = (
    (TOO_SMALL, "too small to test"),
    (RAMP, "cut along a ramp"),
    (MIXTURE, "a mixture of its neighbours"),
    (NO_INTERIOR, "without an interior chip"),
    (UNTOLD, "told apart by no modality alone"),
)


def decision_margin(decision: dict) -> dict[str, float | None]:
    """The margin of a recorded decision (:meth:`Decision.to_dict`, as provenance keeps it):
    ``{"alpha", "last_merged", "closest_kept"}``, p-values; ``None`` where there is none
    (records written before the closest pair was kept give ``None`` for it)."""
    merged = [m["p"] for m in decision.get("merges", []) if m.get("reason") == DIP_TEST]
    kept = decision.get("closest_kept") or {}
    return {"alpha": decision.get("alpha"), "last_merged": min(merged) if merged else None,
            "closest_kept": kept.get("p")}


def describe_decision(decision: dict) -> str:
    """One line for people on a recorded decision (:meth:`Decision.to_dict`): Leiden's count,
    the test and its margin, and how many merges each other rule made, e.g. "Leiden found 7;
    merged by the dip test at alpha 0.01 (last pair merged p = 0.0415, closest pair kept apart
    p = 0.00468); also merged: 1 without an interior chip"."""
    margin = decision_margin(decision)
    line = f"Leiden found {decision['n_before']}; merged by the dip test at alpha {margin['alpha']:g}"
    parts = [f"{label} p {format_pvalue(margin[key], relation=True)}"
             for key, label in (("last_merged", "last pair merged"), ("closest_kept", "closest pair kept apart"))
             if margin[key] is not None]
    reasons = [m.get("reason", "") for m in decision.get("merges", [])]
    others = [f"{n} {phrase}" for start, phrase in MERGE_KINDS
              if (n := sum(reason.startswith(start) for reason in reasons))]
    return (line + (f" ({', '.join(parts)})" if parts else "")
            + (f"; also merged: {', '.join(others)}" if others else ""))


def format_pvalue(p: float, *, digits: int = 3, relation: bool = False) -> str:
    """A recorded p-value for people: ``digits`` significant digits, or ``< 1e-06`` below the
    six decimals records keep (where it would read 0); ``relation=True`` prefixes ``= `` to
    a value, so that "p " + the result reads either way."""
    if p < 1e-6:
        return "< 1e-06"
    return f"{'= ' if relation else ''}{p:.{digits}g}"


def unimodality_pvalue(a: np.ndarray, b: np.ndarray, *, memo: Memo | None = None,
                       keys: tuple[Hashable, Hashable] | None = None) -> float:
    """p-value that chips ``a`` ``(n_a, d)`` and ``b`` ``(n_b, d)`` form one unimodal population.

    The dip test of their projections on a shrinkage-LDA axis separating them, the larger
    side represented by as many of its quantiles as the smaller has chips (:func:`even_quantiles`;
    see the module docstring), judged at the sample's effective size (:func:`effective_size`).
    Deterministic.  Both need at least ``MIN_TEST_CHIPS`` chips.  ``memo``: covariances
    already estimated (:class:`Memo`), found by ``keys`` (each side's modality and chip indices).
    """
    axis = discriminant_axis(a, b, memo=memo, keys=keys)
    pa, pb = a @ axis, b @ axis
    n = min(len(pa), len(pb))
    dip = diptest.dipstat(np.concatenate([even_quantiles(pa, n), even_quantiles(pb, n)]))
    return float(Consts.compute_pval_interpolation(effective_size(len(pa), len(pb)), dip))


def effective_size(n_a: int, n_b: int) -> float:
    """The number of independent chips whose empirical distribution is as noisy as that of the
    balanced union :func:`unimodality_pvalue` tests: ``4 n_a n_b / (n_a + n_b)``.

    The union's empirical distribution function is the mean of the two sides', each as noisy
    as its own chips make it (the larger side's quantiles keep its empirical distribution),
    so its variance is ``F (1 - F) (1 / n_a + 1 / n_b) / 4``; ``N`` independent chips give
    ``F (1 - F) / N``.  Equal sides: ``2 n``, the union itself; a side many times larger:
    ``4 n``, twice the chips, since half the union is then nearly free of noise.  The dip
    test's tabulated p-values at ``2 n`` instead would be far too high: under its least
    favourable null (uniform; 1000 draws each, 20-500 chips beside 2-40 times as many) the
    union rejected at the level 0.01 in 0.000-0.002 of draws where the other side was
    twice as large or more, against 0.006-0.023 at the effective size.
    """
    return 4.0 * n_a * n_b / (n_a + n_b)


def even_quantiles(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``values`` (1-D), evenly spaced in rank: the order statistics at the middle of
    ``n`` equal shares of the sorted values (all of them, sorted, when ``n`` is their number).

    A subsample with the shape of the whole: unlike a random one it adds no noise of its own
    to a test on it (the dip test's p-value for 50 chips 4 sd beside 600, 10-D, with 50 of
    the 600 drawn at random: 6e-5 to 0.06 between the 5th and 95th percentiles of draws).
    """
    ordered = np.sort(np.asarray(values))
    return ordered[((np.arange(n) + 0.5) * len(ordered) / n).astype(np.intp)]


def evenly_spread(indices: np.ndarray, at_most: int) -> np.ndarray:
    """At most ``at_most`` of ``indices``, every k-th in their order (all when they are fewer):
    chips in grid order are then spread over the whole community."""
    indices = np.asarray(indices)
    return indices[:: -(-len(indices) // at_most)] if len(indices) > at_most else indices


def discriminant_axis(a: np.ndarray, b: np.ndarray, *, memo: Memo | None = None,
                      keys: tuple[Hashable, Hashable] | None = None) -> np.ndarray:
    """Unit axis separating ``a`` from ``b``: shrinkage LDA (Ledoit-Wolf), or the mean difference
    where the covariance cannot be estimated (fewer than three chips a side).

    The LDA is scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``
    for two classes, written out from its parts (each class's Ledoit-Wolf covariance of
    standardised features, pooled by class shares; the axis solves it against the mean
    difference): the same axis to rounding, without the estimator's input checks, which
    took most of the decision's time (a fit: 5 ms in a run, 0.7 ms written out).  ``memo``:
    covariances already estimated (:class:`Memo`), found by ``keys`` (each side's modality and
    chip indices); both or neither.
    """
    if (memo is None) != (keys is None):
        raise ValueError("a memo finds covariances by their keys: give memo and keys together, or neither")
    mean_a, mean_b = (a.mean(axis=0), b.mean(axis=0)) if memo is None else (memo.mean(a, keys[0]),
                                                                             memo.mean(b, keys[1]))
    if min(len(a), len(b)) < 3:
        axis = mean_a - mean_b
    else:
        n = len(a) + len(b)
        if memo is None:
            covariances = shrunk_covariance(a), shrunk_covariance(b)
        else:
            covariances = memo.covariance(a, keys[0]), memo.covariance(b, keys[1])
        pooled = (len(a) / n) * covariances[0] + (len(b) / n) * covariances[1]
        axis = solve_covariance(pooled, mean_b - mean_a)
    norm = np.linalg.norm(axis)
    return axis / norm if norm > 0 else axis


#: Largest condition number, as the squared ratio of the Cholesky factor's largest to smallest
#: diagonal entry estimates it, at which :func:`solve_covariance` solves directly: seven
#: orders of magnitude below where least squares starts to drop directions (1 / machine
#: epsilon), so the two give one answer to rounding wherever the direct solve is used.
DIRECT_SOLVE_CONDITION = 1e8


def solve_covariance(pooled: np.ndarray, difference: np.ndarray) -> np.ndarray:
    """``pooled^-1 difference`` for a pooled covariance ``(d, d)`` and a mean difference ``(d,)``:
    the least-squares answer of scikit-learn's ``lsqr`` solver.

    Where the covariance is well conditioned (``DIRECT_SOLVE_CONDITION``) by a direct solve,
    a tenth of least squares' time at d = 30; the decisions of a consensus solve tens of
    thousands (the real P45 BSE + EDS file: 49 884 in one ``segment()``, 70.2 -> 61.5 s, the
    same labels).  Where it is near singular (both sides' covariances unshrunk and of low
    rank), by least squares, whose minimum-norm answer a direct solve would not give.
    """
    try:
        factor = np.linalg.cholesky(pooled)
    except np.linalg.LinAlgError:  # not positive definite
        factor = None
    if factor is not None:
        diagonal = np.diagonal(factor)
        if diagonal.min() > 0 and (diagonal.max() / diagonal.min()) ** 2 < DIRECT_SOLVE_CONDITION:
            return np.linalg.solve(pooled, difference)
    return scipy.linalg.lstsq(pooled, difference)[0]


def shrunk_covariance(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf covariance of ``x`` ``(n, d)`` estimated on standardised features and
    scaled back (as scikit-learn's shrinkage LDA does; constant features keep scale 1)."""
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    shrunk = ledoit_wolf_covariance((x - x.mean(axis=0)) / scale)
    return scale[:, None] * shrunk * scale[None, :]


def ledoit_wolf_covariance(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance ``(d, d)`` of samples ``x`` ``(n, d)``, ``n >= 2``: the
    empirical covariance shrunk towards ``mu I`` (``mu``: its mean variance) by the weight
    Ledoit and Wolf (2004) estimate from the data.

    scikit-learn's ``sklearn.covariance.ledoit_wolf`` step for step (the same operations in
    the same order, so the same values to the last bit on the cases tested), without its input
    checks: they took 0.8 ms of its 0.85 ms per call on 200 chips of 30 features, and the
    decisions of a consensus make thousands (6611 in ``segment()`` of the real P45 BSE + EDS
    file).  The tests hold it to scikit-learn's.
    """
    n, d = x.shape
    # centred here even where the caller centred already, as scikit-learn's estimator does:
    # skipping it changes the last bits, and the tests hold it to scikit-learn's bit for bit
    centred = x - x.mean(0)
    if d == 1:  # one feature: the same whatever the shrinkage
        return np.atleast_2d((centred ** 2).mean())
    squared = centred ** 2
    trace = np.sum(squared, axis=0) / n
    mu = np.sum(trace) / d
    beta_ = np.sum(np.dot(squared.T, squared))  # the sum of <X2.T, X2>'s coefficients
    gram = np.dot(centred.T, centred)
    delta_ = np.sum(gram ** 2) / n ** 2  # of <X.T, X>'s, squared
    beta = 1.0 / (d * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * trace.sum() + d * mu ** 2) / d
    beta = min(beta, delta)  # never shrink past the target
    shrinkage = 0 if beta == 0 else beta / delta
    empirical = gram / n
    shrunk = (1.0 - shrinkage) * empirical
    shrunk.flat[:: d + 1] += shrinkage * (np.sum(np.trace(empirical)) / d)
    return shrunk


def _between(weights: np.ndarray, merged_into: np.ndarray) -> np.ndarray:
    """Total edge weight between every pair of communities, zero diagonal, from ``weights``
    ``(k0, k0)`` between the communities before any merge (:func:`community_weights`) and
    the community each of those is now part of, ``merged_into`` ``(k0,)``: a sum over a few
    communities, where aggregating the chip graph again after every merge took a sixth of a
    decision's time."""
    members = np.zeros((merged_into.size, int(merged_into.max()) + 1))
    members[np.arange(merged_into.size), merged_into] = 1.0
    between = members.T @ weights @ members
    np.fill_diagonal(between, 0.0)
    return between


def spaced_chips(grid_shape: tuple[int, ...], step: int) -> np.ndarray:
    """Chips that enter the dip tests: those on every ``step``-th row and column of the grid.

    Parameters
    ----------
    grid_shape
        ``(rows, cols)``, or ``(frames, rows, cols)`` for frames of one grid (every frame
        keeps the same rows and columns).
    step
        Grid steps between tested chips (:attr:`multimodal_seg.chips.grid.ChipGrid.half_chip_steps`).

    Returns
    -------
    ``(n_chips,)`` bool in the grid's row-major order.
    """
    keep = np.zeros(grid_shape, dtype=bool)
    keep[..., ::step, ::step] = True
    return keep.ravel()


def merge_indistinct(features: Mapping[str, np.ndarray], labels: np.ndarray, graph: sp.csr_matrix, *,
                     alpha: float = 0.01, tested: np.ndarray | None = None,
                     memo: Memo | None = None) -> Decision:
    """Merge communities until every pair joined by the graph is two populations.

    Parameters
    ----------
    features
        ``{modality: (n_chips, d)}``: the chips in each modality's graph space (standardised
        PCA features, :func:`multimodal_seg.graphs.knn.reduce_features`).
    labels
        ``(n_chips,)`` community of each chip.
    graph
        The graph the labels were found on (the layer-weighted sum for several layers):
        only communities joined by its edges are compared.
    alpha
        Significance level of the dip test, in (0, 1): a pair stays apart when any modality
        rejects unimodality at ``alpha / n_modalities``.
    tested
        ``(n_chips,)`` bool: the chips that enter the tests (default all; :func:`spaced_chips`).
        A community with fewer than ``MIN_TEST_CHIPS`` of them is too small to test.
    memo
        What earlier decisions on the same ``features`` and ``tested`` found (:class:`Memo`),
        updated in place: the runs of a consensus share one.

    Returns
    -------
    Decision
    """
    labels = order_by_size(np.asarray(labels))
    tested = np.ones(labels.size, dtype=bool) if tested is None else np.asarray(tested, dtype=bool)
    n_before = n_labels(labels)
    merges: list[dict] = []
    closest = None
    memo = Memo() if memo is None else memo
    cache = memo.pvalues

    def pvalue(a_idx: np.ndarray, b_idx: np.ndarray) -> float:
        key = (a_idx.tobytes(), b_idx.tobytes())
        if key not in cache:
            pick = [evenly_spread(idx, MAX_TEST_CHIPS) for idx in (a_idx, b_idx)]
            cache[key] = min(unimodality_pvalue(f[pick[0]], f[pick[1]], memo=memo,
                                                keys=((name, pick[0].tobytes()), (name, pick[1].tobytes())))
                             for name, f in features.items()) * len(features)
        return min(cache[key], 1.0)

    weights = community_weights(graph, labels) if labels.size else np.zeros((0, 0))
    first_chip = np.unique(labels, return_index=True)[1]  # of each community before any merge
    while labels.size and labels.max() > 0:
        between = _between(weights, labels[first_chip])
        members = [np.flatnonzero((labels == c) & tested) for c in range(int(labels.max()) + 1)]
        candidates = []
        for a, b in zip(*np.nonzero(np.triu(between > 0))):
            small = min(len(members[a]), len(members[b])) < MIN_TEST_CHIPS
            # too small to test: merge first, with the most connected neighbour
            score = 2.0 + between[a, b] if small else pvalue(members[a], members[b])
            candidates.append((score, int(a), int(b), small))
        if not candidates:
            break
        score, a, b, small = max(candidates)
        pair = {"communities": [a, b], "sizes": [int((labels == a).sum()), int((labels == b).sum())]}
        if not small and score < alpha:
            closest = {**pair, "p": round(score, 6)}
            break
        merges.append({**pair, "p": None if small else round(score, 6),
                       "reason": TOO_SMALL if small else DIP_TEST})
        labels = order_by_size(np.where(labels == b, a, labels))
    return Decision(labels=labels, merges=merges, alpha=alpha, n_before=n_before, closest_kept=closest)


def decide_communities(features: Mapping[str, np.ndarray], labels: np.ndarray, graph: sp.csr_matrix, *,
                       alpha: float = 0.01, seed: int = 0, grid_shape: tuple[int, ...] | None = None,
                       grid_step: int = 1, memo: Memo | None = None,
                       own_partitions: Mapping[str, np.ndarray] | None = None) -> Decision:
    """The number of communities decided from the data: both rules, until neither changes anything.

    :func:`merge_indistinct` merges neighbouring communities that are one population; on a
    chip grid (``grid_shape``), :func:`dissolve_rims` then dissolves communities without an
    interior chip, and the dip test runs again on what is left, since a seam of mixed chips
    between two halves of one region can keep them apart (each half is distinct from the
    seam, and the seam sits between them).  Measured: on a gradient-family draw the halves
    of a region cut along its ramp were kept apart while their seam lay between them
    (p < 0.01) and are one population once it is dissolved (p = 0.05).

    Parameters are those of :func:`merge_indistinct` (``memo`` serves every rule);
    ``seed``: of the bootstrap of :func:`merge_continuous` (the only random step of the
    decision); ``grid_shape`` as in
    :func:`dissolve_rims` (``None``: no rims are dissolved).  ``grid_step``: half a chip in
    grid steps (what the pipeline passes; 1 at the default stride).  On a grid, only the
    chips on every ``grid_step``-th row and column enter the dip tests
    (:func:`spaced_chips`), and a community needs chips ``grid_step`` steps deep inside it
    not to be dissolved as a seam (``reach`` of :func:`dissolve_rims`).  Neighbouring chips
    of a dense grid are near-copies: tested all together they made the test see distinct
    populations in one region (the 256 px test phantom with 32 px chips every 3 px: 9-14
    communities for its 4 regions, 4 when tested every 5th chip); and a seam of mixed chips
    is as many grid steps wide as a chip straddles a boundary, so at one grid step it kept
    interior chips (a 4D-STEM phantom with 3-position chips every position: 5 seam
    communities along its boundaries).

    Seams that :func:`dissolve_mixtures` finds also say how deep mixing reaches in these
    data (a probe wider than the scan step mixes over several positions): from then on a
    community needs chips deeper than the deepest such seam (:func:`depth`) not to be
    dissolved as one, since it is no thicker than what the data resolve.  On the
    ``thickness`` family this dissolved the last community of seams (between different
    pairs around a region, so no mixture of one pair): 5 -> 4 communities in 19 of 20 draws.

    Once neither changes anything, :func:`merge_continuous` merges neighbours whose
    features run on across their boundary (one region cut along a ramp), and the rules
    run again.  Last, for a joint partition (``own_partitions``: each modality's own
    partition of the same chips), :func:`merge_untold` merges the communities that no
    modality's own partition tells apart, and the dip tests run once more on what is left.

    Returns
    -------
    Decision
        Every merge of the rules in order; ``n_before`` is Leiden's count.
    """
    tested = spaced_chips(grid_shape, grid_step) if grid_shape is not None else None
    memo = Memo() if memo is None else memo
    result = merge_indistinct(features, labels, graph, alpha=alpha, tested=tested, memo=memo)
    merges, labels, closest = list(result.merges), result.labels, result.closest_kept
    reach = grid_step  # how deep a seam can be; mixtures found in the data show it deeper
    while grid_shape is not None:
        while True:
            labels, rims = dissolve_rims(labels, graph, grid_shape, reach=reach)
            labels, mixed = dissolve_mixtures(features, labels, grid_shape, alpha=alpha)
            reach = max([reach, *(record["depth"] for record in mixed)])
            rims += mixed
            if not rims:
                break
            again = merge_indistinct(features, labels, graph, alpha=alpha, tested=tested, memo=memo)
            merges += rims + again.merges
            labels, closest = again.labels, again.closest_kept
            if not again.merges and not mixed:  # (a mixture found may have deepened the reach)
                break
        # seams gone, halves of one region cut along a ramp touch: one continuum
        labels, continuous = merge_continuous(features, labels, grid_shape, alpha=alpha, seed=seed,
                                              step=grid_step, memo=memo)
        if not continuous:
            break
        again = merge_indistinct(features, labels, graph, alpha=alpha, tested=tested, memo=memo)
        merges += continuous + again.merges
        labels, closest = again.labels, again.closest_kept
    if own_partitions:
        labels, untold = merge_untold(labels, own_partitions)
        if untold:  # the pairs left are tested again: which one came closest to merging now
            again = merge_indistinct(features, labels, graph, alpha=alpha, tested=tested, memo=memo)
            merges += untold + again.merges
            labels, closest = again.labels, again.closest_kept
    return Decision(labels=labels, merges=merges, alpha=alpha, n_before=result.n_before,
                    grid_step=grid_step if grid_shape is not None else 1,
                    reach=reach if grid_shape is not None else 1, closest_kept=closest)


def merge_untold(labels: np.ndarray, own_partitions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[dict]]:
    """Merge the communities of a joint partition that no modality's own partition tells apart.

    A joint community and another whose chips fall mostly in the same community of every
    modality's own partition (:func:`multimodal_seg.graphs.labels.community_groups`) differ
    in nothing any modality shows alone.  The dip tests of the joint partition can still keep
    them apart: they look at a split the joint graph made, and a split of one modality's
    population that its own decision merged can read as two modes once the joint graph has
    cut it (a noisy image under an intensity gradient, whose matrix the joint partition cut
    in two along the ramp; docs/design.md).  Complementary modalities are untouched: each
    pair of regions that only fusion finds is told apart by one modality or the other.

    Parameters
    ----------
    labels
        ``(n_chips,)`` the joint partition's communities.
    own_partitions
        ``{modality: (n_chips,) labels}``: each modality's own partition of the same chips.

    Returns
    -------
    The labels (ordered by size) and one record per merge, the smaller community into the
    larger, until every pair is told apart by some modality.
    """
    labels = order_by_size(np.asarray(labels))
    records: list[dict] = []
    while labels.size:
        n = n_labels(labels)
        groups = np.stack([community_groups(labels, own, n) for own in own_partitions.values()], axis=1)
        _, first, which = np.unique(groups, axis=0, return_index=True, return_inverse=True)
        which = which.ravel()
        into = first[which]  # each community's largest look-alike (labels are ordered by size)
        if np.all(into == np.arange(n)):
            break
        for c in np.flatnonzero(into != np.arange(n)):
            records.append({"communities": [int(into[c]), int(c)],
                            "sizes": [int((labels == into[c]).sum()), int((labels == c).sum())], "p": None,
                            "reason": UNTOLD})
        labels = order_by_size(into[labels])
    return labels, records


def neighbour_pairs(grid_shape: tuple[int, ...], step: int = 1) -> np.ndarray:
    """``(n_pairs, 2)`` chips ``step`` grid steps apart along a row or a column (row-major
    indices; ``grid_shape`` ``(rows, cols)`` or ``(frames, rows, cols)``, pairs within frames)."""
    index = np.arange(int(np.prod(grid_shape))).reshape(grid_shape)
    down = np.stack([index[..., :-step, :].ravel(), index[..., step:, :].ravel()], axis=1)
    right = np.stack([index[..., :, :-step].ravel(), index[..., :, step:].ravel()], axis=1)
    return np.concatenate([down, right])


def grid_neighbours(labels: np.ndarray) -> np.ndarray:
    """``(n, n)`` bool: which communities touch on the chip grid (up, down, left, right).

    ``labels`` is ``(rows, cols)`` or ``(frames, rows, cols)`` (neighbours within each
    frame), with ``n = labels.max() + 1``.
    """
    labels = np.asarray(labels)
    n = n_labels(labels)
    touch = np.zeros((n, n), dtype=bool)
    ends = labels.ravel()[neighbour_pairs(labels.shape)]
    ends = ends[ends[:, 0] != ends[:, 1]]
    touch[ends[:, 0], ends[:, 1]] = True
    touch[ends[:, 1], ends[:, 0]] = True
    return touch


def _mixture_of(chips: list[np.ndarray], means: list[np.ndarray], c: int, touch: np.ndarray,
                alpha: float) -> dict | None:
    """The pair of grid neighbours community ``c`` is a mixture of, or ``None`` (see
    :func:`dissolve_mixtures`); ``chips[k]`` are community ``k``'s chips' features
    ``(n_k, d)`` and ``means[k]`` their mean."""
    own = chips[c]
    best = None
    for a in np.flatnonzero(touch[c]):
        for b in np.flatnonzero(touch[c]):
            if b <= a or len(own) >= max(len(chips[a]), len(chips[b])):
                continue
            line = means[b] - means[a]
            length2 = float(line @ line)
            if length2 <= 0:
                continue
            t = float((means[c] - means[a]) @ line / length2)
            offset = float(np.linalg.norm(means[c] - means[a] - t * line) / np.sqrt(length2))
            if not (MIXTURE_MIDDLE[0] < t < MIXTURE_MIDDLE[1] and offset < MIXTURE_OFFSET):
                continue
            # spread along the line: a continuum of mixtures, not one population between them
            unit = line / np.sqrt(length2)
            along_c = (own - means[a]) @ unit
            along_ends = np.concatenate([(chips[a] - means[a]) @ unit, (chips[b] - means[b]) @ unit])
            p = float(levene(along_c, along_ends, center="median").pvalue)
            if along_c.var() <= along_ends.var() or p >= alpha:
                continue
            if best is None or offset < best["offset"]:
                best = {"a": int(a), "b": int(b), "t": t, "offset": offset, "p": p,
                        "fraction": (own - means[a]) @ line / length2}
    return best


def _size_biased_median(steps: np.ndarray) -> np.ndarray:
    """Median of each row of ``steps`` (``(..., n)``, >= 0) weighted by the steps themselves."""
    ordered = np.sort(steps, axis=-1)
    total = np.cumsum(ordered, axis=-1)
    at = (total < total[..., -1:] / 2).sum(axis=-1, keepdims=True)
    return np.take_along_axis(ordered, np.minimum(at, ordered.shape[-1] - 1), axis=-1)[..., 0]


def step_ratio(projection: np.ndarray, labels: np.ndarray, pairs: np.ndarray, a: int, b: int,
               rng: np.random.Generator, *, level: float) -> float | None:
    """Upper ``1 - level`` bootstrap bound of how much more the features step across the
    boundary of communities ``a`` and ``b`` than noise straddling a cut would.

    ``projection`` ``(n_chips,)`` is the chips' position on an axis separating the two,
    ``pairs`` the grid's neighbour pairs (:func:`neighbour_pairs`).  The steps across the
    boundary (from ``a``'s chip to ``b``'s, ``b`` the higher side) are compared with the
    steps between neighbours inside either community.  If the two are one smooth field cut
    in two (a region under a thickness ramp, cut along it), a pair of neighbours straddles
    the cut with a probability proportional to its step, so the steps across are the steps
    inside weighted by their size: the ratio of the median step across to the size-weighted
    median step inside is then about 1.  Across an edge between two materials the field
    jumps, and the ratio is the jump over the noise.  ``None`` when fewer than
    ``MIN_TEST_CHIPS`` pairs cross the boundary or lie inside.
    """
    ends = labels[pairs]
    cross = pairs[((ends[:, 0] == a) & (ends[:, 1] == b)) | ((ends[:, 0] == b) & (ends[:, 1] == a))]
    inside = pairs[(ends[:, 0] == ends[:, 1]) & np.isin(ends[:, 0], [a, b])]
    if len(cross) < MIN_TEST_CHIPS or len(inside) < MIN_TEST_CHIPS:
        return None
    p = projection if projection[labels == b].mean() >= projection[labels == a].mean() else -projection
    on_a = labels[cross[:, 0]] == a
    across = np.where(on_a, p[cross[:, 1]] - p[cross[:, 0]], p[cross[:, 0]] - p[cross[:, 1]])
    noise = np.abs(p[inside[:, 0]] - p[inside[:, 1]])
    resampled_across = across[rng.integers(0, len(across), (STEP_RESAMPLES, len(across)))]
    resampled_noise = noise[rng.integers(0, len(noise), (STEP_RESAMPLES, len(noise)))]
    scale = _size_biased_median(resampled_noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(scale > 0, np.median(resampled_across, axis=1) / scale, np.inf)
    return float(np.quantile(ratios, 1.0 - level))


def jump_share(projection: np.ndarray, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               a: int, b: int) -> float:
    """Share of the difference between communities ``a`` and ``b`` that is a jump at their
    boundary rather than a slow trend through both.

    A regression-discontinuity fit over the chips of both: ``projection ~ 1 + row + col +
    [chip in b]`` (grid positions ``rows``, ``cols``); the share is the indicator's
    coefficient over the difference of the communities' means.  About 1 for two flat
    materials (the whole difference is the edge), near 0 for one region under a linear
    ramp cut in two (the trend explains the difference).
    """
    both = np.flatnonzero((labels == a) | (labels == b))
    in_b = (labels[both] == b).astype(np.float64)
    design = np.column_stack([np.ones(both.size), rows[both], cols[both], in_b])
    coef, *_ = np.linalg.lstsq(design, projection[both], rcond=None)
    gap = projection[labels == b].mean() - projection[labels == a].mean()
    return float(coef[3] / gap) if gap != 0 else 1.0


def _continuity(features: Mapping[str, np.ndarray], labels: np.ndarray, pairs: np.ndarray, rows: np.ndarray,
                cols: np.ndarray, tested: np.ndarray, a: int, b: int, rng: np.random.Generator, *,
                level: float, memo: Memo) -> tuple[float, float] | None:
    """``(step ratio bound, jump share)`` of the pair, the largest over the modalities that
    see two populations in it, when every one of them sees continuity; else ``None``."""
    judged = []
    picks = [evenly_spread(np.flatnonzero((labels == c) & tested), MAX_TEST_CHIPS) for c in (a, b)]
    testable = min(len(x) for x in picks) >= MIN_TEST_CHIPS
    members = [np.flatnonzero(labels == c) for c in (a, b)]
    for name, f in features.items():
        if testable and unimodality_pvalue(f[picks[0]], f[picks[1]], memo=memo,
                                           keys=tuple((name, x.tobytes()) for x in picks)) > level:
            continue  # one population in this modality: it sees no edge here
        projection = f @ discriminant_axis(f[members[0]], f[members[1]], memo=memo,
                                           keys=tuple((name, x.tobytes()) for x in members))
        share = jump_share(projection, labels, rows, cols, a, b)
        if share > JUMP_SHARE:  # an edge: no need for the bootstrap (the pair's own rng, so
            return None          # skipping it changes no other test)
        bound = step_ratio(projection, labels, pairs, a, b, rng, level=level)
        if bound is None or bound > CONTINUITY_MARGIN:
            return None
        judged.append((bound, share))
    return (max(x[0] for x in judged), max(x[1] for x in judged)) if judged else None


def merge_continuous(features: Mapping[str, np.ndarray], labels: np.ndarray, grid_shape: tuple[int, ...], *,
                     alpha: float = 0.01, seed: int = 0, step: int = 1,
                     memo: Memo | None = None) -> tuple[np.ndarray, list[dict]]:
    """Merge neighbouring communities whose features run on continuously across their boundary.

    A slow thickness or intensity ramp across a region makes its chips a plateau in feature
    space that modularity cuts in two along the ramp; where noise is low, or the region's
    shape puts its two sides at two heights of the ramp (an annulus), the dip test sees two
    modes.  What tells them from two materials is the boundary: across an edge between
    materials the features jump, across a cut through a ramp they step no more than
    neighbours inside do, and the difference between the two sides is the trend running
    through both.  Each pair of communities that touch on the chip grid is projected on the
    axis separating them (per modality) and merged when, in every modality, both hold:

    * the upper bound of :func:`step_ratio` is at most ``CONTINUITY_MARGIN`` (level
      ``alpha``, Bonferroni over the modalities): no larger step across than noise gives;
    * :func:`jump_share` is at most ``JUMP_SHARE``: most of their difference is a trend
      through both, not the edge.  Alone, the first also took weak edges in noise for
      continuity (two flat materials whose difference is about the noise).

    A modality in which the pair is one population (dip test, as in :func:`merge_indistinct`)
    sees no edge and has no say: the HAADF image of a specimen whose EELS is cut along a
    thickness ramp does not tell the two halves apart, and its projection on their axis is
    noise.

    The most continuous pair goes first, one at a time.  Measured on the phantom families
    (docs/design.md): the two halves of regions cut along a ramp bound at 0.76-1.94 with
    shares 0.20-0.48; pairs of different regions that passed the first condition had
    shares 0.76-1.0.  Too few pairs across a boundary (a corner contact) is no evidence of
    continuity, and the pair stays apart.

    Parameters
    ----------
    features, alpha, memo
        As in :func:`merge_indistinct`.
    seed
        Seed of the bootstrap of :func:`step_ratio` (drawn per pair from ``[seed, a, b]``).
    labels
        ``(n_chips,)`` in the grid's row-major order.
    grid_shape
        ``(rows, cols)`` or ``(frames, rows, cols)`` (pairs within frames).
    step
        Grid steps between the neighbours compared (half a chip: 1 at the default stride).

    Returns
    -------
    The labels (ordered by size) and one record per merge.
    """
    labels = np.asarray(labels)
    pairs = neighbour_pairs(grid_shape, step)
    rows, cols = np.unravel_index(np.arange(labels.size), grid_shape)[-2:]
    tested = spaced_chips(grid_shape, step)
    level = alpha / max(len(features), 1)
    memo = Memo() if memo is None else memo
    records: list[dict] = []
    cache: dict[tuple[bytes, bytes], tuple[float, float] | None] = {}
    while labels.size and labels.max() > 0:
        touch = grid_neighbours(labels.reshape(grid_shape))
        best = None
        for a, b in zip(*np.nonzero(np.triu(touch))):
            key = ((labels == a).tobytes(), (labels == b).tobytes())
            if key not in cache:
                cache[key] = _continuity(features, labels, pairs, rows, cols, tested, int(a), int(b),
                                         np.random.default_rng([seed, int(a), int(b)]), level=level,
                                         memo=memo)
            if cache[key] is None:
                continue
            bound, share = cache[key]
            if best is None or bound < best[0]:
                best = (bound, share, int(a), int(b))
        if best is None:
            break
        bound, share, a, b = best
        records.append({"communities": [a, b], "sizes": [int((labels == a).sum()), int((labels == b).sum())],
                        "p": None, "step_ratio": round(bound, 3), "jump_share": round(share, 3),
                        "reason": f"{RAMP} (features step {bound:.2f} times what "
                                  f"noise straddling a cut does, at most; the jump there is {max(share, 0.0):.0%} of "
                                  "their difference, the rest a slow trend): one region cut along a ramp"})
        labels = order_by_size(np.where(labels == b, a, labels))
    return labels, records


def depth(mask: np.ndarray) -> int:
    """How many grid steps the chips of ``mask`` (``(rows, cols)`` or ``(frames, rows, cols)``
    bool) reach into it at most: 1 for a community one chip thick, 2 for three chips ..."""
    from scipy import ndimage

    frames = np.asarray(mask, dtype=bool).reshape(-1, *np.shape(mask)[-2:])
    # pad with "outside", so that the grid's edge bounds a community like a neighbour would
    return max((int(ndimage.distance_transform_cdt(np.pad(f, 1), metric="taxicab").max()) for f in frames),
               default=0)


def dissolve_mixtures(features: Mapping[str, np.ndarray] | None, labels: np.ndarray,
                      grid_shape: tuple[int, ...], *, alpha: float = 0.01) -> tuple[np.ndarray, list[dict]]:
    """Dissolve communities of chips that are mixtures of two neighbouring communities.

    Where the probe or the chip covers two regions, the signal is a mixture of theirs,
    and such chips can form a community of their own that the dip test rightly keeps
    apart (a mixture is distinct from both sides); :func:`dissolve_rims` removes it when it
    is thinner than a chip, but a probe wider than the scan step makes seams several
    positions wide (4D-STEM at one position per chip: 3-4 seams along the boundaries of
    every draw of the ``thickness`` phantom family).  A community C is a mixture of A and B
    when all of these hold:

    * C touches both on the chip grid and is smaller than the larger of them;
    * C's mean lies between theirs: on the line through their means, in the middle half of
      the segment (``MIXTURE_MIDDLE``), and off that line by less than a third of its
      length (``MIXTURE_OFFSET``) in the modalities' concatenated graph features;
    * C's chips spread along that line more than A's and B's do around their own means
      (Brown-Forsythe test at ``alpha``): a continuum of mixing fractions, not a
      population of its own that happens to lie between (a layer of intermediate
      composition spreads no more than its neighbours and is kept).

    Each chip of C joins A or B, whichever its own mixing fraction (its projection on the
    line) is nearer.  All mixtures of a partition go at once (nearest their lines first; one
    whose ends go in the same pass waits for the next), then the partition is examined
    again, until none is left.

    Returns
    -------
    The labels (ordered by size) and one record per dissolved community.
    """
    if not features:
        return np.asarray(labels), []
    x = np.concatenate([np.asarray(f, dtype=np.float64) for f in features.values()], axis=1)
    labels = np.asarray(labels)
    records: list[dict] = []
    while True:
        n = n_labels(labels)
        if n < 3:
            break
        touch = grid_neighbours(labels.reshape(grid_shape))
        chips = [x[labels == k] for k in range(n)]  # once per pass: every test reads them
        means = [group.mean(axis=0) for group in chips]
        found = [(c, m) for c in range(n) if (m := _mixture_of(chips, means, c, touch, alpha)) is not None]
        if not found:
            break
        # every mixture of this partition at once (nearest its line first), except one whose
        # ends are dissolved in this pass or that is an end of another: seams between
        # different pairs are independent, but each one absorbed widens its ends
        dissolved: set[int] = set()
        ends: set[int] = set()
        out = labels.copy()
        for c, mix in sorted(found, key=lambda item: item[1]["offset"]):
            if c in ends or {mix["a"], mix["b"]} & dissolved:
                continue
            dissolved.add(c)
            ends |= {mix["a"], mix["b"]}
            records.append({"communities": [int(c), mix["a"], mix["b"]],
                            "sizes": [int((labels == k).sum()) for k in (c, mix["a"], mix["b"])], "p": mix["p"],
                            "depth": depth(labels.reshape(grid_shape) == c),
                            "reason": f"{MIXTURE} {mix['a']} and {mix['b']} (mean at "
                                      f"{mix['t']:.2f} of the way between theirs, {mix['offset']:.2f} off "
                                      "their line; spread along it): each chip joins the nearer"})
            out[labels == c] = np.where(mix["fraction"] < 0.5, mix["a"], mix["b"])
        labels = order_by_size(out)
    return labels, records


def interior_chips(labels: np.ndarray, reach: int = 1) -> np.ndarray:
    """Bool of ``labels``' shape: chips whose grid neighbours up to ``reach`` steps up, down,
    left and right (those that exist) all carry their own label.

    ``labels`` is ``(rows, cols)``, or ``(frames, rows, cols)`` for frames of one chip grid:
    neighbours are then taken within each frame.
    """
    labels = np.asarray(labels)
    inside = np.ones(labels.shape, dtype=bool)
    for d in range(1, int(reach) + 1):
        inside[..., d:, :] &= labels[..., d:, :] == labels[..., :-d, :]
        inside[..., :-d, :] &= labels[..., :-d, :] == labels[..., d:, :]
        inside[..., :, d:] &= labels[..., :, d:] == labels[..., :, :-d]
        inside[..., :, :-d] &= labels[..., :, :-d] == labels[..., :, d:]
    return inside


def dissolve_rims(labels: np.ndarray, graph: sp.csr_matrix, grid_shape: tuple[int, ...], *,
                  reach: int = 1) -> tuple[np.ndarray, list[dict]]:
    """Dissolve communities that have no interior chip: mixed chips along boundaries.

    A chip that straddles two regions embeds as neither, and such chips can form a
    community of their own that the dip test keeps apart (a mixture is distinct from both
    sides).  A community in which *every* chip has a chip of another community within
    ``reach`` grid steps is nowhere ``2 reach + 1`` grid steps thick; with ``reach`` half a
    chip in grid steps (what the pipeline passes: 1 at the default stride of half a chip),
    that is nowhere 1.5 chips thick, and it cannot be told from a seam of mixed chips at
    this chip size.  Each of its chips joins
    the community (with an interior) it is most strongly connected to in ``graph``; chips
    with no edge to one take, in turn, the label their neighbours in the graph now carry
    most (the largest community if none ever does).

    Parameters
    ----------
    labels
        ``(n_chips,)`` community of each chip, in the grid's row-major order.
    graph
        ``(n_chips, n_chips)`` the graph the labels were found on.
    grid_shape
        ``(rows, cols)`` of the chip grid, ``rows * cols == n_chips``; or ``(frames, rows,
        cols)`` for the chips of several frames of one grid, frame after frame (a series):
        a community needs an interior chip in some frame.
    reach
        Grid steps a chip's own community must extend in every direction for the chip to
        be interior (:func:`interior_chips`).

    Returns
    -------
    The labels (ordered by size) and one record per dissolved community.
    """
    labels = np.asarray(labels)
    if labels.size != int(np.prod(grid_shape)):
        raise ValueError(f"{labels.size} labels for a chip grid of {grid_shape}")
    n = n_labels(labels)
    inside = interior_chips(labels.reshape(grid_shape), reach).ravel()
    rims = [c for c in range(n) if not inside[labels == c].any()]
    if not rims or len(rims) == n:
        return labels, []
    records = [{"communities": [int(c)], "sizes": [int((labels == c).sum())], "p": None,
                "reason": f"{NO_INTERIOR} (mixed chips along boundaries): each chip joins the "
                          "community it is most connected to"} for c in rims]
    out = labels.copy()
    pending = np.isin(out, rims)
    out[pending] = -1
    graph = graph.tocsr()
    while pending.any():
        member = sp.csr_matrix((np.ones(int((~pending).sum())), (out[~pending], np.flatnonzero(~pending))),
                               shape=(n, labels.size))
        weights = (graph[pending] @ member.T).toarray()  # pending chips x communities
        linked = weights.max(axis=1) > 0
        if not linked.any():
            out[pending] = np.bincount(out[~pending], minlength=n).argmax()
            break
        rows = np.flatnonzero(pending)[linked]
        out[rows] = weights[linked].argmax(axis=1)
        pending[rows] = False
    return order_by_size(out), records
