"""HyperSpy signals as modalities: calibrated axes kept, lazy data kept lazy.

What a signal's dimensions say about its kind (HyperSpy writes them
``(navigation|signal)``):

=============================== ============= ======================================
signal                          dimensions     modality kind
=============================== ============= ======================================
``Signal2D`` image              ``(|x, y)``    ``image``
``Signal1D`` spectrum image     ``(x, y|E)``   ``spectrum`` (exSpy's EELS, EDS classes)
``Signal2D`` with 2 nav. axes   ``(x, y|kx, ky)`` ``diffraction`` (4D-STEM, pyxem's classes)
=============================== ============= ======================================

A signal goes through its kind's reader (:mod:`multimodal_seg.modalities`) as an
array, so it gets exactly the checks and float32 conversion a file gets, and then
its own calibrated axes (scale, offset, units), so that ``segment(signal)`` and
``segment(path)`` give the same labels for the same data.  The signal's data are
never copied or computed: a lazy signal's dask array is passed on as it is, and the
signal itself is not modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError
from ..modalities.base import Axis, ModalityData
from ..modalities.diffraction import read_diffraction
from ..modalities.image import read_image
from ..modalities.reading import axis_from_rsciio
from ..modalities.sources import KIND_BY_NAME
from ..modalities.spectrum import energy_in_kind_units, read_spectrum_image, recorded_facts, spectrum_kind_of

#: ``(navigation dimension, signal dimension)`` of each modality kind.
DIMENSIONS = {"image": (0, 2), "spectrum": (2, 1), "diffraction": (2, 2)}
#: The project's axis names, in array order, for each kind (what the file readers use).
AXIS_NAMES = {"image": ("y", "x"), "spectrum": ("y", "x", "energy"), "diffraction": ("y", "x", "qy", "qx")}
_READERS = {"image": read_image, "spectrum": read_spectrum_image, "diffraction": read_diffraction}
_WHAT = {"image": "an image (no navigation axes, 2 signal axes)",
         "spectrum": "a spectrum image (2 navigation axes, 1 signal axis)",
         "diffraction": "a 4D-STEM scan (2 navigation axes, 2 signal axes)"}


def is_signal(obj: Any) -> bool:
    """Whether ``obj`` is a HyperSpy signal (any class, lazy or not)."""
    from hyperspy.signal import BaseSignal

    return isinstance(obj, BaseSignal)


def describe(signal: Any, name: str | None = None) -> str:
    """How messages name a signal, e.g. ``"signal 'eels' <EELSSpectrum, title: SI, dimensions: (64, 64|512)>"``."""
    return f"signal {name!r} {signal!r}" if name else f"signal {signal!r}"


def dimensions(signal: Any) -> tuple[int, int]:
    """``(navigation dimension, signal dimension)``."""
    am = signal.axes_manager
    return int(am.navigation_dimension), int(am.signal_dimension)


def signal_kind(signal: Any, where: str) -> str:
    """The modality kind a signal's dimensions make it.

    Raises
    ------
    InputError
        Dimensions of no modality (a single spectrum, a line scan, a stack of
        images, a series of scans ...), naming what the signal looks like and how
        to get a signal of the right kind.
    """
    dims = dimensions(signal)
    for kind, wanted in DIMENSIONS.items():
        if dims == wanted:
            return kind
    what, fix = _misfit(dims)
    raise InputError(
        f"is {what}; segment takes {', '.join(_WHAT.values())}",
        fix=fix, where=where)


def _misfit(dims: tuple[int, int]) -> tuple[str, str]:
    """What a signal of these dimensions is, and how to make one segment can take."""
    nav, sig = dims
    if sig == 0:
        return (f"{nav} navigation axes and no signal axis (a map stored as navigation)",
                "transpose it into an image: s.T (or s.transpose(signal_axes=2))")
    if nav == 0 and sig == 1:
        return ("a single spectrum", "a single spectrum cannot be segmented: pass the spectrum image it "
                                     "comes from")
    if nav == 1 and sig == 1:
        return ("a line scan of spectra (1 navigation axis)",
                "segment needs two scan axes: give the line a second axis of length 1, e.g. "
                "hs.signals.Signal1D(s.data[None]) with the calibration copied")
    if nav == 1 and sig == 2:
        return ("a stack of images (1 navigation axis)",
                "pick one image with s.inav[i] or sum the stack with s.sum(s.axes_manager.navigation_axes); "
                "a 4D-STEM scan stored as a flat stack needs its scan shape back: "
                "hs.signals.Signal2D(s.data.reshape(rows, cols, qy, qx))")
    if nav > 2:
        return (f"a series of scans ({nav} navigation axes)",
                "pick one scan, e.g. one frame of a time series with s.inav[:, :, i]")
    return (f"{nav} navigation and {sig} signal axes",
            "reduce it to an image, a spectrum image or a 4D-STEM scan")


def role_of(name: str) -> str | None:
    """The kind a modality name asks for: ``"eels:spectrum"`` states it, ``"eels"`` implies it,
    an unknown name (``"overview"``) asks for none."""
    if ":" in name:
        return name.split(":", 1)[1]
    return KIND_BY_NAME.get(name.lower())


def default_name(signal: Any, kind: str) -> str:
    """A modality name for one signal given alone: ``"image"`` for an image (as
    ``segment(path)`` names it), ``"eels"``/``"eds"`` by signal type, else the kind."""
    if kind != "spectrum":
        return kind
    signal_type = str(signal.metadata.get_item("Signal.signal_type", "") or "").upper()
    return "eels" if signal_type.startswith("EELS") else "eds" if signal_type.startswith("EDS") else kind


def check_signal(signal: Any, where: str) -> None:
    """Values that are real numbers and axes that are uniform.

    Raises
    ------
    InputError
        Complex values (with the real views to take instead), or a non-uniform
        axis (with HyperSpy's way to resample it).
    """
    if np.dtype(signal.data.dtype).kind == "c":
        raise InputError(
            "holds complex values (a hologram reconstruction or exit wave?), not intensities",
            fix="segment a real view of it: s.amplitude or s.phase (or s.real, s.imag)", where=where)
    for axis in _axes_in_array_order(signal):
        if not axis.is_uniform:
            raise InputError(
                f"axis {axis.name!r} is non-uniform ({type(axis).__name__}): positions along it are "
                "not offset + index * scale, which every chip and grid here assumes",
                fix=f"resample it onto a uniform axis: s = s.interpolate_on_axis('uniform', axis={axis.name!r})",
                where=where)


def _axes_in_array_order(signal: Any) -> list[Any]:
    am = signal.axes_manager
    return sorted([*am.navigation_axes, *am.signal_axes], key=lambda a: a.index_in_array)


def spatial_axes(signal: Any) -> list[Any]:
    """The two spatial axes ``(y, x)`` in array order: the navigation axes of a scan,
    the signal axes of an image.

    Raises
    ------
    InputError
        The signal has no two spatial axes (see :func:`signal_kind`).
    """
    signal_kind(signal, describe(signal))
    return _axes_in_array_order(signal)[:2]


def as_axes(axes: list[Any], names: tuple[str, ...] | None = None) -> list[Axis]:
    """HyperSpy axes as calibrated :class:`Axis` (units ``"px"`` where undefined), named
    ``names`` or by their own names."""
    names = names or tuple(str(a.name) for a in axes)
    return [axis_from_rsciio(a.get_axis_dictionary(), n) for a, n in zip(axes, names, strict=True)]


def to_modality(signal: Any, *, name: str | None = None) -> ModalityData:
    """A HyperSpy signal as a :class:`ModalityData` of its kind, with its calibrated axes.

    Parameters
    ----------
    signal
        A ``Signal2D`` image, a ``Signal1D`` spectrum image (exSpy's ``EELSSpectrum``,
        ``EDSTEMSpectrum``, ``EDSSEMSpectrum`` ...) or a 4D-STEM ``Signal2D`` with two
        navigation axes (pyxem's ``Diffraction2D`` ...), lazy or not.
    name
        Modality name; ``"name:kind"`` states the kind.  A name that implies a kind
        (``"eels"``, ``"haadf"``) must fit the signal.  Default: from the signal
        (:func:`default_name`).

    Returns
    -------
    ModalityData
        Data: the signal's own array (its dask array if lazy) through the kind's
        reader, float32, never computed here; axes: the signal's scale, offset and
        units in array order (scan axes first); metadata: title, class, signal type,
        laziness, the HyperSpy axis names and the file the signal came from.

    Raises
    ------
    InputError
        Complex values, a non-uniform axis, dimensions of no modality kind, or a
        kind other than the name asks for; each names the signal and the fix.
    """
    label = name or ""
    where = describe(signal, label.split(":", 1)[0] or None)
    check_signal(signal, where)
    kind = signal_kind(signal, where)
    role = role_of(label) if label else None
    if role is not None and role != kind:
        bare = label.split(":", 1)[0]
        raise InputError(
            f"is {_WHAT[kind]}, but the name {label!r} asks for a {role} modality ({_WHAT.get(role, role)})",
            fix=f"pass the {role} signal under {label!r}, or name this one for what it is, "
                f"e.g. '{bare}:{kind}'" + (" or 'haadf'" if kind == "image" else ""),
            where=where)
    name = label.split(":", 1)[0] if label else default_name(signal, kind)
    read = _READERS[kind]
    modality = read(signal.data, name=name)  # the array as it is: a dask graph stays a graph
    axes = as_axes(_axes_in_array_order(signal), AXIS_NAMES[kind])
    title = str(signal.metadata.get_item("General.title", "") or "")
    metadata = {
        **modality.metadata,
        "reader": "hyperspy",
        "title": title or name,
        "signal_class": type(signal).__name__,
        "signal_type": str(signal.metadata.get_item("Signal.signal_type", "") or ""),
        "lazy": isinstance(signal.data, da.Array),
        "hyperspy_axes": [str(a.name) for a in _axes_in_array_order(signal)],
        "calibration": "signal axes" if any(a.units != "px" for a in axes) else "none",
    }
    original = _original_file(signal)
    if original:
        metadata["file"] = original
    if kind == "spectrum":
        # X-ray lines in keV and EELS edges in eV, as the reader gives them; the X-ray families
        # the beam excites; the elements exSpy was given
        axes = list(axes)
        axes[2] = energy_in_kind_units(axes[2], spectrum_kind_of(name, metadata["signal_type"]), metadata)
        metadata.update(recorded_facts({"metadata": signal.metadata.as_dictionary(),
                                        "original_metadata": signal.original_metadata.as_dictionary()}, "signal"))
    # The source names the signal, not its file: the data in memory may differ from the file
    # (rebinned, cropped), so the study must fingerprint the data, which "<...>" sources do.
    source = f"<hyperspy {type(signal).__name__} {title!r}>"
    return dataclasses.replace(modality, axes=axes, source=source, metadata=metadata)


def _original_file(signal: Any) -> str | None:
    """The file HyperSpy loaded the signal from, if it remembers one."""
    tmp = signal.tmp_parameters
    if tmp.has_item("filename") and tmp.has_item("folder"):
        from pathlib import Path

        return str(Path(tmp.folder) / f"{tmp.filename}{tmp.get_item('extension', '')}")
    return None


def to_modalities(signals: Any) -> dict[str, Any]:
    """``{label: source}`` for :func:`multimodal_seg.segment` from one signal or a mapping.

    Signals become :class:`ModalityData` (labelled ``"name:kind"``); other sources
    (paths, arrays, ``ModalityData``) pass through unchanged.

    Raises
    ------
    InputError
        From :func:`to_modality`, or signals whose scans cannot be placed on one
        grid (:func:`check_placement`).
    """
    if is_signal(signals):
        modality = to_modality(signals)
        return {f"{modality.name}:{modality.kind}": modality}
    if not isinstance(signals, Mapping):
        raise InputError(
            f"cannot segment a {type(signals).__name__}",
            fix="pass a HyperSpy signal or a mapping {name: signal}, e.g. {'haadf': haadf, 'eels': eels}",
            where=repr(signals)[:80])
    out: dict[str, Any] = {}
    for label, source in signals.items():
        if is_signal(source):
            modality = to_modality(source, name=str(label))
            out[f"{modality.name}:{modality.kind}"] = modality
        else:
            out[label] = source
    check_placement({k: v for k, v in out.items() if isinstance(v, ModalityData)})
    return out


def check_placement(modalities: Mapping[str, ModalityData]) -> None:
    """Several signals must be placeable on one grid: calibrated, or all of one scan shape.

    Raises
    ------
    InputError
        Some signal's spatial axes are uncalibrated while the scans differ in shape
        or others are calibrated: nothing says where its pixels lie.
    """
    if len(modalities) < 2:
        return
    uncalibrated = [m for m in modalities.values() if any(a.units in ("px", "unknown") for a in m.axes[:2])]
    shapes = {tuple(a.size for a in m.axes[:2]) for m in modalities.values()}
    if uncalibrated and (len(shapes) > 1 or len(uncalibrated) < len(modalities)):
        listing = "; ".join(f"{m.name} {tuple(a.size for a in m.axes[:2])} in "
                            f"{m.axes[0].units}" for m in modalities.values())
        names = ", ".join(repr(m.name) for m in uncalibrated)
        raise InputError(
            f"the spatial axes of {names} are not calibrated, so their positions cannot be matched "
            f"with the other signals' ({listing})",
            fix="set the scale and units of every signal's spatial axes (the same length units), e.g. "
                "s.axes_manager[0].scale = 0.5; s.axes_manager[0].units = 'nm' (and [1] likewise)",
            where=", ".join(m.source for m in uncalibrated))


#: HyperSpy signal types set by :func:`to_signal` for spectrum modalities named after them.
SIGNAL_TYPES = {"eels": "EELS", "eds": "EDS_TEM"}


def to_signal(modality: ModalityData) -> Any:
    """A :class:`ModalityData` as a lazy HyperSpy signal with its calibrated axes: the
    inverse of :func:`to_modality` (for phantoms and arrays read by the package's readers).

    Returns
    -------
    ``LazySignal2D`` for an image or a 4D-STEM scan, ``LazySignal1D`` for a spectrum image
    (exSpy's EELS or EDS class when the modality is named ``"eels"`` or ``"eds"``); the
    title is the modality's name.
    """
    from hyperspy.signals import LazySignal1D, LazySignal2D

    n_navigation = DIMENSIONS[modality.kind][0]
    axes = [{"name": a.name, "size": a.size, "scale": a.scale, "offset": a.offset,
             "units": None if a.units in ("px", "unknown") else a.units, "navigate": i < n_navigation}
            for i, a in enumerate(modality.axes)]
    cls = LazySignal1D if modality.kind == "spectrum" else LazySignal2D
    signal = cls(modality.data, axes=axes, metadata={"General": {"title": modality.name}})
    if modality.kind == "spectrum" and modality.name.lower() in SIGNAL_TYPES:
        signal.set_signal_type(SIGNAL_TYPES[modality.name.lower()])
    return signal
