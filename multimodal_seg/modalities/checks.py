"""Checks and cube helpers shared by the modality readers.

The readers of scans, spectrum and diffraction, return a cube with two scan axes
first and the signal axes after them, so they share: checks of their keywords
(:func:`check_signal`, :func:`check_factor`, :func:`check_chunks`,
:func:`check_calibration` ...), of the data (:func:`check_dimensions`,
:func:`check_values`), what a signal looks like (:func:`signal_dims`,
:func:`what_is`), binning by sums (:func:`bin_sum`) and chunking along the scan
(:func:`scan_chunks`).  The image reader uses :func:`check_signal` and
:func:`value_summary` too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis

#: Target size of one chunk of the returned float32 array, in bytes.
CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- keywords


def check_signal(signal: object, *, example: str) -> None:
    """``signal=`` must be an index, a title substring or ``None``.

    ``example`` is a title the fix suggests, e.g. ``"EDS"``.

    Raises
    ------
    ParameterError
        Anything else (including booleans).
    """
    if signal is not None and (
        isinstance(signal, bool) or not isinstance(signal, (int, str))
    ):
        raise ParameterError(
            f"signal must be an index, a title substring or None, not {signal!r}",
            fix=f"e.g. signal=0 or signal={example!r}",
            where="signal",
        )


def check_factor(value: object, label: str) -> int:
    """A bin factor (keyword ``label``) must be a positive integer; returns an ``int``.

    Raises
    ------
    ParameterError
        Not an integer (booleans included), or below 1.
    """
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


def check_factor_fits(factor: int, label: str, sizes: dict[str, int]) -> None:
    """A bin factor may not exceed the axis (axes) it bins.

    Parameters
    ----------
    factor, label
        The factor and its keyword.
    sizes
        Axis name -> size, for each axis the factor bins.

    Raises
    ------
    ParameterError
        Naming the axes shorter than ``factor``.
    """
    too_small = {k: n for k, n in sizes.items() if factor > n}
    if too_small:
        listing = ", ".join(f"{n} {k}" for k, n in too_small.items())
        raise ParameterError(
            f"{label}={factor} is larger than the data ({listing})",
            fix=f"use {label} <= {min(too_small.values())}",
            where=label,
        )


def check_chunks(chunks: object) -> None:
    """``chunks=`` must be ``None``, a number of scan rows or ``(rows, cols)``.

    Raises
    ------
    ParameterError
        Anything else, or a part below 1.
    """
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


def check_number(value: object, label: str, *, positive: bool, example: float = 0.5) -> None:
    """Keyword ``label`` must be ``None`` or a finite number (> 0 if ``positive``); the fix
    suggests ``example``.

    Raises
    ------
    ParameterError
        Anything else (booleans included).
    """
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
            fix=f"e.g. {label}={example:g}" + (", or leave it out" if not positive else ""),
            where=label,
        )


def _check_units(value: object, label: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ParameterError(
            f"{label} must be a non-empty string, not {value!r}",
            fix=f"e.g. {label}='nm' or {label}='eV'",
            where=label,
        )


def check_calibration(
    *pairs: tuple[str, object, str, object], alone_ok: tuple[str, ...] = ()
) -> None:
    """Each pair: (main keyword, its value, dependent keyword, its value).

    The main keyword must be a positive number; the dependent one (units or an
    offset) needs it, unless listed in ``alone_ok`` (it then overrides a file's
    value on its own).  Dependent keywords ending in ``units`` must be non-empty
    strings.

    Raises
    ------
    ParameterError
        Naming the first keyword that breaks a rule.
    """
    for main, main_value, dep, dep_value in pairs:
        check_number(main_value, main, positive=True)
        if dep.endswith("units"):
            _check_units(dep_value, dep)
        if dep_value is not None and main_value is None and dep not in alone_ok:
            raise ParameterError(
                f"{dep}={dep_value!r} given without {main}",
                fix=f"give both, e.g. {main}=0.5, {dep}=..., or neither",
                where=dep,
            )


# --------------------------------------------------------------------------- signals


def signal_facts(sig: dict[str, Any]) -> dict[str, Any]:
    """What :func:`check_dimensions` reads from a file signal's metadata.

    ``signal_type`` (rsciio's, e.g. ``"EDS_TEM"``; ``""`` if none) and
    ``signal_dims`` (:func:`signal_dims`).
    """
    return {"signal_type": _signal_type(sig), "signal_dims": signal_dims(sig)}


def signal_dims(sig: dict[str, Any]) -> int | None:
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


def what_is(
    shape: tuple[int, ...], n_signal: int | None, signal_type: str = ""
) -> str:
    """A few words saying what a signal of this shape looks like.

    ``n_signal`` is the number of signal axes (:func:`signal_dims`, ``None`` if
    unknown); ``signal_type`` rsciio's signal type (``"EDS_TEM"``, ``"EBSD"`` ...).
    """
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


# --------------------------------------------------------------------------- data


def check_dimensions(
    data: da.Array, where: str, meta: dict[str, Any], *, kind: str
) -> None:
    """The array must be a spectrum image (``kind="spectrum"``, 3-D) or a 4-D
    diffraction scan (``kind="diffraction"``); say what it is otherwise.

    ``meta`` is the source's metadata (``signal_dims``, ``signal_type`` and
    ``signals_in_file`` are read where present).

    Raises
    ------
    InputError
        Wrong dimensions (with the modality or reshape that fits), or empty data.
    """
    shape = tuple(int(n) for n in data.shape)
    n_signal = meta.get("signal_dims")
    signal_type = str(meta.get("signal_type", ""))
    what = what_is(shape, n_signal, signal_type)
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


def value_summary(
    data: da.Array, where: str, *, what: str, finite: bool = True
) -> tuple[Any, Any, int]:
    """Minimum, maximum and number of NaN/Inf values of ``data``, in one pass.

    ``finite=False`` skips the count (0: integer data cannot hold NaN/Inf).

    Raises
    ------
    InputError
        ``"{what} cannot be read"``: computing failed, as lazy readers do on a
        truncated file.
    """
    bad = (~da.isfinite(data)).sum() if finite else 0
    try:
        return dask.compute(data.min(), data.max(), bad)
    except Exception as exc:  # lazy readers fail here on truncated data
        raise InputError(
            f"{what} cannot be read ({type(exc).__name__}: {exc})",
            fix="check the file is complete (not truncated by a copy or download); "
            "re-export it from the acquisition software",
            where=where,
        ) from exc


def check_values(
    data: da.Array,
    where: str,
    *,
    noun: str,
    binned: bool = False,
    finite: bool = True,
) -> None:
    """Reject NaN/Inf and an all-zero (or constant) cube, in one pass.

    ``noun`` names the data in messages (``"spectrum image"`` ...); ``binned`` says
    the values were summed; ``finite=False`` skips the NaN/Inf count (integer
    sources cannot hold them).

    Raises
    ------
    InputError
        The data cannot be computed (:func:`value_summary`), hold NaN/Inf, or are
        all zero or constant.
    """
    lo, hi, n_bad = value_summary(data, where, what="the data", finite=finite)
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


def bin_sum(
    data: da.Array, axes: list[Axis], factors: dict[int, int]
) -> tuple[da.Array, list[Axis], list[int]]:
    """Sum blocks of ``factors[axis]`` samples along each axis (dask ``coarsen``).

    Samples beyond the last whole block are dropped.  Integer counts are summed in
    an integer type wide enough for the block and floats in float64, so nothing
    overflows or rounds before the cast to float32.  A bin sits at the mean
    position of its members: scale ``f * scale``, offset
    ``offset + (f - 1) / 2 * scale``.  Returns the binned data, its axes and the
    number of samples dropped per axis.
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


def _sum_dtype(dtype: np.dtype, n: int) -> type:
    """A dtype that sums ``n`` values of ``dtype`` exactly (int32 where it fits)."""
    if np.issubdtype(dtype, np.floating):
        return np.float64
    top = 1 if dtype == bool else int(np.iinfo(dtype).max)
    return np.int32 if top * n < 2**31 else np.int64


def scan_chunks(
    shape: tuple[int, ...],
    chunks: int | tuple[int, int] | None,
    itemsize: int = 4,
    target: int = CHUNK_BYTES,
) -> tuple[int, ...]:
    """Chunk shape: blocks of scan positions, the signal axes whole.

    Parameters
    ----------
    shape
        The cube's shape, scan axes first.
    chunks
        Scan rows per chunk (all columns), ``(rows, cols)``, or ``None``: about
        ``target`` bytes per chunk, in whole scan rows where one fits.
    itemsize
        Bytes per value.
    target
        Bytes per chunk for ``chunks=None``.
    """
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
