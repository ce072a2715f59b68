"""Opening the scheduler a :class:`~multimodal_seg.config.ComputeConfig` names.

``threads`` (the default) is Dask's threaded scheduler in this process and needs
nothing beyond dask.  The others need the optional extra ``distributed``
(``pip install "multimodal-seg[distributed]"``): ``processes`` starts a
``distributed.LocalCluster``, ``address`` connects a ``distributed.Client`` to a
running scheduler, ``slurm`` and ``pbs`` start a ``dask_jobqueue`` cluster with
the config's ``cluster`` keywords and ask it for ``workers`` jobs.

Inside :func:`open_scheduler` the tasks :func:`multimodal_seg.compute.tasks.run_tasks`
submits (a batch's specimens, the embedding's spans of chips) go to that scheduler;
other Dask computations stay on this process's threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import dask

from ..config import ComputeConfig
from ..errors import ParameterError
from .tasks import using_client

#: Environment of worker processes we start: BLAS and torch use the worker's threads,
#: not every core each (distributed's own default is one thread).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _distributed(scheduler: str) -> Any:
    try:
        import distributed
    except ImportError:
        raise ParameterError(
            f"compute scheduler {scheduler!r} needs Dask's distributed scheduler, which is not installed",
            fix='pip install "multimodal-seg[distributed]" (distributed and dask-jobqueue), '
                "or use scheduler: threads",
            where="compute.scheduler") from None
    return distributed


def jobqueue_cluster(config: ComputeConfig) -> Any:
    """The dask-jobqueue cluster (not yet scaled) of a ``slurm`` or ``pbs`` config.

    Its ``job_script()`` shows what would be submitted: one worker process of
    ``threads_per_worker`` threads per job unless ``cluster`` says otherwise, with
    BLAS and torch limited to those threads.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ParameterError(
            f"compute scheduler {config.scheduler!r} needs dask-jobqueue, which is not installed",
            fix='pip install "multimodal-seg[distributed]"', where="compute.scheduler") from None
    cls = dask_jobqueue.SLURMCluster if config.scheduler == "slurm" else dask_jobqueue.PBSCluster
    keywords = dict(config.cluster)
    keywords.setdefault("processes", 1)  # one worker process per job unless said otherwise
    keywords.setdefault("cores", config.threads_per_worker * keywords["processes"])
    keywords.setdefault("job_script_prologue", [f"export {v}={config.threads_per_worker}"
                                                for v in THREAD_VARIABLES])
    try:
        cluster = cls(**keywords)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"dask-jobqueue refused the cluster keywords: {exc}",
                             fix="see the dask-jobqueue docs for SLURMCluster / PBSCluster and "
                                 "configs/hpc-slurm.yaml", where="compute.cluster") from None
    return cluster


@contextlib.contextmanager
def open_scheduler(config: ComputeConfig) -> Iterator[Any]:
    """Run the enclosed Dask work on the scheduler ``config`` names.

    Yields
    ------
    ``None`` for the threaded scheduler, else the ``distributed.Client`` (closed,
    with the cluster this function started, on exit; a running scheduler given
    by ``address`` is left running).

    Raises
    ------
    ParameterError
        ``distributed`` or ``dask-jobqueue`` missing, or a scheduler address that
        cannot be reached.
    """
    chunk = {"array.chunk-size": f"{config.chunk_mib}MiB"}
    if config.scheduler == "threads":
        with dask.config.set(chunk, scheduler="threads", num_workers=config.workers), using_client(None):
            yield None
        return
    distributed = _distributed(config.scheduler)
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(chunk))
        if config.scheduler == "processes":
            threads = str(config.threads_per_worker)
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=config.workers or os.cpu_count() or 1, threads_per_worker=config.threads_per_worker,
                processes=True, dashboard_address=None, env={v: threads for v in THREAD_VARIABLES}))
            client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        elif config.scheduler == "address":
            try:
                client = stack.enter_context(distributed.Client(config.address, timeout="30s",
                                                                set_as_default=False))
            except OSError as exc:
                raise ParameterError(f"cannot reach the Dask scheduler at {config.address}: {exc}",
                                     fix="start it (dask scheduler) or correct compute.address",
                                     where="compute.address") from None
        else:
            submit = "sbatch" if config.scheduler == "slurm" else "qsub"
            if shutil.which(submit) is None:
                raise ParameterError(f"compute scheduler {config.scheduler!r} submits jobs with {submit}, "
                                     "which is not on this machine",
                                     fix="run the batch on the cluster's login node, or use scheduler: "
                                         "processes here", where="compute.scheduler")
            cluster = stack.enter_context(jobqueue_cluster(config))
            cluster.scale(jobs=config.workers or 1)
            client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        stack.enter_context(using_client(client))
        yield client


def describe(config: ComputeConfig, client: Any = None) -> dict[str, Any]:
    """JSON-able description of the scheduler in use (for summaries and provenance)."""
    out: dict[str, Any] = {"scheduler": config.scheduler}
    if client is None:
        out["threads"] = config.workers or os.cpu_count()
    else:
        info = client.scheduler_info()
        out["address"] = info.get("address")
        out["workers"] = len(info.get("workers", {}))
        out["threads"] = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
    return out
