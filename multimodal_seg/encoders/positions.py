"""Chip stacks of scan positions, as the spectrum and diffraction encoders take them.

Such a chip stack is ``(n, h, w, *signal)`` raw counts: ``n`` chips of ``h x w``
scan positions, one signal each (a spectrum ``(channels,)``, a diffraction
pattern ``(qy, qx)``).  These encoders validate the stack (:func:`as_chips`),
embed each position's signal (:func:`position_signals`) and pool the features
over each chip's positions (:func:`mean_over_positions`).  Image chips ``(n, size,
size)`` (intensities scaled to about [0, 1]) are validated the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


#: Axes of a chip stack of each encoder kind (see :attr:`Encoder.kind`).
CHIP_AXES: dict[str, tuple[str, ...]] = {
    "image": ("n", "size", "size"),
    "spectrum": ("n", "h", "w", "channels"),
    "diffraction": ("n", "h", "w", "qy", "qx"),
}


def as_chips(chips: Any, kind: str) -> np.ndarray:
    """Validate a chip stack and return it as contiguous float32.

    Parameters
    ----------
    chips
        Array-like of real numbers (counts may be integers).
    kind
        The encoder kind, ``"image"``, ``"spectrum"`` or ``"diffraction"``: the chips' axes
        (:data:`CHIP_AXES`).

    Raises
    ------
    InputError
        Wrong number of dimensions, an empty axis other than ``n``, not real
        numbers, or NaN / infinite values.
    """
    axes = CHIP_AXES[kind]
    ndim, layout = len(axes), f"({', '.join(axes)})"
    arr = np.asarray(chips)
    if arr.ndim != ndim or 0 in arr.shape[1:]:
        raise InputError(
            f"chips must have shape {layout} with non-empty axes, got {arr.shape}",
            fix="pass a stack of chips cut on the scan grid (see multimodal_seg.chips.grid)",
            where="chips",
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(
            f"chips must hold real numbers (counts), got dtype {arr.dtype}",
            fix="convert the data to float32 counts",
            where="chips",
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(
            "chips contain NaN or infinite values",
            fix="fill or mask invalid values (dead channels, detector gaps) before encoding",
            where="chips",
        )
    return arr


def position_signals(chips: np.ndarray) -> tuple[np.ndarray, int]:
    """``(n, h, w, *signal)`` chips -> ``(n * h * w, *signal)`` signals (a view) and ``h * w``.

    The signals of a chip are consecutive, in row-major order of its positions.
    """
    n, h, w = chips.shape[:3]
    return chips.reshape(n * h * w, *chips.shape[3:]), h * w


def mean_over_positions(features: np.ndarray, per_chip: int) -> np.ndarray:
    """Per-position features ``(n * per_chip, dim)`` -> ``(n, dim)`` float32 chip means.

    The mean is accumulated in float64, so that it does not depend on the batches
    the features were computed in.
    """
    n, dim = len(features) // per_chip, features.shape[1]
    return features.reshape(n, per_chip, dim).mean(axis=1, dtype=np.float64).astype(np.float32)
