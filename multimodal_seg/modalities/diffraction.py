"""Diffraction modality: 4D-STEM (and EBSD) scans as lazy float32 arrays.

A diffraction scan is an array ``(rows, cols, qy, qx)`` with axes ``y, x, qy, qx``:
one detector pattern per scan position.  Files are read through RosettaSciIO
(``rsciio``) with the helpers of :mod:`.reading`, lazily:

* Quantum Detectors Merlin ``.mib`` (+ ``.hdr`` beside it): rsciio takes the frame
  count from the ``.hdr`` and the scan width from the frame time stamps; where that
  guess fails give ``scan_shape=(rows, cols)``.
* Gatan Blockfile ``.blo`` (rsciio's reader needs scikit-image).
* EMPAD ``.xml`` (with its ``.raw`` beside it).
* Gatan ``.dm3``/``.dm4``, HyperSpy ``.hspy``/``.hdf5``.
* EMD ``.emd``/``.h5``: NCEM, Velox, and EMD 1.0 as written by py4DSTEM >= 0.13 and
  ``emdfile`` (a DataCube is the 4-D ``data`` array of an ``emd_group_type='array'``
  group); rsciio reads them all.  To bring other py4DSTEM data in, save
  ``datacube.data`` with HyperSpy (``hs.signals.Signal2D(datacube.data).save(
  "scan.hspy")``).
* kikuchipy h5ebsd ``.h5`` (EBSD patterns: the same scan-of-patterns layout):
  rsciio has no reader, so :func:`_read_h5ebsd` reads that one layout with h5py
  (``Scan N/EBSD/Data/patterns`` + ``Scan N/EBSD/Header``).

HDF5 files (``.h5``, ``.hdf5``, ``.emd``) are routed by their content, not only their
extension: see :func:`_hdf5_flavour`.

The adapter only bins (sums) scan positions and detector pixels and casts to
float32; scaling and beam centring are left to encoders, which can use
:func:`scale_patterns`, :func:`centre_of_mass` and :func:`centre_patterns`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import h5py
import numpy as np
from scipy import ndimage

from ..errors import InputError, ParameterError
from .base import Axis, ModalityData, check_real_values
from .checks import bin_sum, check_calibration, check_chunks, check_dimensions
from .checks import check_factor, check_factor_fits, check_signal, check_values
from .checks import scan_chunks, signal_dims, signal_facts, what_is
from .image import SUPPORTED_IMAGE_EXTENSIONS
from .reading import DIGITALMICROGRAPH, HYPERSPY, RsciioPlugin, axis_from_rsciio
from .reading import pick_signal, plugin_for, read_signals, signal_data, unreadable
from .reading import wrap_array
from .spectrum import SUPPORTED_SPECTRUM_EXTENSIONS

_MIB = RsciioPlugin("rsciio.quantumdetector", "Quantum Detectors MIB")
_BLO = RsciioPlugin("rsciio.blockfile", "Gatan Blockfile")
_EMPAD = RsciioPlugin("rsciio.empad", "EMPAD")
_EMD = RsciioPlugin("rsciio.emd", "EMD (NCEM, Velox, py4DSTEM/EMD 1.0)")
# py4DSTEM / emdfile (EMD 1.0): without stack_group=False rsciio stacks groups with
# a common path (rsciio documents this setting for py4DSTEM files).
_EMD1 = RsciioPlugin("rsciio.emd", "EMD 1.0 (py4DSTEM)", kwargs={"stack_group": False})
_H5EBSD = RsciioPlugin("h5py", "kikuchipy h5ebsd")  # read by _read_h5ebsd, not rsciio

_PLUGINS: dict[str, RsciioPlugin] = {
    ".mib": _MIB,
    ".blo": _BLO,
    ".xml": _EMPAD,
    ".dm3": DIGITALMICROGRAPH,
    ".dm4": DIGITALMICROGRAPH,
    ".hspy": HYPERSPY,
    # HDF5 containers: the plugin is chosen from the content (_hdf5_flavour).
    ".hdf5": HYPERSPY,
    ".h5": HYPERSPY,
    ".emd": _EMD,
}
_SNIFFED = {".h5", ".hdf5", ".emd"}

#: File extensions :func:`read_diffraction` accepts (lower case; matching ignores case).
SUPPORTED_DIFFRACTION_EXTENSIONS: tuple[str, ...] = tuple(sorted(_PLUGINS))

_ELSEWHERE: dict[str, str] = {
    **{ext: "image" for ext in SUPPORTED_IMAGE_EXTENSIONS if ext not in _PLUGINS},
    **{ext: "spectrum" for ext in SUPPORTED_SPECTRUM_EXTENSIONS if ext not in _PLUGINS},
}

ScaleMethod = Literal["log", "anscombe", "none"]


# --------------------------------------------------------------------------- public


def read_diffraction(
    source: str | Path | np.ndarray | da.Array,
    *,
    name: str = "diffraction",
    signal: int | str | None = None,
    bin_scan: int = 1,
    bin_detector: int = 1,
    scan_shape: tuple[int, int] | None = None,
    chunks: int | tuple[int, int] | None = None,
    scan_step: float | None = None,
    scan_units: str | None = None,
    q_scale: float | None = None,
    q_units: str | None = None,
) -> ModalityData:
    """Read one 4D-STEM (or EBSD) scan as a lazy, calibrated float32 array.

    Parameters
    ----------
    source
        Path to a file (see :data:`SUPPORTED_DIFFRACTION_EXTENSIONS` and the module
        docstring), or an in-memory array ``(rows, cols, qy, qx)`` (or a flat stack
        ``(n, qy, qx)`` with ``scan_shape``), numpy or dask.
    name
        Name of the modality in the study, e.g. ``"4dstem"``.
    signal
        For files holding several signals (e.g. a py4DSTEM file with virtual
        images, an h5ebsd file with several scans): index in the file or a
        title, case-insensitive (an equal title wins; else part of one title).  ``None`` takes the first 4-D scan.
    bin_scan
        Sum square blocks of ``bin_scan x bin_scan`` scan positions.
    bin_detector
        Sum square blocks of ``bin_detector x bin_detector`` detector pixels.
    scan_shape
        ``(rows, cols)``: reshape the scan (a flat stack of ``rows * cols`` patterns,
        or a scan whose shape the file got wrong), row by row.  The scan axes are
        then uncalibrated unless ``scan_step`` is given.
    chunks
        Scan positions per chunk: ``rows`` (all columns) or ``(rows, cols)``; the
        detector axes are never split.  ``None`` picks about 64 MiB per chunk
        (whole scan rows where they fit).
    scan_step, scan_units
        Distance between scan positions; overrides the file's scan calibration
        (offsets become 0).  ``scan_units`` needs ``scan_step``.
    q_scale, q_units
        Detector pixel size in reciprocal space (e.g. ``0.01``, ``"1/Å"``);
        overrides the file's detector calibration (offsets become 0).
        ``q_units`` needs ``q_scale``.

    Returns
    -------
    ModalityData
        ``kind="diffraction"``; ``data`` is a dask array ``(rows, cols, qy, qx)``,
        float32, chunked along the scan with whole patterns per chunk; ``axes`` are
        ``[Axis("y"), Axis("x"), Axis("qy"), Axis("qx")]``.

    Raises
    ------
    InputError
        Missing, unsupported or unreadable file; an image, spectrum or spectrum
        image instead of a scan of patterns; a flat stack without ``scan_shape``;
        an empty or all-zero scan; NaN/Inf values.
    ParameterError
        Invalid ``signal``, bin factors (< 1, or larger than the axes),
        ``scan_shape`` (not matching the number of patterns), ``chunks`` or
        calibration keywords.

    Notes
    -----
    The NaN/Inf and all-zero checks take one pass over the (binned) data.
    """
    check_signal(signal, example="EDS")
    bin_scan = check_factor(bin_scan, "bin_scan")
    bin_detector = check_factor(bin_detector, "bin_detector")
    scan_shape = _check_scan_shape(scan_shape)
    check_chunks(chunks)
    check_calibration(
        ("scan_step", scan_step, "scan_units", scan_units),
        ("q_scale", q_scale, "q_units", q_units),
    )

    names = ("y", "x", "qy", "qx")
    if isinstance(source, (np.ndarray, da.Array)):
        raw, axes, meta = _from_array(source, signal)
        where = "<array>"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        raw, axes, meta = _from_file(path, signal, scan_shape)
        where = str(path)
    else:
        raise InputError(
            f"cannot read diffraction data from a {type(source).__name__}",
            fix="pass a file path (str or pathlib.Path) or a (rows, cols, qy, qx) "
            "numpy/dask array",
            where=repr(source)[:80],
        )

    if scan_shape is not None:
        raw, axes = _reshape_scan(raw, axes, scan_shape, where, meta)
    check_dimensions(raw, where, meta, kind="diffraction")
    check_real_values(raw.dtype, where)
    rows, cols, qy, qx = (int(n) for n in raw.shape)
    check_factor_fits(bin_scan, "bin_scan", {"rows": rows, "cols": cols})
    check_factor_fits(bin_detector, "bin_detector", {"qy": qy, "qx": qx})

    axes = [
        dataclasses.replace(a, name=n, size=int(size))
        for a, n, size in zip(axes, names, raw.shape, strict=True)
    ]
    axes = _override(axes, scan_step, scan_units, q_scale, q_units, meta)

    factors = {0: bin_scan, 1: bin_scan, 2: bin_detector, 3: bin_detector}
    data, axes, dropped = bin_sum(raw, axes, factors)
    meta["binning"] = {
        "scan": bin_scan,
        "detector": bin_detector,
        "dropped": dict(zip(names, dropped, strict=True)),
    }
    # checked before the cast and the rechunk, which a pass over the values need not pay:
    # integer counts have the same extremes as their float32 copy (and no NaN)
    check_values(
        data if np.issubdtype(data.dtype, np.integer) else data.astype(np.float32),
        where,
        noun="diffraction scan",
        binned=bin_scan * bin_detector > 1,
        finite=not np.issubdtype(raw.dtype, np.integer),
    )
    data = data.astype(np.float32).rechunk(scan_chunks(data.shape, chunks))
    return ModalityData(
        name=name, kind="diffraction", data=data, axes=axes, source=where, metadata=meta
    )


def scale_patterns(patterns: np.ndarray, method: ScaleMethod = "log") -> np.ndarray:
    """Compress the dynamic range of diffraction patterns (counts).

    Parameters
    ----------
    patterns
        Array of any shape ``(..., qy, qx)`` (numpy, or anything ``np.asarray``
        takes), counts.  Negative values (e.g. after a dark-reference subtraction)
        are clipped to 0 first.
    method
        ``"log"``: ``log1p(x)``; ``"anscombe"``: ``2 * sqrt(x + 3/8)``, which makes
        Poisson noise approximately unit-variance (for means above a few counts);
        ``"none"``: unchanged values.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``patterns`` (a new array; the input is untouched).
    """
    if method not in ("log", "anscombe", "none"):
        raise ParameterError(
            f"unknown pattern scaling {method!r}",
            fix="use 'log', 'anscombe' or 'none'",
            where="method",
        )
    x = np.array(patterns, dtype=np.float32, copy=True)
    if method == "none":
        return x
    np.maximum(x, 0.0, out=x)
    if method == "log":
        return np.log1p(x, out=x)
    x += 3.0 / 8.0
    np.sqrt(x, out=x)
    x *= 2.0
    return x


def centre_of_mass(
    patterns: np.ndarray, *, threshold: float | None = None
) -> np.ndarray:
    """Centre of mass of each pattern, in pixel coordinates.

    Parameters
    ----------
    patterns
        ``(qy, qx)``, ``(n, qy, qx)`` or ``(rows, cols, qy, qx)`` (any leading
        shape; it is flattened in C order).
    threshold
        ``None``: every pixel weighs its (non-negative) value.  A fraction in
        ``[0, 1)``: only pixels at or above ``threshold * max`` of their pattern
        count, which isolates a bright direct beam from diffuse scattering.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64: ``(cy, cx)`` per pattern, pixel ``(i, j)`` being at
        ``(i, j)``; ``n`` is the product of the leading dimensions (1 for one
        pattern).  A pattern without positive counts gets the detector centre
        ``((qy - 1) / 2, (qx - 1) / 2)``.
    """
    stack = _as_stack(patterns)
    if threshold is not None and not (
        isinstance(threshold, (int, float, np.floating))
        and not isinstance(threshold, bool)
        and 0.0 <= threshold < 1.0
    ):
        raise ParameterError(
            f"threshold must be None or a fraction in [0, 1), not {threshold!r}",
            fix="e.g. threshold=0.5 to weigh only the bright direct beam",
            where="threshold",
        )
    n, qy, qx = stack.shape
    weights = np.maximum(stack.astype(np.float64, copy=False), 0.0)
    if threshold is not None:
        top = weights.reshape(n, -1).max(axis=1)
        weights = np.where(weights >= (threshold * top)[:, None, None], weights, 0.0)
    total = weights.sum(axis=(1, 2))
    cy = weights.sum(axis=2) @ np.arange(qy, dtype=np.float64)
    cx = weights.sum(axis=1) @ np.arange(qx, dtype=np.float64)
    ok = total > 0
    safe = np.where(ok, total, 1.0)
    centres = np.empty((n, 2), dtype=np.float64)
    centres[:, 0] = np.where(ok, cy / safe, (qy - 1) / 2)
    centres[:, 1] = np.where(ok, cx / safe, (qx - 1) / 2)
    return centres


def centre_patterns(
    patterns: np.ndarray, centres: np.ndarray, *, order: int = 1
) -> np.ndarray:
    """Shift each pattern so that its ``centre`` lands on the detector centre.

    Parameters
    ----------
    patterns
        ``(qy, qx)``, ``(n, qy, qx)`` or ``(rows, cols, qy, qx)``.
    centres
        ``(n, 2)`` ``(cy, cx)`` per pattern in pixels, as from
        :func:`centre_of_mass`; ``n`` the product of the leading dimensions.
    order
        Spline order of :func:`scipy.ndimage.shift`: 1 (linear: non-negative, the
        default) or 3 (cubic: sharper, may ring).  Pixels shifted in from outside
        the detector are 0.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``patterns``; the detector centre is
        ``((qy - 1) / 2, (qx - 1) / 2)``.
    """
    original_shape = np.shape(patterns)
    stack = _as_stack(patterns)
    n, qy, qx = stack.shape
    centres = np.asarray(centres, dtype=np.float64)
    if centres.shape != (n, 2) or not np.isfinite(centres).all():
        raise ParameterError(
            f"centres must be a finite ({n}, 2) array (cy, cx per pattern), "
            f"not shape {centres.shape}",
            fix="pass centre_of_mass(patterns), or one (cy, cx) row per pattern",
            where="centres",
        )
    if order not in (0, 1, 2, 3, 4, 5):
        raise ParameterError(
            f"order must be a spline order 0..5, not {order!r}",
            fix="use order=1 (linear) or order=3 (cubic)",
            where="order",
        )
    target = np.array([(qy - 1) / 2, (qx - 1) / 2])
    out = np.empty((n, qy, qx), dtype=np.float32)
    source = stack.astype(np.float32, copy=False)
    for i in range(n):
        ndimage.shift(
            source[i],
            target - centres[i],
            output=out[i],
            order=order,
            mode="constant",
            cval=0.0,
            prefilter=order > 1,
        )
    return out.reshape(original_shape)


def _as_stack(patterns: np.ndarray) -> np.ndarray:
    """``(..., qy, qx)`` -> ``(n, qy, qx)`` numpy (a view where possible)."""
    arr = np.asarray(patterns)
    if arr.ndim < 2 or 0 in arr.shape:
        raise ParameterError(
            f"patterns must have shape (..., qy, qx) with data, not {arr.shape}",
            fix="pass one pattern (qy, qx) or a stack (n, qy, qx) / (rows, cols, qy, qx)",
            where="patterns",
        )
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise ParameterError(
            f"patterns must be real numbers, not {arr.dtype}",
            fix="pass counts as an integer or float array",
            where="patterns",
        )
    return arr.reshape(-1, *arr.shape[-2:])


# --------------------------------------------------------------------------- sources


def _from_array(
    arr: np.ndarray | da.Array, signal: int | str | None
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    """Wrap an in-memory array (no copy); uncalibrated axes."""
    lazy, meta = wrap_array(arr, signal)
    return lazy, [Axis(f"axis{i}", int(n)) for i, n in enumerate(lazy.shape)], meta


def _from_file(
    path: Path, signal: int | str | None, scan_shape: tuple[int, int] | None
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    plugin = plugin_for(path, _PLUGINS, modality="diffraction", elsewhere=_ELSEWHERE)
    if path.suffix.lower() in _SNIFFED:
        plugin = _hdf5_flavour(path)
    if plugin is _H5EBSD:
        signals = _read_h5ebsd(path)
    else:
        signals = read_signals(
            path, plugin, what="a 4D-STEM scan of diffraction patterns"
        )
    index = pick_signal(
        signals,
        signal,
        path,
        accept=_is_scan_of_patterns,
        missing=lambda sigs, listing: _no_scan(sigs, listing, path),
    )
    chosen = signals[index]
    if plugin is _MIB and scan_shape is None:
        _check_mib_complete(chosen, path)
    data, meta = signal_data(signals, index, plugin, path)
    meta.update(signal_facts(chosen), calibration="file")
    axes = [axis_from_rsciio(a, f"axis{i}") for i, a in enumerate(chosen["axes"])]
    if len(axes) != data.ndim:  # rsciio drops length-1 axes in some readers
        axes = [Axis(f"axis{i}", int(n)) for i, n in enumerate(data.shape)]
        meta["calibration"] = "none"
    elif all(a.units == "px" for a in axes):
        meta["calibration"] = "none"
    return data, axes, meta


def _check_mib_complete(sig: dict[str, Any], path: Path) -> None:
    """A .mib with fewer frames than its .hdr announces: refuse to guess the scan.

    rsciio treats it as an interrupted acquisition and guesses the scan from the
    frames there are, which for a truncated copy is a wrong scan shape.
    """
    om = sig.get("original_metadata", {})
    announced = om.get("hdr_file", {}).get("Frames in Acquisition (Number)")
    in_file = om.get("mib_properties", {}).get("frame_number_in_file")
    try:
        announced, in_file = int(announced), int(in_file)
    except (TypeError, ValueError):
        return  # no .hdr (or no count in it): nothing to compare
    if 0 < announced and in_file < announced:
        raise InputError(
            f"holds {in_file} of the {announced} frames its .hdr announces "
            "(a truncated copy, or an interrupted acquisition)",
            fix="copy the complete file again; to use the frames there are, give "
            "scan_shape=(rows, cols) for them",
            where=path,
        )


def _hdf5_flavour(path: Path) -> RsciioPlugin:
    """The reader for an HDF5 container, from its content.

    HyperSpy (root attribute ``file_format="HyperSpy"``) -> rsciio.hspy; EMD 1.0
    (``emd_group_type="file"``, ``version_major >= 1``: py4DSTEM, emdfile) ->
    rsciio.emd with ``stack_group=False``; other EMD (NCEM ``version_major``,
    Velox ``Version``) -> rsciio.emd; kikuchipy h5ebsd (root ``manufacturer``
    ``kikuchipy`` and ``Scan N`` groups) -> :func:`_read_h5ebsd`.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            keys = list(f.keys())
            manufacturer = _h5_text(f.get("manufacturer"))
    except Exception as exc:
        raise unreadable(path, "HDF5", exc) from exc
    if str(_h5_text(attrs.get("file_format"))).lower() == "hyperspy":
        return HYPERSPY
    if "emd_group_type" in attrs or "version_major" in attrs:
        major = attrs.get("version_major")
        try:
            return _EMD1 if major is not None and int(major) >= 1 else _EMD
        except (TypeError, ValueError):
            return _EMD
    if "Version" in keys or "Data" in keys:  # Velox layout; rsciio.emd tells
        return _EMD
    if "kikuchipy" in str(manufacturer).lower() or any(
        k.startswith("Scan ") for k in keys
    ):
        return _H5EBSD
    raise InputError(
        "HDF5 file of a layout this modality cannot read (not HyperSpy, EMD/py4DSTEM "
        f"or kikuchipy h5ebsd; top-level entries: {', '.join(keys[:8]) or 'none'})",
        fix="save the 4-D array with HyperSpy, e.g. "
        "hs.signals.Signal2D(cube).save('scan.hspy'), and read that; for py4DSTEM "
        "data save datacube.data the same way",
        where=path,
    )


