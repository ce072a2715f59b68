"""What every RosettaSciIO-based reader shares: plugins, reading, signal selection.

A reader maps file extensions to :class:`RsciioPlugin` objects and goes through the
same steps: :func:`plugin_for` checks the path and picks the plugin,
:func:`read_signals` calls RosettaSciIO (``rsciio``) and turns its failures into
:class:`~multimodal_seg.errors.InputError`, :func:`pick_signal` chooses one of the
file's signals, :func:`signal_data` wraps its data in dask with the metadata worth
keeping, and :func:`axis_from_rsciio` turns rsciio's axis dicts into
:class:`~multimodal_seg.modalities.base.Axis`.  In-memory arrays take
:func:`wrap_array` instead.
"""

from __future__ import annotations

import bz2
import importlib
import math
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis
from .checks import CHUNK_BYTES


@dataclass(frozen=True)
class RsciioPlugin:
    """How to call one rsciio plugin.

    Attributes
    ----------
    module
        Module with a ``file_reader`` function, e.g. ``"rsciio.emd"``.
    label
        Human name of the format, used in messages.
    lazy
        Whether to ask the reader for a lazy (dask) array.
    kwargs
        Extra keywords for the reader.
    check
        Called with the path before the reader: raises :class:`InputError` for a file the
        reader would not fail on cleanly (a native decoder that crashes the process on a
        truncated file).
    skipped
        Called with the path: a few words for each spectrum image or scan that ``kwargs``
        make the reader leave out (``select_type``), found without decoding it.
    apart
        Decode the file in a child process before reading it here (:func:`decode_apart`):
        the reader's compiled decoder reads damaged data out of bounds and kills the
        process, and a batch with it.
    """

    module: str
    label: str
    lazy: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None
    skipped: Callable[[Path], list[str]] | None = None
    apart: bool = False


