"""How steady a method's segmentation is: across seeds and under small perturbations.

All agreements are pixel-level adjusted Rand indices between two segmentations of
the same specimen (no truth needed):

* **seeds**: every pair among segmentations with different seeds of the same image;
* **noise**: the image plus Gaussian noise of ``noise`` times its robust range
  (99th minus 1st percentile), against the clean image (same seed);
* **shift**: the image shifted by half a chip along both axes (its first
  ``chip // 2`` rows and columns cut off), against the unshifted segmentation on the
  common area, so chip boundaries fall in new places.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np

from ..metrics import adjusted_rand

#: Gaussian noise added in the noise test, as a fraction of the robust intensity range.
NOISE_FRACTION = 0.05


def seed_agreement(segment: Callable[[np.ndarray, int], np.ndarray], image: np.ndarray,
                   seeds: list[int]) -> dict:
    """Pairwise ARI between segmentations of ``image`` with each seed.

    ``segment(image, seed)`` returns ``(rows, cols)`` labels.  Returns the pairs, their
    minimum and mean, and each seed's number of communities (labels ``>= 0``).
    """
    labels = {s: segment(image, s) for s in seeds}
    pairs = [{"seeds": [a, b], "ari": adjusted_rand(labels[a], labels[b])}
             for a, b in combinations(seeds, 2)]
    values = [p["ari"] for p in pairs]
    return {"pairs": pairs, "min": float(min(values)), "mean": float(np.mean(values)),
            "n_communities": [int(np.unique(labels[s][labels[s] >= 0]).size) for s in seeds]}


def perturbation_agreement(segment: Callable[[np.ndarray, int], np.ndarray], image: np.ndarray,
                           chip: int, *, seed: int = 0, noise: float = NOISE_FRACTION) -> dict:
    """ARI of the clean segmentation with a noisy one and with a half-chip-shifted one.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image.
    chip
        Chip size of the method, px (the shift is ``chip // 2`` px per axis).
    noise
        Gaussian noise sigma as a fraction of the 1st-99th percentile range.
    """
    clean = segment(image, seed)
    low, high = np.percentile(image, [1, 99])
    rng = np.random.default_rng(seed)
    noisy = image + rng.normal(0.0, noise * float(high - low), image.shape).astype(np.float32)
    half = max(1, chip // 2)
    shifted = segment(np.ascontiguousarray(image[half:, half:]), seed)
    return {
        "noise_fraction": noise,
        "noise_ari": adjusted_rand(segment(noisy, seed), clean),
        "shift_px": half,
        "shift_ari": adjusted_rand(shifted, clean[half:, half:]),
    }
