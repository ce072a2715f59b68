"""Synthetic HAADF-like chips for tests: lattices of atomic columns and amorphous atoms."""

from __future__ import annotations

import math

import numpy as np


def _columns(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Sum of 2-D Gaussians (projected atomic columns) at ``points`` (row, col)."""
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for y, x in points:
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return img


def _expose(img: np.ndarray, dose: float, rng: np.random.Generator) -> np.ndarray:
    """Add a diffuse background, scale to ``dose`` counts/px, draw Poisson counts."""
    img = img + 0.2 * img.mean()
    return rng.poisson(dose * img / img.mean()).astype(np.float32)


def lattice_image(size: int, spacing: float, angle: float, rng, *, sigma: float = 1.5,
                  dose: float = 50.0) -> np.ndarray:
    """Square lattice of columns at ``angle`` degrees with a random registry, Poisson noise."""
    t = math.radians(angle)
    a1 = spacing * np.array([math.cos(t), math.sin(t)])
    a2 = spacing * np.array([-math.sin(t), math.cos(t)])
    n = int(size / spacing) + 3
    i, j = np.mgrid[-n : n + 1, -n : n + 1]
    pts = i.ravel()[:, None] * a1 + j.ravel()[:, None] * a2 + size / 2 + rng.uniform(0, spacing, 2)
    m = 4 * sigma
    pts = pts[((pts > -m) & (pts < size + m)).all(axis=1)]
    return _expose(_columns(pts, size, sigma), dose, rng)


def amorphous_image(size: int, spacing: float, rng, *, sigma: float = 1.5, dose: float = 50.0,
                    min_sep: float = 0.0) -> np.ndarray:
    """Atoms at random positions (density of a lattice of ``spacing``), optionally kept apart."""
    m = 4 * sigma
    n = int((size + 2 * m) ** 2 / spacing**2)
    pts: list[np.ndarray] = []
    for p in rng.uniform(-m, size + m, (20 * n, 2)):
        if len(pts) == n:
            break
        if min_sep == 0 or not pts or np.min(np.hypot(*(np.array(pts) - p).T)) >= min_sep:
            pts.append(p)
    return _expose(_columns(np.array(pts), size, sigma), dose, rng)
