"""From what a user names to read modalities: ``{"haadf": "a.dm4", "eels": ("si.dm4", {...})}``.

A modality's kind is guessed from its name (``haadf`` is an image, ``eels`` a
spectrum image, ``4dstem`` a diffraction scan) or stated as ``"name:kind"``; its
reader comes from the registry (:func:`multimodal_seg.modalities.registry.get_reader`).
A source is a file path, an array, an already read :class:`ModalityData`, or
``(source, {reader options})``.  Every modality read here remembers the reader
options it was read with (``metadata["reader_options"]``), so that
:func:`modality_identity` can tell two reads of one file apart.
"""

from __future__ import annotations

import warnings

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, ParameterError
from .base import ModalityData, check_real_values
from .diffraction import SUPPORTED_DIFFRACTION_EXTENSIONS
from .image import SUPPORTED_IMAGE_EXTENSIONS
from .registry import get_reader
from .spectrum import SUPPORTED_SPECTRUM_EXTENSIONS

#: Modality kind guessed from a modality's name (``name:kind`` overrides).
KIND_BY_NAME = {
    **dict.fromkeys(("image", "haadf", "adf", "bf", "abf", "df", "sem", "bse", "se", "stem"), "image"),
    **dict.fromkeys(("spectrum", "eels", "eds", "edx", "xeds", "si", "cl"), "spectrum"),
    **dict.fromkeys(("diffraction", "4dstem", "4d-stem", "4d", "nbd", "dp", "ebsd"), "diffraction"),
}
#: Array dimensions of each built-in modality kind (scan axes first).
NDIM_BY_KIND = {"image": 2, "spectrum": 3, "diffraction": 4}
#: File extensions the built-in readers take, by kind.
EXTENSIONS_BY_KIND = {"image": SUPPORTED_IMAGE_EXTENSIONS, "spectrum": SUPPORTED_SPECTRUM_EXTENSIONS,
                      "diffraction": SUPPORTED_DIFFRACTION_EXTENSIONS}


def check_file_kind(path: Any, name: str, kind: str) -> None:
    """Refuse a file that only another built-in kind reads, saying how to give it as that kind.

    ``mmseg segment scan.mib`` reads its one file as an image; a 4D-STEM or spectrum-image
    format is then named as such, with the command that segments it.

    Raises
    ------
    InputError
        The file's extension is not one ``kind`` reads, and other built-in kinds read it.
    """
    if kind not in EXTENSIONS_BY_KIND or not isinstance(path, (str, Path)):
        return
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS_BY_KIND[kind] or not Path(path).exists():  # the reader says what is missing
        return
    others = [k for k, extensions in EXTENSIONS_BY_KIND.items() if k != kind and suffix in extensions]
    if others:
        other = others[0]
        raise InputError(
            f"{suffix!r} files hold {other} data, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} "
            f"(given as the modality {name!r})",
            fix=f"give it as the {other} modality: mmseg segment -m {other}={path} "
                f"(Python: segment({{{other!r}: {str(path)!r}}}))",
            where=str(path))


def modality_kind(label: str) -> tuple[str, str]:
    """Split ``"name:kind"`` or guess the kind from the name; returns ``(name, kind)``.

    Raises
    ------
    ParameterError
        The kind cannot be guessed from the name.
    """
    if ":" in label:
        name, kind = label.split(":", 1)
        return name, kind
    kind = KIND_BY_NAME.get(label.lower())
    if kind is None:
        raise ParameterError(
            f"cannot tell what kind of data modality {label!r} is",
            fix=f"name it after its kind ({', '.join(sorted(KIND_BY_NAME))}) or write "
                f"'{label}:image', '{label}:spectrum' or '{label}:diffraction'",
            where=label,
        )
    return label, kind


def check_modality(label: str, kind: str, modality: ModalityData) -> ModalityData:
    """Check an already-read modality the way the readers check files.

    The readers reject complex and non-numeric files themselves; a
    :class:`ModalityData` built by hand skips them, so its kind, dimensions, axes
    and value type are checked here.

    Raises
    ------
    InputError
        Wrong kind or number of dimensions, axes that do not match the data, or
        values that are not real numbers (complex, text, records, booleans).
    """
    where = f"{label} ({modality.source})"
    data = modality.data
    if modality.kind != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(f"is {modality.kind} data, but {label!r} names {article} {kind} modality",
                         fix=f"name it '{label.split(':')[0]}:{modality.kind}' or pass the {kind} data",
                         where=where)
    if data.ndim != NDIM_BY_KIND.get(kind, data.ndim):
        raise InputError(f"has {data.ndim} dimensions {tuple(data.shape)}; a {kind} modality has "
                         f"{NDIM_BY_KIND[kind]} (scan axes first)",
                         fix="reshape it to the layout in multimodal_seg.modalities.base", where=where)
    if len(modality.axes) != data.ndim:
        raise InputError(f"has {len(modality.axes)} axes for {data.ndim}-dimensional data",
                         fix="give one Axis per array dimension", where=where)
    check_real_values(data.dtype, where, allow_bool=False)
    return modality


