"""Peer baselines: how users of other tools would segment the same data.

``mmseg bench`` scores the project's segmentations against these peers on the same
images and spectrum images, with the true number of classes given to the peers as
``n_clusters`` (the project finds its number of communities itself).  The HyperSpy
routes also run *without* that number (``n_clusters=None``): HyperSpy's own estimate,
:meth:`~hyperspy.signal.BaseSignal.estimate_number_of_clusters` with the gap statistic,
decides it, as a user who does not know it would do.  Each peer is
what a careful user of a widely used package would write in a few lines, with the
package's documented defaults wherever they make sense for electron-microscopy data
and a stated reason wherever they do not.  All peers are deterministic for a given
``seed`` and return int32 labels ``0 .. k - 1`` (``k <= n_clusters``), ``0`` for the
largest cluster (in pixels, scan positions or, for the chip route, chips), as the
project's own communities are numbered.

Peers
-----
:func:`slic_kmeans`
    Superpixels, then k-means on superpixel statistics.  The grey image is scaled to
    ``[0, 1]`` between its 1st and 99th percentiles (so a few hot pixels do not squash
    the contrast), cut into superpixels by :func:`skimage.segmentation.slic`
    (``channel_axis=None``), and every superpixel is described by three numbers: its
    mean intensity, its intensity standard deviation and its mean gradient magnitude
    (:func:`skimage.filters.sobel`, a texture measure).  The features are standardised
    (:class:`sklearn.preprocessing.StandardScaler`) and clustered by
    :class:`sklearn.cluster.KMeans`; each pixel takes its superpixel's cluster.
:func:`felzenszwalb_kmeans`
    The same with :func:`skimage.segmentation.felzenszwalb` graph-based segments
    instead of SLIC superpixels.
:func:`hyperspy_kmeans_image`
    The HyperSpy user's route for an image: cut it into chips on the project's own
    chip grid (:class:`multimodal_seg.chips.grid.ChipGrid`), stack them as a
    :class:`hyperspy.signals.Signal2D` whose navigation grid is the chip grid, run
    :meth:`~hyperspy.signal.BaseSignal.decomposition` (SVD, HyperSpy's default), then
    :meth:`~hyperspy.signal.BaseSignal.cluster_analysis` on the decomposition loadings
    with a seeded :class:`sklearn.cluster.KMeans`, and paint the chip clusters back to
    pixels with :meth:`~multimodal_seg.chips.grid.ChipGrid.chip_labels_to_pixels` (the
    project's majority vote).
:func:`hyperspy_kmeans_spectrum`
    The standard EELS/EDS route: a :class:`hyperspy.signals.Signal1D` spectrum image,
    ``decomposition(normalize_poissonian_noise=True)``, ``cluster_analysis``
    (``"decomposition"``, k-means), one label per scan position.

With ``n_clusters=None`` both HyperSpy routes first call
``estimate_number_of_clusters("decomposition", metric="gap", algorithm="kmeans",
max_clusters=10)`` (HyperSpy's defaults, a seeded k-means, the same components and
preprocessing as the clustering) and cluster into the number it returns.  HyperSpy's
gap rule takes the first ``k`` with ``gap(k) >= gap(k + 1) - s(k + 1)`` for ``k`` from
2 to ``max_clusters - 1`` (2 when no ``k`` qualifies), against a reference spread evenly
over the range of every feature, so the estimate lies in ``2 .. max_clusters - 1``.

Choices a fair user would make
------------------------------
* **Superpixel size.**  ``slic_kmeans`` asks for about one superpixel per chip of the
  project's automatic chip size (:func:`default_chip`: about 16 chips across the shorter
  side, at least 32 px and 2.5 lattice periods), so both methods look at regions of the same size;
  ``felzenszwalb_kmeans`` forbids segments smaller than ``(chip / 2)**2`` px, the size
  of the blocks the project paints with its default stride of half a chip.
* **SLIC compactness** ``0.1``: scikit-image's default of 10 is meant for CIELAB colour
  (L in 0-100); on a grey image scaled to ``[0, 1]`` the same balance between intensity
  and distance is 10 / 100.
* **Smoothing** ``sigma = 1`` px for both superpixel methods: a Gaussian of one pixel
  suppresses shot noise without blurring region boundaries (scikit-image's defaults,
  0 for SLIC and 0.8 for Felzenszwalb, assume photographs without shot noise).
* **Felzenszwalb scale** ``100``: the value scikit-image's own examples use for float
  images in ``[0, 1]``.
* **k-means**: ``n_init=10`` restarts with ``random_state=seed`` everywhere.
* **Number of decomposition components** (HyperSpy peers): ``None`` uses HyperSpy's
  own estimate, the elbow of the scree plot
  (``learning_results.number_significant_components``), which is also what
  ``cluster_analysis`` does when the user gives no number.
* **Poisson normalisation**: on for spectrum images, off for images.  HyperSpy's
  ``normalize_poissonian_noise`` assumes the values are counted electrons or X-rays.
  EELS and EDS spectrum images are; image intensities in general are not (a HAADF
  detector signal is amplified and offset, PNG/TIFF grey levels are rescaled), so the
  image route leaves it off by default (pass ``normalize_poissonian_noise=True`` for
  counting images).  The phantom HAADF images happen to be counts, and the option
  changes their scores only slightly.
* **Cluster preprocessing**: ``"norm"`` (HyperSpy's default, each loading vector
  scaled to length 1) for spectra, where the sample thickness scales every spectrum
  and should not decide the cluster; ``"standard"`` (each component scaled to unit
  variance) for image chips, where the overall intensity is the Z-contrast, the very
  signal that tells the phases apart, and must not be normalised away.

HyperSpy's informational printing is switched off (``print_info=False``) and its
warnings are silenced while the peers run; no global HyperSpy preference is changed.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chips.grid import ChipGrid
from ..errors import InputError, ParameterError

__all__ = [
    "ChipClusters",
    "default_chip",
    "felzenszwalb_kmeans",
    "hyperspy_kmeans_image",
    "hyperspy_kmeans_spectrum",
    "MAX_CLUSTERS",
    "robust_unit_scale",
    "slic_kmeans",
    "superpixel_features",
]

#: k-means restarts (fixed, so results depend only on ``seed``).
N_INIT = 10
#: Largest number of clusters HyperSpy's gap estimate tries (its own default).
MAX_CLUSTERS = 10
#: Percentiles (low, high) that :func:`robust_unit_scale` maps to 0 and 1.
SCALE_PERCENTILES = (1.0, 99.0)
_PREPROCESSING = ("standard", "norm", "minmax", None)


# --------------------------------------------------------------------------- validation


def _check_n_clusters(n_clusters: Any) -> int:
    """A given number of clusters (the superpixel peers always need one)."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ParameterError(
            f"n_clusters must be a positive integer, got {n_clusters!r}",
            fix="pass the number of classes to find, e.g. n_clusters=4",
            where="n_clusters",
        )
    return int(n_clusters)


