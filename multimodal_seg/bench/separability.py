"""The ``separability`` part of ``mmseg bench``: are a labelled set's classes two populations at all?

The project decides the number of communities from the data (:mod:`multimodal_seg.graphs.decide`):
two neighbouring communities stay apart only where their chips, projected on the
discriminant axis between them, form two modes (Hartigan's dip test at ``alpha``).  The
peers of the SEM sets are told the number of classes and need no such evidence.  This part
puts the project's own question to the *truth*:

* the chips lying (at least :data:`PURE` of their pixels) in each of the image's two largest
  true classes are taken from the run's own embeddings (``segment()`` with the default
  encoder, in the graph's standardised PCA space, :class:`~multimodal_seg.graphs.knn.FeatureReducer`),
  and :func:`~multimodal_seg.graphs.decide.unimodality_pvalue` is asked whether they are one
  population.  Its axis is fitted on the true classes, the most favourable axis there is, so
  where it finds one population (``p >= alpha``) no partition that decides its number of
  regions from modes in these features keeps the two classes apart at that chip size;
* the same question of image-shaped regions: the segments and features of the
  ``felzenszwalb-kmeans`` peer (:func:`multimodal_seg.bench.peers.felzenszwalb_kmeans`), whose
  segments follow the image's edges rather than a grid;
* the chip-level ceiling: the pixel ARI of the truth's own chip majorities painted back
  (:func:`multimodal_seg.bench.quality.chip_ceiling`), the best any partition of those chips can
  score before boundary refinement, at the run's chip sizes and at :data:`SCALES`;
* at :data:`SCALES`, what the chips' grey level alone gives a method *told* the number of
  classes: k-means of the chips' mean intensities, painted back (:func:`told_intensity`).

Why classes a peer separates can be one population: two equally weighted normal populations of
equal spread form one mode unless their means lie more than two standard deviations apart.  A
test of modes then sees one region; k-means told that there are two splits the cloud anyway.
:data:`CHIP_FACTORS` spans the chips the project could use, from half the automatic size to the
automatic size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..chips.grid import ChipGrid
from ..config import SegmentConfig
from ..graphs.decide import MIN_TEST_CHIPS, unimodality_pvalue
from ..graphs.knn import FeatureReducer
from ..metrics import adjusted_rand
from .chip_scale import chip_sizes
from .quality import chip_ceiling

#: A chip or segment belongs to a class when at least this share of its pixels does.
PURE = 0.9
#: Chip sizes asked about besides the automatic one, as multiples of it (the smallest of the
#: ``chip_scale`` part's range: finer chips hold more pure chips of a small class).
CHIP_FACTORS = (0.5,)
#: Chip sizes (px, stride half a chip) of the ceiling and of :func:`told_intensity`, which need no run.
SCALES = (8, 16, 32, 64)
#: Level at which two classes count as two populations: the default decision's ``alpha``.
ALPHA = SegmentConfig().communities.alpha


def window_means(values: np.ndarray, grid: ChipGrid) -> np.ndarray:
    """Mean of ``values`` (``(rows, cols)`` on the grid's image) over each chip: ``(n_chips,)``
    float64, row-major.  Of a boolean mask: each chip's share of pixels where it is true."""
    total = np.pad(np.asarray(values, dtype=np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = grid.origins[:, 0], grid.origins[:, 1]
    s = grid.size
    return (total[r + s, c + s] - total[r, c + s] - total[r + s, c] + total[r, c]) / float(s * s)


def largest_classes(truth: np.ndarray, n: int = 2) -> list[int]:
    """The ``n`` true classes with the most pixels, largest first (negative labels ignored)."""
    values = np.asarray(truth).ravel()
    counts = np.bincount(values[values >= 0])
    return [int(c) for c in np.argsort(-counts, kind="stable")[:n] if counts[c] > 0]


def populations_test(features: np.ndarray, shares: Sequence[np.ndarray]) -> dict[str, Any]:
    """The project's one-population test between the items pure in each of two classes.

    Parameters
    ----------
    features
        ``(n_items, d)`` features of chips or segments.
    shares
        Two ``(n_items,)`` arrays: each item's share of pixels in class A and in class B.

    Returns
    -------
    dict
        ``pure``: items pure (>= :data:`PURE`) in each class; ``p``: the p-value of
        :func:`~multimodal_seg.graphs.decide.unimodality_pvalue` (``None`` when either class has
        fewer than ``MIN_TEST_CHIPS`` pure items, too few to test); ``two_populations``:
        ``p < ALPHA`` (``None`` untested).
    """
    pure = [np.asarray(s) >= PURE for s in shares]
    counts = [int(p.sum()) for p in pure]
    if min(counts) < MIN_TEST_CHIPS:
        return {"pure": counts, "p": None, "two_populations": None}
    p = unimodality_pvalue(features[pure[0]], features[pure[1]])
    return {"pure": counts, "p": float(p), "two_populations": bool(p < ALPHA)}


def chip_separability(image: np.ndarray, truth: np.ndarray, n_classes: int, *, chip: int | None,
                      seed: int = 0) -> dict[str, Any]:
    """The one-population test of the two largest classes on the chips of one ``segment()`` run.

    ``chip``: chip size (px), ``None`` for the automatic one.  Returns the grid's ``chip`` and
    ``stride`` (px), the chip-level ceiling's pixel ``ceiling_ari``, and
    :func:`populations_test`'s keys.
    """
    from ..pipeline.segment import segment

    # Only the chips' embeddings are used: no decision, refinement or placement is needed.
    seg = segment(image, chip_size=chip, decide="none", refine=1, place_positions=False, seed=seed,
                  progress=False)
    grid = seg.grid
    # the graph's space: image encoders' features are standardised, then the default PCA
    features = FeatureReducer(n_pcs=SegmentConfig().graph.n_pcs, seed=seed).fit_transform(np.asarray(seg.embeddings))
    classes = largest_classes(truth)
    shares = [window_means(truth == c, grid) for c in classes]
    ceiling = chip_ceiling(truth, n_classes, grid)["pixel"]["ari"]
    return {"chip": grid.size, "stride": grid.stride, "classes": classes, "ceiling_ari": float(ceiling),
            **populations_test(features, shares)}


def told_intensity(image: np.ndarray, truth: np.ndarray, n_classes: int, chip: int, *,
                   seed: int = 0) -> dict[str, Any]:
    """On a grid of ``chip`` px chips (stride half a chip): the ceiling's pixel ``ceiling_ari``, and
    the pixel ARI of k-means told ``n_classes`` on the chips' mean intensities, painted back
    (``intensity_kmeans_ari``): what grey level at that scale gives a method told the number."""
    from sklearn.cluster import KMeans

    grid = ChipGrid(shape=truth.shape, size=chip, stride=max(1, chip // 2))
    means = window_means(image, grid)[:, None]
    labels = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(means)
    return {"chip": chip, "ceiling_ari": float(chip_ceiling(truth, n_classes, grid)["pixel"]["ari"]),
            "intensity_kmeans_ari": adjusted_rand(grid.chip_labels_to_pixels(labels.reshape(grid.grid_shape)), truth)}


def segment_separability(image: np.ndarray, truth: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The one-population test of the two largest classes on the ``felzenszwalb-kmeans`` peer's
    segments and features (mean, spread and gradient of the scaled intensity), standardised."""
    from .peers import felzenszwalb_segments, superpixel_features

    unit, segments = felzenszwalb_segments(image)
    index, features = superpixel_features(unit, segments)
    n = features.shape[0]
    features = (features - features.mean(0)) / np.where(features.std(0) > 0, features.std(0), 1.0)
    classes = largest_classes(truth)
    size = np.bincount(index.ravel(), minlength=n)
    shares = [np.bincount(index.ravel(), (truth == c).ravel(), n) / size for c in classes]
    return {"segments": n, "classes": classes, **populations_test(features, shares)}


def separability(image: np.ndarray, truth: np.ndarray, n_classes: int, *,
                 factors: Sequence[float] = CHIP_FACTORS, seed: int = 0) -> dict[str, Any]:
    """Every test of this module on one labelled image.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image.
    truth
        ``(rows, cols)`` class map (negative: unlabelled).
    n_classes
        The set's number of classes (for the ceiling's scores).
    factors
        Chip sizes besides the automatic one, as multiples of it (at least
        :data:`~multimodal_seg.bench.chip_scale.MIN_CHIP` px, at most the image's shorter side).

    Returns
    -------
    dict
        ``chips``: one :func:`chip_separability` row per chip size, ascending, the automatic
        one marked ``auto``; ``segments``: :func:`segment_separability`; ``scales``:
        :func:`told_intensity` at each of :data:`SCALES` that fits in the image.
    """
    image = np.asarray(image, dtype=np.float32)
    truth = np.asarray(truth)
    auto = chip_separability(image, truth, n_classes, chip=None, seed=seed) | {"auto": True}
    sizes = chip_sizes(auto["chip"], factors, min(image.shape))
    rows = [auto] + [chip_separability(image, truth, n_classes, chip=s, seed=seed) | {"auto": False}
                     for s in sizes if s != auto["chip"]]
    return {"chips": sorted(rows, key=lambda r: r["chip"]), "segments": segment_separability(image, truth, seed=seed),
            "scales": [told_intensity(image, truth, n_classes, s, seed=seed) for s in SCALES if s <= min(image.shape)]}
