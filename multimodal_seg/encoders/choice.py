"""Which encoder embeds each modality, from the run's encoder settings.

Image modalities use the configured image encoder (``encoder``: ``"auto"`` picks
MicroNet ResNet50 when its weights are on the machine, else ``"fourier"``).
Spectrum images and 4D-STEM scans use ``DEFAULT_ENCODERS`` unless
``modality_encoders`` names another one.  ``encoder_options`` holds the image
encoder's options, and, keyed by modality name, any modality's own options
(``{"eels": {"normalise": "edges"}}``).  Every encoder receives its modality's
calibrated signal axes (:meth:`Encoder.set_signal_axes`) before anything else.

Trained checkpoints (``mmseg train``, :mod:`multimodal_seg.encoders.checkpoint`)
name their encoder and options: given as a modality's ``weights`` they choose its
encoder (unless ``encoder`` or ``modality_encoders`` names one) and fill the options
not given.  A checkpoint given as the run's ``weights`` (``--weights``) goes to the
image encoder when it was trained on images, else to the one modality of its kind.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..config import EncoderConfig
from ..errors import ParameterError
from ..modalities.base import ModalityData
from .base import Encoder
from .checkpoint import checkpoint_of, options_from_checkpoint
from .registry import encoder_options as accepted_options
from .registry import get_encoder, resolve_auto

#: Encoder per modality kind when ``modality_encoders`` names none (images: ``encoder``).
DEFAULT_ENCODERS = {"spectrum": "spectrum-pca", "diffraction": "diffraction-profiles"}


def image_encoder(config: EncoderConfig) -> tuple[Encoder, str]:
    """Build the configured image encoder; returns it and a sentence saying why it was chosen.

    Raises
    ------
    ParameterError
        Unknown encoder or option, or weights given to an encoder that takes none.
    """
    name, options, reason = config.name, dict(config.options), f"encoder {config.name!r} requested"
    trained = options.get("weights", config.weights)
    if checkpoint_of(trained) is not None:
        name, options = options_from_checkpoint(trained, name, options)
        reason = f"{name} with the trained checkpoint {trained}"
    if name == "auto":
        name, auto_options, reason = resolve_auto(weights=config.weights)
        options = {**auto_options, **options}
    options = with_run_options(name, options, config, ("weights", "allow_download", "batch_size", "device"))
    if config.weights is not None and "weights" not in accepted_options(name):
        raise ParameterError(f"encoder {name!r} takes no weights",
                             fix="drop the weights option or choose encoder='resnet50'", where="weights")
    return get_encoder(name, **options), reason


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def available_of_kind(kind: str) -> list[str]:
    """Names of the registered encoders that embed ``kind`` data."""
    from .registry import available_encoders, encoder_kind

    return [name for name in available_encoders() if encoder_kind(name) == kind]


def with_run_options(name: str, options: Mapping[str, Any], config: EncoderConfig,
                     keys: tuple[str, ...]) -> dict[str, Any]:
    """``options`` plus the run-wide settings ``keys`` of ``config`` (``device``,
    ``batch_size`` ...) that encoder ``name`` takes and ``options`` does not set."""
    accepted = accepted_options(name)
    run_wide = {key: getattr(config, key) for key in keys}
    return {**{k: v for k, v in run_wide.items() if k in accepted and v is not None}, **options}


def options_by_modality(config: EncoderConfig, modalities: Mapping[str, ModalityData],
                        modality_encoders: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each modality's encoder options, from ``config.options`` (``encoder_options``).

    An entry keyed by a modality's name, a mapping, holds that modality's encoder
    options; the other entries are options of the image encoder.

    Raises
    ------
    ParameterError
        A modality's entry is not a mapping, or image-encoder options are given
        but no modality uses the image encoder (they would be ignored).
    """
    options = config.options
    shared = {k: v for k, v in options.items() if k not in modalities}
    uses_shared = [n for n, m in modalities.items() if m.kind == "image" and n not in modality_encoders]
    if shared and not uses_shared:
        raise ParameterError(
            f"encoder_options {sorted(shared)} are options of the image encoder, but no modality "
            "here uses it, so they would be ignored",
            fix=f"key them by modality, e.g. encoder_options={{{next(iter(modalities))!r}: {shared!r}}}",
            where="encoder_options")
    out = {}
    for name in modalities:
        own = options.get(name, {})
        if not isinstance(own, dict):
            raise ParameterError(
                f"encoder_options[{name!r}] must be a mapping of options for {name!r}'s encoder, "
                f"not {own!r}", fix=f"write encoder_options={{{name!r}: {{'option': value}}}}",
                where="encoder_options")
        out[name] = {**shared, **own} if name in uses_shared else dict(own)
    return out


