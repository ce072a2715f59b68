"""Image modality: one 2-D greyscale image as a lazy float32 dask array.

Files are read through RosettaSciIO (``rsciio``), lazily where the plugin supports it,
so a large image is not loaded until a chunk is needed.  The only eager work is one
pass of dask reductions (min, max, count of non-finite pixels) that rejects images
that cannot be segmented: NaN/Inf values or a constant image.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis, ModalityData, check_real_values

# ITU-R BT.709 luminance weights for R, G, B.
LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class _Plugin:
    """How to call one rsciio plugin for images."""

    module: str  # rsciio sub-module with a ``file_reader``
    label: str  # human name used in messages
    lazy: bool = True  # whether to ask the reader for a lazy (dask) array
    kwargs: dict[str, Any] = field(default_factory=dict)


_DM = _Plugin("rsciio.digitalmicrograph", "Gatan DigitalMicrograph")
# select_type="images": for Velox files skip the (large, sparse) EDS spectrum stream.
# The NCEM flavour of .emd ignores it.
_EMD = _Plugin("rsciio.emd", "EMD (Velox or NCEM)", kwargs={"select_type": "images"})
_MRC = _Plugin("rsciio.mrc", "MRC")
_TIFF = _Plugin("rsciio.tiff", "TIFF")
_HSPY = _Plugin("rsciio.hspy", "HyperSpy HDF5")
_ZSPY = _Plugin("rsciio.zspy", "HyperSpy zarr")
# rsciio's image plugin fails with lazy=True on current dask (from_delayed without a
# shape); a raster is decoded whole anyway, so read it eagerly and wrap it in dask.
_RASTER = _Plugin("rsciio.image", "raster image", lazy=False)
# Files of analytical microscopes that hold the survey image beside the spectrum
# image: the image modality takes the image (first 2-D signal, or signal=).
_BRUKER = _Plugin("rsciio.bruker", "Bruker BCF", kwargs={"select_type": "image"})
_JEOL = _Plugin("rsciio.jeol", "JEOL Analysis Station")
_PHENOM = _Plugin("rsciio.phenom", "Phenom ELID", lazy=False)  # no lazy mode

_PLUGINS: dict[str, _Plugin] = {
    ".dm3": _DM,
    ".dm4": _DM,
    ".emd": _EMD,
    ".mrc": _MRC,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".hspy": _HSPY,
    ".hdf5": _HSPY,
    ".zspy": _ZSPY,
    ".png": _RASTER,
    ".jpg": _RASTER,
    ".jpeg": _RASTER,
    ".bmp": _RASTER,
    ".bcf": _BRUKER,
    ".asw": _JEOL,
    ".img": _JEOL,
    ".elid": _PHENOM,
}

#: File extensions :func:`read_image` accepts (lower case; matching ignores case).
SUPPORTED_IMAGE_EXTENSIONS: tuple[str, ...] = tuple(sorted(_PLUGINS))

# Extensions whose "file" is a directory (zarr directory store).
_DIRECTORY_FORMATS = {".zspy"}


# --------------------------------------------------------------------------- public


def read_image(
    source: str | Path | np.ndarray | da.Array,
    *,
    name: str = "image",
    signal: int | str | None = None,
    chunks: int = 1024,
    pixel_size: float | None = None,
    units: str = "px",
) -> ModalityData:
    """Read one 2-D greyscale image as a lazy, calibrated float32 array.

    Parameters
    ----------
    source
        Path to an image file (see :data:`SUPPORTED_IMAGE_EXTENSIONS`), or an
        in-memory array of shape ``(rows, cols)`` (or ``(rows, cols, 3|4)`` RGB/RGBA),
        numpy or dask.
    name
        Name of the modality in the study, e.g. ``"haadf"``.
    signal
        For files holding several signals (e.g. a Velox ``.emd`` with HAADF and DF
        images): the index of the signal in the file (as RosettaSciIO lists them), or
        a case-insensitive substring of its title.  ``None`` takes the first 2-D image.
    chunks
        Chunk edge length in pixels of the returned dask array.
    pixel_size
        Physical size of one pixel, in ``units``.  Overrides the file's calibration
        (offsets become 0).  ``None`` keeps the file's calibration; arrays are then
        uncalibrated (scale 1, units ``"px"``).
    units
        Units of ``pixel_size``; only used together with ``pixel_size``.

    Returns
    -------
    ModalityData
        ``kind="image"``; ``data`` is a dask array of shape ``(rows, cols)``, float32;
        ``axes`` are ``[Axis("y", rows, ...), Axis("x", cols, ...)]``.  RGB(A) data are
        folded to grey with luminance weights (0.2126, 0.7152, 0.0722).

    Raises
    ------
    InputError
        Missing, unsupported or unreadable file; not exactly one 2-D image; NaN/Inf
        values; a constant or empty image.
    ParameterError
        Invalid ``signal``, ``chunks``, ``pixel_size`` or ``units``.
    """
    _check_parameters(signal, chunks, pixel_size, units)
    if isinstance(source, (np.ndarray, da.Array)):
        raw, axes, meta = _from_array(source, signal)
        where = "<array>"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        raw, axes, meta = _from_file(path, signal)
        where = str(path)
    else:
        raise InputError(
            f"cannot read an image from a {type(source).__name__}",
            fix="pass a file path (str or pathlib.Path) or a 2-D numpy/dask array",
            where=repr(source)[:80],
        )

    grey, meta["rgb_folded"] = _to_grey(raw, where)
    _check_is_image(grey, where, meta)
    data = grey.astype(np.float32).rechunk(_chunk_shape(grey.shape, chunks))
    _check_values(data, where)

    if pixel_size is not None:
        axes = [
            Axis(n, int(size), float(pixel_size), 0.0, units)
            for n, size in zip(("y", "x"), data.shape, strict=True)
        ]
        meta["calibration"] = "pixel_size argument"
    elif axes is None:
        axes = [
            Axis(n, int(size)) for n, size in zip(("y", "x"), data.shape, strict=True)
        ]
    else:
        meta["calibration"] = "file" if any(a.units != "px" for a in axes) else "none"
    return ModalityData(
        name=name, kind="image", data=data, axes=axes, source=where, metadata=meta
    )


# --------------------------------------------------------------------------- sources


def _from_array(
    arr: np.ndarray | da.Array, signal: int | str | None
) -> tuple[da.Array, None, dict[str, Any]]:
    """Wrap an in-memory array (no copy); no calibration (axes ``None``)."""
    if signal is not None:
        raise ParameterError(
            "signal= selects a signal inside a file; an array has only one",
            fix="drop signal= or index the array yourself",
            where="signal",
        )
    lazy = arr if isinstance(arr, da.Array) else da.from_array(arr)
    meta = {
        "reader": "dask" if isinstance(arr, da.Array) else "numpy",
        "title": "<array>",
        "original_dtype": str(arr.dtype),
        "original_shape": [int(n) for n in arr.shape],
        "calibration": "none",
    }
    return lazy, None, meta


def _from_file(
    path: Path, signal: int | str | None
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    """Read the chosen signal of a file through its rsciio plugin."""
    plugin = _plugin_for(path)
    signals = _read_signals(path, plugin)
    index = _pick_signal(signals, signal, path)
    chosen = signals[index]
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
    }
    # rsciio lists axes in array order; the first two are (rows, cols) of an image,
    # also when a trailing RGB channel axis follows.  Not strict: a 1-D signal has one
    # axis and is rejected later with a clear message.
    axes = [_axis(a, n) for a, n in zip(chosen["axes"][:2], ("y", "x"), strict=False)]
    return data, axes, meta


def _plugin_for(
    path: Path,
    *,
    plugins: dict[str, _Plugin] | None = None,
    modality: str = "image",
    elsewhere: dict[str, str] | None = None,
) -> _Plugin:
    """Check the path exists and has a supported extension; return its plugin.

    The keywords let other modalities reuse the checks: ``plugins`` maps their
    extensions to plugins, ``modality`` names them in messages, and ``elsewhere``
    maps extensions another modality reads to that modality's name (a hint in the
    message).  The defaults are the image modality's.
    """
    plugins = _PLUGINS if plugins is None else plugins
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(
            "file not found",
            fix="check the path and spelling (relative paths are taken from "
            f"{Path.cwd()})",
            where=path,
        )
    if path.is_dir() and suffix not in _DIRECTORY_FORMATS:
        raise InputError(
            f"is a directory, not {_article(modality)} {modality} file",
            fix=f"pass the path of one {modality} file inside it",
            where=path,
        )
    if suffix not in plugins:
        other = (elsewhere or {}).get(suffix)
        hint = (
            f" ({path.suffix!r} files are read by the {other} modality)"
            if other
            else ""
        )
        raise InputError(
            f"unsupported file type {path.suffix or '(no extension)'!r} for the "
            f"{modality} modality{hint}",
            fix=(f"read it with the {other} modality, or " if other else "")
            + f"convert the {modality} data to one of: "
            + ", ".join(sorted(plugins)),
            where=path,
        )
    return plugins[suffix]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# Import name -> pip name, where they differ (for "missing package" messages).
_PIP_NAMES = {"skimage": "scikit-image", "cv2": "opencv-python"}


def _read_signals(
    path: Path, plugin: _Plugin, *, what: str = "an image", **options: Any
) -> list[dict[str, Any]]:
    """Call the rsciio reader; turn any failure into an :class:`InputError`.

    ``options`` are passed to the reader on top of ``plugin.kwargs``; ``what`` names
    the expected content in the "no data" message.
    """
    try:
        reader = importlib.import_module(plugin.module).file_reader
        signals = reader(str(path), lazy=plugin.lazy, **{**plugin.kwargs, **options})
    except ModuleNotFoundError as exc:
        package = _PIP_NAMES.get(exc.name or "", exc.name or "sparse")
        velox = (
            "; for Velox EDS files pip install 'rosettasciio[eds-stream]'"
            if package == "sparse"
            else ""
        )
        raise InputError(
            f"reading this {plugin.label} file needs a missing package: {exc}",
            fix=f"install it (pip install {package}{velox})",
            where=path,
        ) from exc
    except Exception as exc:  # any reader failure means: this file cannot be read
        raise _unreadable(path, plugin.label, exc) from exc
    if not signals:
        raise InputError(
            f"the {plugin.label} reader found no data in the file",
            fix=f"check that the file holds {what} (open it in its acquisition "
            "software or HyperSpy)",
            where=path,
        )
    return list(signals)


def _unreadable(path: Path, label: str, exc: Exception) -> InputError:
    return InputError(
        f"cannot be read: the {label} reader failed with {type(exc).__name__}: {exc}",
        fix="check the file is complete (not truncated by a copy or download) and "
        f"really is in {label} format; re-export it from the acquisition software",
        where=path,
    )


# --------------------------------------------------------------------------- signals


def _pick_signal(
    signals: list[dict[str, Any]],
    signal: int | str | None,
    path: Path,
    *,
    accept: Callable[[dict[str, Any]], bool] | None = None,
    missing: Callable[[list[dict[str, Any]], str], InputError] | None = None,
) -> int:
    """Index of the signal to use: the one ``signal`` names, else the first image.

    Other modalities pass ``accept`` (is this signal of my kind?) and ``missing``
    (the error for a file with several signals, none of them accepted; it gets the
    signals and their listing).  The defaults are the image modality's.
    """
    accept = _is_2d_image if accept is None else accept
    listing = "; ".join(f"{i}: {_describe(s)}" for i, s in enumerate(signals))
    if isinstance(signal, int):
        if not -len(signals) <= signal < len(signals):
            raise InputError(
                f"signal={signal} but the file holds {len(signals)} signal(s): "
                + listing,
                fix="pass one of the listed indices, or a title substring",
                where=path,
            )
        return signal % len(signals)
    if isinstance(signal, str):
        matches = [
            i for i, s in enumerate(signals) if signal.lower() in _title(s).lower()
        ]
        if not matches:
            raise InputError(
                f"no signal title contains {signal!r}; the file holds: {listing}",
                fix="pass a substring of one of the listed titles, or an index",
                where=path,
            )
        images = [i for i in matches if accept(signals[i])]
        return (images or matches)[0]
    images = [i for i, s in enumerate(signals) if accept(s)]
    if images:
        return images[0]
    if len(signals) == 1:
        return 0  # let the dimensionality check explain what the single signal is
    if missing is not None:
        raise missing(signals, listing)
    raise InputError(
        f"the file holds no 2-D image signal: {listing}",
        fix="the image modality needs one 2-D image; read spectra or spectrum images "
        "with the spectrum modality",
        where=path,
    )


def _is_2d_image(sig: dict[str, Any]) -> bool:
    """2-D, or 2-D plus an RGB(A) channel axis."""
    shape = tuple(sig["data"].shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))


def _title(sig: dict[str, Any]) -> str:
    return str(sig.get("metadata", {}).get("General", {}).get("title", "") or "")


def _describe(sig: dict[str, Any]) -> str:
    shape = "x".join(str(int(n)) for n in sig["data"].shape)
    return f"{_title(sig) or '(untitled)'} [{shape}]"


def _axis(ax: dict[str, Any], name: str) -> Axis:
    """rsciio axis dict -> :class:`Axis`; missing units mean uncalibrated."""
    scale = float(ax.get("scale", 1.0) or 1.0)
    offset = float(ax.get("offset", 0.0) or 0.0)
    units = ax.get("units")
    if not units or str(units) in ("<undefined>", "Undefined"):
        # Keep a scale the file set even without units, but do not call it pixels.
        units = "px" if (scale == 1.0 and offset == 0.0) else "unknown"
    return Axis(name, int(ax["size"]), scale, offset, str(units))


# --------------------------------------------------------------------------- checks


def _check_parameters(
    signal: int | str | None, chunks: int, pixel_size: float | None, units: str
) -> None:
    if signal is not None and (
        isinstance(signal, bool) or not isinstance(signal, (int, str))
    ):
        raise ParameterError(
            f"signal must be an index, a title substring or None, not {signal!r}",
            fix="e.g. signal=0 or signal='HAADF'",
            where="signal",
        )
    if (
        isinstance(chunks, bool)
        or not isinstance(chunks, (int, np.integer))
        or chunks < 1
    ):
        raise ParameterError(
            f"chunks must be a positive integer (pixels), not {chunks!r}",
            fix="use e.g. chunks=1024",
            where="chunks",
        )
    if pixel_size is not None and not (
        isinstance(pixel_size, (int, float, np.number))
        and not isinstance(pixel_size, bool)
        and np.isfinite(pixel_size)
        and pixel_size > 0
    ):
        raise ParameterError(
            f"pixel_size must be a positive finite number, not {pixel_size!r}",
            fix="give the physical size of one pixel, e.g. pixel_size=0.5, units='nm'",
            where="pixel_size",
        )
    if pixel_size is None and units != "px":
        raise ParameterError(
            f"units={units!r} given without pixel_size",
            fix="give both, e.g. pixel_size=0.5, units='nm', or neither",
            where="units",
        )


def _to_grey(data: da.Array, where: str) -> tuple[da.Array, bool]:
    """Fold RGB(A) to luminance; returns (array, whether it was folded)."""
    r, g, b = LUMINANCE_WEIGHTS
    if data.dtype.names:  # rsciio's structured rgb8/rgba8/rgb16 dtypes
        if not {"R", "G", "B"} <= set(data.dtype.names):
            raise InputError(
                f"structured pixel type {data.dtype} is not RGB",
                fix="convert the image to greyscale or RGB before reading it",
                where=where,
            )
        f32 = np.float32
        return r * data["R"].astype(f32) + g * data["G"].astype(f32) + b * data[
            "B"
        ].astype(f32), True
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        # Alpha (4th channel) is ignored.
        rgb = data[..., :3].astype(np.float32)
        return r * rgb[..., 0] + g * rgb[..., 1] + b * rgb[..., 2], True
    return data, False


def _check_is_image(data: da.Array, where: str, meta: dict[str, Any]) -> None:
    """One 2-D, non-empty, real-valued image."""
    shape = tuple(int(n) for n in data.shape)
    if data.ndim != 2:
        what = (
            "1-D (a spectrum or profile?)"
            if data.ndim <= 1
            else f"{data.ndim}-D (a stack or spectrum image?)"
        )
        raise InputError(
            f"data of shape {shape} is {what}; the image modality needs one 2-D image",
            fix="use the spectrum modality for spectra and spectrum images; "
            + _dimension_hint(data.ndim, meta),
            where=where,
        )
    if 0 in shape:
        raise InputError(
            f"the image is empty (shape {shape})",
            fix="pass an image with at least one row and one column",
            where=where,
        )
    check_real_values(data.dtype, where)


def _dimension_hint(ndim: int, meta: dict[str, Any]) -> str:
    """Second half of the fix for a wrong-dimensional signal."""
    n_signals = len(meta.get("signals_in_file", []))
    if n_signals > 1:
        return "or pick a 2-D signal in the file with signal= (index or title)"
    if n_signals == 1 and ndim > 2:
        # signal= selects among a file's signals, not frames within one signal.
        return (
            "signal= cannot help (the file holds one signal): save one frame as its "
            "own image, e.g. with HyperSpy s.inav[0].save('frame.hspy')"
        )
    if n_signals == 1:
        return "signal= cannot help (the file holds one signal): pass a 2-D image file"
    return "or index one 2-D image out of the array"


def _check_values(data: da.Array, where: str) -> None:
    """Reject NaN/Inf and constant images, in one pass over the data."""
    try:
        lo, hi, n_bad = dask.compute(data.min(), data.max(), (~da.isfinite(data)).sum())
    except Exception as exc:  # lazy readers fail here on truncated data
        raise InputError(
            f"pixel data cannot be read ({type(exc).__name__}: {exc})",
            fix="check the file is complete (not truncated by a copy or download); "
            "re-export it from the acquisition software",
            where=where,
        ) from exc
    if n_bad:
        raise InputError(
            f"{int(n_bad)} of {data.size} pixels are NaN or infinite "
            "(or overflow float32)",
            fix="replace them first, e.g. "
            "np.nan_to_num(image, nan=np.nanmedian(image)), or crop them away",
            where=where,
        )
    if lo == hi:
        raise InputError(
            f"the image is constant (every pixel is {float(lo):g}): nothing to segment",
            fix="check the acquisition (detector off, blank frame?) "
            "or pass another image",
            where=where,
        )


def _chunk_shape(shape: tuple[int, ...], chunks: int) -> tuple[int, int]:
    return (min(int(chunks), int(shape[0])), min(int(chunks), int(shape[1])))