def _h5_text(value: Any) -> str:
    """An HDF5 attribute or small dataset as text (bytes, arrays of bytes)."""
    if value is None:
        return ""
    if (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, np.ndarray)
    ):
        try:
            value = value[()]
        except (OSError, TypeError, ValueError, KeyError):
            return ""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _read_h5ebsd(path: Path) -> list[dict[str, Any]]:
    """Read the scans of a kikuchipy h5ebsd file as rsciio-style signal dicts.

    Layout (kikuchipy's own writer): for each group ``Scan N``, patterns
    ``EBSD/Data/patterns`` ``(rows * cols, h, w)`` in row-major scan order, and in
    ``EBSD/Header`` the scan size ``n_rows``, ``n_columns`` and steps ``step_y``,
    ``step_x`` in µm.  Patterns are read lazily, one scan row per chunk; the file
    stays open (read-only) while the dask array is alive.  Other h5ebsd flavours
    (EDAX, Bruker, Oxford) are not read.
    """
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise unreadable(path, "kikuchipy h5ebsd", exc) from exc
    signals = []
    try:
        for key in sorted(k for k in f if k.startswith("Scan ")):
            ebsd = f[key].get("EBSD")
            if ebsd is None or "Data/patterns" not in ebsd:
                continue
            header = ebsd.get("Header", {})

            def number(name: str, default: float, header=header) -> float:
                value = header.get(name) if hasattr(header, "get") else None
                if value is None:
                    return default
                return float(np.asarray(value[()]).reshape(-1)[0])

            dset = ebsd["Data/patterns"]
            n, h, w = (int(v) for v in dset.shape)
            rows = int(number("n_rows", 1))
            cols = int(number("n_columns", n))
            if rows * cols != n:
                raise InputError(
                    f"{key}: the header's scan of {rows} x {cols} does not match the "
                    f"{n} patterns stored",
                    fix="pass the patterns as an array with scan_shape=(rows, cols)",
                    where=path,
                )
            lazy = da.from_array(dset, chunks=(cols, h, w)).reshape(rows, cols, h, w)
            step_y, step_x = number("step_y", 1.0), number("step_x", 1.0)
            signals.append(
                {
                    "data": lazy,
                    "axes": [
                        _ax(rows, step_y, "µm", True),
                        _ax(cols, step_x, "µm", True),
                        _ax(h, 1.0, "px", False),
                        _ax(w, 1.0, "px", False),
                    ],
                    "metadata": {
                        "General": {"title": key},
                        "Signal": {"signal_type": "EBSD"},
                    },
                }
            )
    except InputError:
        raise
    except Exception as exc:
        raise unreadable(path, "kikuchipy h5ebsd", exc) from exc
    if not signals:
        raise InputError(
            "the kikuchipy h5ebsd file holds no 'Scan N/EBSD/Data/patterns' dataset",
            fix="check the file was written by kikuchipy (or convert the patterns to "
            "HyperSpy: hs.signals.Signal2D(patterns).save('scan.hspy'))",
            where=path,
        )
    return signals