def check_sfs_complete(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is an SFS container (Bruker ``.bcf``) of the
    length its header declares.

    rsciio decodes a Bruker hypermap with compiled code that reads past the end of a
    truncated file and crashes the whole process (a segmentation fault, no Python error), so
    the length is checked first.  The header (AidAim SFS, as rsciio's reader reads it) holds
    the chunk size (uint32 at 0x128) and the number of chunks (uint32 at 0x148); the chunks
    follow a 0x118-byte header.
    """
    with open(path, "rb") as stream:
        header = stream.read(0x14C)
    if len(header) < 0x14C or header[:8] != b"AAMVHFSS":
        raise InputError(
            "cannot be read: it is not a Bruker BCF file (no SFS container header at its start)",
            fix="check the file is complete and really a .bcf exported by Bruker Esprit",
            where=path,
        )
    (chunk_size,) = struct.unpack_from("<I", header, 0x128)
    (n_chunks,) = struct.unpack_from("<I", header, 0x148)
    declared, actual = 0x118 + n_chunks * chunk_size, path.stat().st_size
    if actual < declared:
        raise InputError(
            f"is truncated: {actual:,} bytes of the {declared:,} its header declares",
            fix="copy or download the file again (compare its size with the original's), or "
            "export it again from Bruker Esprit",
            where=path,
        )


#: bzip2's end-of-stream marker (the digits of sqrt(pi)), 48 bits, not byte-aligned.
BZ2_END_MAGIC, BZ2_END_MASK = 0x177245385090, 2**48 - 1


def check_bz2_complete(path: Path, block: int = 2**20) -> None:
    """Raise :class:`InputError` unless ``path`` is one whole bzip2 stream (a Phenom ``.elid``).

    rsciio's Phenom reader asks its decompressor for more input until it gets it, and at the
    end of a truncated file it never does: the process hangs for ever (a batch with it).  A
    whole stream ends with bzip2's end-of-stream marker (48 bits), its CRC (32 bits) and up to
    7 bits of padding, which the last 11 bytes show at once.  Only a file that does not end
    so (truncated, or with bytes after its stream) is decompressed here, output discarded, to
    see whether its stream ends (6 s for 10 MB).
    """
    with open(path, "rb") as stream:
        stream.seek(max(0, path.stat().st_size - 11))
        tail = int.from_bytes(stream.read(11), "big")
    if any((tail >> (32 + pad)) & BZ2_END_MASK == BZ2_END_MAGIC for pad in range(8)):
        return
    decompressor = bz2.BZ2Decompressor()
    try:
        with open(path, "rb") as stream:
            while not decompressor.eof:
                data = b""
                if decompressor.needs_input and not (data := stream.read(block)):
                    break  # the file ends, the stream does not
                decompressor.decompress(data, max_length=block)  # at most a block out at a time
    except (OSError, EOFError, ValueError) as exc:  # not bzip2 at all, or corrupt
        raise InputError(
            f"cannot be read: it is not a bzip2-compressed ELID file ({exc})",
            fix="check the file is complete and really an .elid exported by Phenom ProSuite",
            where=path,
        ) from None
    if not decompressor.eof:
        raise InputError(
            f"is truncated: its compressed stream stops after {path.stat().st_size:,} bytes, before its end",
            fix="copy or download the file again (compare its size with the original's), or export it "
            "again from Phenom ProSuite",
            where=path,
        )


#: Run by :func:`decode_apart` in a child process: the reader's module, the path and its
#: keywords come pickled on stdin.
_DECODE = ("import importlib, pickle, sys\n"
           "module, path, options = pickle.load(sys.stdin.buffer)\n"
           "importlib.import_module(module).file_reader(path, lazy=False, **options)\n")


def decode_apart(path: Path, plugin: RsciioPlugin, options: dict[str, Any]) -> None:
    """Decode ``path`` with ``plugin``'s reader and ``options`` in a child process first, and
    raise :class:`InputError` if that killed the child.

    RosettaSciIO's Bruker decoder (compiled, no bounds checks) reads a hypermap whose bytes
    are damaged out of bounds: 64 random bytes written into the real P45 file killed the
    process with a segmentation fault or a bus error in 3 of 3 places.  The same decoding
    with the same options in a child shows it first (about 0.5 s, most of it the child's
    imports, plus the decoding).  A Python error in the child is left to the read here, which
    raises it with its message.
    """
    done = subprocess.run([sys.executable, "-c", _DECODE], input=pickle.dumps((plugin.module, str(path), options)),
                          capture_output=True)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise InputError(
            f"cannot be read: RosettaSciIO's {plugin.label} decoder crashed on it ({name}), as it does "
            "on damaged data",
            fix="copy the file again from the original (compare their checksums), or export it again "
            "from the acquisition software",
            where=path,
        )


#: Plugins several readers use unchanged.
DIGITALMICROGRAPH = RsciioPlugin("rsciio.digitalmicrograph", "Gatan DigitalMicrograph")
HYPERSPY = RsciioPlugin("rsciio.hspy", "HyperSpy HDF5")
JEOL = RsciioPlugin("rsciio.jeol", "JEOL Analysis Station")
BRUKER = RsciioPlugin("rsciio.bruker", "Bruker BCF", check=check_sfs_complete, apart=True)
# rsciio's Phenom reader has no lazy mode (lazy=True raises an error).
PHENOM = RsciioPlugin("rsciio.phenom", "Phenom ELID", lazy=False, check=check_bz2_complete)

#: Extensions whose "file" is a directory (zarr directory store).
DIRECTORY_FORMATS = frozenset({".zspy"})

# Import name -> pip name, where they differ (for "missing package" messages).
_PIP_NAMES = {"skimage": "scikit-image", "cv2": "opencv-python"}


# --------------------------------------------------------------------------- files


def plugin_for(
    path: Path,
    plugins: dict[str, RsciioPlugin],
    *,
    modality: str,
    elsewhere: dict[str, str] | None = None,
) -> RsciioPlugin:
    """Check the path exists and has a supported extension; return its plugin.

    Parameters
    ----------
    path
        The file (or, for :data:`DIRECTORY_FORMATS`, directory) to read.
    plugins
        The reader's table: lower-case extension -> plugin.
    modality
        The reader's modality, named in messages (``"image"``, ``"spectrum"`` ...).
    elsewhere
        Extensions another modality reads -> that modality's name: a hint in the
        "unsupported file type" message.

    Raises
    ------
    InputError
        The path does not exist, is a directory, or has an unsupported extension.
    """
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(
            "file not found",
            fix=f"check the path and spelling (looked for {path.resolve()})",
            where=path,
        )
    if path.is_dir() and suffix not in DIRECTORY_FORMATS:
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


def read_signals(
    path: Path, plugin: RsciioPlugin, *, what: str, **options: Any
) -> list[dict[str, Any]]:
    """Call the plugin's rsciio reader; turn any failure into an :class:`InputError`.

    Parameters
    ----------
    path
        The file to read.
    plugin
        Its plugin, from :func:`plugin_for`.
    what
        The content the reader expects, for the "no data" message, e.g.
        ``"an image"``.
    options
        Passed to the reader on top of ``plugin.kwargs``.

    Returns
    -------
    list
        The file's signals, at least one.

    Raises
    ------
    InputError
        A package the reader needs is missing, the reader failed, or it found no
        data.
    """
    if plugin.check is not None:
        plugin.check(path)
    if plugin.apart:
        decode_apart(path, plugin, {**plugin.kwargs, **options})
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
        raise unreadable(path, plugin.label, exc) from exc
    if not signals:
        raise InputError(
            f"the {plugin.label} reader found no data in the file",
            fix=f"check that the file holds {what} (open it in its acquisition "
            "software or HyperSpy)",
            where=path,
        )
    return list(signals)


def unreadable(path: Path, label: str, exc: Exception) -> InputError:
    """The error to raise (from ``exc``) for a file the ``label`` reader failed on."""
    return InputError(
        f"cannot be read: the {label} reader failed with {type(exc).__name__}: {exc}",
        fix="check the file is complete (not truncated by a copy or download) and "
        f"really is in {label} format; re-export it from the acquisition software",
        where=path,
    )


# --------------------------------------------------------------------------- signals


def pick_signal(
    signals: list[dict[str, Any]],
    signal: int | str | None,
    path: Path,
    *,
    accept: Callable[[dict[str, Any]], bool],
    missing: Callable[[list[dict[str, Any]], str], InputError],
) -> int:
    """Index of the signal to read: the one ``signal`` names, else the first accepted.

    Parameters
    ----------
    signals
        The file's signals, from :func:`read_signals`.
    signal
        An index into ``signals``, a title (case-insensitive; an equal title wins, else
        a substring of exactly one accepted title, else of any), or ``None`` (the first
        accepted signal).
    path
        The file, for messages.
    accept
        Whether a signal is of the reader's kind.
    missing
        The error for ``signal=None`` and several signals, none accepted; it gets
        the signals and their listing (``"0: title [shape]; 1: ..."``).  With one
        signal its index is returned, for the reader's checks to say what it is.

    Raises
    ------
    InputError
        ``signal`` names no signal of the file, is part of several accepted titles
        and equal to none, or (from ``missing``) none fits.
    """
    listing = "; ".join(f"{i}: {describe_signal(s)}" for i, s in enumerate(signals))
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
            i
            for i, s in enumerate(signals)
            if signal.lower() in signal_title(s).lower()
        ]
        if not matches:
            raise InputError(
                f"no signal title contains {signal!r}; the file holds: {listing}",
                fix="pass a substring of one of the listed titles, or an index",
                where=path,
            )
        # a title equal to the text wins ("SE" is not "BSE"); else a substring of one title
        exact = [i for i in matches if signal_title(signals[i]).lower() == signal.lower()]
        accepted = [i for i in (exact or matches) if accept(signals[i])]
        if not exact and len({signal_title(signals[i]) for i in accepted}) > 1:
            raise InputError(
                f"signal={signal!r} is part of several titles: "
                + "; ".join(f"{i}: {describe_signal(signals[i])}" for i in accepted),
                fix="pass a whole title or an index", where=path)
        return (accepted or exact or matches)[0]
    accepted = [i for i, s in enumerate(signals) if accept(s)]
    if accepted:
        return accepted[0]
    if len(signals) == 1:
        return 0  # let the dimensionality check explain what the single signal is
    raise missing(signals, listing)


def signal_title(sig: dict[str, Any]) -> str:
    """The signal's title (``metadata.General.title``), ``""`` if it has none."""
    return str(sig.get("metadata", {}).get("General", {}).get("title", "") or "")


def describe_signal(sig: dict[str, Any]) -> str:
    """Title and shape for listings, e.g. ``"HAADF [512x512]"``."""
    shape = "x".join(str(int(n)) for n in sig["data"].shape)
    return f"{signal_title(sig) or '(untitled)'} [{shape}]"


def signal_data(
    signals: list[dict[str, Any]], index: int, plugin: RsciioPlugin, path: Path
) -> tuple[da.Array, dict[str, Any]]:
    """Data of ``signals[index]`` as dask, and the metadata to keep about it.

    The metadata: ``reader`` (the plugin's module), ``title`` (the file's stem if
    the signal has none), ``original_dtype``, ``original_shape``, ``signal_index``
    and ``signals_in_file`` (:func:`describe_signal` of each).
    """
    chosen = signals[index]
    data = chosen["data"]
    if not isinstance(data, da.Array):
        data = in_row_chunks(np.asarray(data))
    meta = {
        "reader": plugin.module,
        "title": signal_title(chosen) or path.stem,
        "original_dtype": str(data.dtype),
        "original_shape": [int(n) for n in data.shape],
        "signal_index": index,
        "signals_in_file": [describe_signal(s) for s in signals],
    }
    return data, meta


def axis_from_rsciio(ax: dict[str, Any], name: str) -> Axis:
    """rsciio axis dict -> :class:`Axis` called ``name``; no units: uncalibrated."""
    scale = float(ax.get("scale", 1.0) or 1.0)
    offset = float(ax.get("offset", 0.0) or 0.0)
    units = ax.get("units")
    if not units or str(units) in ("<undefined>", "Undefined"):
        # Keep a scale the file set even without units, but do not call it pixels.
        units = "px" if (scale == 1.0 and offset == 0.0) else "unknown"
    return Axis(name, int(ax["size"]), scale, offset, str(units))


# --------------------------------------------------------------------------- arrays


def in_row_chunks(arr: np.ndarray) -> da.Array:
    """An in-memory array as dask (no copy), in chunks of whole rows: every axis after the
    first whole, as many rows per chunk as :data:`~multimodal_seg.modalities.checks.CHUNK_BYTES`
    holds once cast to float32.

    The layout the modalities keep (whole spectra or patterns per scan position, bands of
    rows; :func:`~multimodal_seg.modalities.checks.scan_chunks`), so that the float32 copy
    needs no rechunk.  Dask's own chunks (cubes of ``array.chunk-size``) split the signal
    axis, and putting whole spectra back together cost every later read: on a JEOL EDS cube
    (512 x 512 x 4096) one pass over the values took 26 s instead of 2 s, and reading 8 of
    its rows converted the whole cube (17 s).
    """
    if arr.ndim == 0:  # refused later by the modality's own checks, with their message
        return da.from_array(arr)
    per_row = math.prod(int(n) for n in arr.shape[1:]) * 4
    rows = max(1, min(int(arr.shape[0]), CHUNK_BYTES // max(1, per_row)))
    return da.from_array(arr, chunks=(rows,) + (-1,) * (arr.ndim - 1))


def wrap_array(
    arr: np.ndarray | da.Array, signal: int | str | None
) -> tuple[da.Array, dict[str, Any]]:
    """Wrap an in-memory array as dask (no copy), with the metadata of a source.

    The metadata: ``reader`` (``"numpy"`` or ``"dask"``), ``title`` ``"<array>"``,
    ``original_dtype``, ``original_shape`` and ``calibration`` ``"none"``.

    Raises
    ------
    ParameterError
        ``signal`` is given: it selects a signal inside a file.
    """
    if signal is not None:
        raise ParameterError(
            "signal= selects a signal inside a file; an array has only one",
            fix="drop signal= or index the array yourself",
            where="signal",
        )
    lazy = arr if isinstance(arr, da.Array) else in_row_chunks(arr)
    meta = {
        "reader": "dask" if isinstance(arr, da.Array) else "numpy",
        "title": "<array>",
        "original_dtype": str(arr.dtype),
        "original_shape": [int(n) for n in arr.shape],
        "calibration": "none",
    }
    return lazy, meta
