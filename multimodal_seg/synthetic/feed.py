"""A simulated microscope feed: the frames of a damage series written to a folder at a chosen rate.

A microscope writing an in-situ series drops one file per frame into a folder while
the experiment runs.  :func:`run_feed` does that with the frames of a
:class:`multimodal_seg.synthetic.series.DamageSeries`: frame ``i`` is written
``i * interval`` seconds after the start (or as soon as it is rendered), each as a
calibrated image file (``.tif`` or ``.hspy``, written through HyperSpy and
RosettaSciIO) carrying its acquisition time (``General.date``, ``General.time``:
the start time plus the series' time of the frame).  Two ways of writing, as
acquisition programs do:

* ``writer="rename"``: the file is written under a hidden temporary name in the folder
  and renamed into place when complete (it appears whole);
* ``writer="direct"``: the bytes are written into the final name in ``chunks`` pieces
  ``pause`` seconds apart, so a reader polling the folder sees a half-written file.

The truth of every frame can be written beside it (``truth`` folder, ``frame_NNNNN.npy``,
int16 region maps, 3 = amorphous).  :func:`save_stack` writes the whole series as one
HyperSpy file with a calibrated time axis.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ..errors import OutputError, ParameterError
from ..provenance import atomic_path
from .series import DamageSeries

#: Formats the feed writes.
FORMATS = (".tif", ".hspy")
#: Acquisition time of the first frame written (a fixed date keeps the files reproducible).
START = datetime(2025, 1, 1, 12, 0, 0)


def _signal(image: np.ndarray, *, pixel_size: float, units: str, title: str, acquired: datetime | None):
    import hyperspy.api as hs

    signal = hs.signals.Signal2D(np.asarray(image, dtype=np.float32))
    for axis, name in zip(signal.axes_manager.signal_axes, ("x", "y")):
        axis.name, axis.scale, axis.units = name, pixel_size, units
    signal.metadata.General.title = title
    if acquired is not None:
        signal.metadata.General.date = acquired.date().isoformat()
        signal.metadata.General.time = acquired.time().isoformat(timespec="microseconds")
    return signal


def save_frame(path: str | Path, image: np.ndarray, *, pixel_size: float, units: str = "nm",
               acquired: datetime | None = None, title: str | None = None) -> Path:
    """Write one frame as a microscope would: a calibrated ``.tif`` or ``.hspy`` with its
    acquisition time (TIFF keeps whole seconds, HSPY microseconds).

    Raises
    ------
    ParameterError
        Another file extension.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ParameterError(f"the feed writes {', '.join(FORMATS)} files, not {path.suffix!r}",
                             fix="name the file .tif or .hspy", where=path)
    signal = _signal(image, pixel_size=pixel_size, units=units, title=title or path.stem, acquired=acquired)
    signal.save(path, overwrite=True)
    return path


def save_stack(series: DamageSeries, path: str | Path, *, frames: Sequence[int] | None = None) -> Path:
    """The series (or some of its frames) as one HyperSpy file: a time axis (s) over the frames."""
    import hyperspy.api as hs

    path = Path(path)
    frames = range(series.n_frames) if frames is None else list(frames)
    stack = hs.signals.Signal2D(np.stack([series.frame(i) for i in frames]))
    time_axis = stack.axes_manager.navigation_axes[0]
    times = series.times[list(frames)]
    step = float(times[1] - times[0]) if len(times) > 1 else 1.0
    time_axis.name, time_axis.units, time_axis.scale, time_axis.offset = "time", "s", step, float(times[0])
    for axis, name in zip(stack.axes_manager.signal_axes, ("x", "y")):
        axis.name, axis.scale, axis.units = name, series.pixel_size, series.units
    stack.metadata.General.title = "damage series"
    with atomic_path(path) as tmp:
        stack.save(tmp.with_suffix(".hspy"), overwrite=True)
        os.replace(tmp.with_suffix(".hspy"), tmp)
    return path


def _write_slowly(path: Path, data: bytes, chunks: int, pause: float) -> None:
    step = max(1, -(-len(data) // chunks))
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            if start + step < len(data):
                time.sleep(pause)


def run_feed(series: DamageSeries, folder: str | Path, *, interval: float = 1.0, fmt: str = ".tif",
             frames: Sequence[int] | None = None, writer: str = "rename", chunks: int = 4, pause: float = 0.05,
             truth: str | Path | None = None, stop: threading.Event | None = None,
             on_written: Callable[[int, Path, float], None] | None = None) -> list[Path]:
    """Write the series' frames into ``folder`` one by one, ``interval`` seconds apart.

    Parameters
    ----------
    series
        The frames (rendered as they are written).
    folder
        Where to write (created if missing); frames are ``frame_00000.tif`` ...
    interval
        Seconds between the starts of two frames (0: as fast as they render).
    fmt
        ``".tif"`` or ``".hspy"``.
    frames
        Which frames (default all), in this order.
    writer
        ``"rename"`` (appears whole) or ``"direct"`` (``chunks`` pieces ``pause`` s apart).
    truth
        A folder for each frame's truth map (``frame_NNNNN.npy``), or ``None``.
    stop
        Set it to stop after the frame being written.
    on_written
        Called with ``(frame, path, time.time() when it appeared complete)``.

    Returns
    -------
    The files written, in order.

    Raises
    ------
    ParameterError
        Unknown format or writer, a negative interval.
    OutputError
        ``folder`` cannot be created.
    """
    if fmt not in FORMATS or writer not in ("rename", "direct") or not interval >= 0 or chunks < 1:
        raise ParameterError(
            f"fmt={fmt!r}, writer={writer!r}, interval={interval!r}, chunks={chunks!r} cannot work",
            fix=f"use fmt in {FORMATS}, writer 'rename' or 'direct', interval >= 0, chunks >= 1", where="run_feed")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if truth is not None:
            Path(truth).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the feed folder: {exc}", fix="choose a writable place",
                          where=folder) from exc
    written = []
    start = time.monotonic()
    for n, index in enumerate(range(series.n_frames) if frames is None else frames):
        if stop is not None and stop.is_set():
            break
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        path = folder / f"frame_{index:05d}{fmt}"
        acquired = START + timedelta(seconds=float(series.times[index]))
        image = series.frame(index)
        if truth is not None:
            with atomic_path(Path(truth) / f"frame_{index:05d}.npy") as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, series.truth(index))
        with tempfile.TemporaryDirectory() as scratch:
            staged = save_frame(Path(scratch) / path.name, image, pixel_size=series.pixel_size,
                                units=series.units, acquired=acquired, title=f"frame {index}")
            if writer == "rename":
                hidden = folder / f".{path.name}.part"
                hidden.write_bytes(staged.read_bytes())
                os.replace(hidden, path)
            else:
                _write_slowly(path, staged.read_bytes(), chunks, pause)
        appeared = time.time()
        written.append(path)
        if on_written is not None:
            on_written(index, path, appeared)
    return written