def _ax(size: int, scale: float, units: str, navigate: bool) -> dict[str, Any]:
    return {
        "size": size,
        "scale": scale,
        "offset": 0.0,
        "units": units,
        "navigate": navigate,
    }


def _is_scan_of_patterns(sig: dict[str, Any]) -> bool:
    """4-D with the two signal axes last (or no navigation flags to tell)."""
    if len(sig["data"].shape) != 4:
        return False
    n_signal = signal_dims(sig)
    return n_signal is None or (
        n_signal == 2 and not any(a["navigate"] for a in sig["axes"][2:])
    )


def _no_scan(signals: list[dict[str, Any]], listing: str, path: Path) -> InputError:
    kinds = [what_is(tuple(s["data"].shape), signal_dims(s)) for s in signals]
    if any("stack" in k for k in kinds):
        fix = "for a flat stack of patterns give scan_shape=(rows, cols) and signal="
    elif any("spectrum image" in k for k in kinds):
        fix = "read spectrum images with the spectrum modality"
    else:
        fix = "read images with the image modality"
    return InputError(
        f"the file holds no 4-D scan of diffraction patterns: {listing}",
        fix=fix,
        where=path,
    )


# --------------------------------------------------------------------------- helpers


def _check_scan_shape(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
            for v in value
        )
    )
    if not ok:
        raise ParameterError(
            f"scan_shape must be (rows, cols) of positive integers, not {value!r}",
            fix="e.g. scan_shape=(64, 64) for 4096 patterns",
            where="scan_shape",
        )
    return int(value[0]), int(value[1])  # type: ignore[index]


