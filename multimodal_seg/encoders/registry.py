"""Encoders by name: built-ins, user registrations and entry-point plugins.

A plugin package exposes a factory (usually an :class:`Encoder` subclass) in the
entry-point group ``multimodal_seg.encoders``::

    [project.entry-points."multimodal_seg.encoders"]
    myenc = "mypkg.encoders:MyEncoder"

Plugins are discovered on the first lookup.  Built-ins are referenced by module
path and imported only when asked for, so that listing encoders stays cheap and
works while an optional encoder module is absent.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ParameterError
from .base import Encoder
from .weights import DEFAULT_WEIGHTS, find_weights, weights_dir, weights_info

#: Entry-point group scanned for encoder plugins.
ENTRY_POINT_GROUP = "multimodal_seg.encoders"

EncoderFactory = Callable[..., Encoder]
F = TypeVar("F", bound=EncoderFactory)

# name -> factory, or "module:attribute" not imported yet
_BUILTINS: dict[str, str] = {
    "resnet50": "multimodal_seg.encoders.resnet:ResNet50Encoder",
    "fourier": "multimodal_seg.encoders.fourier:FourierEncoder",
    "image-cnn": "multimodal_seg.encoders.image_cnn:ImageCNNEncoder",
    "spectrum-pca": "multimodal_seg.encoders.spectrum:SpectrumPCAEncoder",
    "spectrum-cnn": "multimodal_seg.encoders.spectrum:SpectrumCNNEncoder",
    "diffraction-profiles": "multimodal_seg.encoders.diffraction:DiffractionProfilesEncoder",
    "diffraction-cnn": "multimodal_seg.encoders.diffraction:DiffractionCNNEncoder",
}
_registry: dict[str, EncoderFactory | str] = dict(_BUILTINS)
_broken_plugins: dict[str, str] = {}  # plugin name -> why it failed to load
_plugins_loaded = False


def register_encoder(name: str, factory: F | None = None, *, replace: bool = False) -> Any:
    """Make ``factory`` available as ``get_encoder(name, ...)``.

    Usable directly, ``register_encoder("mine", MyEncoder)``, or as a decorator,
    ``@register_encoder("mine")``.

    Parameters
    ----------
    name
        Registry key (case-insensitive).
    factory
        Callable taking keyword options and returning an :class:`Encoder`
        (typically the class itself).
    replace
        Allow replacing an encoder already registered under ``name``.

    Returns
    -------
    ``factory`` (or, without it, a decorator that registers and returns its argument).

    Raises
    ------
    ParameterError
        ``name`` is taken (and ``replace`` is false) or ``factory`` is not callable.
    """
    if factory is None:
        def decorator(f: F) -> F:
            register_encoder(name, f, replace=replace)
            return f

        return decorator
    key = name.strip().lower()
    if not key:
        raise ParameterError("encoder name is empty", fix="give a non-empty name", where="name")
    if not callable(factory):
        raise ParameterError(
            f"factory for encoder {key!r} is not callable ({type(factory).__name__})",
            fix="register the Encoder subclass or a function returning an Encoder",
            where=key,
        )
    current = _registry.get(key)
    if current is not None and current is not factory and not replace:
        raise ParameterError(
            f"an encoder named {key!r} is already registered",
            fix="choose another name, or pass replace=True to override it",
            where=key,
        )
    _registry[key] = factory
    return factory


def _load_plugins() -> None:
    """Register entry-point plugins once; a plugin that fails to load only warns."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = ep.name.strip().lower()
        if key in _registry:
            warnings.warn(
                f"encoder plugin {ep.name!r} ({ep.value}) ignored: the name is already taken",
                stacklevel=3,
            )
            continue
        try:
            factory = ep.load()
            register_encoder(key, factory)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
            _broken_plugins[key] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"encoder plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=3,
            )


def available_encoders() -> list[str]:
    """Names accepted by :func:`get_encoder`, sorted (plugins included)."""
    _load_plugins()
    return sorted(_registry)


