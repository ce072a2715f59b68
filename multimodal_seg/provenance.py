"""Provenance: package versions, fingerprints of stage inputs, atomic file writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any, Iterator

import numpy as np

#: Distributions whose versions change results; recorded with every run.
TRACKED_PACKAGES = (
    "multimodal-seg", "numpy", "scipy", "dask", "zarr", "torch", "torchvision",
    "scikit-learn", "pynndescent", "igraph", "leidenalg", "rosettasciio", "hyperspy",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package (``None`` when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_record(config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to reproduce a run: config, versions, machine, time."""
    return {
        "config": config,
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def painted_partition(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run's painted partition (the first under ``partitions``: the joint one
    with several modalities): its ``n_communities``, ``decision``, ``run_counts``, ``close_call``..."""
    return next(iter((record.get("partitions") or {}).values()), {})


def painted_decision(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision on the number of communities of a run's painted partition
    (:func:`painted_partition`); ``None`` where the data did not decide it (``decide="none"``)."""
    return painted_partition(record).get("decision")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(*parts: Any) -> str:
    """Stable SHA-256 (hex, 16 chars) of JSON-able parts: identifies a stage's inputs."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of an input file (resolved path, size, modification time in ns)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an in-memory array's bytes, shape and dtype (hex, 16 chars)."""
    h = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and folders.  On error the temporary is removed and
    ``target`` is left as it was, so readers never see a half-written output.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        if target.is_dir() and not target.is_symlink():
            # Move the old folder aside first so that a failed rename can restore it.
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(target: Path, text: str) -> None:
    """Write a text file atomically (temporary name, then rename)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


class RunWarnings:
    """The warnings of one run, recorded safely while other runs go on in other threads.

    ``warnings.catch_warnings`` swaps process-wide state on entry and restores what it saw
    on exit.  Two runs that overlap in threads (a batch on Dask's threaded scheduler) then
    restore each other's state: one run's recorder stayed installed after it ended, and
    re-raising its warnings to the caller appended them to its own list without end (a test
    run killed for memory at 23 GB).  Warnings are process-wide, so this class keeps the one
    shared piece of state they need: while any run records, one dispatcher replaces
    ``warnings.showwarning`` and the filters say "always" (every occurrence is recorded);
    the last run to end restores both.  A warning goes to the runs open in the context it was
    raised in: the run's own thread, and the threads of Dask's threaded scheduler computing
    for it (they run their tasks in a copy of the submitting thread's context).  Only a
    warning from a thread that carries no run's context (a pool not started by Dask) goes to
    every run recording then.

    Use::

        with RunWarnings() as caught:
            ...                       # the run
        caught.replay()               # the warnings reach the caller, shown as raised
    """

    _lock = threading.Lock()
    _active: dict[int, "RunWarnings"] = {}
    #: The process's warning state as the first run found it (restored by the last one), and
    #: the showwarning that prints a warning then.
    _guard: warnings.catch_warnings | None = None
    _shown: Any = None
    _replaying: set[int] = set()

    #: The runs open in this context, outermost first (a batch task's, then its segment()'s).
    _open: ContextVar[tuple["RunWarnings", ...]] = ContextVar("multimodal_seg_run_warnings", default=())

    def __init__(self) -> None:
        self.records: list[warnings.WarningMessage] = []
        self._thread = threading.get_ident()
        self._token: Any = None

    def __enter__(self) -> "RunWarnings":
        cls = type(self)
        with cls._lock:
            if not cls._active:
                cls._guard, cls._shown = warnings.catch_warnings(), warnings.showwarning
                cls._guard.__enter__()  # saves filters and showwarning; the last run restores them
                warnings.showwarning = cls._dispatch
                warnings.simplefilter("always")
            cls._active[id(self)] = self
        self._token = cls._open.set(cls._open.get() + (self,))
        return self

    def __exit__(self, *exc: Any) -> None:
        cls = type(self)
        cls._open.reset(self._token)
        with cls._lock:
            cls._active.pop(id(self), None)
            if not cls._active and cls._guard is not None:
                cls._guard.__exit__(None, None, None)
                cls._guard = cls._shown = None

    @classmethod
    def _dispatch(cls, message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
        record = warnings.WarningMessage(message, category, filename, lineno, file, line)
        thread = threading.get_ident()
        with cls._lock:
            runs = list(cls._active.values())
            shown = cls._shown if thread in cls._replaying else None
        if shown is not None:  # a finished run's warnings, raised again for its caller
            shown(message, category, filename, lineno, file, line)
            return
        # the runs of this context; else of this thread (a run entered here in another context);
        # else, from a thread that carries no run's context, every run: it may be anyone's
        own = [run for run in cls._open.get() if run in runs] or [run for run in runs if run._thread == thread]
        for run in own or runs:
            run.records.append(record)

    def __iter__(self) -> Iterator[warnings.WarningMessage]:
        return iter(list(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def replay(self) -> None:
        """Raise the recorded warnings again for the caller (after the run; not recorded again).

        Inside an enclosing run of the same thread (a batch task recording its specimen's
        run) nothing is raised: the enclosing run recorded every warning as it came, and says
        them itself (naming its specimen).
        """
        cls, thread = type(self), threading.get_ident()
        with cls._lock:
            if any(run._thread == thread for run in cls._active.values()):
                return
        cls.say(self.records)

    @classmethod
    def say(cls, records: Iterable[warnings.WarningMessage]) -> None:
        """Raise warnings for the caller, shown as raised, without any run recording them
        (a finished run's own, or a batch task's, named by its specimen, while other
        specimens' runs are still recording)."""
        thread = threading.get_ident()
        with cls._lock:
            cls._replaying.add(thread)
        try:
            for w in list(records):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        finally:
            with cls._lock:
                cls._replaying.discard(thread)
