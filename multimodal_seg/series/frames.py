"""The frames of a series: files, a folder, a stack in one file, or arrays; checked to match.

A series is a sequence of 2-D images of one field of view (a dose series, an in-situ
movie, frames written by the microscope).  Frames come from

* image files, one frame each (every format :func:`multimodal_seg.modalities.image.read_image`
  reads), in the order given;
* a folder: its image files in natural order (``frame_2`` before ``frame_10``); hidden
  files and names a writer uses while it writes (``.part``, ``.tmp``, ``~``) are left out;
* a stack in one file (a HyperSpy signal, a multi-frame TIFF, MRC, DM or EMD stack): one
  navigation axis (time, dose ...) over 2-D frames, read through RosettaSciIO;
* arrays: ``(rows, cols)`` one frame, ``(n, rows, cols)`` a stack.

Where the frames sit along the experiment (:class:`SeriesAxis`), decided by the first
frame: a stack's calibrated navigation axis (its name, units and values: a dose or time
axis); otherwise the acquisition time the files carry (HyperSpy's ``General.date`` and
``General.time``, which RosettaSciIO reads from TIFF, DM, EMD and HSPY files), in seconds
from the first frame; otherwise the frame number.

Every frame of a series must have the shape and the pixel calibration of the first
(:func:`check_frame`): chips at one grid position must be one place of the specimen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InputError, ParameterError
from ..modalities.base import Axis, ModalityData
from ..modalities.image import SUPPORTED_IMAGE_EXTENSIONS, image_plugin, read_image
from ..modalities.reading import axis_from_rsciio, pick_signal, read_signals, signal_data
from ..provenance import file_identity

#: Name endings of files a writer has not finished (left out of folders).
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", "~")
#: Relative tolerance on pixel sizes of frames of one series.
CALIBRATION_RTOL = 1e-6


@dataclass
class Frame:
    """One frame of a series.

    Attributes
    ----------
    image
        The frame as an image modality (``name="image"``): lazy float32 ``(rows, cols)``
        with calibrated ``y``, ``x`` axes.
    label
        Where it came from, for messages and tables: a path, ``path[i]`` for frame ``i``
        of a stack, ``<array i>`` for arrays.
    identity
        The file's identity (:func:`multimodal_seg.provenance.file_identity`) for a frame
        read from its own file; ``None`` otherwise.
    position
        Its value on the stack's calibrated navigation axis, if it has one.
    axis
        That axis' ``(name, units)``, if it has one.
    acquired
        Acquisition date and time from the file's metadata, if it has them.
    """

    image: ModalityData
    label: str
    identity: dict[str, Any] | None = None
    position: float | None = None
    axis: tuple[str, str] | None = None
    acquired: datetime | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.data.shape[0]), int(self.image.data.shape[1]))

    def pixels(self) -> np.ndarray:
        """The frame read into memory, float32 ``(rows, cols)``.  Chips, crystallinity windows
        and the overlay are cut from this one copy: slicing the lazy array band by band
        costs ten times more for a 1024 x 1024 frame."""
        return np.asarray(self.image.data, dtype=np.float32)


#: Where a series axis takes its values from, in words.
AXIS_SOURCES = {"stack": "the stack's navigation axis",
                "acquired": "acquisition times in the files (General.date, General.time)",
                "index": "frame order"}


@dataclass(frozen=True)
class SeriesAxis:
    """Where the frames sit along the experiment, decided by the first frame.

    The first frame's calibrated stack axis (a dose or time axis) if it has one; else its
    acquisition time, counting seconds from it; else the frame number.  A later frame
    that lacks the value gets NaN (:meth:`value`).

    Attributes
    ----------
    name, units
        ``("time", "s")``, ``("dose", "e/A^2")`` ..., or ``("frame", "")``.
    source
        ``"stack"``, ``"acquired"`` or ``"index"`` (:data:`AXIS_SOURCES`).
    start
        The acquisition time counted as 0 s (``source="acquired"``).
    """

    name: str
    units: str
    source: str
    start: datetime | None = None

    @classmethod
    def of(cls, first: Frame) -> "SeriesAxis":
        """The axis a series whose first frame is ``first`` is plotted along."""
        if first.axis is not None and first.position is not None:
            return cls(first.axis[0], first.axis[1], "stack")
        if first.acquired is not None:
            return cls("time", "s", "acquired", first.acquired)
        return cls("frame", "", "index")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.units})" if self.units else self.name

    def value(self, frame: Frame, index: int) -> float:
        """Frame ``index``'s position on this axis (NaN where the frame does not say)."""
        if self.source == "index":
            return float(index)
        if self.source == "acquired":
            if frame.acquired is None or (frame.acquired.tzinfo is None) != (self.start.tzinfo is None):
                return float("nan")
            return (frame.acquired - self.start).total_seconds()
        if frame.axis != (self.name, self.units) or frame.position is None:
            return float("nan")
        return float(frame.position)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "units": self.units, "source": self.source, "origin": AXIS_SOURCES[self.source],
                "start": None if self.start is None else self.start.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeriesAxis":
        start = data.get("start")
        return cls(data["name"], data["units"], data["source"], None if start is None else datetime.fromisoformat(start))


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_frame_file(path: Path) -> bool:
    """A finished image file a folder of frames may hold (not hidden, not a writer's temporary)."""
    name = path.name
    return (path.is_file() and not name.startswith(".") and not name.lower().endswith(PARTIAL_SUFFIXES)
            and path.suffix.lower() in SUPPORTED_IMAGE_EXTENSIONS)


