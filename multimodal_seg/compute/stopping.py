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

On a distributed scheduler the request is also a ``distributed.Event`` on the
scheduler, which the runs on the workers look at (at most every
:data:`REMOTE_CHECK_S`).  Without it, a batch interrupted on a running scheduler left
its specimens computing on the workers, nobody waiting for them, while a resumed
batch could start the same specimens again beside them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class Stopped(Exception):
    """Raised at a :func:`stop_point` of a run that was asked to stop."""


#: Ctrl-C: the most seconds to wait for the runs to reach a stop point (a stage already
#: running, or one band of chips, must end first) before going on without them.
STOP_WAIT_S = 60.0
#: Runs on a distributed worker ask the scheduler whether to stop at most this often (s).
REMOTE_CHECK_S = 0.5


class StopRequest:
    """A request to stop that runs in several threads (and processes) share, and the runs
    of this process yet to end.

    Parameters
    ----------
    client
        A ``distributed.Client``: the request is also a ``distributed.Event`` on its
        scheduler, and a copy sent to a worker (pickled) asks that.  ``None``: this
        process's threads only.
    """

    def __init__(self, client: Any = None) -> None:
        remote = None
        if client is not None:
            from distributed import Event

            remote = Event(f"multimodal-seg-stop-{uuid.uuid4().hex}", client=client)
        self.__setstate__({"remote": remote})

    def __getstate__(self) -> dict[str, Any]:
        if self._remote is None:
            raise TypeError("a StopRequest without a distributed client serves this process's threads only")
        return {"remote": self._remote}  # the Event pickles by its name

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._remote = state["remote"]
        self._event = threading.Event()
        self._changed = threading.Condition()
        self._running = 0
        self._asked = -float("inf")  # when the scheduler was last asked (time.monotonic())

    def set(self) -> None:
        """Ask every run holding this request to stop at its next stop point."""
        self._event.set()
        if self._remote is not None:
            self._remote.set()

    def is_set(self) -> bool:
        """Whether stopping was asked for (on a worker: by the scheduler's Event, asked at
        most every :data:`REMOTE_CHECK_S`)."""
        if self._event.is_set() or self._remote is None:
            return self._event.is_set()
        now = time.monotonic()
        if now - self._asked >= REMOTE_CHECK_S:
            self._asked = now
            if self._remote.is_set():
                self._event.set()
        return self._event.is_set()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Hold the request for a run in this block: its stop points (in this thread, and in
        the Dask tasks it starts) raise :class:`Stopped` once the request is set, and
        :meth:`wait` waits for the block to end."""
        if self._remote is not None:
            from distributed import Event, get_client

            # a worker's client, found here in the task's own thread: the threads of the
            # run's own Dask work on the worker have no worker to find it through
            self._remote = Event(self._remote.name, client=get_client())
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

    def wait(self, timeout: float, futures: Sequence[Any] = ()) -> int:
        """Wait at most ``timeout`` seconds for every run of this process holding the request
        to end, and for ``futures`` (a distributed scheduler's tasks, anything with ``done()``);
        the number still running then (0: all stopped)."""
        deadline = time.monotonic() + timeout

        def running() -> int:
            return self._running + sum(not f.done() for f in futures)

        with self._changed:
            while running() and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, 0.1))  # short waits: Ctrl-C again interrupts this one
            return running()


_REQUEST: ContextVar[StopRequest | None] = ContextVar("multimodal_seg_stop_request", default=None)


def stop_point() -> None:
    """Raise :class:`Stopped` if the run computing here was asked to stop (else nothing).

    Call it where stopping leaves nothing half done: before a stage, between row bands or
    spans of chips (what is written before it is complete; what comes after is not begun).
    """
    request = _REQUEST.get()
    if request is not None and request.is_set():
        raise Stopped("stopped on request (Ctrl-C): finished stages are kept")
