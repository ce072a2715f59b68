"""Image modality: one 2-D greyscale image as a lazy float32 dask array.

Files are read through RosettaSciIO (``rsciio``), lazily where the plugin supports it,
so a large image is not loaded until a chunk is needed.  The only eager work is one
pass of dask reductions (min, max, count of non-finite pixels) that rejects images
that cannot be segmented: NaN/Inf values or a constant image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis, ModalityData, check_real_values
from .checks import check_signal, signal_dims, value_summary, what_is
from .reading import BRUKER, DIGITALMICROGRAPH, HYPERSPY, JEOL, PHENOM, RsciioPlugin
from .reading import axis_from_rsciio, describe_signal, pick_signal, plugin_for, read_signals
from .reading import signal_data, wrap_array

# ITU-R BT.709 luminance weights for R, G, B.
LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)

def _velox_spectra(path: Path) -> list[str]:
    """The EDS data of a Velox file beside its images (HDF5 groups; nothing decoded)."""
    import h5py

    with h5py.File(path, "r") as handle:
        data = handle.get("Data")
        return [f"an EDS {kind} (Velox {group})" for group, kind in
                (("SpectrumImage", "spectrum image"), ("SpectrumStream", "spectrum stream"))
                if data is not None and group in data]


def _bruker_spectra(path: Path) -> list[str]:
    """The EDS hypermaps of a Bruker file beside its images (read lazily: the header only)."""
    from rsciio.bruker import file_reader

    found = file_reader(str(path), select_type="spectrum_image", lazy=True)
    return [f"an EDS spectrum image [{'x'.join(str(int(n)) for n in s['data'].shape)}]" for s in found]


# select_type="images": for Velox files skip the (large, sparse) EDS spectrum stream.
# The NCEM flavour of .emd ignores it.
_EMD = RsciioPlugin(
    "rsciio.emd", "EMD (Velox or NCEM)", kwargs={"select_type": "images"}, skipped=_velox_spectra
)
_MRC = RsciioPlugin("rsciio.mrc", "MRC")
_TIFF = RsciioPlugin("rsciio.tiff", "TIFF")
_ZSPY = RsciioPlugin("rsciio.zspy", "HyperSpy zarr")
# rsciio's image plugin fails with lazy=True on current dask (from_delayed without a
# shape); a raster is decoded whole anyway, so read it eagerly and wrap it in dask.
_RASTER = RsciioPlugin("rsciio.image", "raster image", lazy=False)
# Files of analytical microscopes that hold the survey image beside the spectrum
# image: the image modality takes the image (first 2-D signal, or signal=).
# Reading only the image never runs the hypermap decoder, so nothing to decode apart (a P45
# copy whose hypermap kills that decoder reads its image here; tests/test_spectrum_modality.py).
_BRUKER = dataclasses.replace(BRUKER, kwargs={"select_type": "image"}, skipped=_bruker_spectra, apart=False)

_PLUGINS: dict[str, RsciioPlugin] = {
    ".dm3": DIGITALMICROGRAPH,
    ".dm4": DIGITALMICROGRAPH,
    ".emd": _EMD,
    ".mrc": _MRC,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".hspy": HYPERSPY,
    ".hdf5": HYPERSPY,
    ".zspy": _ZSPY,
    ".png": _RASTER,
    ".jpg": _RASTER,
    ".jpeg": _RASTER,
    ".bmp": _RASTER,
    ".bcf": _BRUKER,
    ".asw": JEOL,
    ".img": JEOL,
    ".elid": PHENOM,
}

#: File extensions :func:`read_image` accepts (lower case; matching ignores case).
SUPPORTED_IMAGE_EXTENSIONS: tuple[str, ...] = tuple(sorted(_PLUGINS))


def image_plugin(path: Path) -> RsciioPlugin:
    """The RosettaSciIO plugin that reads an image file (or a stack of images) of this type.

    Raises
    ------
    InputError
        The path does not exist, is a directory, or has an unsupported extension.
    """
    return plugin_for(path, _PLUGINS, modality="image")


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
        its title, case-insensitive (an equal title wins; else part of one title).  ``None`` takes the first 2-D image.
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
        raw, meta = wrap_array(source, signal)
        axes = None  # uncalibrated
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
    _check_values(data, where, meta)

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


def _from_file(
    path: Path, signal: int | str | None
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    """Read the chosen signal of a file through its rsciio plugin."""
    plugin = image_plugin(path)
    signals = read_signals(path, plugin, what="an image")
    index = pick_signal(
        signals,
        signal,
        path,
        accept=_is_2d_image,
        missing=lambda sigs, listing: _no_image(listing, path),
    )
    data, meta = signal_data(signals, index, plugin, path)
    # spectrum images and 4D-STEM scans beside the image (a Bruker SEM file's EDS map): a
    # run that reads only the image says they are there (read_modalities)
    meta["scans_in_file"] = [f"{i}: {describe_signal(s)}, {what_is(tuple(s['data'].shape), signal_dims(s))}"
                             for i, s in enumerate(signals) if i != index and len(s["data"].shape) in (3, 4)
                             and not _is_2d_image(s)] + _skipped(plugin, path)
    # rsciio lists axes in array order; the first two are (rows, cols) of an image,
    # also when a trailing RGB channel axis follows.  Not strict: a 1-D signal has one
    # axis and is rejected later with a clear message.
    axes = [
        axis_from_rsciio(a, n)
        for a, n in zip(signals[index]["axes"][:2], ("y", "x"), strict=False)
    ]
    return data, axes, meta


def _skipped(plugin: RsciioPlugin, path: Path) -> list[str]:
    """What the plugin's ``skipped`` probe finds; nothing where it fails: it only feeds a hint
    (:func:`multimodal_seg.modalities.sources.warn_unread_scans`), and the image was read."""
    if plugin.skipped is None:
        return []
    try:
        return plugin.skipped(path)
    except Exception:  # noqa: BLE001 - a hint is never worth failing a read that worked
        return []


def _is_2d_image(sig: dict[str, Any]) -> bool:
    """2-D, or 2-D plus an RGB(A) channel axis."""
    shape = tuple(sig["data"].shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))


def _no_image(listing: str, path: Path) -> InputError:
    return InputError(
        f"the file holds no 2-D image signal: {listing}",
        fix="the image modality needs one 2-D image; read spectra or spectrum images "
        "with the spectrum modality",
        where=path,
    )


# --------------------------------------------------------------------------- checks


def _check_parameters(
    signal: int | str | None, chunks: int, pixel_size: float | None, units: str
) -> None:
    check_signal(signal, example="HAADF")
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


def _other_signals(meta: dict[str, Any]) -> str | None:
    """For a file of several signals, a fix that lists them; ``None`` otherwise."""
    listed = meta.get("signals_in_file", [])
    if len(listed) < 2:
        return None
    return (f"this is signal {meta.get('signal_index', 0)} ({meta.get('title')!r}) of the file's {len(listed)}: "
            f"pick another with signal= / --signal (index or title): "
            + "; ".join(f"{i}: {text}" for i, text in enumerate(listed))
            + ". A spectrum image among them is read as one: --modality eds=FILE (or eels=)")


def _check_values(data: da.Array, where: str, meta: dict[str, Any]) -> None:
    """Reject NaN/Inf and constant images, in one pass over the data."""
    lo, hi, n_bad = value_summary(data, where, what="pixel data")
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
            fix=_other_signals(meta) or "check the acquisition (detector off, blank frame?) or pass another image",
            where=where,
        )


def _chunk_shape(shape: tuple[int, ...], chunks: int) -> tuple[int, int]:
    return (min(int(chunks), int(shape[0])), min(int(chunks), int(shape[1])))
