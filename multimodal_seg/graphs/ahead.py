"""Seeded community runs made on a second core.

A consensus (:func:`multimodal_seg.graphs.communities.partition_graph`) draws its runs one at
a time: Leiden, then the steps that finish a run (merges, the decision on the number of
communities, boundary chips).  In one process they take turns on one core: on the Bruker P45
file (BSE + EDS, 360 runs over three partitions) Leiden took 12 s and finishing 25 s of a 47 s
run, with the second core idle.  igraph's and leidenalg's Leiden hold the GIL, and finishing
is mostly small numpy calls that hold it too, so threads cannot share the work (two threads
of Leiden took as long as one after the other); processes can.

:func:`runs_ahead` hands the runs out in seed order, as a plain loop would.  Where it may, a
helper process forked from this one (it inherits the graph and features, so nothing but seeds
and results crosses between them) makes the runs ahead of need, and this process makes runs
too whenever the helper has not finished the one it needs.  Each run is a pure function of
its seed, so the results are those of the plain loop, to the last chip.  While the helper
works, BLAS in this process leaves it its core (its threads would spin there).

The helper is used only where it may: the platform forks (Linux; a spawned process would
have to import the package and would re-run a user's unguarded script), this process may use
at least two CPUs (its affinity: a SLURM job given one CPU gets none), the consensus runs in
the main thread (a batch's specimens on Dask's threads already share the cores, and a fork
while other threads work could copy a lock one of them holds), and the process is not a
daemon (a Dask worker process may not start children).  A helper that dies leaves this process to
make the rest.  docs/design.md, "Consensus runs on the second core", has the figures.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

#: Runs handed to the helper beyond the one this process is waiting for.  Runs drawn after a
#: consensus stops are wasted, but on the core that would have been idle.
AHEAD = 4

T = TypeVar("T")

# The run the helper process makes, set once in that process by its initializer (the helper is
# forked, so the run and its graph arrive with the process, not through a pipe).  Never set in
# the process that draws the runs.
_helper_run: Callable[[int], Any] | None = None


def _start_helper(run: Callable[[int], Any]) -> None:
    global _helper_run
    _helper_run = run


def _helper_call(seed: int) -> Any:
    assert _helper_run is not None, "the helper process was started without its run"
    return _helper_run(seed)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform says, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def helper_possible() -> bool:
    """Whether :func:`runs_ahead` may fork a helper here (see the module's docstring)."""
    return (sys.platform.startswith("linux") and usable_cpus() >= 2
            and threading.current_thread() is threading.main_thread()
            and not multiprocessing.current_process().daemon)


@contextmanager
def runs_ahead(run: Callable[[int], T], seeds: Sequence[int], *, helper: bool = True) -> Iterator[Iterator[T]]:
    """``run(seed)`` for each of ``seeds`` in order, made lazily; with ``helper`` (and
    :func:`helper_possible`) a forked helper process makes runs ahead.

    Parameters
    ----------
    run
        One seeded run: a pure function of its seed (the same seed, the same result), whose
        result pickles (it comes back from the helper through a pipe).
    seeds
        The seeds, in the order their runs are wanted.
    helper
        Whether a helper process may be used; ``False`` draws every run in this process.

    Yields
    ------
    An iterator over the runs' results; leaving the block stops the helper (a run it is making
    is finished and thrown away; none it has not started is made).  An exception raised by a
    run reaches the caller as the plain loop's would.
    """
    executor = None
    if helper and len(seeds) > 1 and helper_possible():
        try:
            executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                           initializer=_start_helper, initargs=(run,))
        except (OSError, ValueError) as exc:  # no processes left, no semaphores (some containers)
            log.info("community runs stay in this process: no helper process (%s)", exc)
    if executor is None:
        yield (run(int(s)) for s in seeds)
        return
    try:
        # BLAS's threads here would spin on the core the helper works on: the P45 run took
        # 40 s with the helper and two BLAS threads, 27-30 s with one (36-40 s without helper)
        with threadpool_limits(limits=max(1, usable_cpus() - 1), user_api="blas"):
            yield _in_order(run, seeds, executor)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _in_order(run: Callable[[int], T], seeds: Sequence[int], executor: ProcessPoolExecutor) -> Iterator[T]:
    """The runs of ``seeds`` in order, made by the helper ahead of need and by this process
    while the helper has not finished the one needed."""
    futures: dict[int, Future] = {}
    made: dict[int, T] = {}  # runs this process made ahead of their turn
    handed = 0  # runs 0 .. handed - 1 are the helper's or already made here
    broken = False

    def hand_out(upto: int) -> None:
        nonlocal handed, broken
        while not broken and handed < min(upto, len(seeds)):
            try:
                futures[handed] = executor.submit(_helper_call, int(seeds[handed]))
            except (BrokenProcessPool, RuntimeError, AssertionError) as exc:
                # the helper died or could not start (e.g. a daemon's child): this process
                # makes the rest; the labels are the same
                log.info("community runs continue in this process: the helper stopped (%s)", exc)
                broken = True
                return
            handed += 1

    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a process with threads (Dask's idle pool) may
        # deadlock the child in a lock another thread held; the helper only runs Leiden and
        # touches none of those threads' locks
        warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
        # the first call forks the helper; objects frozen for the fork are never traversed by
        # the helper's garbage collector, so it copies no page of them (Python's gc docs; the
        # P45 run's helper: 125 -> 65 MiB of its own).  Objects someone else froze stay frozen.
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            hand_out(1 + AHEAD)
        finally:
            if freeze:
                gc.unfreeze()
    for i, seed in enumerate(seeds):
        hand_out(i + 1 + AHEAD)
        future = futures.pop(i, None)
        if i in made:
            yield made.pop(i)
            continue
        if future is None:  # never handed out: the helper is gone
            yield run(int(seed))
            continue
        # while the helper works on run i, make the next run not yet handed to it (at most
        # AHEAD of them: then, or once every run is handed out, wait)
        while not future.done() and handed < len(seeds) and len(made) < AHEAD and not broken:
            made[handed] = run(int(seeds[handed]))
            handed += 1
        try:
            yield future.result()
        except BrokenProcessPool as exc:
            log.info("community runs continue in this process: the helper stopped (%s)", exc)
            broken = True
            for j in list(futures):
                futures.pop(j).cancel()
            yield run(int(seed))