def frame_files(folder: Path) -> list[Path]:
    """The image files of a folder in natural order (see :func:`is_frame_file`)."""
    return sorted((p for p in Path(folder).iterdir() if is_frame_file(p)), key=lambda p: natural_key(p.name))


def acquisition_time(metadata: dict[str, Any]) -> datetime | None:
    """``General.date`` + ``General.time`` of a RosettaSciIO signal as a datetime, if both are there."""
    general = metadata.get("General", {}) if isinstance(metadata, dict) else {}
    date, time = general.get("date"), general.get("time")
    if not date or not time:
        return None
    try:
        return datetime.fromisoformat(f"{date}T{time}")
    except ValueError:
        return None


def _as_frame(data: Any, label: str, axes: list[Axis] | None, **fields: Any) -> Frame:
    """A frame from 2-D data, checked as any image is (values, RGB folded), with the file's axes."""
    try:
        image = read_image(data)
    except InputError as exc:  # name the frame, not "<array>"
        raise InputError(exc.problem, fix=exc.fix, where=label) from exc
    if axes is not None:
        image = replace(image, axes=axes)
    image = replace(image, source=label, metadata={**image.metadata, "title": label})
    return Frame(image=image, label=label, **fields)


def _is_stack_or_image(sig: dict[str, Any]) -> bool:
    shape = tuple(sig["data"].shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)) or len(shape) == 3


