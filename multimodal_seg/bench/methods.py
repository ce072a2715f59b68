"""The segmentation methods the benchmark compares: the project's and its peers'.

Every method maps ``(image, n_classes, seed)`` to an :class:`Outcome`; ``image`` is a
``(rows, cols)`` float32 grey image, ``n_classes`` the number of classes of the set
(given to the peers, which need it; the project finds its number of communities
itself).

Project methods (``segment()``, seeded, no progress bars):

``mmseg-default``
    Everything at its default (``encoder="auto"``).
``mmseg-resolution-0.5``, ``mmseg-merge-0.5``, ``mmseg-single-run``, ``mmseg-refine-4``
    Candidate "best settings": a coarser Leiden resolution, merging of
    well-connected communities, one Leiden run (the default keeps the most
    representative of 30), or boundaries refined to a quarter stride.  The report names, per set, the best project
    method; choosing it on the same images is optimistic, and the report says so.
``resnet50-random``
    The paper's pipeline with an untrained ResNet50 (``weights="random"``, ``layer4``,
    no resize, non-overlapping chips of the automatic size): what the pipeline gives
    without pretrained weights.

Peers told the number of classes (:mod:`multimodal_seg.bench.peers`, listed in
:data:`TOLD`): ``hyperspy-kmeans`` (chips, SVD, k-means on the loadings),
``slic-kmeans`` and ``felzenszwalb-kmeans`` (superpixels, k-means on their
statistics).

Peers not told it:

``hyperspy-gap``
    The HyperSpy chip route with HyperSpy's gap-statistic estimate of the number of
    clusters (``n_clusters=None``).
``graphem``
    PNNL's GraphEM recipe (:mod:`multimodal_seg.bench.graphem`) on the project's own
    chip embeddings of the image, at every cutoff of :data:`graphem.CUTOFFS` and with
    both feature variants: its :class:`Outcome` carries one labelling per setting
    (``variants``, named ``graphem-<features> c=<cutoff>``), each scored on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..chips.grid import ChipGrid
from ..pipeline.study import Study
from ..result import Segmentation
from . import graphem, peers


@dataclass
class Outcome:
    """What a method produced on one image.

    Attributes
    ----------
    pixel_labels
        ``(rows, cols)`` integer labels; ``-1`` for pixels left unlabelled.
    seconds
        Wall time of the method, s.
    detail
        Facts worth keeping (encoder used, number of communities ...).
    variants
        For a method run at several settings at once (``graphem``'s cutoffs):
        ``{setting name: (rows, cols) labels}``, each scored as a method of its own;
        then ``pixel_labels`` is unused (empty).
    """

    pixel_labels: np.ndarray
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, np.ndarray] = field(default_factory=dict)


Method = Callable[[np.ndarray, int, int], Outcome]


def default_grid(image: np.ndarray) -> ChipGrid:
    """The chip grid ``segment()`` uses by default for ``image`` (``(rows, cols)``)."""
    size = peers.default_chip(image)
    return ChipGrid(tuple(image.shape), size, max(1, size // 2))


def run_project(sources: Any, *, seed: int = 0, **options: Any) -> tuple[Segmentation, Study]:
    """``segment(sources, seed=seed, **options)`` on an in-memory study, returning the study too.

    The same plan -> run -> collect that :func:`multimodal_seg.segment` is made of (so the
    same labels), for peers that work on the project's own chips and embeddings.
    """
    from ..config import load_config, with_overrides
    from ..pipeline.segment import plan, run
    from ..pipeline.stages import collect

    study = Study.open(None)
    run(plan(sources, with_overrides(load_config(None), seed=seed, **options)), study, progress=False)
    return collect(study), study


def _project(**kwargs: Any) -> Method:
    def run(image: np.ndarray, n_classes: int, seed: int) -> Outcome:
        from ..pipeline.segment import segment

        options = dict(kwargs)
        if options.pop("stride_is_chip", False):
            options["stride"] = default_grid(image).size
        start = time.perf_counter()
        seg = segment(image, seed=seed, progress=False, **options)
        return Outcome(seg.pixel_labels, time.perf_counter() - start,
                       {"encoder": seg.provenance["encoder_choice"], "n_communities": seg.n_communities,
                        "chip": seg.grid.size, "stride": seg.grid.stride})
    return run


def _peer(fn: Callable[..., Any], **kwargs: Any) -> Method:
    def run(image: np.ndarray, n_classes: int, seed: int) -> Outcome:
        start = time.perf_counter()
        result = fn(image, n_classes, seed=seed, **kwargs)
        labels = getattr(result, "pixel_labels", result)
        return Outcome(np.asarray(labels), time.perf_counter() - start,
                       {"n_communities": int(np.unique(labels[labels >= 0]).size)})
    return run


def _hyperspy_image(image: np.ndarray, n_classes: int | None, *, seed: int) -> Any:
    grid = default_grid(image)
    return peers.hyperspy_kmeans_image(image, n_classes, chip=grid.size, stride=grid.stride, seed=seed)


def _hyperspy_gap(image: np.ndarray, n_classes: int, seed: int) -> Outcome:
    start = time.perf_counter()
    result = _hyperspy_image(image, None, seed=seed)  # not told n_classes
    return Outcome(result.pixel_labels, time.perf_counter() - start,
                   {"n_communities": int(np.unique(result.pixel_labels).size), "estimated_k": result.n_clusters})


def graphem_variant(features: str, cutoff: float) -> str:
    """The name of one GraphEM setting: ``graphem-<features> c=<cutoff>``."""
    return f"graphem-{features} c={cutoff:g}"


def _graphem(image: np.ndarray, n_classes: int, seed: int) -> Outcome:
    start = time.perf_counter()
    _, study = run_project(image, seed=seed)  # the project's chips and embeddings of the image
    variants = {graphem_variant(p.features, p.cutoff): p.scan_labels for p in graphem.sweep(study, seed=seed)}
    return Outcome(np.empty((0, 0), np.int32), time.perf_counter() - start, {}, variants)


#: name -> (description, method, is the project's).
METHODS: dict[str, tuple[str, Method, bool]] = {
    "mmseg-default": ("project defaults", _project(), True),
    "mmseg-resolution-0.5": ("project, Leiden resolution 0.5", _project(resolution=0.5), True),
    "mmseg-merge-0.5": ("project, merge communities with connectivity > 0.5", _project(merge=0.5), True),
    "mmseg-single-run": ("project, one Leiden run instead of the most representative of 30",
                         _project(consensus=0), True),
    "mmseg-refine-1": ("project, boundaries where the chips place them (refine=1)", _project(refine=1), True),
    "mmseg-refine-4": ("project, boundaries refined to a quarter stride (refine=4)", _project(refine=4), True),
    "resnet50-random": ("paper's pipeline, untrained ResNet50 (layer4, chips of the auto size, no overlap)",
                        _project(encoder="resnet50", weights="random", stride_is_chip=True, refine=1,
                                 config={"encoder": {"options": {"resize": None, "layer": "layer4"}}}),
                        False),
    "hyperspy-kmeans": ("HyperSpy: chips, SVD decomposition, cluster_analysis (k-means)",
                        _peer(_hyperspy_image), False),
    "slic-kmeans": ("scikit-image SLIC superpixels + k-means", _peer(peers.slic_kmeans), False),
    "felzenszwalb-kmeans": ("scikit-image Felzenszwalb segments + k-means",
                            _peer(peers.felzenszwalb_kmeans), False),
    "hyperspy-gap": ("HyperSpy: chips, SVD, estimate_number_of_clusters(metric='gap'), cluster_analysis (k-means)",
                     _hyperspy_gap, False),
    "graphem": ("PNNL GraphEM recipe on the project's chip embeddings: cosine similarity >= c, Louvain "
                f"(c swept over {', '.join(f'{c:g}' for c in graphem.CUTOFFS)}; raw and reduced features)",
                _graphem, False),
}
#: Peers given the true number of classes (the others, and the project, find it themselves).
TOLD = frozenset({"hyperspy-kmeans", "slic-kmeans", "felzenszwalb-kmeans"})
#: Methods of a quick run.
QUICK_METHODS = ("mmseg-default", "mmseg-single-run", "resnet50-random", "hyperspy-kmeans",
                 "slic-kmeans", "felzenszwalb-kmeans", "hyperspy-gap", "graphem")