def _reshape_scan(
    data: da.Array,
    axes: list[Axis],
    scan_shape: tuple[int, int],
    where: str,
    meta: dict[str, Any],
) -> tuple[da.Array, list[Axis]]:
    """Give a stack or scan of patterns the scan shape ``scan_shape`` (row-major)."""
    if data.ndim not in (3, 4) or meta.get("signal_dims") not in (None, 2):
        what = what_is(
            tuple(int(n) for n in data.shape),
            meta.get("signal_dims"),
            str(meta.get("signal_type", "")),
        )
        raise InputError(
            f"scan_shape needs a stack (n, qy, qx) or scan (rows, cols, qy, qx) of "
            f"patterns; the data {tuple(data.shape)} are {what}",
            fix="drop scan_shape, or pass diffraction patterns",
            where=where,
        )
    n = math.prod(int(v) for v in data.shape[:-2])
    rows, cols = scan_shape
    if rows * cols != n:
        raise ParameterError(
            f"scan_shape={scan_shape} holds {rows * cols} positions but the data "
            f"have {n} patterns",
            fix=f"give (rows, cols) with rows * cols = {n}",
            where="scan_shape",
        )
    if tuple(int(v) for v in data.shape[:-2]) == scan_shape:
        return data, axes  # already so: keep the calibration
    sig = tuple(int(v) for v in data.shape[-2:])
    flat = data.reshape(n, *sig).rechunk((max(1, cols), *sig))
    reshaped = flat.reshape(rows, cols, *sig)
    meta["scan_shape"] = "argument"
    meta["signal_dims"] = None
    axes = [Axis("y", rows), Axis("x", cols), *axes[-2:]]
    return reshaped, axes


def _override(
    axes: list[Axis],
    scan_step: float | None,
    scan_units: str | None,
    q_scale: float | None,
    q_units: str | None,
    meta: dict[str, Any],
) -> list[Axis]:
    y, x, qy, qx = axes
    if scan_step is not None:
        y, x = (
            Axis(a.name, a.size, float(scan_step), 0.0, scan_units or "px")
            for a in (y, x)
        )
    if q_scale is not None:
        qy, qx = (
            Axis(a.name, a.size, float(q_scale), 0.0, q_units or "px") for a in (qy, qx)
        )
    if scan_step is not None or q_scale is not None:
        meta["calibration"] = (
            "arguments"
            if meta["calibration"] == "none"
            else "file, overridden by arguments"
        )
    return [y, x, qy, qx]