def read_file_frames(path: str | Path, *, signal: int | str | None = None) -> list[Frame]:
    """The frames of one file: one for an image, one per navigation index for a stack.

    Parameters
    ----------
    path
        An image file or a stack (HyperSpy, TIFF, MRC, DM, EMD ...).
    signal
        For files holding several signals: the index or a title substring (as for
        :func:`multimodal_seg.modalities.image.read_image`).

    Raises
    ------
    InputError
        A missing, unreadable or unsupported file (a half-written one reads as
        unreadable), or data that is neither one image nor a stack of images along one
        axis.
    """
    path = Path(path)
    plugin = image_plugin(path)
    signals = read_signals(path, plugin, what="an image or a stack of images")
    index = pick_signal(signals, signal, path, accept=_is_stack_or_image,
                        missing=lambda sigs, listing: InputError(
                            f"the file holds no image or stack of images: {listing}",
                            fix="give image files, or a stack with one time or dose axis", where=path))
    data, meta = signal_data(signals, index, plugin, path)
    raw_axes = signals[index]["axes"]
    acquired = acquisition_time(signals[index].get("metadata", {}))
    navigate = [a for a in raw_axes if a.get("navigate")]
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4) and not navigate
    if data.ndim == 2 or rgb:
        axes = [axis_from_rsciio(a, n) for a, n in zip(raw_axes[:2], ("y", "x"))]
        return [_as_frame(data, str(path), axes, identity=file_identity(path), acquired=acquired)]
    if data.ndim != 3 or len(navigate) > 1 or (navigate and not raw_axes[0].get("navigate")):
        raise InputError(
            f"data of shape {tuple(int(n) for n in data.shape)} is not an image or a stack of "
            "images along one axis",
            fix="give one frame per file, or a stack with one navigation (time or dose) axis first",
            where=path)
    nav = axis_from_rsciio(raw_axes[0], raw_axes[0].get("name") or "frame")
    calibrated = nav.units not in ("px", "unknown")
    axes = [axis_from_rsciio(a, n) for a, n in zip(raw_axes[1:3], ("y", "x"))]
    frames = []
    for i in range(int(data.shape[0])):
        frames.append(_as_frame(
            data[i], f"{path}[{i}]", axes, acquired=acquired,
            position=nav.offset + i * nav.scale if calibrated else None,
            axis=(nav.name, nav.units) if calibrated else None))
    return frames


def read_frames(sources: Any, *, signal: int | str | None = None) -> list[Frame]:
    """Every frame of a series, in order, checked to match the first (:func:`check_frame`).

    Parameters
    ----------
    sources
        A folder, a file (one image or a stack), an array (``(rows, cols)`` or
        ``(n, rows, cols)``), or a sequence of these.
    signal
        Which signal of files holding several (index or title substring).

    Raises
    ------
    InputError
        Nothing to read, an unreadable file, or a frame of another size or calibration
        than the first.
    """
    items = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    frames: list[Frame] = []
    for item in items:
        if isinstance(item, (np.ndarray, da.Array)):
            stack = item if item.ndim == 3 and item.shape[-1] not in (3, 4) else item[None]
            first = len(frames)
            frames += [_as_frame(stack[i], f"<array {first + i}>", None) for i in range(stack.shape[0])]
        elif isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                files = frame_files(path)
                if not files:
                    raise InputError("the folder holds no image files",
                                     fix=f"put frames in it ({', '.join(SUPPORTED_IMAGE_EXTENSIONS)})",
                                     where=path)
                for file in files:
                    frames += read_file_frames(file, signal=signal)
            else:
                frames += read_file_frames(path, signal=signal)
        else:
            raise ParameterError(f"cannot read frames from a {type(item).__name__}",
                                 fix="give files, a folder, a stack file or arrays", where=repr(item)[:80])
    if not frames:
        raise InputError("no frames given", fix="give at least one frame", where="frames")
    for frame in frames[1:]:
        check_frame(frame, frames[0].shape, frames[0].image.axes)
    return frames


def check_frame(frame: Frame, shape: tuple[int, int], axes: Sequence[Axis]) -> None:
    """A frame must have the series' ``shape`` and pixel calibration (``axes``' scale and units).

    Raises
    ------
    InputError
        Naming the frame, what differs, and what to do.
    """
    if frame.shape != tuple(shape):
        raise InputError(
            f"the frame is {frame.shape[0]}x{frame.shape[1]} px but the series' frames are "
            f"{shape[0]}x{shape[1]} px",
            fix="crop or resample it to the series' size, or segment it as a series of its own",
            where=frame.label)
    for own, ref in zip(frame.image.axes[:2], axes[:2]):
        if own.units != ref.units or not np.isclose(own.scale, ref.scale, rtol=CALIBRATION_RTOL, atol=0):
            raise InputError(
                f"the frame's pixel size along {ref.name} is {own.scale:g} {own.units} but the "
                f"series' is {ref.scale:g} {ref.units}",
                fix="resample it to the series' pixel size (or correct its calibration), or segment "
                    "it as a series of its own",
                where=frame.label)
