"""What every modality adapter returns: a lazy array with calibrated axes.

Array layouts by kind (scan axes first, always two of them):

=========== =========================== ===============
kind        data shape                  axes
=========== =========================== ===============
image       ``(rows, cols)``            y, x
spectrum    ``(rows, cols, channels)``  y, x, energy
diffraction ``(rows, cols, qy, qx)``    y, x, qy, qx
=========== =========================== ===============

The scan axes carry the physical calibration (scale, offset, units) that puts
every modality of one specimen on one spatial grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Axis:
    """One calibrated axis: physical position of index ``i`` is ``offset + i * scale``.

    Attributes
    ----------
    name
        Axis name, e.g. ``"y"``, ``"x"``, ``"energy"``.
    size
        Number of samples along the axis.
    scale
        Physical step between samples, in ``units`` (1.0 when uncalibrated).
    offset
        Physical position of the first sample, in ``units``.
    units
        Unit string, e.g. ``"nm"``, ``"eV"``, or ``"px"`` when uncalibrated.
    """

    name: str
    size: int
    scale: float = 1.0
    offset: float = 0.0
    units: str = "px"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModalityData:
    """A modality read by an adapter.

    Attributes
    ----------
    name
        Name of the modality in the study, e.g. ``"haadf"``.
    kind
        Adapter kind, e.g. ``"image"``.
    data
        Lazy array; for images shape ``(rows, cols)`` float32.
    axes
        One :class:`Axis` per array dimension, in array order.
    source
        Where the data came from (a path, or ``"<array>"``).
    metadata
        JSON-able facts worth keeping (reader, signal title, original dtype ...).
    """

    name: str
    kind: str
    data: da.Array
    axes: list[Axis]
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_real_values(dtype: Any, where: str, *, allow_bool: bool = True) -> None:
    """Values must be real numbers: integer or floating point (and booleans if ``allow_bool``).

    One check for every reader and for hand-built :class:`ModalityData`, so that
    complex, text or record data get the same message wherever they come from.

    Raises
    ------
    InputError
        Naming ``where``, the value type, and how to get real values.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError("values are complex, not real numbers",
                         fix="pass real values, e.g. the amplitude np.abs(z) or the phase np.angle(z)",
                         where=where)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
            or (allow_bool and dtype == bool)):
        raise InputError(f"values are of type {dtype}, not real numbers",
                         fix="pass integer or floating-point values (intensities or counts)", where=where)

