"""Spectrum-image modality: EELS and EDS cubes as lazy float32 arrays.

A spectrum image is a cube ``(rows, cols, channels)`` with axes ``y, x, energy``:
one spectrum per scan position, the energy axis last.  Files are read through
RosettaSciIO (``rsciio``) with the image modality's helpers (extension -> plugin,
reader errors, signal selection, axis calibration), lazily where the plugin
supports it.

What this adapter does to the counts: optional summing of adjacent energy channels
(``bin_channels``) and of square blocks of scan positions (``bin_scan``), optional
cropping of the energy axis (``energy_range``), and a cast to float32.  It does not
normalise: encoders do that.

Calibration conventions (physical position of index ``i`` is ``offset + i * scale``,
the *centre* of sample ``i``): summing ``f`` samples gives a bin whose position is the
mean of its members, so the new scale is ``f * scale`` and the new offset
``offset + (f - 1) / 2 * scale``.  Samples left over at the end of an axis that is not
a multiple of the factor are dropped (reported in ``metadata["binning"]``).

The module also holds the cube helpers shared with
:mod:`multimodal_seg.modalities.diffraction` (binning, chunking, value checks).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis, ModalityData, check_real_values
from .image import _from_array as _image_from_array
from .image import (
    _DM,
    _HSPY,
    _axis,
    _describe,
    _pick_signal,
    _Plugin,
    _plugin_for,
    _read_signals,
    _title,
)
from .image import (
    _PLUGINS as _IMAGE_PLUGINS,
)

_BRUKER = _Plugin("rsciio.bruker", "Bruker BCF")
# Velox: read every stream (select_type=None) so that a file without a spectrum
# image can be described.  NCEM-flavour .emd files are read by the same plugin.
_EMD = _Plugin("rsciio.emd", "EMD (Velox or NCEM)")
_JEOL = _Plugin("rsciio.jeol", "JEOL Analysis Station")
# rsciio's Phenom reader has no lazy mode (lazy=True raises an error).
_PHENOM = _Plugin("rsciio.phenom", "Phenom ELID", lazy=False)

_PLUGINS: dict[str, _Plugin] = {
    ".bcf": _BRUKER,
    ".emd": _EMD,
    # JEOL: the .ASW project file lists the views of a sample; rsciio follows its
    # links into the Sample/ folder tree and reads every .img/.map/.pts there.
    ".asw": _JEOL,
    ".pts": _JEOL,
    ".dm3": _DM,
    ".dm4": _DM,
    ".hspy": _HSPY,
    ".hdf5": _HSPY,
    ".elid": _PHENOM,
}

#: File extensions :func:`read_spectrum_image` accepts (lower case; matching ignores
#: case).
SUPPORTED_SPECTRUM_EXTENSIONS: tuple[str, ...] = tuple(sorted(_PLUGINS))

# Extensions other modalities read: named in the "unsupported file type" message.
_DIFFRACTION_ONLY = (".mib", ".blo", ".xml", ".h5")
_ELSEWHERE: dict[str, str] = {
    **{ext: "image" for ext in _IMAGE_PLUGINS if ext not in _PLUGINS},
    **{ext: "diffraction" for ext in _DIFFRACTION_ONLY},
}

# rsciio's JEOL reader can sum channels while decoding the event stream
# (rebin_energy, a divisor of the 4096 raw channels): much cheaper than decoding the
# full 4096-channel cube and summing it afterwards.  Its scan ``downsample`` option
# fails in lazy mode (rsciio 0.15: TypeError), so scan binning is done with dask.
_JEOL_RAW_CHANNELS = 4096

#: Target size of one chunk of the returned float32 array, in bytes.
CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- public


def read_spectrum_image(
    source: str | Path | np.ndarray | da.Array,
    *,
    name: str = "spectrum",
    signal: int | str | None = None,
    bin_channels: int = 1,
    bin_scan: int = 1,
    energy_range: tuple[float, float] | None = None,
    chunks: int | tuple[int, int] | None = None,
    scan_step: float | None = None,
    scan_units: str | None = None,
    energy_offset: float | None = None,
    energy_scale: float | None = None,
    energy_units: str | None = None,
) -> ModalityData:
    """Read one spectrum image (EELS, EDS) as a lazy, calibrated float32 cube.

    Parameters
    ----------
    source
        Path to a file (see :data:`SUPPORTED_SPECTRUM_EXTENSIONS`: Bruker ``.bcf``,
        Velox/NCEM ``.emd``, JEOL ``.pts`` or ``.ASW``, Gatan ``.dm3``/``.dm4``,
        HyperSpy ``.hspy``, Phenom ``.elid``), or an in-memory array of shape
        ``(rows, cols, channels)``, numpy or dask.
    name
        Name of the modality in the study, e.g. ``"eds"``.
    signal
        For files holding several signals (images, maps, single spectra and
        spectrum images): the index of the signal in the file (as RosettaSciIO
        lists them), or a case-insensitive substring of its title.  ``None`` takes
        the first spectrum image.
    bin_channels
        Sum this many adjacent energy channels (sparse EDS counts: bin them).
    bin_scan
        Sum square blocks of ``bin_scan x bin_scan`` scan positions.
    energy_range
        ``(low, high)`` in the energy axis' units (after calibration overrides):
        keep the channels (after binning) whose position lies in the closed range.
    chunks
        Scan positions per chunk of the returned array: ``rows`` (all columns) or
        ``(rows, cols)``.  The energy axis is never split.  ``None`` picks whole
        scan rows adding up to about :data:`CHUNK_BYTES`.
    scan_step, scan_units
        Physical distance between scan positions; overrides the file's scan
        calibration (offsets become 0).  ``scan_units`` needs ``scan_step``.
    energy_offset, energy_scale, energy_units
        Energy of the first channel and channel width; each overrides the file's
        value.  For arrays without ``energy_scale`` the energy axis is uncalibrated
        (scale 1, units ``"px"``); ``energy_offset``/``energy_units`` then need
        ``energy_scale``.

    Returns
    -------
    ModalityData
        ``kind="spectrum"``; ``data`` is a dask array ``(rows, cols, channels)``,
        float32, chunked along the scan with whole spectra in each chunk; ``axes``
        are ``[Axis("y"), Axis("x"), Axis("energy")]``.  ``metadata`` records the
        reader, signal, original dtype/shape, signal type and binning.

    Raises
    ------
    InputError
        Missing, unsupported or unreadable file; a file or array that is not one
        spectrum image (an image, a single spectrum, a 4-D dataset ...); an empty
        or all-zero cube; NaN/Inf values.
    ParameterError
        Invalid ``signal``, bin factors (< 1, or larger than the axis),
        ``energy_range``, ``chunks`` or calibration keywords.

    Notes
    -----
    The checks for NaN/Inf and an all-zero cube take one pass over the (binned)
    data.  For JEOL ``.pts`` event streams RosettaSciIO sums the channels while
    decoding when ``bin_channels`` divides the 4096 raw channels; everything else
    is binned with :func:`dask.array.coarsen` after reading.
    """
    _check_signal(signal)
    bin_channels = _check_factor(bin_channels, "bin_channels")
    bin_scan = _check_factor(bin_scan, "bin_scan")
    energy_range = _check_range(energy_range)
    _check_chunks(chunks)
    is_array = isinstance(source, (np.ndarray, da.Array))
    _check_calibration(
        ("scan_step", scan_step, "scan_units", scan_units),
        ("energy_scale", energy_scale, "energy_units", energy_units),
        ("energy_scale", energy_scale, "energy_offset", energy_offset),
        # A file has an energy calibration for these to amend.
        alone_ok=() if is_array else ("energy_units", "energy_offset"),
    )
    _check_number(energy_offset, "energy_offset", positive=False)

    native = 1  # channels already summed by the reader (JEOL)
    if isinstance(source, (np.ndarray, da.Array)):
        raw, axes, meta = _from_array(source, signal, ("y", "x", "energy"))
        where = "<array>"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        raw, axes, meta, native = _from_file(path, signal, bin_channels)
        where = str(path)
    else:
        raise InputError(
            f"cannot read a spectrum image from a {type(source).__name__}",
            fix="pass a file path (str or pathlib.Path) or a (rows, cols, channels) "
            "numpy/dask array",
            where=repr(source)[:80],
        )

    _check_dimensions(raw, where, meta, kind="spectrum")
    _check_dtype(raw, where)
    rows, cols, channels = (int(n) for n in raw.shape)
    _check_factor_fits(bin_scan, "bin_scan", {"rows": rows, "cols": cols})
    _check_factor_fits(bin_channels, "bin_channels", {"channels": channels * native})

    axes = _calibrate(
        axes,
        raw.shape,
        native,
        scan=(scan_step, scan_units),
        energy=(energy_offset, energy_scale, energy_units),
        meta=meta,
    )

    # What is left to bin after the reader's own binning.
    factors = {0: bin_scan, 1: bin_scan, 2: bin_channels // native}
    data, axes, dropped = _bin_sum(raw, axes, factors)
    meta["binning"] = {
        "channels": bin_channels,
        "scan": bin_scan,
        "channels_by_reader": native,
        "dropped": dict(zip(("rows", "cols", "channels"), dropped, strict=True)),
    }

    if energy_range is not None:
        data, axes[2] = _crop_axis(data, axes[2], 2, energy_range, "energy_range")
        meta["energy_range"] = [float(v) for v in energy_range]

    data = data.astype(np.float32).rechunk(_scan_chunks(data.shape, chunks))
    _check_values(
        data,
        where,
        noun="spectrum image",
        binned=bin_channels * bin_scan > 1,
        finite=not np.issubdtype(raw.dtype, np.integer),
    )
    return ModalityData(
        name=name, kind="spectrum", data=data, axes=axes, source=where, metadata=meta
    )


# --------------------------------------------------------------------------- sources


def _from_array(
    arr: np.ndarray | da.Array, signal: int | str | None, names: tuple[str, ...]
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    """Wrap an in-memory array (no copy) as the image reader does; uncalibrated named axes."""
    lazy, _, meta = _image_from_array(arr, signal)
    return lazy, [Axis(n, int(size)) for n, size in zip(names, lazy.shape, strict=False)], meta


def _from_file(
    path: Path, signal: int | str | None, bin_channels: int
) -> tuple[da.Array, list[Axis], dict[str, Any], int]:
    """Read the chosen signal of a file.

    Returns data, axes, metadata and the number of channels the reader already
    summed per output channel (JEOL; 1 otherwise).
    """
    plugin = _plugin_for(
        path, plugins=_PLUGINS, modality="spectrum", elsewhere=_ELSEWHERE
    )
    native = 1
    options: dict[str, Any] = {}
    if plugin is _JEOL and bin_channels > 1 and _JEOL_RAW_CHANNELS % bin_channels == 0:
        native = bin_channels
        options["rebin_energy"] = bin_channels
    signals = _read_signals(path, plugin, what="a spectrum image", **options)
    index = _pick_signal(
        signals,
        signal,
        path,
        accept=_is_spectrum_image,
        missing=lambda sigs, listing: _no_spectrum_image(sigs, listing, path),
    )
    chosen = signals[index]
    data, meta = _signal_data(chosen, plugin, path, index, signals)
    names = ("y", "x", "energy")
    axes = [
        _axis(a, n)
        for a, n in zip(chosen["axes"], names + ("?",) * data.ndim, strict=False)
    ]
    return data, axes, meta, native


def _signal_data(
    chosen: dict[str, Any],
    plugin: _Plugin,
    path: Path,
    index: int,
    signals: list[dict[str, Any]],
) -> tuple[da.Array, dict[str, Any]]:
    """Data of an rsciio signal dict as dask, and the metadata to keep about it."""
    data = chosen["data"]
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data))
    meta = {
        "reader": plugin.module,
        "title": _title(chosen) or path.stem,
        "original_dtype": str(data.dtype),
        "original_shape": [int(n) for n in data.shape],
        "signal_index": index,
        "signals_in_file": [_describe(s) for s in signals],
        "signal_type": _signal_type(chosen),
        "signal_dims": _signal_dims(chosen),
        "calibration": "file",
    }
    return data, meta


# --------------------------------------------------------------------------- signals


def _signal_dims(sig: dict[str, Any]) -> int | None:
    """Number of signal axes per rsciio's ``navigate`` flags, ``None`` if unknown.

    Unknown when a flag is missing, or when no axis navigates (EMD 1.0 / py4DSTEM
    files flag every axis as a signal axis).
    """
    flags = [ax.get("navigate") for ax in sig.get("axes", [])]
    if len(flags) != len(sig["data"].shape) or not flags:
        return None
    if not all(isinstance(f, (bool, np.bool_)) for f in flags) or not any(flags):
        return None
    return sum(not f for f in flags)


def _signal_type(sig: dict[str, Any]) -> str:
    return str(sig.get("metadata", {}).get("Signal", {}).get("signal_type", "") or "")


def _is_spectrum_image(sig: dict[str, Any]) -> bool:
    """3-D with one signal axis, the last (or no navigation flags to tell)."""
    if len(sig["data"].shape) != 3 or sig["data"].dtype.names:
        return False
    n_signal = _signal_dims(sig)
    return n_signal is None or (n_signal == 1 and not sig["axes"][-1]["navigate"])


def _what_is(
    shape: tuple[int, ...], n_signal: int | None, signal_type: str = ""
) -> str:
    """A few words saying what a signal of this shape looks like."""
    ndim = len(shape)
    kind = signal_type.upper()
    spectral = kind.startswith(("EDS", "EELS", "CL"))
    diffraction = "DIFFRACTION" in kind or kind in ("EBSD", "DIFFRACTION")
    if ndim <= 1:
        return "a single spectrum (1-D)" if ndim else "a single number (0-D)"
    if ndim == 2:
        if n_signal == 1 or spectral:
            return "a line scan of spectra (2-D: positions, channels)"
        return "a 2-D image" + (" (one diffraction pattern?)" if diffraction else "")
    if ndim == 3:
        if n_signal == 2 or diffraction:
            what = "patterns" if diffraction else "2-D images"
            return f"a stack of {shape[0]} {what} (3-D)"
        if n_signal == 1 or spectral:
            return "a spectrum image (3-D: rows, cols, channels)"
        return "3-D (a spectrum image, or a stack of images?)"
    if ndim == 4:
        if n_signal == 1 or spectral:
            return "4-D with one signal axis (a series of spectrum images?)"
        if n_signal == 2 or diffraction:
            return "a 4-D scan of 2-D patterns (4D-STEM diffraction)"
        return "4-D (4D-STEM diffraction, or a series?)"
    return f"{ndim}-D"


def _no_spectrum_image(
    signals: list[dict[str, Any]], listing: str, path: Path
) -> InputError:
    kinds = [_what_is(tuple(s["data"].shape), _signal_dims(s)) for s in signals]
    if all("image" in k and "spectrum" not in k for k in kinds):
        fix = "the file holds images only: read them with the image modality"
    elif any("4D-STEM" in k for k in kinds):
        fix = "read 4D-STEM data with the diffraction modality"
    else:
        fix = (
            "the spectrum modality needs a (rows, cols, channels) spectrum image; "
            "pick one with signal= if it is listed under another shape, or read "
            "images with the image modality"
        )
    return InputError(
        f"the file holds no spectrum image (rows, cols, channels): {listing}",
        fix=fix,
        where=path,
    )


# --------------------------------------------------------------------------- checks


def _check_signal(signal: object) -> None:
    if signal is not None and (
        isinstance(signal, bool) or not isinstance(signal, (int, str))
    ):
        raise ParameterError(
            f"signal must be an index, a title substring or None, not {signal!r}",
            fix="e.g. signal=0 or signal='EDS'",
            where="signal",
        )


def _check_factor(value: object, label: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or int(value) < 1
    ):
        raise ParameterError(
            f"{label} must be a positive integer, not {value!r}",
            fix=f"use {label}=1 for no binning, or e.g. {label}=2 to sum pairs",
            where=label,
        )
    return int(value)


def _check_factor_fits(factor: int, label: str, sizes: dict[str, int]) -> None:
    """A bin factor may not exceed the axis (axes) it bins."""
    too_small = {k: n for k, n in sizes.items() if factor > n}
    if too_small:
        listing = ", ".join(f"{n} {k}" for k, n in too_small.items())
        raise ParameterError(
            f"{label}={factor} is larger than the data ({listing})",
            fix=f"use {label} <= {min(too_small.values())}",
            where=label,
        )


def _check_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ParameterError(
            f"energy_range must be two finite numbers (low, high) with low < high, "
            f"not {value!r}",
            fix="give it in the energy axis' units, e.g. energy_range=(0.2, 10.0) keV",
            where="energy_range",
        )
    return low, high


def _check_chunks(chunks: object) -> None:
    parts = chunks if isinstance(chunks, tuple) else (chunks,)
    ok = chunks is None or (
        len(parts) in (1, 2)
        and all(
            isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 1
            for p in parts
        )
    )
    if not ok:
        raise ParameterError(
            f"chunks must be None, a number of scan rows or (rows, cols), "
            f"not {chunks!r}",
            fix="use e.g. chunks=8, chunks=(8, 64), or leave it out",
            where="chunks",
        )


def _check_number(value: object, label: str, *, positive: bool) -> None:
    if value is None:
        return
    ok = (
        isinstance(value, (int, float, np.number))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and (value > 0 or not positive)
    )
    if not ok:
        kind = "a positive finite number" if positive else "a finite number"
        raise ParameterError(
            f"{label} must be {kind}, not {value!r}",
            fix=f"e.g. {label}=0.5" + (", or leave it out" if not positive else ""),
            where=label,
        )


def _check_units(value: object, label: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ParameterError(
            f"{label} must be a non-empty string, not {value!r}",
            fix=f"e.g. {label}='nm' or {label}='eV'",
            where=label,
        )


def _check_calibration(
    *pairs: tuple[str, object, str, object], alone_ok: tuple[str, ...] = ()
) -> None:
    """Each pair: (main keyword, its value, dependent keyword, its value).

    The main keyword must be a positive number; the dependent one (units or an
    offset) needs it, unless listed in ``alone_ok`` (it then overrides a file's
    value on its own).
    """
    for main, main_value, dep, dep_value in pairs:
        _check_number(main_value, main, positive=True)
        if dep.endswith("units"):
            _check_units(dep_value, dep)
        if dep_value is not None and main_value is None and dep not in alone_ok:
            raise ParameterError(
                f"{dep}={dep_value!r} given without {main}",
                fix=f"give both, e.g. {main}=0.5, {dep}=..., or neither",
                where=dep,
            )


def _check_dtype(data: da.Array, where: str) -> None:
    """Real numbers only."""
    check_real_values(data.dtype, where)


def _check_dimensions(
    data: da.Array, where: str, meta: dict[str, Any], *, kind: str
) -> None:
    """The array must be a spectrum image (``kind="spectrum"``, 3-D) or a 4-D
    diffraction scan (``kind="diffraction"``); say what it is otherwise."""
    shape = tuple(int(n) for n in data.shape)
    n_signal = meta.get("signal_dims")
    signal_type = str(meta.get("signal_type", ""))
    what = _what_is(shape, n_signal, signal_type)
    several = len(meta.get("signals_in_file", [])) > 1
    pick = " (or pick another signal in the file with signal=)" if several else ""
    if kind == "spectrum":
        ok = (
            len(shape) == 3 and n_signal in (None, 1) and not what.startswith("a stack")
        )
        wanted = "one spectrum image (rows, cols, channels)"
    else:
        ok = len(shape) == 4 and n_signal in (None, 2)
        wanted = "a 4-D scan of diffraction patterns (rows, cols, qy, qx)"
    if not ok:
        raise InputError(
            f"data of shape {shape} is {what}; the {kind} modality needs {wanted}",
            fix=_redirect(what, shape, kind) + pick,
            where=where,
        )
    if 0 in shape:
        raise InputError(
            f"the data are empty (shape {shape})",
            fix="pass data with at least one value along every axis",
            where=where,
        )


def _redirect(what: str, shape: tuple[int, ...], kind: str) -> str:
    """Fix for data of the wrong kind: which modality reads it, or how to reshape."""
    if what.startswith("a stack") and kind == "diffraction":
        return (
            "for a flat stack of patterns give scan_shape=(rows, cols); read one "
            "image of a stack with the image modality"
        )
    if what.startswith("a stack"):
        return (
            "read 4D-STEM patterns with the diffraction modality (with "
            "scan_shape=(rows, cols) for a flat stack); read one image of a stack "
            "with the image modality"
        )
    if "2-D image" in what:
        return "read images with the image modality"
    if "single spectrum" in what or "number" in what:
        return (
            "a single spectrum cannot be segmented: pass a spectrum image "
            "(rows, cols, channels)"
        )
    if "line scan" in what:
        return (
            "pass the line scan as an array reshaped to (1, positions, channels) "
            "with the spectrum modality"
        )
    if kind == "spectrum":
        if "4D-STEM" in what or len(shape) == 4:
            return (
                "read 4D-STEM data with the diffraction modality; for a series of "
                "spectrum images, sum or pick one frame first"
            )
        return "pass a 3-D (rows, cols, channels) spectrum image"
    if "spectrum image" in what and not what.startswith("3-D"):
        return "read spectrum images with the spectrum modality"
    if "one signal axis" in what:
        return "read spectrum images with the spectrum modality"
    if len(shape) == 3:
        return (
            "for a flat stack of patterns give scan_shape=(rows, cols); read a "
            "spectrum image with the spectrum modality"
        )
    return "pass a 4-D (rows, cols, qy, qx) array or file"


def _check_values(
    data: da.Array,
    where: str,
    *,
    noun: str,
    binned: bool = False,
    finite: bool = True,
) -> None:
    """Reject NaN/Inf and an all-zero (or constant) cube, in one pass.

    ``finite=False`` skips the NaN/Inf count (integer sources cannot hold them).
    """
    bad = (~da.isfinite(data)).sum() if finite else 0
    tasks = [data.min(), data.max(), bad]
    try:
        lo, hi, n_bad = dask.compute(*tasks)
    except Exception as exc:  # lazy readers fail here on truncated data
        raise InputError(
            f"the data cannot be read ({type(exc).__name__}: {exc})",
            fix="check the file is complete (not truncated by a copy or download); "
            "re-export it from the acquisition software",
            where=where,
        ) from exc
    if n_bad:
        after = " after binning" if binned else ""
        raise InputError(
            f"{int(n_bad)} of {data.size} values{after} are NaN or infinite "
            "(or overflow float32)",
            fix="replace them first, e.g. np.nan_to_num(cube, nan=0.0), or crop them "
            "away",
            where=where,
        )
    if hi == 0 and lo == 0:
        raise InputError(
            f"the {noun} is all zeros: no counts, nothing to segment",
            fix="check the acquisition (detector off or saturated readout?), the "
            "chosen signal, and the energy_range, or pass another file",
            where=where,
        )
    if lo == hi:
        raise InputError(
            f"the {noun} is constant (every value is {float(lo):g}): nothing to "
            "segment",
            fix="check the acquisition or pass another file",
            where=where,
        )


# --------------------------------------------------------------------------- cubes


def _calibrate(
    axes: list[Axis],
    shape: tuple[int, ...],
    native: int,
    *,
    scan: tuple[float | None, str | None],
    energy: tuple[float | None, float | None, str | None],
    meta: dict[str, Any],
) -> list[Axis]:
    """Axes in this module's conventions, with the keyword overrides applied.

    ``native`` is the number of channels the reader already summed per channel;
    such a reader (JEOL) reports the first raw channel's energy as the offset,
    which is moved to the bin centre here.  Energy overrides describe the raw
    channels and are binned likewise.
    """
    y, x, e = (
        dataclasses.replace(a, size=int(n)) for a, n in zip(axes, shape, strict=True)
    )
    raw_scale = e.scale / native  # width of one raw channel
    e = dataclasses.replace(e, offset=e.offset + (native - 1) / 2 * raw_scale)
    overridden = False
    step, units = scan
    if step is not None:
        y, x = (Axis(a.name, a.size, step, 0.0, units or "px") for a in (y, x))
        overridden = True
    offset, scale, e_units = energy
    if any(v is not None for v in energy):
        raw_scale = raw_scale if scale is None else scale
        raw_offset = (
            e.offset - (native - 1) / 2 * raw_scale if offset is None else offset
        )
        e = Axis(
            "energy",
            e.size,
            raw_scale * native,
            raw_offset + (native - 1) / 2 * raw_scale,
            e_units if e_units is not None else e.units,
        )
        overridden = True
    if overridden:
        meta["calibration"] = (
            "arguments"
            if meta["calibration"] == "none"
            else "file, overridden by arguments"
        )
    elif meta["calibration"] == "file" and all(a.units == "px" for a in (y, x, e)):
        meta["calibration"] = "none"
    return [y, x, e]


def _binned_axis(axis: Axis, factor: int, size: int) -> Axis:
    """Axis after summing ``factor`` samples per bin (position = bin centre)."""
    if factor == 1:
        return dataclasses.replace(axis, size=size)
    return dataclasses.replace(
        axis,
        size=size,
        scale=axis.scale * factor,
        offset=axis.offset + (factor - 1) / 2 * axis.scale,
    )


def _bin_sum(
    data: da.Array, axes: list[Axis], factors: dict[int, int]
) -> tuple[da.Array, list[Axis], list[int]]:
    """Sum blocks of ``factors[axis]`` samples along each axis (dask ``coarsen``).

    Samples beyond the last whole block are dropped.  Integer counts are summed in
    an integer type wide enough for the block and floats in float64, so nothing
    overflows or rounds before the cast to float32.  Returns the binned data, its axes and the number of samples
    dropped per axis.
    """
    factors = {ax: int(f) for ax, f in factors.items() if f > 1}
    dropped = [n % factors.get(ax, 1) for ax, n in enumerate(data.shape)]
    if not factors:
        return data, list(axes), dropped
    keep = tuple(slice(0, n - d) for n, d in zip(data.shape, dropped, strict=True))
    data = data[keep]
    data = data.astype(_sum_dtype(data.dtype, math.prod(factors.values())))
    # coarsen needs every chunk along a binned axis to hold whole blocks.
    aligned = {ax: max(f, max(data.chunks[ax]) // f * f) for ax, f in factors.items()}
    data = da.coarsen(np.sum, data.rechunk(aligned), factors)
    new_axes = [
        _binned_axis(a, factors.get(i, 1), int(n))
        for i, (a, n) in enumerate(zip(axes, data.shape, strict=True))
    ]
    return data, new_axes, dropped


def _sum_dtype(dtype: np.dtype, n: int) -> type:
    """A dtype that sums ``n`` values of ``dtype`` exactly (int32 where it fits)."""
    if np.issubdtype(dtype, np.floating):
        return np.float64
    top = 1 if dtype == bool else int(np.iinfo(dtype).max)
    return np.int32 if top * n < 2**31 else np.int64


def _crop_axis(
    data: da.Array,
    axis: Axis,
    index: int,
    bounds: tuple[float, float],
    label: str,
) -> tuple[da.Array, Axis]:
    """Keep the samples of axis ``index`` whose positions lie in ``bounds``."""
    positions = axis.offset + np.arange(axis.size) * axis.scale
    low, high = bounds
    inside = np.flatnonzero((positions >= low) & (positions <= high))
    if inside.size == 0:
        first, last = sorted((float(positions[0]), float(positions[-1])))
        raise ParameterError(
            f"{label}=({low:g}, {high:g}) holds no {axis.name} channel; the axis "
            f"covers {first:g} to {last:g} {axis.units}",
            fix=f"give {label} in {axis.units}, overlapping that span",
            where=label,
        )
    start, stop = int(inside[0]), int(inside[-1]) + 1
    cut = [slice(None)] * data.ndim
    cut[index] = slice(start, stop)
    cropped = dataclasses.replace(
        axis, size=stop - start, offset=axis.offset + start * axis.scale
    )
    return data[tuple(cut)], cropped


def _scan_chunks(
    shape: tuple[int, ...],
    chunks: int | tuple[int, int] | None,
    itemsize: int = 4,
    target: int = CHUNK_BYTES,
) -> tuple[int, ...]:
    """Chunk shape: blocks of scan positions, the signal axes whole."""
    rows, cols = int(shape[0]), int(shape[1])
    signal = tuple(int(n) for n in shape[2:])
    per_position = max(1, math.prod(signal)) * itemsize
    if chunks is None:
        positions = max(1, target // per_position)
        if positions >= cols:
            r, c = max(1, positions // cols), cols
        else:
            r, c = 1, positions
    elif isinstance(chunks, tuple) and len(chunks) == 2:
        r, c = int(chunks[0]), int(chunks[1])
    elif isinstance(chunks, tuple):
        r, c = int(chunks[0]), cols
    else:
        r, c = int(chunks), cols
    return (min(r, rows), min(c, cols), *signal)
