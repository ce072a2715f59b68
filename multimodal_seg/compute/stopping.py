"""Stopping runs in other threads on request, at points where nothing is half written.

Ctrl-C reaches the main thread only.  A batch on Dask's threaded scheduler runs its
specimens in the threads of Dask's pool, which go on computing after the main thread
has been interrupted; left alone, they died only when the interpreter shut its thread
pools down under them, part way through a zarr write, and zarr's event loop then
reported its abandoned tasks at exit ("Task was destroyed but it is pending!").

Instead, the batch gives each specimen's run a :class:`StopRequest` and, on Ctrl-C,
asks it to stop and waits for the runs to notice.  A run notices at its next
:func:`stop_point`: between stages, and between the row bands and chip spans of the
long stages.  The request travels in a context variable, so the tasks that Dask's
threaded scheduler runs for a run see it too (they run in a copy of the submitting
thread's context).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Stopped(Exception):
    """Raised at a :func:`stop_point` of a run that was asked to stop."""


class StopRequest:
    """A request to stop that runs in several threads share, and the runs yet to end.

    Picklable it is not (a lock and an event): it serves the threaded scheduler, whose
    tasks share this process; the workers of a distributed scheduler end with the client.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._changed = threading.Condition()
        self._running = 0

    def set(self) -> None:
        """Ask every run holding this request to stop at its next stop point."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether stopping was asked for."""
        return self._event.is_set()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Hold the request for a run in this block: its stop points (in this thread, and in
        the Dask tasks it starts) raise :class:`Stopped` once the request is set, and
        :meth:`wait` waits for the block to end."""
        with self._changed:
            self._running += 1
        token = _REQUEST.set(self)
        try:
            yield
        finally:
            _REQUEST.reset(token)
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def wait(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for every run holding the request to end;
        the number still running then (0: all stopped)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, 0.1))  # short waits: Ctrl-C again interrupts this one
            return self._running


_REQUEST: ContextVar[StopRequest | None] = ContextVar("multimodal_seg_stop_request", default=None)


def stop_point() -> None:
    """Raise :class:`Stopped` if the run computing here was asked to stop (else nothing).

    Call it where stopping leaves nothing half done: before a stage, between row bands or
    spans of chips (what is written before it is complete; what comes after is not begun).
    """
    request = _REQUEST.get()
    if request is not None and request.is_set():
        raise Stopped("stopped on request (Ctrl-C): finished stages are kept")
