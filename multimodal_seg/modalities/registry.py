"""Registry of modality adapters: ``kind`` -> reader callable.

A reader takes a source (path or array) plus keyword options and returns a
:class:`~multimodal_seg.modalities.base.ModalityData`; by convention it accepts
``name=`` and raises :class:`~multimodal_seg.errors.InputError` for bad input.

Third-party packages add modalities without touching this package by declaring an
entry point in the group ``"multimodal_seg.modalities"``; the entry-point name is the
kind, its object the reader::

    # plugin's pyproject.toml
    [project.entry-points."multimodal_seg.modalities"]
    cathodo = "my_plugin.readers:read_cl"

Entry points are discovered on the first lookup (not at import), and a plugin that
fails to load produces a warning naming it instead of breaking the registry.
In-process code can register directly::

    @register_modality("cathodo")
    def read_cl(source, *, name="cl", **options) -> ModalityData: ...
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from typing import overload

from ..errors import ParameterError
from .base import ModalityData
from .diffraction import read_diffraction
from .image import SUPPORTED_IMAGE_EXTENSIONS, read_image
from .spectrum import read_spectrum_image

#: Entry-point group scanned for third-party modality readers.
ENTRY_POINT_GROUP = "multimodal_seg.modalities"

Reader = Callable[..., ModalityData]

_READERS: dict[str, Reader] = {}
_plugins_discovered = False

__all__ = [
    "ENTRY_POINT_GROUP",
    "SUPPORTED_IMAGE_EXTENSIONS",
    "available_modalities",
    "discover_plugins",
    "get_reader",
    "register_modality",
    "unregister_modality",
]


@overload
def register_modality(
    kind: str, reader: None = None, *, overwrite: bool = False
) -> Callable[[Reader], Reader]: ...
@overload
def register_modality(
    kind: str, reader: Reader, *, overwrite: bool = False
) -> Reader: ...


def register_modality(
    kind: str, reader: Reader | None = None, *, overwrite: bool = False
) -> Reader | Callable[[Reader], Reader]:
    """Register ``reader`` for modality ``kind``; also usable as a decorator.

    Parameters
    ----------
    kind
        Modality kind, e.g. ``"image"``; a non-empty string without whitespace.
    reader
        Callable ``reader(source, *, name=..., **options) -> ModalityData``.
        Omit it to use ``@register_modality(kind)`` as a decorator.
    overwrite
        Replace an existing, different reader for ``kind`` instead of failing.

    Returns
    -------
    callable
        ``reader`` itself (or the decorator when ``reader`` is omitted).

    Raises
    ------
    ParameterError
        Bad ``kind``, a non-callable ``reader``, or ``kind`` already taken.
    """
    if reader is None:
        return lambda func: register_modality(kind, func, overwrite=overwrite)
    _check_kind(kind)
    if not callable(reader):
        raise ParameterError(
            f"the reader for modality {kind!r} is not callable: {reader!r}",
            fix="register a function "
            "reader(source, *, name=..., **options) -> ModalityData",
            where="reader",
        )
    current = _READERS.get(kind)
    if current is not None and current is not reader and not overwrite:
        raise ParameterError(
            f"modality {kind!r} is already registered (to {_qualname(current)})",
            fix="choose another kind, or pass overwrite=True to replace it",
            where="kind",
        )
    _READERS[kind] = reader
    return reader


def unregister_modality(kind: str) -> None:
    """Remove ``kind`` from the registry (no error when it is absent)."""
    _READERS.pop(kind, None)


def get_reader(kind: str) -> Reader:
    """Reader registered for ``kind``.

    Raises
    ------
    ParameterError
        ``kind`` is not registered; the message lists the available kinds.
    """
    discover_plugins()
    try:
        return _READERS[kind]
    except (KeyError, TypeError):
        raise ParameterError(
            f"unknown modality kind {kind!r}",
            fix="use one of: "
            + ", ".join(available_modalities())
            + f" (or install a plugin that provides {kind!r})",
            where="kind",
        ) from None


def available_modalities() -> list[str]:
    """Sorted names of all registered modality kinds, plugins included."""
    discover_plugins()
    return sorted(_READERS)


def discover_plugins(*, force: bool = False) -> None:
    """Register readers from the ``"multimodal_seg.modalities"`` entry points.

    Runs once (on the first lookup) unless ``force``.  A plugin that fails to import,
    is not callable, or clashes with an already registered kind is skipped with a
    :class:`RuntimeWarning` naming it.
    """
    global _plugins_discovered
    if _plugins_discovered and not force:
        return
    _plugins_discovered = True  # set first: a failing scan must not repeat per lookup
    try:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # broken installation metadata
        warnings.warn(
            f"could not list modality plugins: {exc}", RuntimeWarning, stacklevel=2
        )
        return
    for ep in entry_points:
        _register_entry_point(ep)


def _register_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    label = f"modality plugin {ep.name!r} ({ep.value})"
    try:
        reader = ep.load()
    except Exception as exc:
        warnings.warn(
            f"{label} failed to load and is skipped: {type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    current = _READERS.get(ep.name)
    if current is not None and current is not reader:
        warnings.warn(
            f"{label} is skipped: kind {ep.name!r} is already registered "
            f"(to {_qualname(current)})",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    try:
        register_modality(ep.name, reader)
    except ParameterError as exc:
        warnings.warn(
            f"{label} is skipped: {exc.problem}", RuntimeWarning, stacklevel=3
        )


def _check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not kind or any(c.isspace() for c in kind):
        raise ParameterError(
            f"modality kind must be a non-empty string without spaces, not {kind!r}",
            fix="use a short name such as 'image' or 'eds'",
            where="kind",
        )


def _qualname(func: object) -> str:
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{name}" if module else name


register_modality("image", read_image)
register_modality("spectrum", read_spectrum_image)
register_modality("diffraction", read_diffraction)