def _factory(name: str) -> EncoderFactory:
    _load_plugins()
    key = name.strip().lower()
    if key in _broken_plugins:
        raise ParameterError(
            f"encoder plugin {key!r} failed to load ({_broken_plugins[key]})",
            fix="reinstall or fix the package that provides it, or choose another encoder "
            f"({', '.join(sorted(_registry))})",
            where="encoder",
        )
    entry = _registry.get(key)
    if entry is None:
        close = difflib.get_close_matches(key, _registry, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ParameterError(
            f"unknown encoder {name!r}",
            fix=f"{hint}available encoders: {', '.join(sorted(_registry))}",
            where="encoder",
        )
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ParameterError(
                f"encoder {key!r} could not be imported from {module} ({exc})",
                fix="reinstall multimodal_seg, or choose another encoder",
                where="encoder",
            ) from exc
        _registry[key] = entry
    return entry


def _accepted_options(factory: EncoderFactory) -> tuple[list[str], bool] | None:
    """Option names the factory takes, and whether it takes ``**kwargs`` (None: unknown)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def encoder_options(name: str) -> list[str]:
    """Keyword options the encoder registered as ``name`` accepts (imports it if needed).

    Empty when they cannot be told (a factory without a signature); a factory
    that takes ``**kwargs`` lists only its named options.

    Raises
    ------
    ParameterError
        Unknown encoder name, or the encoder cannot be imported.
    """
    accepted = _accepted_options(_factory(name))
    return accepted[0] if accepted is not None else []


def encoder_kind(name: str) -> str | None:
    """The kind of data (``"image"``, ``"spectrum"``, ``"diffraction"``) the encoder registered
    as ``name`` embeds, from its class; ``None`` for a factory that is not an Encoder class."""
    factory = _factory(name)
    return factory.kind if isinstance(factory, type) and issubclass(factory, Encoder) else None


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder registered as ``name`` with keyword ``options``.

    Raises
    ------
    ParameterError
        Unknown encoder name, or an option the encoder does not accept.
    """
    factory = _factory(name)
    accepted = _accepted_options(factory)
    if accepted is not None and not accepted[1]:
        names = accepted[0]
        unknown = [k for k in options if k not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ParameterError(
                f"encoder {name!r} has no option {unknown[0]!r}",
                fix=f"{hint}its options are: {', '.join(names) or '(none)'}",
                where=unknown[0],
            )
    checked = accepted is not None and not accepted[1]
    try:
        encoder = factory(**options)
    except TypeError as exc:
        # options were not checked above (no signature, or **kwargs): a TypeError
        # about arguments is then most likely a bad option; anything else is a bug
        if checked or "argument" not in str(exc):
            raise
        raise ParameterError(
            f"encoder {name!r} rejected its options: {exc}",
            fix="check the option names and values",
            where="encoder",
        ) from exc
    if not isinstance(encoder, Encoder):
        raise ParameterError(
            f"encoder factory {name!r} returned {type(encoder).__name__}, not an Encoder",
            fix="make the registered factory return an Encoder subclass instance",
            where="encoder",
        )
    return encoder


def resolve_auto(*, weights: str | Path | None = None) -> tuple[str, dict[str, Any], str]:
    """Choose the encoder for ``encoder="auto"``.

    MicroNet ResNet50 when its weights are on this machine (or when the user
    named weights), else the weight-free Fourier encoder.  Never downloads.

    Parameters
    ----------
    weights
        Weights the user asked for (name or file), if any.

    Returns
    -------
    ``(encoder name, options, reason)``; ``reason`` is one sentence for the log.
    """
    if weights is not None:
        return "resnet50", {"weights": weights}, f"using ResNet50 with the requested weights {weights}"
    path = find_weights(DEFAULT_WEIGHTS)
    if path is not None:
        return "resnet50", {"weights": DEFAULT_WEIGHTS}, f"using ResNet50 with MicroNet weights from {path}"
    file_name = weights_info(DEFAULT_WEIGHTS).file_name
    folder: Path = weights_dir()
    reason = (
        f"MicroNet weights not found in {folder}; using the weight-free Fourier encoder. "
        f"Put {file_name} there to use MicroNet"
    )
    return "fourier", {}, reason