def _check_estimate(n_clusters: Any, max_clusters: Any) -> tuple[int | None, int | None]:
    """``(n_clusters, max_clusters)`` of a HyperSpy route: a given number, or ``None`` and
    the largest number the gap estimate may try (``max_clusters`` only applies then)."""
    if n_clusters is not None:
        if max_clusters is not None:
            raise ParameterError(
                f"max_clusters={max_clusters!r} only applies when the number of clusters is estimated",
                fix="pass n_clusters=None to estimate it, or leave max_clusters out", where="max_clusters")
        return _check_n_clusters(n_clusters), None
    if max_clusters is None:
        return None, MAX_CLUSTERS
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, (int, np.integer)) or max_clusters < 3:
        raise ParameterError(f"max_clusters must be an integer >= 3, got {max_clusters!r}",
                             fix="e.g. max_clusters=10 (HyperSpy's default); with 2 its gap rule always answers 2",
                             where="max_clusters")
    return None, int(max_clusters)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ParameterError(
            f"seed must be an integer in [0, 2**32), got {seed!r}",
            fix="pass e.g. seed=0",
            where="seed",
        )
    return int(seed)


def _check_positive(value: Any, name: str, fix: str, *, integer: bool = False, zero_ok: bool = False) -> Any:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(float(value))
    if not ok or (value < 0 if zero_ok else value <= 0):
        what = "integer" if integer else "number"
        sign = "non-negative" if zero_ok else "positive"
        raise ParameterError(f"{name} must be a {sign} {what}, got {value!r}", fix=fix, where=name)
    return int(value) if integer else float(value)


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ParameterError(
            f"{name} must be a 2-D grey image (rows, cols), got an array of shape {arr.shape}",
            fix="pass one grey image; convert colour images to grey and select one frame of a stack",
            where=name,
        )
    if min(arr.shape) < 2:
        raise ParameterError(
            f"{name} of shape {arr.shape} is too small to segment",
            fix="pass an image of at least 2 x 2 pixels",
            where=name,
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name} has dtype {arr.dtype}, not real numbers",
                         fix="pass a real-valued (integer or float) image", where=name)
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(
            f"{name} contains NaN or infinite values",
            fix="replace them first, e.g. np.nan_to_num(image, nan=np.nanmedian(image))",
            where=name,
        )
    return arr


