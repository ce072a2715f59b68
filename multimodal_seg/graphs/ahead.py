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
and results crosses between them) makes every second run, ahead of need, and this process
makes the others as they are needed.  Each run is a pure function of its seed, so the results
are those of the plain loop, to the last chip.  While the helper works, BLAS in this process
leaves it its core (its threads would spin there).

The helper is used only where it may: the platform forks (Linux; a spawned process would
have to import the package and would re-run a user's unguarded script), this process may use
at least two CPUs (:func:`multimodal_seg.compute.cpus.usable_cpus`: a SLURM job or a
container given one CPU gets none), the consensus runs in the main thread (a batch's
specimens on Dask's threads already share the cores, and a fork while other threads work
could copy a lock one of them holds), and the process is not a daemon (a Dask worker process
may not start children).  A helper that dies leaves this process to make the rest.
docs/design.md, "Consensus runs on the second core", has the figures.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from ..compute.cpus import usable_cpus

log = logging.getLogger(__name__)

#: Runs handed to the helper ahead of need.  Those a consensus does not use when it stops are
#: lost, but on the core that would have been idle.
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


def helper_possible() -> bool:
    """Whether :func:`runs_ahead` may fork a helper here (see the module's docstring)."""
    return (sys.platform.startswith("linux") and usable_cpus() >= 2
            and threading.current_thread() is threading.main_thread()
            and not multiprocessing.current_process().daemon)


@contextmanager
def runs_ahead(run: Callable[[int], T], seeds: Sequence[int], *, helper: bool = True,
               alone: int = 0) -> Iterator[Iterator[T]]:
    """``run(seed)`` for each of ``seeds`` in order, made lazily; with ``helper`` (and
    :func:`helper_possible`) a forked helper process makes runs ahead once ``alone`` runs
    have been made here.

    Parameters
    ----------
    run
        One seeded run: a pure function of its seed (the same seed, the same result), whose
        result pickles (it comes back from the helper through a pipe).
    seeds
        The seeds, in the order their runs are wanted.
    helper
        Whether a helper process may be used; ``False`` makes every run in this process.
    alone
        Runs made here before a helper starts: a consensus that may stop after so many runs
        pays nothing for a helper it would not use.  A helper costs 15-25 ms to fork and
        splits what the runs' decisions share (:class:`~multimodal_seg.graphs.decide.Memo`)
        between two processes, so it pays only where many runs are made: on a NASA EBC image
        whose consensus stopped after 12 runs, a helper from the first run made the whole
        run 0.07-0.1 s slower.

    Yields
    ------
    An iterator over the runs' results; leaving the block stops the helper without waiting
    for it (the one or two runs it has started or queued are finished and thrown away, the
    rest are not made).  An exception raised by a run reaches the caller as the plain loop's
    would.
    """
    with ExitStack() as stack:

        def start_helper() -> ProcessPoolExecutor | None:
            if not (helper and helper_possible()):
                return None
            try:
                executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                               initializer=_start_helper, initargs=(run,))
            except (OSError, ValueError) as exc:  # no processes left, no semaphores (some containers)
                log.info("community runs stay in this process: no helper process (%s)", exc)
                return None
            # not waiting for the helper to end: a run it is making is thrown away when done
            stack.callback(executor.shutdown, wait=False, cancel_futures=True)
            # BLAS's threads here would spin on the core the helper works on: the P45 run took
            # 40 s with the helper and two BLAS threads, 27-30 s with one (36-40 s without it)
            stack.enter_context(threadpool_limits(limits=max(1, usable_cpus() - 1), user_api="blas"))
            return executor

        yield _in_order(run, seeds, start_helper, alone)


def _in_order(run: Callable[[int], T], seeds: Sequence[int],
              start_helper: Callable[[], ProcessPoolExecutor | None], alone: int) -> Iterator[T]:
    """The runs of ``seeds`` in order: the first ``alone`` made here, the rest shared with a
    helper from ``start_helper()`` where it gives one (:func:`_shared`)."""
    for seed in seeds[:alone]:
        yield run(int(seed))
    rest = seeds[alone:]
    if len(rest) == 0:
        return
    executor = start_helper() if len(rest) > 1 else None
    if executor is None:
        yield from (run(int(seed)) for seed in rest)
    else:
        yield from _shared(run, rest, executor)


def _shared(run: Callable[[int], T], seeds: Sequence[int], executor: ProcessPoolExecutor) -> Iterator[T]:
    """The runs of ``seeds`` in order, every second one made by the helper (handed to it up to
    ``AHEAD`` of its runs in advance) and the others here as they are needed.

    Made here when needed, not ahead: runs made ahead are lost when the consensus stops, and
    here they would cost the main core (a NASA EBC image whose consensus stopped after 12 runs
    took 0.65-0.72 s in its communities stage where this process made runs ahead while waiting,
    against 0.39 s in one process)."""
    futures: dict[int, Future] = {}
    handed = 1  # the helper's runs are 1, 3, 5 ...; the next to hand it
    broken = False

    def hand_out(upto: int) -> None:
        nonlocal handed, broken
        while not broken and handed < min(upto, len(seeds)):
            try:
                futures[handed] = executor.submit(_helper_call, int(seeds[handed]))
            except (BrokenProcessPool, RuntimeError) as exc:
                # the helper died or could not start: this process makes the rest, the same
                log.info("community runs continue in this process: the helper stopped (%s)", exc)
                broken = True
                return
            handed += 2

    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a process with threads (Dask's idle pool) may
        # deadlock the child in a lock another thread held; the helper only runs Leiden and
        # numpy and touches none of those threads' locks
        warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
        # the first call forks the helper; objects frozen for the fork are never traversed by
        # the helper's garbage collector, so it copies no page of them (Python's gc docs; the
        # P45 run's helper: 125 -> 65 MiB of its own).  Objects someone else froze stay frozen.
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            hand_out(1 + 2 * AHEAD)
        finally:
            if freeze:
                gc.unfreeze()
    for i, seed in enumerate(seeds):
        hand_out(i + 1 + 2 * AHEAD)
        future = futures.pop(i, None)
        if future is None:  # this process's run, or the helper is gone
            yield run(int(seed))
            continue
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            log.info("community runs continue in this process: the helper stopped (%s)", exc)
            broken = True
            for pending in futures.values():
                pending.cancel()
            futures.clear()
            result = run(int(seed))
        yield result
