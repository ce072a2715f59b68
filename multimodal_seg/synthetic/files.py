"""Phantoms written as files: inputs for batches, examples and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .phantoms import haadf_phantom


def write_phantom_images(folder: str | Path, n: int, *, size: int = 256, prefix: str = "img") -> list[Path]:
    """Write ``n`` HAADF phantoms (seeds ``0 .. n-1``) as 8-bit PNG files ``<prefix><seed>.png``.

    Parameters
    ----------
    folder
        Created if needed.
    n
        Number of images (seeds 0 to ``n - 1``: different grain layouts).
    size
        Edge length in pixels.
    prefix
        File names: ``prefix`` followed by the seed, zero-padded to the width of ``n - 1``.

    Returns
    -------
    The paths written, in seed order.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(max(n - 1, 0)))
    paths = []
    for seed in range(n):
        image = haadf_phantom((size, size), seed=seed).image
        grey = (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
        paths.append(folder / f"{prefix}{seed:0{width}d}.png")
        Image.fromarray(grey).save(paths[-1])
    return paths