def _check_preprocessing(preprocessing: Any) -> str | None:
    if preprocessing not in _PREPROCESSING:
        raise ParameterError(
            f"preprocessing must be one of {_PREPROCESSING}, got {preprocessing!r}",
            fix="use 'norm' (HyperSpy's default), 'standard', 'minmax' or None",
            where="preprocessing",
        )
    return preprocessing


def _check_n_components(n_components: Any) -> int | None:
    if n_components is None:
        return None
    return _check_positive(
        n_components, "n_components",
        "pass a positive number of decomposition components, or None for HyperSpy's elbow estimate",
        integer=True,
    )


# --------------------------------------------------------------------------- shared helpers


def default_chip(image: np.ndarray) -> int:
    """The chip edge (pixels) that the project's ``segment()`` picks for ``image``.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image.

    Returns
    -------
    int
        About 16 chips across the shorter side, at least 32 px and at least 2.5 periods of
        the image's longest lattice repeat where it shows one, at most the shorter side
        (:func:`multimodal_seg.chips.sizing.auto_image_chip`).
    """
    from ..chips.sizing import auto_image_chip
    from ..chips.texture import image_lattice

    return auto_image_chip(image.shape, image_lattice(image).repeat)


def robust_unit_scale(image: np.ndarray, percentiles: tuple[float, float] = SCALE_PERCENTILES) -> np.ndarray:
    """Map an image linearly so its low/high percentiles go to 0/1, clipping outside.

    Parameters
    ----------
    image
        ``(rows, cols)`` intensities, any unit (counts, grey levels).
    percentiles
        ``(low, high)`` percentiles mapped to 0 and 1.

    Returns
    -------
    np.ndarray
        ``(rows, cols)`` float64 in ``[0, 1]`` (dimensionless).  A constant image (or
        one whose percentiles coincide) falls back to min/max scaling, and to all zeros
        if the image is constant.
    """
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, percentiles)
    if not hi > lo:
        lo, hi = float(img.min()), float(img.max())
    if not hi > lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def superpixel_features(unit: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-superpixel mean intensity, intensity standard deviation and mean gradient.

    Parameters
    ----------
    unit
        ``(rows, cols)`` image scaled to ``[0, 1]`` (dimensionless).
    segments
        ``(rows, cols)`` integer superpixel ids (any values).

    Returns
    -------
    index
        ``(rows, cols)`` int64: each pixel's superpixel as a row index ``0 .. n - 1``
        into ``features``.
    features
        ``(n, 3)`` float64: mean intensity, standard deviation of the intensity, and
        mean Sobel gradient magnitude (:func:`skimage.filters.sobel`), all in units of
        the scaled image.
    """
    from skimage.filters import sobel

    _, index = np.unique(np.asarray(segments).ravel(), return_inverse=True)
    index = index.reshape(segments.shape)
    n = int(index.max()) + 1
    flat = index.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    mean = np.bincount(flat, unit.ravel(), n) / count
    mean_sq = np.bincount(flat, (unit * unit).ravel(), n) / count
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    gradient = np.bincount(flat, sobel(unit).ravel(), n) / count
    return index, np.stack([mean, std, gradient], axis=1)


def _largest_first(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``0 .. k - 1`` by decreasing size (ties: lower old label first); int32."""
    values, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    new = np.empty(len(values), dtype=np.int32)
    new[order] = np.arange(len(values), dtype=np.int32)
    return new[inverse].reshape(labels.shape)


def _kmeans(features: np.ndarray, n_clusters: int, seed: int, *, what: str) -> np.ndarray:
    """Standardise ``(n, d)`` features and k-means them; ``(n,)`` labels.

    With fewer samples than clusters every sample is its own cluster (with a warning):
    the peer then simply finds fewer classes, which the benchmark scores as such.
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    n = len(features)
    if n <= n_clusters:
        if n < n_clusters:
            warnings.warn(
                f"{what} found: {n}, fewer than n_clusters={n_clusters}; each is its own cluster",
                UserWarning,
                stacklevel=4,
            )
        return np.arange(n)
    scaled = StandardScaler().fit_transform(features)
    with warnings.catch_warnings():
        # Fewer distinct feature vectors than clusters (e.g. a constant image).
        warnings.simplefilter("ignore", category=Warning)
        return KMeans(n_clusters=n_clusters, n_init=N_INIT, random_state=seed).fit_predict(scaled)


def _cluster_superpixels(unit: np.ndarray, segments: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    index, features = superpixel_features(unit, segments)
    labels = _kmeans(features, n_clusters, seed, what="superpixels")
    return _largest_first(np.asarray(labels)[index])


# --------------------------------------------------------------------------- superpixel peers


def slic_kmeans(
    image: np.ndarray,
    n_clusters: int,
    *,
    n_segments: int | None = None,
    compactness: float = 0.1,
    sigma: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """SLIC superpixels clustered by k-means on their intensity and texture statistics.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image, any intensity unit (counts, grey levels).
    n_clusters
        Number of classes to find (the benchmark passes the true number).
    n_segments
        Approximate number of SLIC superpixels.  ``None``: one per chip of the
        project's automatic chip size, ``rows * cols / default_chip(image)**2``, so the
        superpixels are about as large as the project's chips.
    compactness
        SLIC's balance of intensity against distance for the image scaled to ``[0, 1]``
        (scikit-image's default of 10 for CIELAB's 0-100 lightness, divided by 100).
        Larger values give squarer superpixels.
    sigma
        Width (pixels) of the Gaussian that smooths the image before SLIC.
    seed
        Seed of k-means.  SLIC itself is deterministic.

    Returns
    -------
    np.ndarray
        ``(rows, cols)`` int32 labels ``0 .. k - 1``, ``k <= n_clusters``, 0 the largest.

    Raises
    ------
    ParameterError
        For ``n_clusters < 1``, an image that is not 2-D, or non-positive
        ``n_segments``/``compactness`` or negative ``sigma``.
    InputError
        For an image with NaN/inf values.
    """
    from skimage.segmentation import slic

    n_clusters = _check_n_clusters(n_clusters)
    seed = _check_seed(seed)
    img = _check_image(image)
    if n_segments is None:
        n_segments = max(1, round(img.size / default_chip(img) ** 2))
    n_segments = _check_positive(n_segments, "n_segments",
                                 "pass a positive number of superpixels, or None for one per chip",
                                 integer=True)
    compactness = _check_positive(compactness, "compactness",
                                  "use a positive compactness, e.g. 0.1 for an image scaled to [0, 1]")
    sigma = _check_positive(sigma, "sigma", "use a smoothing width >= 0 px, e.g. 1", zero_ok=True)
    unit = robust_unit_scale(img)
    segments = slic(unit, n_segments=n_segments, compactness=compactness, sigma=sigma,
                    channel_axis=None, start_label=0)
    return _cluster_superpixels(unit, segments, n_clusters, seed)


def felzenszwalb_kmeans(
    image: np.ndarray,
    n_clusters: int,
    *,
    scale: float = 100.0,
    sigma: float = 1.0,
    min_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segments clustered by k-means on their statistics.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image, any intensity unit.
    n_clusters
        Number of classes to find.
    scale
        Felzenszwalb's observation scale for the image scaled to ``[0, 1]`` (larger:
        larger segments); 100 as in scikit-image's examples.
    sigma
        Width (pixels) of the Gaussian that smooths the image before segmenting.
    min_size
        Smallest segment (pixels).  ``None``: ``(default_chip(image) // 2)**2``, the
        block the project paints with its default stride of half a chip.
    seed
        Seed of k-means.  The segmentation itself is deterministic.

    Returns
    -------
    np.ndarray
        ``(rows, cols)`` int32 labels ``0 .. k - 1``, ``k <= n_clusters``, 0 the largest.
        When Felzenszwalb finds fewer segments than ``n_clusters``, each segment is its
        own class (``k`` < ``n_clusters``) and a :class:`UserWarning` says so; lower
        ``scale`` or ``min_size`` to get more segments.

    Raises
    ------
    ParameterError
        For ``n_clusters < 1``, an image that is not 2-D, non-positive ``scale`` or
        ``min_size``, or negative ``sigma``.
    InputError
        For an image with NaN/inf values.
    """
    n_clusters = _check_n_clusters(n_clusters)
    seed = _check_seed(seed)
    unit, segments = felzenszwalb_segments(image, scale=scale, sigma=sigma, min_size=min_size)
    return _cluster_superpixels(unit, segments, n_clusters, seed)


def felzenszwalb_segments(image: np.ndarray, *, scale: float = 100.0, sigma: float = 1.0,
                          min_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The segments :func:`felzenszwalb_kmeans` clusters (its parameters, checked the same way).

    Returns the image scaled to ``[0, 1]`` (:func:`robust_unit_scale`) and the ``(rows, cols)``
    integer segment map.  Raises :class:`ParameterError` or :class:`InputError` as
    :func:`felzenszwalb_kmeans` does.
    """
    from skimage.segmentation import felzenszwalb

    img = _check_image(image)
    scale = _check_positive(scale, "scale", "use a positive scale, e.g. 100 (larger: larger segments)")
    sigma = _check_positive(sigma, "sigma", "use a smoothing width >= 0 px, e.g. 1", zero_ok=True)
    if min_size is None:
        min_size = max(1, default_chip(img) // 2) ** 2
    min_size = _check_positive(min_size, "min_size",
                               "pass the smallest segment in pixels, or None for a quarter chip",
                               integer=True)
    unit = robust_unit_scale(img)
    return unit, felzenszwalb(unit, scale=scale, sigma=sigma, min_size=min_size, channel_axis=None)


# --------------------------------------------------------------------------- HyperSpy peers


@dataclass(frozen=True)
class ChipClusters:
    """Result of :func:`hyperspy_kmeans_image`.

    Attributes
    ----------
    chip_labels
        ``grid.grid_shape`` int32: the cluster of each chip, ``0 .. k - 1``, 0 the
        cluster with the most chips.
    pixel_labels
        ``(rows, cols)`` int32: each pixel's cluster by majority vote of the chips covering
        it (:meth:`multimodal_seg.chips.grid.ChipGrid.chip_labels_to_pixels`); the same ids as
        ``chip_labels`` (with overlapping chips, 0 need not be the largest in pixels).
    grid
        The chip grid (chip edge and stride in pixels).
    n_components
        Number of decomposition components that were clustered (0 when there were no
        more chips than clusters, so that each chip is its own cluster).
    n_clusters
        The number of clusters asked of k-means: the one given, or HyperSpy's gap
        estimate when none was.
    """

    chip_labels: np.ndarray
    pixel_labels: np.ndarray
    grid: ChipGrid
    n_components: int
    n_clusters: int


@contextmanager
def _quiet_hyperspy() -> Iterator[None]:
    """Silence HyperSpy's warnings and log messages below ERROR, restoring them afterwards."""
    logger = logging.getLogger("hyperspy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _hyperspy_cluster(
    signal: Any,
    n_clusters: int | None,
    *,
    n_components: int | None,
    preprocessing: str | None,
    poissonian: bool,
    seed: int,
    max_clusters: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """Decompose and cluster a HyperSpy signal, estimating the number of clusters if ``None``.

    Returns ``(navigation_size,)`` labels (navigation positions in the data's row-major
    order), the number of components clustered (0 when there were no more positions
    than clusters, so each position is its own cluster, with a warning) and the
    number of clusters asked of k-means.
    """
    from sklearn.cluster import KMeans

    n_nav = int(signal.axes_manager.navigation_size)
    if poissonian and float(np.min(signal.data)) < 0:
        raise InputError(
            "normalize_poissonian_noise needs counts, but the data contain negative values",
            fix="pass raw counts (no background subtraction), or normalize_poissonian_noise=False",
            where="normalize_poissonian_noise",
        )
    if n_clusters is None:
        # k-means needs more positions than clusters; the gap rule needs 3 numbers to try.
        max_clusters = min(int(max_clusters or MAX_CLUSTERS), n_nav - 1)
        if max_clusters < 3:
            warnings.warn(f"positions (chips or scan points): {n_nav}, too few to estimate the number of "
                          "clusters; each is its own cluster", UserWarning, stacklevel=3)
            return np.arange(n_nav), 0, n_nav
    elif n_nav <= n_clusters:
        if n_nav < n_clusters:
            warnings.warn(f"positions (chips or scan points): {n_nav}, fewer than n_clusters={n_clusters}; "
                          "each is its own cluster", UserWarning, stacklevel=3)
        return np.arange(n_nav), 0, n_nav
    with _quiet_hyperspy():
        signal.decomposition(normalize_poissonian_noise=poissonian, algorithm="SVD", print_info=False)
        results = signal.learning_results
        n_available = int(results.loadings.shape[1])
        if n_components is None:
            estimate = results.number_significant_components
            n_components = int(estimate) if estimate else min(n_clusters or 2, n_available)
        n_components = max(1, min(int(n_components), n_available))
        if n_clusters is None:
            # HyperSpy's gap statistic with a seeded k-means (it runs one k-means per k).
            n_clusters = int(signal.estimate_number_of_clusters(
                "decomposition", max_clusters=max_clusters, preprocessing=preprocessing,
                number_of_components=n_components, algorithm="kmeans", metric="gap",
                show_progressbar=False, random_state=seed))
        signal.cluster_analysis(
            "decomposition",
            number_of_components=n_components,
            preprocessing=preprocessing,
            algorithm=KMeans(n_clusters=n_clusters, n_init=N_INIT, random_state=seed),
        )
    # cluster_labels: (n_clusters, navigation_size) booleans, one row per cluster,
    # navigation positions in the data's row-major (C) order.
    one_hot = np.asarray(signal.learning_results.cluster_labels, dtype=bool)
    return one_hot.argmax(axis=0), n_components, n_clusters


def hyperspy_kmeans_image(
    image: np.ndarray,
    n_clusters: int | None,
    *,
    chip: int,
    stride: int | None = None,
    n_components: int | None = None,
    preprocessing: str | None = "standard",
    normalize_poissonian_noise: bool = False,
    max_clusters: int | None = None,
    seed: int = 0,
) -> ChipClusters:
    """Cluster image chips with HyperSpy's decomposition and cluster analysis.

    The chips are cut on :class:`multimodal_seg.chips.grid.ChipGrid` ``(image.shape, chip,
    stride)`` and stacked into a ``Signal2D`` of navigation shape ``grid_shape`` and
    signal shape ``(chip, chip)``; SVD decomposition, k-means on the first
    ``n_components`` loadings, chip clusters painted back to pixels by majority vote.
    The chip stack is held in memory as float32: ``n_chips * chip**2 * 4`` bytes (about
    4x the image with the default 50 % overlap), plus HyperSpy's float64 copy for the SVD.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image, any intensity unit.
    n_clusters
        Number of classes to find; ``None``: HyperSpy's gap estimate decides it.
    chip
        Chip edge in pixels (``<= min(rows, cols)``); give the project's chip size for a
        like-for-like comparison (:func:`default_chip` for its automatic size).
    stride
        Step between chips in pixels, ``1 .. chip``.  ``None``: ``chip // 2``, the
        project's default 50 % overlap.
    n_components
        Decomposition components given to the clustering.  ``None``: HyperSpy's elbow
        estimate ``learning_results.number_significant_components``.
    preprocessing
        HyperSpy's cluster preprocessing: ``"standard"`` (default here: keeps the chips'
        overall intensity, i.e. the Z-contrast, as a feature), ``"norm"`` (HyperSpy's
        default), ``"minmax"`` or ``None``.
    normalize_poissonian_noise
        Weight the decomposition for Poisson noise; only for images in counted
        electrons (off by default: most image intensities are not counts).
    max_clusters
        With ``n_clusters=None``: the largest number the gap estimate tries
        (default :data:`MAX_CLUSTERS`, HyperSpy's own).
    seed
        Seed of k-means (and of the gap estimate's k-means).

    Returns
    -------
    ChipClusters
        Chip labels ``grid_shape``, pixel labels ``(rows, cols)`` (both int32,
        ``0 .. k - 1``, ``k <= n_clusters``), the grid, the components used and the
        number of clusters (given or estimated).

    Raises
    ------
    ParameterError
        For ``n_clusters < 1``, an image that is not 2-D, a chip larger than the image,
        a stride outside ``1 .. chip``, ``n_components < 1``, an unknown
        ``preprocessing``, ``max_clusters < 3``, or ``max_clusters`` with a given
        ``n_clusters``.
    InputError
        For NaN/inf values, or negative values with ``normalize_poissonian_noise``.
    """
    import hyperspy.api as hs

    n_clusters, max_clusters = _check_estimate(n_clusters, max_clusters)
    seed = _check_seed(seed)
    img = _check_image(image)
    chip = _check_positive(chip, "chip", "pass the chip edge in pixels, e.g. chip=32", integer=True)
    if stride is None:
        stride = max(1, chip // 2)
    stride = _check_positive(stride, "stride", "pass a stride between 1 px and the chip size, or None",
                             integer=True)
    n_components = _check_n_components(n_components)
    preprocessing = _check_preprocessing(preprocessing)
    if chip > min(img.shape):
        raise ParameterError(
            f"chip {chip} px is larger than the image ({img.shape[0]} x {img.shape[1]} px)",
            fix=f"use chip <= {min(img.shape)} px, e.g. default_chip(image) = {default_chip(img)}",
            where="chip",
        )
    if stride > chip:
        raise ParameterError(
            f"stride {stride} px is larger than the chip ({chip} px), so pixels between chips get no label",
            fix="use a stride between 1 px and the chip size, or None for half a chip",
            where="stride",
        )
    grid = ChipGrid((int(img.shape[0]), int(img.shape[1])), chip, stride)
    # float32 halves the memory of the (overlapping, so duplicated) chip stack.
    stack = np.stack([img[r:r + chip, c:c + chip] for r, c in grid.origins]).astype(np.float32)
    signal = hs.signals.Signal2D(stack.reshape(*grid.grid_shape, chip, chip))
    labels, used, k = _hyperspy_cluster(signal, n_clusters, n_components=n_components,
                                        preprocessing=preprocessing, poissonian=bool(normalize_poissonian_noise),
                                        seed=seed, max_clusters=max_clusters)
    chip_labels = _largest_first(np.asarray(labels).reshape(grid.grid_shape))
    pixel_labels = grid.chip_labels_to_pixels(chip_labels).astype(np.int32)
    return ChipClusters(chip_labels=chip_labels, pixel_labels=pixel_labels, grid=grid, n_components=used,
                        n_clusters=k)


def hyperspy_kmeans_spectrum(
    spectrum_image: np.ndarray,
    n_clusters: int | None,
    *,
    n_components: int | None = None,
    preprocessing: str | None = "norm",
    normalize_poissonian_noise: bool = True,
    max_clusters: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Cluster an EELS/EDS spectrum image the standard HyperSpy way.

    ``Signal1D(spectrum_image)``, ``decomposition(normalize_poissonian_noise=True)``
    (SVD), ``cluster_analysis("decomposition", ...)`` with a seeded k-means.

    Parameters
    ----------
    spectrum_image
        ``(rows, cols, channels)`` counts per energy channel (numpy or dask; it is read
        into memory and never modified).
    n_clusters
        Number of classes to find; ``None``: HyperSpy's gap estimate decides it.
    n_components
        Decomposition components given to the clustering.  ``None``: HyperSpy's elbow
        estimate ``learning_results.number_significant_components``.
    preprocessing
        HyperSpy's cluster preprocessing: ``"norm"`` (HyperSpy's default: every loading
        vector scaled to length 1, so the local thickness does not decide the cluster),
        ``"standard"``, ``"minmax"`` or ``None``.
    normalize_poissonian_noise
        Weight the decomposition for Poisson noise (needs non-negative counts).
    max_clusters
        With ``n_clusters=None``: the largest number the gap estimate tries
        (default :data:`MAX_CLUSTERS`, HyperSpy's own).
    seed
        Seed of k-means (and of the gap estimate's k-means).

    Returns
    -------
    np.ndarray
        ``(rows, cols)`` int32 labels per scan position, ``0 .. k - 1``,
        ``k <= n_clusters``, 0 the largest (with ``n_clusters=None``, ``k`` is the
        estimate).

    Raises
    ------
    ParameterError
        For ``n_clusters < 1``, data that are not 3-D, ``n_components < 1``, an
        unknown ``preprocessing``, ``max_clusters < 3``, or ``max_clusters`` with a
        given ``n_clusters``.
    InputError
        For NaN/inf values, or negative values with ``normalize_poissonian_noise``.
    """
    import hyperspy.api as hs

    n_clusters, max_clusters = _check_estimate(n_clusters, max_clusters)
    seed = _check_seed(seed)
    n_components = _check_n_components(n_components)
    preprocessing = _check_preprocessing(preprocessing)
    shape = tuple(getattr(spectrum_image, "shape", np.shape(spectrum_image)))
    if len(shape) != 3:
        raise ParameterError(
            f"spectrum_image must be 3-D (rows, cols, channels), got shape {shape}",
            fix="pass a spectrum image with two scan axes and the energy axis last",
            where="spectrum_image",
        )
    if min(shape) < 1 or shape[2] < 2:
        raise ParameterError(
            f"spectrum_image of shape {shape} has no scan positions or fewer than 2 channels",
            fix="pass at least one scan position with 2 or more energy channels",
            where="spectrum_image",
        )
    data = np.array(spectrum_image, dtype=np.float64)  # a copy: HyperSpy works in place
    if not np.isfinite(data).all():
        raise InputError("spectrum_image contains NaN or infinite values",
                         fix="replace them first, e.g. np.nan_to_num(si)", where="spectrum_image")
    signal = hs.signals.Signal1D(data)
    labels, _, _ = _hyperspy_cluster(signal, n_clusters, n_components=n_components,
                                     preprocessing=preprocessing, poissonian=bool(normalize_poissonian_noise),
                                     seed=seed, max_clusters=max_clusters)
    return _largest_first(np.asarray(labels).reshape(shape[:2]))
