"""One chip grid shared by every modality of a specimen, in calibrated scan coordinates.

Each modality's two scan axes carry a physical calibration.  The shared grid is
laid on the *reference* modality (the one with the coarsest scan step, so every
chip holds whole samples of every modality) over the region all modalities cover.
A chip is a physical square; each modality sees it as a square of its own pixels,
``round(chip length / its pixel size)`` on a side, at the position its calibration
gives.  Extents that do not overlap are an error; a partial overlap is used with a
warning that names the region kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .grid import ChipGrid
from ..errors import InputError
from ..modalities.base import Axis, ModalityData


def to_units(value: float, units: str, target: str) -> float:
    """Convert a length between units (pint); identical strings need no registry."""
    if units == target:
        return value
    import pint

    ureg = pint.UnitRegistry()
    return float(ureg.Quantity(value, units.replace("µ", "u")).to(target.replace("µ", "u")).magnitude)


@dataclass(frozen=True)
class ScanFrame:
    """Where a modality's scan sits: origin and step in common units, and its size.

    Attributes
    ----------
    origin
        Physical position ``(y, x)`` of scan pixel ``(0, 0)`` in ``units``.
    step
        Physical size ``(y, x)`` of one scan pixel in ``units``.
    shape
        Scan shape ``(rows, cols)``.
    """

    origin: tuple[float, float]
    step: tuple[float, float]
    shape: tuple[int, int]

    @property
    def end(self) -> tuple[float, float]:
        return tuple(o + s * n for o, s, n in zip(self.origin, self.step, self.shape))


def scan_frame(modality: ModalityData, units: str) -> ScanFrame:
    """The physical scan frame of a modality, converted to ``units``."""
    axes: list[Axis] = modality.axes[:2]
    if any(axis.units in ("px", "", "unknown") for axis in axes) and units not in ("px",):
        raise InputError(
            f"modality {modality.name!r} has uncalibrated scan axes, so it cannot be placed on "
            "the common grid with the other modalities",
            fix="give its pixel size (scan_step / pixel_size with units) or calibrate the file",
            where=modality.source,
        )
    try:
        origin = tuple(to_units(a.offset, a.units, units) for a in axes)
        step = tuple(to_units(a.scale, a.units, units) for a in axes)
    except Exception as exc:  # pint errors
        raise InputError(
            f"scan units of modality {modality.name!r} ({axes[0].units}) cannot be converted to "
            f"{units}: {exc}",
            fix="calibrate all modalities in lengths (nm, um, ...)",
            where=modality.source,
        ) from None
    return ScanFrame(origin, step, (int(axes[0].size), int(axes[1].size)))


def reference_modality(modalities: Mapping[str, ModalityData]) -> str:
    """The modality whose scan pixels define the shared grid: the coarsest scan step
    (the first one named among equals), so that every chip holds whole samples of every modality.

    Raises
    ------
    InputError
        Uncalibrated or unconvertible scan axes (with several modalities).
    """
    names = list(modalities)
    units = modalities[names[0]].axes[0].units
    frames = {name: scan_frame(mod, units) for name, mod in modalities.items()}
    return max(names, key=lambda n: frames[n].step[0] * frames[n].step[1])


def labels_on(axes: Sequence[Axis], grid: SharedGrid, labels: np.ndarray,
              reference_axes: Sequence[Axis]) -> np.ndarray:
    """Labels on the reference scan's pixels resampled (nearest) onto other pixels.

    Parameters
    ----------
    axes
        The two calibrated axes ``(y, x)`` of the target pixels (e.g. an image
        modality's pixels inside the grid's region).
    grid
        The shared grid the labels were painted on.
    labels
        ``grid.grid.shape`` labels on the reference's pixels inside the region.
    reference_axes
        The reference modality's two scan axes.

    Returns
    -------
    ``(axes[0].size, axes[1].size)`` labels: ``labels`` itself where the pixels are the
    reference's own.
    """
    index = []
    for d_axis, r_axis, start, n in zip(axes, reference_axes, grid.offset, labels.shape):
        centres = np.array([to_units(d_axis.offset + (i + 0.5) * d_axis.scale, d_axis.units, grid.units)
                            for i in (0, d_axis.size - 1)])
        positions = np.linspace(centres[0], centres[1], d_axis.size)
        r_off = to_units(r_axis.offset, r_axis.units, grid.units)
        r_step = to_units(r_axis.scale, r_axis.units, grid.units)
        index.append(np.clip(np.floor((positions - r_off) / r_step).astype(int) - start, 0, n - 1))
    rows, cols = index
    # one axis at a time (two contiguous gathers, not one 2-D fancy index), and none where
    # the pixels are the reference's own
    if not np.array_equal(rows, np.arange(labels.shape[0])):
        labels = np.take(labels, rows, axis=0)
    if not np.array_equal(cols, np.arange(labels.shape[1])):
        labels = np.take(labels, cols, axis=1)
    return labels


@dataclass(frozen=True)
class ModalityChips:
    """How one modality sees the shared grid.

    Attributes
    ----------
    origins
        ``(n_chips, 2)`` top-left scan pixel of each chip in this modality.
    size
        Chip edge in this modality's scan pixels.
    """

    origins: np.ndarray
    size: int


@dataclass(frozen=True)
class SharedGrid:
    """The chip grid of a multimodal study.

    Attributes
    ----------
    reference
        Name of the modality whose pixels define the grid.
    grid
        The :class:`ChipGrid` over the reference's pixels inside the common region.
    offset
        Reference pixel ``(row, col)`` where the common region starts.
    per_modality
        :class:`ModalityChips` for each modality name.
    units
        Physical length unit of ``region``.
    region
        Common region ``(y0, y1, x0, x1)`` in ``units``.
    """

    reference: str
    grid: ChipGrid
    offset: tuple[int, int]
    per_modality: dict[str, ModalityChips]
    units: str
    region: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        """JSON-able description (the per-modality origins are not included)."""
        return {
            "reference": self.reference, "grid": self.grid.to_dict(), "offset": list(self.offset),
            "units": self.units, "region": list(self.region),
            "chip_size": {name: chips.size for name, chips in self.per_modality.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping, per_modality: Mapping[str, ModalityChips]) -> "SharedGrid":
        """The grid described by :meth:`to_dict`, with each modality's chips given back."""
        g = data["grid"]
        return cls(data["reference"], ChipGrid(tuple(g["shape"]), g["size"], g["stride"]),
                   tuple(data["offset"]), dict(per_modality), data["units"], tuple(data["region"]))


