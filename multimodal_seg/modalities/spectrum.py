"""Spectrum-image modality: EELS and EDS cubes as lazy float32 arrays.

A spectrum image is a cube ``(rows, cols, channels)`` with axes ``y, x, energy``:
one spectrum per scan position, the energy axis last.  Files are read through
RosettaSciIO (``rsciio``) with the helpers of :mod:`.reading` (extension -> plugin,
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

The checks, binning and chunking shared with the diffraction modality are in
:mod:`.checks`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from .base import Axis, ModalityData, check_real_values
from .checks import CHUNK_BYTES  # noqa: F401  (re-exported: the default chunk size)
from .checks import bin_sum, check_calibration, check_chunks, check_dimensions
from .checks import check_factor, check_factor_fits, check_number, check_signal
from .checks import check_values, scan_chunks, signal_dims, signal_facts, what_is
from .image import SUPPORTED_IMAGE_EXTENSIONS
from .reading import BRUKER, DIGITALMICROGRAPH, HYPERSPY, JEOL, PHENOM, RsciioPlugin
from .reading import axis_from_rsciio, pick_signal, plugin_for, read_signals
from .reading import signal_data, wrap_array

# Velox: read every stream (select_type=None) so that a file without a spectrum
# image can be described.  NCEM-flavour .emd files are read by the same plugin.
_EMD = RsciioPlugin("rsciio.emd", "EMD (Velox or NCEM)")

_PLUGINS: dict[str, RsciioPlugin] = {
    ".bcf": BRUKER,
    ".emd": _EMD,
    # JEOL: the .ASW project file lists the views of a sample; rsciio follows its
    # links into the Sample/ folder tree and reads every .img/.map/.pts there.
    ".asw": JEOL,
    ".pts": JEOL,
    ".dm3": DIGITALMICROGRAPH,
    ".dm4": DIGITALMICROGRAPH,
    ".hspy": HYPERSPY,
    ".hdf5": HYPERSPY,
    ".elid": PHENOM,
}

#: File extensions :func:`read_spectrum_image` accepts (lower case; matching ignores
#: case).
SUPPORTED_SPECTRUM_EXTENSIONS: tuple[str, ...] = tuple(sorted(_PLUGINS))

# Extensions other modalities read: named in the "unsupported file type" message.
_DIFFRACTION_ONLY = (".mib", ".blo", ".xml", ".h5")
_ELSEWHERE: dict[str, str] = {
    **{ext: "image" for ext in SUPPORTED_IMAGE_EXTENSIONS if ext not in _PLUGINS},
    **{ext: "diffraction" for ext in _DIFFRACTION_ONLY},
}

# rsciio's JEOL reader can sum channels while decoding the event stream
# (rebin_energy, a divisor of the 4096 raw channels): much cheaper than decoding the
# full 4096-channel cube and summing it afterwards.  Its scan ``downsample`` option
# fails in lazy mode (rsciio 0.15: TypeError), so scan binning is done with dask.
_JEOL_RAW_CHANNELS = 4096


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
    beam_energy: float | None = None,
    elements: str | list[str] | tuple[str, ...] | None = None,
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
        lists them), or its title, case-insensitive (an equal title wins; else part of one title).  ``None`` takes
        the first spectrum image.
    bin_channels
        Sum this many adjacent energy channels (sparse EDS counts: bin them).
    bin_scan
        Sum square blocks of ``bin_scan x bin_scan`` scan positions.
    energy_range
        ``(low, high)`` in the energy axis' units (after calibration overrides; EDS in keV
        and EELS in eV, :func:`energy_in_kind_units`): keep the channels (after binning)
        whose position lies in the closed range.
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

    beam_energy
        The beam energy (keV); overrides the file's record (:func:`beam_energy`).  For EDS it
        decides which X-ray families the spectra must show before figures and the report name
        a line (:func:`~multimodal_seg.analysis.spectral_lines.eds_names`); without it or a
        record in the file, the top of the energy axis is assumed.
    elements
        The elements the specimen holds (symbols: ``["Ba", "Ti", "O"]``, or ``"Ba,Ti,O"``);
        overrides the file's list (:func:`declared_elements`).  For EDS, a peak that one of their
        lines can name is named by it alone in figures and the report: what the detector cannot
        tell apart (Ba L alpha and Ti K alpha, 45 eV apart), the analyst can.

    Returns
    -------
    ModalityData
        ``kind="spectrum"``; ``data`` is a dask array ``(rows, cols, channels)``,
        float32, chunked along the scan with whole spectra in each chunk; ``axes``
        are ``[Axis("y"), Axis("x"), Axis("energy")]``.  ``metadata`` records the
        reader, signal, original dtype/shape, signal type and binning, and
        ``beam_energy_kev`` where the file records it (:func:`beam_energy`) or ``beam_energy``
        gives it (``beam_energy_from``: ``"file"`` or ``"option"``), and ``elements`` where the
        file lists them or ``elements`` gives them (``elements_from``).

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
    check_signal(signal, example="EDS")
    bin_channels = check_factor(bin_channels, "bin_channels")
    bin_scan = check_factor(bin_scan, "bin_scan")
    energy_range = _check_range(energy_range)
    check_chunks(chunks)
    is_array = isinstance(source, (np.ndarray, da.Array))
    check_calibration(
        ("scan_step", scan_step, "scan_units", scan_units),
        ("energy_scale", energy_scale, "energy_units", energy_units),
        ("energy_scale", energy_scale, "energy_offset", energy_offset),
        # A file has an energy calibration for these to amend.
        alone_ok=() if is_array else ("energy_units", "energy_offset"),
    )
    check_number(energy_offset, "energy_offset", positive=False)
    check_number(beam_energy, "beam_energy", positive=True, example=200)  # keV
    elements = check_elements(elements)

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

    if beam_energy is not None:
        meta.update(beam_energy_kev=float(beam_energy), beam_energy_from="option")
    if elements is not None:
        meta.update(elements=elements, elements_from="option")
    check_dimensions(raw, where, meta, kind="spectrum")
    check_real_values(raw.dtype, where)
    rows, cols, channels = (int(n) for n in raw.shape)
    check_factor_fits(bin_scan, "bin_scan", {"rows": rows, "cols": cols})
    check_factor_fits(bin_channels, "bin_channels", {"channels": channels * native})

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
    data, axes, dropped = bin_sum(raw, axes, factors)
    meta["binning"] = {
        "channels": bin_channels,
        "scan": bin_scan,
        "channels_by_reader": native,
        "dropped": dict(zip(("rows", "cols", "channels"), dropped, strict=True)),
    }

    axes[2] = energy_in_kind_units(axes[2], spectrum_kind_of(name, str(meta.get("signal_type", ""))), meta)
    if energy_range is not None:
        data, axes[2] = _crop_axis(data, axes[2], 2, energy_range, "energy_range")
        meta["energy_range"] = [float(v) for v in energy_range]

    # checked before the cast and the rechunk, which a pass over the values need not pay:
    # integer counts have the same extremes as their float32 copy (and no NaN)
    check_values(
        data if np.issubdtype(data.dtype, np.integer) else data.astype(np.float32),
        where,
        noun="spectrum image",
        binned=bin_channels * bin_scan > 1,
        finite=not np.issubdtype(raw.dtype, np.integer),
    )
    data = data.astype(np.float32).rechunk(scan_chunks(data.shape, chunks))
    return ModalityData(
        name=name, kind="spectrum", data=data, axes=axes, source=where, metadata=meta
    )


def spectrum_kind_of(name: str, signal_type: str = "") -> str:
    """``"eds"``, ``"eels"`` or ``""`` (not known): from the signal type a file or HyperSpy
    records (``"EDS_TEM"``, ``"EELS"``), else from the modality's name (``"eds"``, ``"edx"``,
    ``"xeds"``; ``"eels"``)."""
    kind = signal_type.upper()
    if kind.startswith("EDS"):
        return "eds"
    if kind.startswith("EELS"):
        return "eels"
    name = name.lower()
    return "eds" if name.startswith(("eds", "edx", "xeds")) else "eels" if name.startswith("eels") else ""


def energy_in_kind_units(energy: Axis, kind: str, meta: dict[str, Any]) -> Axis:
    """The energy axis in the units its kind's lines are tabulated in (X-ray lines in keV, EELS
    edges in eV), which also tell the two kinds apart downstream: an EDS axis in eV would be
    read as EELS.  A conversion is recorded as ``meta["energy_units_read"]``."""
    target = {"eds": "keV", "eels": "eV"}.get(kind)
    factor = {("ev", "keV"): 1e-3, ("kev", "eV"): 1e3}.get((energy.units.strip().lower(), target))
    if factor is None:
        return energy
    meta["energy_units_read"] = energy.units
    return dataclasses.replace(energy, scale=energy.scale * factor, offset=energy.offset * factor, units=target)


# --------------------------------------------------------------------------- sources


def _from_array(
    arr: np.ndarray | da.Array, signal: int | str | None, names: tuple[str, ...]
) -> tuple[da.Array, list[Axis], dict[str, Any]]:
    """Wrap an in-memory array (no copy); uncalibrated named axes."""
    lazy, meta = wrap_array(arr, signal)
    axes = [Axis(n, int(size)) for n, size in zip(names, lazy.shape, strict=False)]
    return lazy, axes, meta


def _from_file(
    path: Path, signal: int | str | None, bin_channels: int
) -> tuple[da.Array, list[Axis], dict[str, Any], int]:
    """Read the chosen signal of a file.

    Returns data, axes, metadata and the number of channels the reader already
    summed per output channel (JEOL; 1 otherwise).
    """
    plugin = plugin_for(path, _PLUGINS, modality="spectrum", elsewhere=_ELSEWHERE)
    native = 1
    options: dict[str, Any] = {}
    if plugin is JEOL and bin_channels > 1 and _JEOL_RAW_CHANNELS % bin_channels == 0:
        native = bin_channels
        options["rebin_energy"] = bin_channels
    signals = read_signals(path, plugin, what="a spectrum image", **options)
    index = pick_signal(
        signals,
        signal,
        path,
        accept=_is_spectrum_image,
        missing=lambda sigs, listing: _no_spectrum_image(sigs, listing, path),
    )
    chosen = signals[index]
    data, meta = signal_data(signals, index, plugin, path)
    meta.update(signal_facts(chosen), calibration="file")
    meta.update(recorded_facts(chosen, "file"))
    if plugin is JEOL and (sweeps := jeol_sweeps(chosen)) is not None:
        meta["sweeps"] = dict(zip(("read", "recorded"), sweeps, strict=True))
        if sweeps[0] < sweeps[1]:
            warnings.warn(
                f"{path}: holds {sweeps[0]} whole sweeps of the {sweeps[1]} its header records, and "
                f"only these are read (about {sweeps[0] / sweeps[1]:.0%} of the counts): the "
                "acquisition stopped part way, or this copy is truncated or damaged (compare its "
                "size and checksum with the original's: RosettaSciIO stops at the first sweep it "
                "cannot read whole)",
                UserWarning,
                stacklevel=2,
            )
    names = ("y", "x", "energy")
    axes = [
        axis_from_rsciio(a, n)
        for a, n in zip(chosen["axes"], names + ("?",) * data.ndim, strict=False)
    ]
    return data, axes, meta, native


# --------------------------------------------------------------------------- signals


def beam_energy(signal: dict[str, Any]) -> float | None:
    """The beam energy (keV) a spectrum image's metadata record, ``None`` where they do not.

    RosettaSciIO maps it to ``Acquisition_instrument.SEM`` or ``.TEM.beam_energy`` for Bruker
    and JEOL files; for Velox and Phenom files it is read from their own metadata
    (``Optics.AccelerationVoltage`` in V; ``acquisition.scan.highVoltage`` in kV, negative).
    """
    def at(tree: Any, *keys: str) -> Any:  # the value at the path of keys, or None
        for key in keys:
            if not isinstance(tree, dict) or key not in tree:
                return None
            tree = tree[key]
        return tree

    def number(value: Any) -> float | None:  # a finite number, or None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if np.isfinite(value) else None

    metadata, original = signal.get("metadata", {}), signal.get("original_metadata", {})
    volts = number(at(original, "Optics", "AccelerationVoltage"))
    phenom = at(original, "acquisition", "scan", "highVoltage")
    phenom_kv = number(at(phenom, "value")) if str(at(phenom, "unit") or "").strip().lower() == "kv" else None
    found = [number(at(metadata, "Acquisition_instrument", "SEM", "beam_energy")),
             number(at(metadata, "Acquisition_instrument", "TEM", "beam_energy")),
             None if volts is None else volts / 1e3,
             None if phenom_kv is None else abs(phenom_kv)]
    return next((energy for energy in found if energy is not None and energy > 0), None)


def recorded_facts(signal: dict[str, Any], source: str) -> dict[str, Any]:
    """What a spectrum image's metadata record that names its lines: ``beam_energy_kev``
    (:func:`beam_energy`) and ``elements`` (:func:`declared_elements`) where they are recorded,
    each with its ``..._from`` = ``source`` (``"file"``, ``"signal"``)."""
    facts: dict[str, Any] = {}
    if (energy := beam_energy(signal)) is not None:
        facts |= {"beam_energy_kev": energy, "beam_energy_from": source}
    if elements := declared_elements(signal):
        facts |= {"elements": elements, "elements_from": source}
    return facts


def declared_elements(signal: dict[str, Any]) -> list[str]:
    """The elements a spectrum image's metadata list for the specimen (``Sample.elements``:
    those an analyst chose in Bruker Esprit, or gave exSpy's ``add_elements``), sorted; those
    the X-ray table does not know are left out, and an empty list where none is listed."""
    from ..analysis.spectral_lines import known_elements

    sample = signal.get("metadata", {}).get("Sample", {})
    listed = sample.get("elements", []) if isinstance(sample, dict) else []
    listed = [listed] if isinstance(listed, str) else listed
    known = known_elements()
    return sorted({str(symbol).strip() for symbol in listed if str(symbol).strip() in known})


def check_elements(elements: object) -> list[str] | None:
    """The reader's ``elements`` option as sorted element symbols (a list, or one string of
    symbols separated by commas or spaces: ``"Ba,Ti,O"``), ``None`` where not given.

    Raises
    ------
    ParameterError
        Not symbols, or symbols the X-ray table does not know (``"fe"``, ``"Xx"``).
    """
    if elements is None:
        return None
    from ..analysis.spectral_lines import known_elements

    symbols = elements.replace(",", " ").split() if isinstance(elements, str) else elements
    if not isinstance(symbols, (list, tuple)) or not symbols or not all(isinstance(x, str) for x in symbols):
        raise ParameterError(f"elements must be element symbols, not {elements!r}",
                             fix="e.g. elements=['Ba', 'Ti', 'O'] or elements='Ba,Ti,O' "
                             "(--read eds.elements=Ba,Ti,O), or leave it out", where="elements")
    unknown = sorted({x.strip() for x in symbols} - known_elements())
    if unknown:
        raise ParameterError(f"{', '.join(map(repr, unknown))}: not an element symbol the X-ray table knows",
                             fix="give symbols as chemists write them: 'Fe', 'Nb', 'O' "
                             "(a capital, then a small letter)", where="elements")
    return sorted({x.strip() for x in symbols})


def jeol_sweeps(signal: dict[str, Any]) -> tuple[int, int] | None:
    """``(whole sweeps in the file, sweeps its header records)`` of a JEOL ``.pts`` spectrum
    image as RosettaSciIO read it, or ``None`` where its metadata do not say.

    The reader finds where each sweep (frame) starts (``-1`` for those it never reached) and
    leaves out a last sweep that stops part way, saying so only in a log line below the
    warning level: a truncated copy read as a whole file without a word (half of the real
    FeS file: 6 of its 14 sweeps, 132 233 of 308 261 counts).
    """
    meta = signal.get("original_metadata", {})
    starts = meta.get("jeol_pts_frame_start_index")
    try:
        recorded = int(meta["PTTD Data"]["AnalyzableMap MeasData"]["Doc"]["Sweep"])
    except (KeyError, TypeError, ValueError):
        return None
    if starts is None:
        return None
    # a start for every sweep reached, and one where the data end after the last whole sweep
    return max(0, int((np.asarray(starts) >= 0).sum()) - 1), recorded



def _is_spectrum_image(sig: dict[str, Any]) -> bool:
    """3-D with one signal axis, the last (or no navigation flags to tell)."""
    if len(sig["data"].shape) != 3 or sig["data"].dtype.names:
        return False
    n_signal = signal_dims(sig)
    return n_signal is None or (n_signal == 1 and not sig["axes"][-1]["navigate"])


def _no_spectrum_image(
    signals: list[dict[str, Any]], listing: str, path: Path
) -> InputError:
    kinds = [what_is(tuple(s["data"].shape), signal_dims(s)) for s in signals]
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