def choose_encoders(config: EncoderConfig, modalities: Mapping[str, ModalityData],
                    modality_encoders: Mapping[str, str] | None = None) -> dict[str, tuple[Encoder, str]]:
    """The encoder of every modality, each given its modality's calibrated signal axes.

    Returns
    -------
    ``{name: (encoder, reason)}``, ``reason`` a sentence for the log and provenance.

    Raises
    ------
    ParameterError
        Unknown encoders or options, an encoder of the wrong kind, or
        ``modality_encoders`` naming a modality that is not there.
    """
    modality_encoders = dict(modality_encoders or {})
    # Settings no modality of this run uses are said, not refused: one batch config serves
    # specimens with and without an image (docs/scale.md)
    if config.name != "auto" and not any(m.kind == "image" and n not in modality_encoders
                                         for n, m in modalities.items()):
        warnings.warn(
            f"encoder {config.name!r} is the image encoder, and no modality here is an image embedded by it: "
            "not used. A spectrum image or 4D-STEM scan takes its own in modality_encoders (config file), one of: "
            + ", ".join(e for kind in ("spectrum", "diffraction") for e in available_of_kind(kind)),
            UserWarning, stacklevel=3)
    unknown = sorted(set(modality_encoders) - set(modalities))
    if unknown:
        raise ParameterError(f"modality_encoders names modalities that are not here: {unknown}",
                             fix=f"use modality names among {list(modalities)}", where="modality_encoders")
    options = options_by_modality(config, modalities, modality_encoders)
    config, options = route_checkpoint(config, modalities, modality_encoders, options)
    chosen = {}
    for name, modality in modalities.items():
        if modality.kind == "image" and name not in modality_encoders:
            encoder, reason = image_encoder(config.model_copy(update={"options": options[name]}))
        else:
            trained = options[name].get("weights")
            encoder_name, options[name] = options_from_checkpoint(trained, modality_encoders.get(name),
                                                                  options[name])
            encoder_name = encoder_name or DEFAULT_ENCODERS.get(modality.kind)
            if encoder_name is None:
                raise ParameterError(f"no encoder known for {modality.kind} modality {name!r}",
                                     fix=f"set modality_encoders: {{{name}: <encoder>}}", where=name)
            # a torch encoder of any modality runs on the run's device, in its batches
            encoder = get_encoder(encoder_name, **with_run_options(encoder_name, options[name], config,
                                                                   ("batch_size", "device")))
            reason = f"{encoder_name} for {name}" + (
                f" with the trained checkpoint {trained}" if checkpoint_of(trained) is not None else "")
        if encoder.kind != modality.kind:
            setting = "modality_encoders" if name in modality_encoders else "encoder"
            raise ParameterError(
                f"encoder {encoder.name!r} embeds {encoder.kind} data, but {name!r} is {_article(modality.kind)} "
                f"{modality.kind}",
                fix=f"choose {_article(modality.kind)} {modality.kind} encoder for {name!r}: "
                    + ", ".join(available_of_kind(modality.kind)), where=setting)
        encoder.set_signal_axes(modality.axes[2:])
        chosen[name] = (encoder, reason)
    # a torch encoder holds the device it runs on
    on_device = [n for n, (encoder, _) in chosen.items() if getattr(encoder, "device", None) is not None]
    if config.device != "auto" and not on_device:
        warnings.warn(
            f"device {config.device!r} is for torch encoders, and none here uses one ("
            + ", ".join(f"{encoder.name} for {n}" for n, (encoder, _) in chosen.items())
            + "): not used; these run on the CPU. A torch encoder would use it, e.g. encoder='resnet50' or "
              "'image-cnn', modality_encoders={'eels': 'spectrum-cnn'}", UserWarning, stacklevel=3)
    return chosen


def route_checkpoint(config: EncoderConfig, modalities: Mapping[str, ModalityData],
                     modality_encoders: Mapping[str, str], options: dict[str, dict[str, Any]]
                     ) -> tuple[EncoderConfig, dict[str, dict[str, Any]]]:
    """Send a checkpoint given as the run's ``weights`` to the modality of its kind.

    A checkpoint trained on images stays with the image encoder; one trained on
    spectra or patterns becomes the ``weights`` option of the one modality of that
    kind.  Other weights are returned as they are.

    Raises
    ------
    ParameterError
        No modality, or several, of the checkpoint's kind use it (say which with
        ``encoder_options={name: {"weights": ...}}``), or that modality's options
        name weights already.
    """
    info = checkpoint_of(config.weights)
    if info is None:
        return config, options
    if info.kind == "image":
        targets = [n for n, m in modalities.items() if m.kind == "image" and n not in modality_encoders]
    else:
        targets = [n for n, m in modalities.items() if m.kind == info.kind]
    if len(targets) != 1:
        what = "no" if not targets else f"{len(targets)} ({', '.join(targets)})"
        raise ParameterError(
            f"the weights {config.weights} are a {info.encoder} checkpoint trained on {info.kind} data, "
            f"and {what} modalities here can use it",
            fix=(f"give it to one modality: encoder_options={{'<name>': {{'weights': {str(config.weights)!r}}}}}"
                 if targets else f"use it in a run with {info.kind} data, or leave weights out"),
            where="weights")
    if info.kind == "image":
        return config, options
    (target,) = targets
    if "weights" in options[target]:
        raise ParameterError(f"weights are given twice for {target!r}: as weights and in encoder_options",
                             fix="give them once", where="weights")
    options[target] = {**options[target], "weights": config.weights}
    return config.model_copy(update={"weights": None}), options