def shared_grid(modalities: dict[str, ModalityData], *, chip_size: int, stride: int,
                units: str | None = None, warn: bool = True) -> SharedGrid:
    """Lay one chip grid over all modalities.

    Parameters
    ----------
    modalities
        Modalities by name; each has two calibrated scan axes first.
    chip_size, stride
        In pixels of the reference modality (the coarsest scan).
    units
        Common length unit; default: the reference's scan units.
    warn
        Warn when a modality extends beyond the common region (off where a run lays the
        same grid again and has warned once: warnings are process-wide, and muting them
        with ``warnings.catch_warnings`` is not safe while other runs go on in threads).

    Raises
    ------
    InputError
        Uncalibrated or unconvertible scan axes, or extents that do not overlap.
    """
    names = list(modalities)
    units = units or modalities[names[0]].axes[0].units
    frames = {name: scan_frame(mod, units) for name, mod in modalities.items()}
    reference = reference_modality(modalities)
    y0 = max(f.origin[0] for f in frames.values())
    x0 = max(f.origin[1] for f in frames.values())
    y1 = min(f.end[0] for f in frames.values())
    x1 = min(f.end[1] for f in frames.values())
    if y1 <= y0 or x1 <= x0:
        extents = "; ".join(f"{n}: y {f.origin[0]:g}-{f.end[0]:g}, x {f.origin[1]:g}-{f.end[1]:g} {units}"
                            for n, f in frames.items())
        raise InputError(
            f"the modalities cover no common region ({extents})",
            fix="check that the files come from one specimen area and that their scan offsets "
                "and pixel sizes are calibrated",
            where=", ".join(mod.source for mod in modalities.values()),
        )
    ref = frames[reference]
    r0 = int(np.ceil((y0 - ref.origin[0]) / ref.step[0] - 1e-6))
    c0 = int(np.ceil((x0 - ref.origin[1]) / ref.step[1] - 1e-6))
    r1 = int(np.floor((y1 - ref.origin[0]) / ref.step[0] + 1e-6))
    c1 = int(np.floor((x1 - ref.origin[1]) / ref.step[1] + 1e-6))
    partial = [n for n, f in frames.items()
               if f.origin[0] < y0 - 1e-9 or f.origin[1] < x0 - 1e-9
               or f.end[0] > y1 + 1e-9 or f.end[1] > x1 + 1e-9]
    if partial and warn:
        warnings.warn(
            f"modalities {', '.join(partial)} extend beyond the region all modalities cover; "
            f"using y {y0:g}-{y1:g}, x {x0:g}-{x1:g} {units} only",
            UserWarning, stacklevel=2,
        )
    grid = ChipGrid((r1 - r0, c1 - c0), chip_size, stride)
    origins_phys = (np.asarray(ref.origin)
                    + (grid.origins + np.array([r0, c0])) * np.asarray(ref.step))
    per_modality = {}
    for name, frame in frames.items():
        size = int(round(chip_size * ref.step[0] / frame.step[0]))
        origins = np.rint((origins_phys - np.asarray(frame.origin)) / np.asarray(frame.step)).astype(np.int64)
        origins = np.clip(origins, 0, np.array(frame.shape) - size)
        per_modality[name] = ModalityChips(origins=origins, size=size)
    return SharedGrid(reference, grid, (r0, c0), per_modality, units, (y0, y1, x0, x1))
