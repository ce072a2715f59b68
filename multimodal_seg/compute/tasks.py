"""Run independent Dask tasks on the current scheduler and hear about each as it ends.

The current scheduler is the one :func:`multimodal_seg.compute.schedulers.open_scheduler`
opened in this thread, else Dask's local default (threads).  Local schedulers
compute the tasks with ``dask.compute`` and report each result through a
``dask.callbacks.Callback``; a ``distributed.Client`` computes them as futures
and reports them as they complete (``distributed.as_completed``).  Either way
Dask does the scheduling.

A client opened by ``open_scheduler`` is not made Dask's global default: only the
tasks given to :func:`run_tasks` (a batch's specimens, the embedding's spans of
chips) go to its workers, which read what they need from stores on disk; every
other Dask computation (reading input files, writing the study) stays in the
process that owns the study.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback
from dask.delayed import Delayed

from .stopping import STOP_WAIT_S, StopRequest

_CLIENT: ContextVar[Any] = ContextVar("multimodal_seg_client", default=None)


@contextmanager
def using_client(client: Any) -> Iterator[None]:
    """Send :func:`run_tasks` of this thread to ``client`` (``None``: local threads) inside the block."""
    token = _CLIENT.set(client)
    try:
        yield
    finally:
        _CLIENT.reset(token)


def current_client() -> Any:
    """The ``distributed.Client`` :func:`run_tasks` uses in this thread now, or ``None`` (local)."""
    return _CLIENT.get()


def scheduler_threads() -> int:
    """How many tasks the current scheduler runs at once (its threads, over all workers)."""
    client = current_client()
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


def run_tasks(tasks: Sequence[Delayed], *, on_result: Callable[[int, Any], None] | None = None,
              on_error: Callable[[int, BaseException], Any] | None = None,
              local_threads: int | None = None, stopping: StopRequest | None = None) -> list[Any]:
    """Compute ``tasks`` on the current scheduler; their results, in order.

    Parameters
    ----------
    tasks
        Independent ``dask.delayed`` tasks.
    on_result
        Called in this thread with ``(index, result)`` as each task ends (progress
        bars, summaries written as a batch goes).
    on_error
        Distributed schedulers: called with ``(index, exception)`` when a task
        fails (for instance a worker that died running it more often than
        ``distributed.scheduler.allowed-failures``); its return value stands for
        the task's result and the others go on.  Without it the first failure is
        raised.  Local schedulers always raise a task's exception.
    local_threads
        Local schedulers: run at most this many tasks at once (default: the
        scheduler's threads), for tasks that use every core by themselves.  1 runs them
        in this thread, one after the other (Dask's synchronous scheduler): a torch
        network called from a thread of a pool that stays alive, as a one-thread pool's
        does, gave that thread an OpenMP team of its own, and torch ran 1.1-1.5 times
        slower in every thread from then on (docs/design.md, "Torch in one thread").
    stopping
        The request the tasks hold (:mod:`multimodal_seg.compute.stopping`).  On Ctrl-C
        it is set, and the running tasks are given :data:`~.stopping.STOP_WAIT_S` seconds
        to reach a stop point and end before the interruption is raised on: they end
        while their threads, and a cluster's workers, are still there to end them cleanly.
    """
    tasks = list(tasks)
    client = current_client()
    futures: list[Any] = []  # a distributed scheduler's, waited for on Ctrl-C
    try:
        if client is None:
            index = {task.key: i for i, task in enumerate(tasks)}

            def posttask(key, result, dsk, state, worker_id) -> None:
                if key in index and on_result is not None:
                    on_result(index[key], result)

            options = ({} if local_threads is None else {"scheduler": "sync"} if local_threads == 1
                       else {"num_workers": local_threads})
            with Callback(posttask=posttask):
                return list(dask.compute(*tasks, **options))
        from distributed import as_completed

        futures = client.compute(tasks)
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        for future in as_completed(futures, loop=client.loop):
            i = position[future.key]
            try:
                results[i] = future.result()
            except Exception as exc:  # a task's own error, or its worker lost too often
                if on_error is None:
                    raise
                results[i] = on_error(i, exc)
                continue
            finally:
                future.release()
            if on_result is not None:
                on_result(i, results[i])
        return results
    except KeyboardInterrupt:
        if stopping is not None:
            # the running tasks end at their next stop point (queued ones, at their first);
            # after the wait the interruption goes on, and closing a client cancels the rest
            stopping.set()
            stopping.wait(timeout=STOP_WAIT_S, futures=futures)  # Ctrl-C again ends the wait
        raise


class SyncReader:
    """Slices of a (Dask) array read in the calling thread (``scheduler="sync"``).

    Tasks that read their own slice of a modality wrap it in this: the read does
    not start a nested thread pool or, on a distributed worker, send tasks back
    to the cluster, so a task holds one slice and uses one thread.  A plain class
    on purpose: Dask does not look inside it, so the array is not computed as a
    dependency of the task.

    Attributes
    ----------
    data
        The ``(rows, cols, ...)`` array (Dask, zarr or numpy).
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.shape = tuple(int(n) for n in data.shape)
        self.dtype = data.dtype

    def __getitem__(self, key: Any) -> Any:
        part = self.data[key]
        if hasattr(part, "compute"):
            return part.compute(scheduler="sync")
        return np.asarray(part)


def chunk_bytes() -> int:
    """Bytes of raw data one task reads: Dask's ``array.chunk-size`` (``compute.chunk_mib``)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(dask.config.get("array.chunk-size")))