def read_modalities(sources: Mapping[str, Any]) -> dict[str, ModalityData]:
    """Read every modality with its kind's reader; already-read ``ModalityData`` are checked.

    Parameters
    ----------
    sources
        ``{label: source}`` in the order the modalities should keep; a label is a
        modality name (``"haadf"``) or ``"name:kind"``; a source is a path, an array,
        a :class:`ModalityData` or ``(source, {reader options})``.

    Returns
    -------
    ``{name: ModalityData}``; each read one carries ``metadata["reader_options"]``.

    Raises
    ------
    ParameterError
        No modality, a name whose kind cannot be guessed, two labels with one name,
        or reader options that are not a mapping.
    InputError
        From the readers (missing, unreadable or wrong files) and :func:`check_modality`.
    """
    if not sources:
        raise ParameterError("no modalities given", fix="give at least one modality", where="source")
    out: dict[str, ModalityData] = {}
    read: list[str] = []  # the modalities this call reads (not given read)
    for label, source in sources.items():
        name, kind = modality_kind(label)
        if name in out:
            raise ParameterError(f"two modalities are named {name!r}",
                                 fix="give every modality its own name", where=label)
        if isinstance(source, ModalityData):
            out[name] = check_modality(label, kind, source)
            continue
        options: dict[str, Any] = {}
        if isinstance(source, tuple):  # (source, {reader options})
            if len(source) != 2 or not isinstance(source[1], Mapping):
                raise ParameterError(
                    f"modality {label!r} is given as a tuple that is not (source, {{reader options}})",
                    fix=f"write {{{label!r}: (path, {{'option': value}})}}", where=label)
            source, options = source[0], dict(source[1])
        check_file_kind(source, name, kind)
        reader = get_reader(kind)
        check_reader_options(reader, options, label)
        modality = reader(source, name=name, **options)
        if modality.kind != kind:
            raise InputError(f"read as {modality.kind}, expected {kind}",
                             fix=f"check the file given for {label!r}", where=str(source))
        modality.metadata["reader_options"] = _jsonable_options(options)
        out[name] = modality
        read.append(name)
    warn_unread_scans(out, read)
    return out


def warn_unread_scans(modalities: Mapping[str, ModalityData], read: list[str]) -> None:
    """Warn when an image of ``read`` (the modalities just read) came from a file that also
    holds a spectrum image or 4D-STEM scan (a Bruker SEM file's EDS map beside its BSE
    image) and no other modality reads that file: segmenting only the image is rarely what
    was meant, and nothing else would say that the rest of the file was passed over."""
    for name in read:
        modality = modalities[name]
        scans = modality.metadata.get("scans_in_file") or []
        if not scans or any(other.source == modality.source for n, other in modalities.items() if n != name):
            continue
        warnings.warn(
            f"{modality.source} also holds {'; '.join(scans)}; this run segments only its image "
            f"(signal {modality.metadata.get('signal_index')}: {modality.metadata.get('title')}). To segment "
            f"them together, give each modality with its name: -m {name}=FILE -m eds=FILE on the command line "
            f"({{'{name}': FILE, 'eds': FILE}} in Python, NAME: {{{name}: FILE, eds: FILE}} in a batch list; "
            "eels, diffraction ... for other kinds)",
            UserWarning, stacklevel=3)


def check_reader_options(reader: Any, options: Mapping[str, Any], label: str) -> None:
    """Raise :class:`ParameterError` for an option ``reader`` does not take (a reader with
    ``**kwargs`` takes any), naming the closest it does take."""
    import difflib
    import inspect

    parameters = inspect.signature(reader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "name"]
    for option in options:
        if option not in known:
            close = difflib.get_close_matches(option, known, n=1)
            raise ParameterError(
                f"the {label!r} reader takes no option {option!r}"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
                fix=f"use one of: {', '.join(known)}", where=label)


def source_record(modality: ModalityData) -> dict[str, Any]:
    """What a run records of where a modality came from: ``path`` (absolute, for a file; the
    source's own description, e.g. ``"<array>"``, otherwise), ``reader_options``, and for a
    file, the ``signal`` read: its ``title``, ``index`` among the file's signals and how many
    the file holds (``of``)."""
    path = Path(modality.source)
    is_file = bool(modality.source) and not modality.source.startswith("<") and path.exists()
    record: dict[str, Any] = {"path": str(path.resolve()) if is_file else modality.source,
                              "reader_options": modality.metadata.get("reader_options", {})}
    if "signal_index" in modality.metadata:
        record["signal"] = {"title": modality.metadata.get("title"), "index": modality.metadata["signal_index"],
                            "of": len(modality.metadata.get("signals_in_file", []))}
    return record


def _jsonable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as plain JSON values (tuples become lists, NumPy scalars numbers)."""
    import json

    from ..provenance import to_json

    return json.loads(to_json(dict(options)))


def modality_identity(modality: ModalityData) -> dict[str, Any]:
    """Everything that decides a modality's values, for the study's fingerprints.

    A file is identified by its resolved path, size and modification time; in-memory
    data by its Dask graph name (a hash of the values for NumPy arrays).  The reader
    options and the calibrated axes (so calibration overrides) are part of it too.
    """
    from ..provenance import file_identity

    path = Path(modality.source)
    identity: dict[str, Any] = {"kind": modality.kind, "axes": [a.to_dict() for a in modality.axes],
                                "reader_options": modality.metadata.get("reader_options", {})}
    if modality.source and not modality.source.startswith("<") and path.exists():
        identity["file"] = file_identity(path)
    else:
        identity["data"] = modality.data.name
    return identity
