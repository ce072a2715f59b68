"""Trained-encoder checkpoints: one file with an encoder's weights and what they mean.

A checkpoint (written by :mod:`multimodal_seg.training`, read here so that every
encoder can load one) is a dict saved with ``torch.save`` that
``torch.load(weights_only=True)`` reads::

    {"state_dict": {...},        # the weights, as the encoder's weights file holds them
     "multimodal_seg": {         # what they mean
         "format": "multimodal_seg.encoder-checkpoint", "version": 1,
         "encoder": "spectrum-cnn", "kind": "spectrum",
         "options": {...},        # architecture and input preprocessing options
         "preprocessing": "...",  # the same in words
         "signal_axes": [...],    # calibrated signal axes of each training modality
         "training": {...}}}      # training config, data, seed, versions, losses, time

Because the weights sit under ``state_dict``, the encoders' ordinary weights path
(:func:`multimodal_seg.encoders.weights.load_state_dict`) loads a checkpoint like
any state dict file, and its SHA-256 enters the encoder's fingerprint like any
weights file's.  On top of that, an encoder given a checkpoint checks it
(:func:`check_checkpoint`): the encoder name, the data kind and every
architecture or preprocessing option must match, and a modality's signal axes
must be those the encoder was trained on (:func:`check_signal_axes`); otherwise
:class:`~multimodal_seg.errors.WeightsError` says what differs and what to do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WeightsError

if TYPE_CHECKING:
    from ..modalities.base import Axis

#: Value of ``multimodal_seg.format`` in a checkpoint.
CHECKPOINT_FORMAT = "multimodal_seg.encoder-checkpoint"
#: Version of the layout above.
CHECKPOINT_VERSION = 1
#: Key of the metadata in a checkpoint file.
METADATA_KEY = "multimodal_seg"
#: A modality's calibrated signal range may differ from a training modality's by this
#: fraction of the range at either end: about what the energy-shift and centre-shift
#: augmentations teach the network to ignore (a few channels or pixels in 64-256).
AXIS_TOLERANCE = 0.05


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about its weights.

    Attributes
    ----------
    encoder
        Registry name of the encoder the weights belong to (``"spectrum-cnn"``).
    kind
        Data kind it embeds (``"image"``, ``"spectrum"``, ``"diffraction"``).
    options
        Architecture and preprocessing options the weights were trained with.
    preprocessing
        The input preprocessing in words.
    signal_axes
        Signal axes (``Axis.to_dict()``) of each training modality.
    training
        The training record (config, data, seed, versions, losses, time).
    """

    encoder: str
    kind: str
    options: dict[str, Any]
    preprocessing: str
    signal_axes: list[list[dict[str, Any]]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "encoder": self.encoder,
                "kind": self.kind, "options": self.options, "preprocessing": self.preprocessing,
                "signal_axes": self.signal_axes, "training": self.training}


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, NumPy scalars numbers (what torch.load gives back)."""
    from ..provenance import to_json

    return json.loads(to_json(value))


def save_checkpoint(path: str | Path, state_dict: Mapping[str, Any], info: CheckpointInfo) -> Path:
    """Write a checkpoint atomically (a temporary file renamed onto ``path``).

    Parameters
    ----------
    path
        The file to write (its folder must exist).
    state_dict
        The weights, as the encoder's weights file holds them (tensors, moved to the CPU).
    info
        What they mean.

    Returns
    -------
    The path written.
    """
    import torch

    from ..provenance import atomic_path

    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, METADATA_KEY: _plain(info.to_dict())}, tmp)
    return path


@functools.lru_cache(maxsize=32)
def _read_info(path: str, size: int, mtime_ns: int) -> CheckpointInfo | None:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file: load_state_dict reports what is wrong
        return None
    meta = obj.get(METADATA_KEY) if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(
            f"the file is a multimodal_seg checkpoint of format {meta.get('format')!r} version "
            f"{meta.get('version')!r}; this version reads {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}",
            fix="train the encoder again with this version of multimodal_seg (mmseg train)",
            where=path)
    try:
        return CheckpointInfo(encoder=str(meta["encoder"]), kind=str(meta["kind"]),
                              options=dict(meta["options"]), preprocessing=str(meta["preprocessing"]),
                              signal_axes=list(meta.get("signal_axes", [])),
                              training=dict(meta.get("training", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"the checkpoint's description is incomplete ({exc})",
                           fix="train the encoder again (mmseg train)", where=path) from None


def read_checkpoint_info(path: str | Path) -> CheckpointInfo | None:
    """The description of a trained-encoder checkpoint, or ``None`` for a plain state dict.

    Cheap: the file is memory-mapped, the weights are not read (cached per path,
    size and modification time).

    Raises
    ------
    WeightsError
        A multimodal_seg checkpoint of another format version, or with an incomplete description.
    """
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    return _read_info(str(path.resolve()), st.st_size, st.st_mtime_ns)


def checkpoint_of(spec: Any) -> CheckpointInfo | None:
    """The checkpoint description when ``spec`` (a weights option) is a checkpoint file, else ``None``."""
    if not isinstance(spec, (str, Path)) or (isinstance(spec, str) and not spec.strip()):
        return None
    return read_checkpoint_info(Path(spec).expanduser())


def options_from_checkpoint(weights: Any, name: str | None, options: Mapping[str, Any]
                            ) -> tuple[str | None, dict[str, Any]]:
    """The encoder name and options to build for ``weights``: a checkpoint's own, under the caller's.

    When ``weights`` is a checkpoint and ``name`` is ``None`` or ``"auto"``, the
    checkpoint's encoder is chosen; when the encoder is the checkpoint's, its
    options fill those the caller did not give.  Otherwise both are returned as
    given (a conflict is reported when the encoder loads the file,
    :func:`check_checkpoint`).
    """
    info = checkpoint_of(weights)
    options = dict(options)
    if info is None:
        return name, options
    if name in (None, "auto"):
        name = info.encoder
    if name == info.encoder:
        options = {**info.options, **options}
    return name, options


def load_encoder(path: str | Path, **options: Any) -> Any:
    """The encoder a checkpoint was trained for, with its options and weights (options given here win).

    ``load_encoder("eels.ckpt", device="cpu").encode(chips)`` is the Python counterpart of
    ``segment(..., weights="eels.ckpt")``.

    Raises
    ------
    WeightsError
        Not a trained-encoder checkpoint, or options that do not fit it.
    """
    from .registry import get_encoder

    info = read_checkpoint_info(path)
    if info is None:
        raise WeightsError("the file is not a trained-encoder checkpoint (it names no encoder)",
                           fix="give a checkpoint written by mmseg train, or build the encoder with "
                               "get_encoder(name, weights=path)", where=path)
    return get_encoder(info.encoder, **{**info.options, **options, "weights": str(path)})


def checkpoint_for(encoder: Any, path: Path | None) -> CheckpointInfo | None:
    """The checked description of ``encoder``'s weights file when it is a trained checkpoint.

    ``None`` for random weights or a plain state dict.  ``encoder`` has ``name``, ``kind``
    and ``architecture_options()``.

    Raises
    ------
    WeightsError
        A checkpoint of another encoder, kind or options (:func:`check_checkpoint`).
    """
    info = None if path is None else read_checkpoint_info(path)
    if info is not None:
        check_checkpoint(info, encoder=encoder.name, kind=encoder.kind,
                         options=encoder.architecture_options(), path=path)
    return info


def check_checkpoint(info: CheckpointInfo, *, encoder: str, kind: str, options: Mapping[str, Any],
                     path: str | Path) -> None:
    """Raise WeightsError unless ``info`` describes weights of this encoder with these options.

    Parameters
    ----------
    info
        The checkpoint's description.
    encoder, kind
        The encoder's registry name and data kind.
    options
        The encoder's architecture and preprocessing options (what the checkpoint's
        ``options`` must equal).
    path
        The checkpoint, for the message.
    """
    if info.kind != kind:
        raise WeightsError(
            f"the checkpoint holds a {info.encoder} encoder trained on {info.kind} data; "
            f"{encoder} embeds {kind} data",
            fix=f"use a checkpoint trained with `mmseg train --modality {kind}` for this modality, or "
                f"give this checkpoint to a {info.kind} modality",
            where=path)
    if info.encoder != encoder:
        raise WeightsError(
            f"the checkpoint holds weights of {info.encoder!r}, not {encoder!r}",
            fix=f"use encoder {info.encoder!r} with it (encoder='auto' or modality_encoders pick it "
                "from the checkpoint), or train a checkpoint for this encoder",
            where=path)
    mine, theirs = _plain(dict(options)), _plain(info.options)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        said = ", ".join(f"{k}={theirs.get(k)!r} (here {mine.get(k)!r})" for k in differ)
        raise WeightsError(
            f"the checkpoint was trained with other architecture or preprocessing options: {said}",
            fix="leave these options out (a checkpoint's own options are used by default) or set "
                f"them to the checkpoint's: {', '.join(f'{k}={theirs.get(k)!r}' for k in differ)}",
            where=path)


def _span(axis: Mapping[str, Any]) -> tuple[float, float]:
    start = float(axis["offset"])
    return start, start + float(axis["scale"]) * (int(axis["size"]) - 1)


def check_signal_axes(info: CheckpointInfo, axes: Sequence[Axis], *, path: str | Path) -> None:
    """Raise WeightsError unless ``axes`` are like the signal axes of a training modality.

    Calibrated axes (units other than ``"px"``) must have the units of a training
    modality's and a range that differs from its range by at most
    :data:`AXIS_TOLERANCE` of it at either end: a spectrum-cnn trained on EELS from
    250 to 760 eV sees other energies at the same network positions on any other
    range.  Uncalibrated axes are compared by their number of channels or pixels
    within the same tolerance.  A checkpoint without recorded axes is not checked.
    """
    if not info.signal_axes:
        return
    given = [axis.to_dict() for axis in axes]
    for trained in info.signal_axes:
        if len(trained) != len(given):
            continue
        if all(_axis_fits(t, g) for t, g in zip(trained, given, strict=True)):
            return
    seen = "; ".join(", ".join(_describe(a) for a in t) for t in info.signal_axes)
    raise WeightsError(
        f"the checkpoint was trained on {info.kind} data with signal axes {seen}, but this modality "
        f"has {', '.join(_describe(a) for a in given)}: the network would see other "
        f"{'energies' if info.kind == 'spectrum' else 'scattering angles'} at the positions it learnt",
        fix="train an encoder on data with this calibration (mmseg train), or check the modality's "
            "calibration",
        where=path)


def _axis_fits(trained: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    if trained["units"] != given["units"]:
        return False
    if given["units"] == "px":
        return abs(int(given["size"]) - int(trained["size"])) <= AXIS_TOLERANCE * int(trained["size"])
    (a0, a1), (b0, b1) = _span(trained), _span(given)
    width = abs(a1 - a0) or abs(float(trained["scale"]))
    return abs(b0 - a0) <= AXIS_TOLERANCE * width and abs(b1 - a1) <= AXIS_TOLERANCE * width


def _describe(axis: Mapping[str, Any]) -> str:
    if axis["units"] == "px":
        return f"{axis['name']} {axis['size']} px"
    a0, a1 = _span(axis)
    return f"{axis['name']} {a0:g}-{a1:g} {axis['units']} ({axis['size']} channels)"
