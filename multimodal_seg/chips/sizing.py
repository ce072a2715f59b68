"""How big chips are: one rule for every run, from the kinds of data present.

Chip sizes are in pixels of the reference modality (the coarsest scan,
:func:`multimodal_seg.chips.shared.reference_modality`).  ``chip_size="auto"``:

- **images only** (one image, or several images of one specimen): chips must hold
  texture, so about ``AUTO_CHIPS_ACROSS`` chips across the shorter side and at
  least ``AUTO_MIN_IMAGE_CHIP`` pixels, and where the image shows a crystal lattice
  (:func:`multimodal_seg.chips.texture.image_lattice`) at least ``LATTICE_PERIODS``
  of its longest repeat (``Lattice.repeat``: a lattice's first-order period, even where it
  fills only part of the image); an image too small for 3 such chips across gets chips of a quarter
  of its shorter side (:func:`auto_image_chip`);
- **a spectrum image or 4D-STEM scan with an image of finer pixels**: about
  ``AUTO_CHIPS_ACROSS`` chips across the scan, and enough scan positions that the
  finest image sees at least ``AUTO_MIN_IMAGE_CHIP`` of its pixels per chip, and
  ``LATTICE_PERIODS`` of its lattice's longest repeat where it shows one (texture);
- **spectra or patterns only**, or an image no finer than the scan (a survey image
  at the scan's pixel size, common in SEM-EDS files, holds no texture at chip scale
  and adds its intensity): small chips keep boundaries sharp, since the information
  is per scan position, as long as each chip holds enough counts to rise above
  Poisson noise (``AUTO_MIN_CHIP_COUNTS``).  An image chip would need more than a
  quarter of the scan's shorter side before this rule is used instead.

The stride defaults to half the chip; with ``chip_size="auto"`` on images only, where a
coarse lattice makes chips larger than the field of view alone would, the stride stays half
the chip the field of view gives (:func:`auto_image_stride`).  Lengths may be given in calibrated units
(``"2 nm"``), converted with the reference's scan calibration.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from ..config import ChipConfig
from ..errors import ParameterError
from ..modalities.base import Axis, ModalityData
from .shared import SharedGrid, reference_modality, to_units
from .texture import Lattice, image_lattice

#: ``chip_size="auto"``: chips across the reference's shorter side.
AUTO_CHIPS_ACROSS = 16
#: ``chip_size="auto"``, images only: smallest chip (pixels).
AUTO_MIN_IMAGE_CHIP = 32
#: ``chip_size="auto"``, an image with a lattice: chips hold at least this many periods of it.
#: Chosen on the tuning draws (seeds 0-9) of the ``magnification`` family whose lattice is too
#: coarse for 32 px chips (periods 14-28 px), ARI mean (worst) at 2 / 2.5 / 3 periods:
#: 0.722 (0.518) / 0.898 (0.755) / 0.716 (0.000); with fewer periods a chip sees too few unit
#: cells (on a 10 px lattice, 21 px chips fell to ARI 0.78 where 32 px gave 0.94), with more
#: there are too few chips for the decision to tell small regions apart (3 periods on a
#: 28 px lattice: 86 px chips, 6 across the image, one community).  Held-out draws:
#: benchmarks/reports/families-defaults-2cpu.
LATTICE_PERIODS = 2.5
#: ``chip_size="auto"``, no image: about this many chips across (1-position chips up to 96 positions).
AUTO_SPECTRAL_ACROSS = 64
#: ``chip_size="auto"``, no image: fewest counts a chip should hold.  A trade-off measured on
#: real EDS: the Phenom Al/Cu map (128 counts per position) keeps its boundary with
#: 2-position chips (many-to-one 0.92; 0.86 with 3), the sparse JEOL FeS map (19 per position
#: after 4x4 binning) needs 11-position chips for 8 communities instead of 18 with 6.
AUTO_MIN_CHIP_COUNTS = 500
#: Smallest image chip when images alone set the grid: below this there is no texture to embed.
MIN_IMAGE_CHIP = 4
#: Image chips smaller than this (pixels) hold too little texture for an image encoder: a warning.
MIN_TEXTURE_CHIP = 16


def length_in_pixels(value: int | str, axis: Axis, what: str) -> int:
    """A length given in pixels (int, ``"32"``, ``"32 px"``) or with units (``"2 nm"``) as
    whole pixels of ``axis``.

    Raises
    ------
    ParameterError
        The length is not positive, has units but ``axis`` is uncalibrated (``"px"``: pint
        would read ``px`` as a CSS pixel, 1/96 inch), the units cannot be converted to the
        axis' units, or the length is under a pixel.
    """
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    import pint

    ureg = pint.UnitRegistry()
    try:
        quantity = ureg.Quantity(text)
    except Exception as exc:  # pint raises several error types
        raise ParameterError(f"{text!r} is not a length: {exc}",
                             fix=f"give {what} in pixels (32) or as a number with units ('2 nm')",
                             where=what) from None
    in_pixels = quantity.dimensionless or str(quantity.units) in ("pixel", "css_pixel")
    if quantity.magnitude <= 0:
        raise ParameterError(f"{text!r} is not positive", fix=f"give a {what} of at least one pixel", where=what)
    if in_pixels:
        pixels = float(quantity.magnitude)
    elif axis.units == "px":
        raise ParameterError(
            f"{text!r} is a length, but this data has no length calibration (its pixel size is unknown)",
            fix=f"give {what} in pixels, or calibrate the data's axes (e.g. in HyperSpy: "
            "s.axes_manager[0].scale and .units) before segmenting",
            where=what,
        )
    else:
        try:
            pixels = quantity.to(axis.units).magnitude / axis.scale
        except Exception as exc:  # pint raises several error types
            raise ParameterError(
                f"{text!r} cannot be converted to pixels of this data (pixel size {axis.scale:g} "
                f"{axis.units}): {exc}",
                fix=f"give {what} in pixels (an integer) or in units convertible to {axis.units!r}",
                where=what,
            ) from None
    if pixels < 1:
        raise ParameterError(f"{text!r} is below one pixel ({axis.scale:g} {axis.units})",
                             fix=f"use a {what} of at least one pixel", where=what)
    return int(round(pixels))


def counts_per_position(modality: ModalityData, sample: int = 4096) -> float:
    """Mean total counts per scan position, from about ``sample`` positions: whole scan rows
    evenly spread over the scan (every column where a row holds fewer than ``sample``).

    Whole rows, since stores are chunked by rows: a sample of every few rows and columns
    would read most of a large scan (40 % of an 8.9 GB cube, 2.4 s; these rows: 0.6 s).
    """
    rows, cols = (int(n) for n in modality.data.shape[:2])
    col_step = max(1, cols // sample)
    n_rows = min(rows, -(-sample * col_step // cols))
    picked = np.unique(np.linspace(0, rows - 1, n_rows).round().astype(int))
    block = np.asarray(modality.data[picked][:, ::col_step])
    return float(block.reshape(block.shape[0] * block.shape[1], -1).sum(axis=1).mean())


def texture_pixels(period: float | None) -> int:
    """Image pixels a chip needs for texture: ``AUTO_MIN_IMAGE_CHIP``, or ``LATTICE_PERIODS``
    lattice periods (``period``, px; ``None``: no lattice) where that is more."""
    return AUTO_MIN_IMAGE_CHIP if period is None else max(AUTO_MIN_IMAGE_CHIP, int(np.ceil(LATTICE_PERIODS * period)))


def auto_image_chip(shape: tuple[int, int], period: float | None = None) -> int:
    """``chip_size="auto"`` for images only: about ``AUTO_CHIPS_ACROSS`` chips across the
    shorter side, at least :func:`texture_pixels` (``period``: the lattice period in px, if
    any).

    An image too small for that to leave 3 chips across its shorter side (a 30 x 30 px
    survey: one 30 px chip, and no graph) holds no texture at chip scale anyway: it gets
    chips of a quarter of that side (at least ``MIN_IMAGE_CHIP``), which tell its regions
    apart by their intensity; the chips stage warns that they hold little texture.
    """
    short = min(int(shape[0]), int(shape[1]))
    size = max(texture_pixels(period), int(round(short / AUTO_CHIPS_ACROSS)))
    return size if size <= short // 2 else max(MIN_IMAGE_CHIP, short // 4)


def auto_image_stride(shape: tuple[int, int], size: int) -> int:
    """The stride of ``chip_size="auto"`` chips of ``size`` px on an image of ``shape`` (images
    only): half the chip, but no more than half the chip the field of view alone gives
    (:func:`auto_image_chip` without a lattice).

    Why: a coarse lattice makes chips larger so that they hold its periods; the step between
    them sets how finely the image is sampled, which should not coarsen with them.  On 60 fresh
    ``magnification`` draws (lattice periods 6-30 px; docs/design.md, "Chips hold a lattice's
    longest repeat"), with chips from the lattice's repeat, steps of half the chip gave mean
    (worst) ARI 0.921 (0.000), steps of half the field of view's chip 0.940 (0.735).
    """
    return max(1, min(size, auto_image_chip(shape)) // 2)


def _repeat(modality: ModalityData, lattices: Mapping[str, Lattice] | None) -> float | None:
    """The longest repeat (px) of an image's lattices (``Lattice.repeat``): from ``lattices``
    where measured there, else measured."""
    lattice = (lattices or {}).get(modality.name)
    return (lattice if lattice is not None else image_lattice(modality.data)).repeat


def _texture_chip(modalities: Mapping[str, ModalityData], reference: ModalityData,
                  lattices: Mapping[str, Lattice] | None) -> int:
    """Scan positions a chip needs for the finest image to see :func:`texture_pixels` of its pixels."""
    images = [m for m in modalities.values() if m.kind == "image"]
    ratios = [to_units(reference.axes[1].scale, reference.axes[1].units, m.axes[1].units) / m.axes[1].scale
              for m in images]
    finest = images[int(np.argmax(ratios))]
    return int(np.ceil(texture_pixels(_repeat(finest, lattices)) / max(ratios) - 1e-9))


def chip_geometry(chips: ChipConfig, modalities: Mapping[str, ModalityData], *,
                  lattices: Mapping[str, Lattice] | None = None) -> tuple[int, int]:
    """Chip size and stride, in pixels of the reference modality (see the module docstring).

    ``lattices``: images' lattices already measured (:func:`~multimodal_seg.chips.texture.image_lattice`),
    by modality name; an image's not there is measured (about 0.1 s at 1024 px and more).

    Raises
    ------
    ParameterError
        A length that cannot be converted, or image chips (images only) under
        ``MIN_IMAGE_CHIP`` pixels.
    InputError
        Scan axes that cannot be placed on one grid (several modalities).
    """
    reference = modalities[reference_modality(modalities)]
    scan_shape = tuple(int(s) for s in reference.data.shape[:2])
    axis = reference.axes[1]
    kinds = {m.kind for m in modalities.values()}
    images_only = kinds == {"image"}
    if chips.size != "auto":
        size = length_in_pixels(chips.size, axis, "chip_size")
    elif images_only:
        size = auto_image_chip(scan_shape, _repeat(reference, lattices))
    elif "image" in kinds and (texture := _texture_chip(modalities, reference, lattices)) <= min(scan_shape) // 4:
        size = max(texture, int(round(min(scan_shape) / AUTO_CHIPS_ACROSS)))
    else:
        size = max(1, int(round(min(scan_shape) / AUTO_SPECTRAL_ACROSS)))
        per_position = min(counts_per_position(m) for m in modalities.values() if m.kind != "image")
        size = max(size, int(np.ceil(np.sqrt(AUTO_MIN_CHIP_COUNTS / max(per_position, 1e-9)))))
        size = min(size, max(1, min(scan_shape) // 4))
    if images_only and size < MIN_IMAGE_CHIP:
        raise ParameterError(
            f"chip size {size} px is too small to hold any image texture",
            fix=f"use a chip size of at least {MIN_IMAGE_CHIP} px (16-128 px is typical)",
            where="chip_size",
        )
    if chips.stride is not None:
        stride = length_in_pixels(chips.stride, axis, "stride")
    elif images_only and chips.size == "auto":
        stride = auto_image_stride(scan_shape, size)
    else:
        stride = max(1, size // 2)
    return size, stride


#: Above this many bytes (the dense float32 cube), a sparse spectrum image is worth binning.
LARGE_CUBE_BYTES = 2**30


def warn_sparse_spectra(modalities: Mapping[str, ModalityData], grid: SharedGrid) -> None:
    """Warn when a large spectrum image is so sparse that its chips hold under one count per
    channel: binning its scan and channels on reading keeps what a chip sums, steadies the
    partition and makes every stage that reads the cube faster.  The JEOL FeS map (512 x 512 x
    4096, 1.2 counts per position) on 2 cores: unbinned 82 s, and seeds 0-2 found 7, 4 and 5
    communities (ARI 0.44-0.52 between them); binned 4 x 4 and 32 channels 9-15 s, 5
    communities in seeds 0-3 (ARI 0.91-1.0).

    The suggestion bins the scan so that a chip keeps about 4 x 4 positions, and the channels
    to about an EDS detector's resolution (:data:`~multimodal_seg.analysis.spectral_lines.EDS_HALF_WIDTH_KEV`).
    """
    from ..analysis.spectral_lines import EDS_HALF_WIDTH_KEV

    for name, modality in modalities.items():
        if modality.kind != "spectrum" or 4 * modality.data.size < LARGE_CUBE_BYTES:
            continue
        size = grid.per_modality[name].size
        channels = int(modality.data.shape[2])
        per_position = counts_per_position(modality)
        if per_position * size * size >= channels:
            continue
        energy = modality.axes[2]
        width_kev = abs(energy.scale) * {"ev": 1e-3, "kev": 1.0}.get(energy.units.strip().lower(), float("nan"))
        bin_channels = max(2, int(EDS_HALF_WIDTH_KEV / width_kev)) if np.isfinite(width_kev) else 8
        bin_scan = max(2, size // 4)
        warnings.warn(
            f"spectrum image {name!r} ({modality.source}) is {4 * modality.data.size / 2**30:.1f} GiB as float32 "
            f"and sparse: {per_position:.3g} counts per position over {channels} channels, so its "
            f"{size} x {size}-position chips hold under one count per channel. Binning it on reading keeps what "
            f"the chips sum, makes the partition steadier (seeds agree) and the run faster: e.g. {{'bin_scan': {bin_scan}, 'bin_channels': "
            f"{bin_channels}}} beside the file (--read {name}.bin_scan={bin_scan} --read "
            f"{name}.bin_channels={bin_channels}).", UserWarning, stacklevel=3)


def warn_small_image_chips(modalities: Mapping[str, ModalityData], grid: SharedGrid) -> None:
    """Warn when an image modality's chips are too small to hold texture.

    A survey image at the scan's own pixel size (common in SEM-EDS files) gives image
    chips of a few pixels; its partition is then mostly noise (measured on the P45
    Bruker file: 5 px chips, ARI 0.05 with the EDS partition), and its block of the joint
    features, as heavy as the other modality's, can blur the joint partition (the Bruker
    chevkinite file, 1 px chips: 2 joint communities, mean eta^2 0.37 on six line maps, where
    the EDS alone keeps 6 at 0.86).
    """
    for name, modality in modalities.items():
        size = grid.per_modality[name].size
        if modality.kind == "image" and size < MIN_TEXTURE_CHIP:
            if len(modalities) > 1:
                harm = ("and it can blur the joint one (on a real SEM-EDS map: 2 joint communities where "
                        "the EDS alone kept 6). Use an image with finer pixels than the scan, larger chips "
                        "(chip_size), or leave it out.")
            else:
                harm = f"Use larger chips (chip_size, at least {MIN_TEXTURE_CHIP} px) or an image with more pixels."
            warnings.warn(
                f"image modality {name!r} ({modality.source}) gets chips of {size} px, too few for "
                "texture: its features are little more than each chip's mean intensity, its partition "
                f"will be mostly noise{',' if len(modalities) > 1 else '.'} {harm}", UserWarning, stacklevel=3)
