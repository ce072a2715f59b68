"""``segment(signal_or_mapping, **options)``: the package's ``segment`` for HyperSpy signals.

The signals become modalities (:mod:`.convert`: their own calibrated axes, their
dask arrays when lazy), :func:`multimodal_seg.segment` runs with the same options,
and the result comes back as a :class:`~.signals.CommunityMap` on the calibrated
spatial axes of the segmented picture (the finest image, else the coarsest scan),
with the run's record under ``metadata.Segmentation``.  Nothing is written to disk
unless ``out`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..modalities.base import ModalityData
from ..pipeline.segment import segment as segment_sources
from ..result import Segmentation
from .convert import to_modalities
from .signals import SIGNAL_TYPE, CommunityMap

#: ``segment()`` options that calibrate one image file or array; a signal carries its own.
_FILE_OPTIONS = ("signal", "pixel_size", "units")


def segment(signals: Any, *, out: str | Path | None = None, **options: Any) -> CommunityMap:
    """Segment HyperSpy signals of one specimen into communities, with no labels.

    Parameters
    ----------
    signals
        One signal, or ``{name: signal}`` for several modalities of one specimen:
        ``Signal2D`` images, ``Signal1D`` spectrum images (exSpy's EELS and EDS classes
        included), 4D-STEM ``Signal2D`` scans with two navigation axes (pyxem's classes
        included), lazy or not.  A name implies a kind (``"haadf"`` an image, ``"eels"``
        a spectrum image, see :data:`multimodal_seg.modalities.sources.KIND_BY_NAME`)
        and must fit its signal; any other name takes the kind of its signal.  Values
        that are not signals (file paths, ``ModalityData``) are passed on unchanged.
    out
        Folder for the study store, figures, ``report.html`` and provenance; ``None``
        (default) writes nothing.
    options
        The options of :func:`multimodal_seg.segment` (``chip_size``, ``encoder``,
        ``k``, ``resolution``, ``consensus``, ``seed``, ``fusion``, ``config`` ...).

    Returns
    -------
    CommunityMap
        Labels on the calibrated spatial axes of the segmented picture; the run's
        provenance (config, encoders, seed, versions, warnings) in
        ``metadata.Segmentation.provenance``.

    Raises
    ------
    ParameterError
        ``signal``, ``pixel_size`` or ``units`` given: a signal's axes carry its calibration.
    InputError
        A signal of the wrong dimensionality for its name, complex values, a
        non-uniform axis, or scans whose positions cannot be matched (see
        :mod:`multimodal_seg.hyperspy.convert`); anything :func:`multimodal_seg.segment`
        refuses.
    """
    given = [key for key in _FILE_OPTIONS if key in options]
    if given:
        raise ParameterError(
            f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} for reading a file or "
            "an array; a HyperSpy signal is already read: pick it and calibrate it in HyperSpy",
            fix="pass the signal you mean (e.g. s = hs.load(file)[1]); set its calibration on its axes: "
                "s.axes_manager[0].scale = 0.5; s.axes_manager[0].units = 'nm' (and likewise for axis 1)",
            where=", ".join(given))
    sources = to_modalities(signals)
    seg = segment_sources(sources, out=out, **options)
    return to_community_map(seg, modalities=[m for m in sources.values() if isinstance(m, ModalityData)])


def to_community_map(seg: Segmentation, *, modalities: Iterable[ModalityData] = ()) -> CommunityMap:
    """A :class:`~multimodal_seg.result.Segmentation` as a :class:`CommunityMap`.

    Parameters
    ----------
    seg
        A run's result (``multimodal_seg.segment(...)``).
    modalities
        The modalities of the run that came from HyperSpy signals: their titles and
        files are recorded, and the map's axes keep the HyperSpy names of the one it
        is painted on.

    Returns
    -------
    CommunityMap
        ``seg.pixel_labels`` (int32) on ``seg.axes``; ``metadata.Segmentation`` holds
        ``provenance`` (as ``provenance.json``), ``communities`` (the community table,
        one list per column) and ``inputs`` (each signal's title, class, laziness and
        file).
    """
    modalities = list(modalities)
    names = ("y", "x")
    for modality in modalities:
        same = all((a.size, a.scale, a.units) == (b.size, b.scale, b.units)
                   for a, b in zip(modality.axes[:2], seg.axes, strict=True))
        if same and modality.metadata.get("hyperspy_axes"):
            names = tuple(modality.metadata["hyperspy_axes"][:2])
            break
    axes = [{"name": name, "size": a.size, "scale": a.scale, "offset": a.offset,
             "units": None if a.units in ("px", "unknown") else a.units, "navigate": False}
            for name, a in zip(names, seg.axes, strict=True)]
    columns = {key: [getattr(row, key) for row in seg.communities]
               for key in (asdict(seg.communities[0]) if seg.communities else {})}
    inputs = {m.name: {key: m.metadata[key] for key in ("title", "signal_class", "signal_type", "lazy", "file")
                       if key in m.metadata} for m in modalities}
    metadata = {
        "General": {"title": "communities"},
        "Signal": {"signal_type": SIGNAL_TYPE},
        "Segmentation": {"provenance": seg.provenance, "communities": columns, "inputs": inputs},
    }
    return CommunityMap(np.asarray(seg.pixel_labels, dtype=np.int32), axes=axes, metadata=metadata)
